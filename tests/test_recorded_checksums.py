"""The checksum recorded at upload: every way a blob object comes to exist
records it, ``verify --deep`` and reads compare the content with it, against
the real embedded Swift."""

import base64
import hashlib
import json
import os
import shutil

import pytest
from swiftclient import client as swiftclient

from conftest import blob_objects, corrupt_on_disk, credentials_for, read, with_checksum
from test_cli import blob_files, commit_blobs, make_deployment, run, swift_config, wrapped_db
from test_zeo_clients import Deployment
from zodb_swiftblobs import SwiftStorageError
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import ChecksumMismatchError, SwiftContainer, recorded_checksum

KEY = base64.b64encode(bytes(range(32))).decode()
CHECKSUM_HEADER = "X-Object-Meta-Swiftblobs-Checksum"
ENCRYPTION_HEADER = "X-Object-Meta-Swiftblobs-Encryption"


class RawSwift:
    """The cluster as another Swift client (an attacker, a broken tool) sees it."""

    def __init__(self, cluster, container):
        settings = cluster.settings()
        self.url, self.token = swiftclient.get_auth(settings.auth_url, settings.user,
                                                    settings.key)
        self.container = container

    def head(self, name):
        return swiftclient.head_object(self.url, self.token, self.container, name)

    def get(self, name):
        return swiftclient.get_object(self.url, self.token, self.container, name)[1]

    def delete(self, name):
        swiftclient.delete_object(self.url, self.token, self.container, name)

    def as_earlier_release(self):
        """Rewrite the prefix's ownership marker as a release without the
        checksum watermark wrote it; return its content."""
        marker = json.loads(self.get(ObjectLayout().marker))
        del marker["checksums_from"]
        self.put(ObjectLayout().marker, json.dumps(marker), {})
        return marker

    def metadata(self, name, container=None):
        """The X-Object-Meta-* headers of object *name*."""
        headers = swiftclient.head_object(self.url, self.token, container or self.container,
                                          name)
        return {key: value for key, value in headers.items()
                if key.startswith("x-object-meta-")}

    def put(self, name, data, headers, container=None, query_string=None):
        swiftclient.put_object(self.url, self.token, container or self.container, name, data,
                               headers=headers, query_string=query_string)

    def post(self, name, headers):
        swiftclient.post_object(self.url, self.token, self.container, name, headers=headers)

    def manifest(self, name):
        """The entries of large object *name*'s manifest, as a manifest PUT takes them."""
        _, body = swiftclient.get_object(self.url, self.token, self.container, name,
                                         query_string="multipart-manifest=get")
        return [{"path": entry["name"], "etag": entry["hash"], "size_bytes": entry["bytes"]}
                for entry in json.loads(body)]

    def replace_large(self, name, segments):
        """Replace large object *name* with a manifest of new *segments*,
        keeping its metadata."""
        metadata = self.metadata(name)
        entries = []
        for index, data in enumerate(segments):
            segment = f"{name}/replaced/{index:08d}"
            self.put(segment, data, {}, container=f"{self.container}_segments")
            entries.append({"path": f"/{self.container}_segments/{segment}",
                            "etag": hashlib.md5(data).hexdigest(), "size_bytes": len(data)})
        self.put(name, json.dumps(entries), metadata, query_string="multipart-manifest=put")


def object_names(ids, prefix=""):
    return {name: f"{prefix}{oid.hex()}/{tid.hex()}.blob" for name, (oid, tid) in ids.items()}


def corrupt_reasons(report):
    return dict(problem.split(": ", 1) for problem in report["corrupt"])


def mismatch(algorithm):
    return f"does not match the {algorithm} checksum recorded at upload"


def assert_found_replaced(capsys, config, expected):
    """A deep verification finds exactly the objects of *expected* corrupt,
    each for the reason it gives."""
    status, report = run(capsys, "verify", str(config), "--deep")
    corrupt = corrupt_reasons(report)
    assert status == 1 and sorted(corrupt) == sorted(expected)
    assert all(expected[name] in reason for name, reason in corrupt.items()), corrupt


def test_verify_deep_finds_plain_and_large_objects_replaced_by_bytes_of_the_same_size(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name,
                            large_object_threshold="1MB", segment_size="512KB")
    blobs = {"small": os.urandom(2000), "big": os.urandom((2 << 20) + 9),
             "kept": os.urandom(1000), "kept_big": os.urandom(3 << 20)}
    names = object_names(commit_blobs(db, blobs))
    db.close()
    raw = RawSwift(devswift, container_name)
    for blob, name in names.items():
        assert raw.metadata(name) == {"x-object-meta-swiftblobs-checksum":
                                      with_checksum(blobs[blob])["swiftblobs-checksum"]}
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["corrupt"], report["without_checksum"]) == (0, [], 0)

    raw.put(names["small"], os.urandom(2000), raw.metadata(names["small"]))
    raw.replace_large(names["big"], [os.urandom(1 << 20), os.urandom((1 << 20) + 9)])
    assert run(capsys, "verify", str(config))[0] == 0, "a shallow verification reads nothing"
    assert_found_replaced(capsys, config, dict.fromkeys([names["small"], names["big"]],
                                                        mismatch("sha256")))


def test_a_read_refuses_content_that_does_not_match_its_record(devswift, tmp_path,
                                                               container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    data = os.urandom(5000)
    name = object_names(commit_blobs(db, {"small": data}))["small"]
    db.close()
    raw = RawSwift(devswift, container_name)
    raw.put(name, os.urandom(len(data)), raw.metadata(name))
    view = SwiftContainer(credentials_for(devswift), container_name)
    try:
        with pytest.raises(ChecksumMismatchError, match="checksum recorded at upload"):
            view.download(name, str(tmp_path / "copy"))
        assert not os.path.exists(tmp_path / "copy")
    finally:
        view.close()
    shutil.rmtree(tmp_path / "cache")
    config, db = wrapped_db(devswift, tmp_path, container_name)
    try:
        with db.transaction() as conn:
            with pytest.raises(SwiftStorageError, match="checksum recorded at upload"):
                conn.root()["small"].open().read()
    finally:
        db.close()


def test_objects_without_a_record_are_counted_and_still_checked_by_their_etag(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    blobs = {"old": os.urandom(3000), "new": os.urandom(3000)}
    names = object_names(commit_blobs(db, blobs))
    db.close()
    raw = RawSwift(devswift, container_name)
    raw.as_earlier_release()
    raw.post(names["old"], {})  # as an earlier release uploaded it: no metadata
    assert raw.metadata(names["old"]) == {}
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["corrupt"], report["without_checksum"]) == (0, [], 1)
    assert main(["verify", str(config), "--deep"]) == 0
    assert "without a checksum recorded at upload (written by an earlier release; checked " \
        "by size and MD5 only): 1\n" in capsys.readouterr().out

    corrupt_on_disk(devswift, blobs["old"])
    status, report = run(capsys, "verify", str(config), "--deep")
    assert status == 1 and "MD5" in corrupt_reasons(report)[names["old"]]


def test_encrypted_objects_record_a_keyed_checksum_of_their_plaintext(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name, encryption_key=KEY,
                            large_object_threshold="1MB", segment_size="512KB")
    blobs = {"a": os.urandom(4000), "b": os.urandom(4000), "c": os.urandom(4000),
             "big_a": os.urandom(2 << 20), "big_b": os.urandom(2 << 20)}
    names = object_names(commit_blobs(db, blobs))
    db.close()
    raw = RawSwift(devswift, container_name)
    for blob, name in names.items():
        recorded = raw.metadata(name)["x-object-meta-swiftblobs-checksum"]
        assert recorded.startswith("hmac-sha256:")
        assert hashlib.sha256(blobs[blob]).hexdigest() not in recorded, \
            "the plaintext's own hash would tell what it holds"
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["corrupt"], report["without_checksum"]) == (0, [], 0)

    # Another object's bytes and encryption parameters, the record kept: it
    # decrypts and authenticates, only the record tells it is not the blob.
    _, ciphertext = swiftclient.get_object(raw.url, raw.token, container_name, names["b"])
    raw.put(names["a"], ciphertext, {
        ENCRYPTION_HEADER: raw.metadata(names["b"])["x-object-meta-swiftblobs-encryption"],
        CHECKSUM_HEADER: raw.metadata(names["a"])["x-object-meta-swiftblobs-checksum"]})
    raw.put(names["big_a"], json.dumps(raw.manifest(names["big_b"])), {
        ENCRYPTION_HEADER: raw.metadata(names["big_b"])["x-object-meta-swiftblobs-encryption"],
        CHECKSUM_HEADER: raw.metadata(names["big_a"])["x-object-meta-swiftblobs-checksum"]},
        query_string="multipart-manifest=put")
    # Its encryption parameters gone, the record kept: its ciphertext would be read.
    raw.post(names["c"], {CHECKSUM_HEADER: raw.metadata(names["c"])[
        "x-object-meta-swiftblobs-checksum"]})
    assert_found_replaced(capsys, config, {
        names["a"]: mismatch("hmac-sha256"), names["big_a"]: mismatch("hmac-sha256"),
        names["c"]: "a hmac-sha256 checksum is recorded, but the object is not encrypted"})


def test_objects_a_zeo_server_publishes_carry_the_clients_record(devswift, tmp_path,
                                                                 container_name):
    deployment = Deployment(devswift, tmp_path, container_name)
    view = SwiftContainer(credentials_for(devswift), container_name)
    try:
        blobs = {"copied": os.urandom(1000), "by_manifest": os.urandom((3 << 20) + 5)}
        revisions = object_names(commit_blobs(deployment.wrapped("w1"), blobs), "db/")
        for name, data in blobs.items():
            stored = view.check(revisions[name])
            assert recorded_checksum(stored.metadata) == (
                "sha256", hashlib.sha256(data).hexdigest())
        assert view.head(revisions["by_manifest"]).large
        assert not view.head(revisions["copied"]).large
    finally:
        view.close()
        deployment.stop()


def test_migrated_blobs_carry_the_checksum_of_their_file(devswift, tmp_path, container_name,
                                                         capsys):
    make_deployment(tmp_path)
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                                   extra="large-object-threshold 1KB\n    segment-size 1KB"))
    assert run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))[0] == 0
    checksums = {with_checksum(read(path))["swiftblobs-checksum"]
                 for path in blob_files(tmp_path / "blobs")}
    view = SwiftContainer(credentials_for(devswift), container_name)
    try:
        stored = [view.head(o.name) for o in blob_objects(view)]
    finally:
        view.close()
    assert any(o.large for o in stored) and not all(o.large for o in stored)
    assert {o.metadata["swiftblobs-checksum"] for o in stored} == checksums
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["corrupt"], report["without_checksum"]) == (0, [], 0)


def test_deletion_schedules_and_undo_copies_keep_the_record(swift_container, tmp_path):
    small, big = os.urandom(3000), os.urandom((5 << 20) + 1)
    for name, data in (("small", small), ("big", big)):
        (tmp_path / name).write_bytes(data)
        swift_container.upload(name, str(tmp_path / name))
        swift_container.schedule_deletion(name, 3600)
        swift_container.copy(name, f"{name}-copy")
        swift_container.cancel_deletion(name)
        for kept in (name, f"{name}-copy"):
            assert swift_container.head(kept).metadata == with_checksum(data)
            assert recorded_checksum(swift_container.check(kept).metadata) is not None

"""Reading large objects against the real embedded Swift: nested manifests
expanded into their leaf segments, segments downloaded in parallel."""

import hashlib
import io
import json
import os
import re

import pytest
from swiftclient import client as swift

from conftest import corrupt_on_disk, credentials_for, read, wait_for_logged
from zodb_swiftblobs.encryption import CHUNK_SIZE, TAG_SIZE, Keyring
from zodb_swiftblobs.swift import (ChecksumMismatchError, SwiftContainer, SwiftUnavailableError,
                                  file_md5)

KEY = "ab" * 32
MIB = 1 << 20


def raw_connection(cluster):
    settings = cluster.settings()
    return swift.Connection(settings.auth_url, settings.user, settings.key)


def store_nested(cluster, container, name, data, segment_size, *, inner="pending/x",
                 headers=None):
    """Store *data* as this package stores big blobs: an object of *container*
    whose manifest has one entry, a manifest *inner* in the segment container
    over segments of *segment_size* bytes.  The segments' names, in order."""
    conn = raw_connection(cluster)
    segment_container = f"{container}_segments"
    conn.put_container(container)
    conn.put_container(segment_container)
    entries = []
    for index, offset in enumerate(range(0, len(data), segment_size)):
        segment = f"{inner}/upload/{index:08d}"
        piece = data[offset:offset + segment_size]
        etag = conn.put_object(segment_container, segment, piece)
        entries.append({"path": f"/{segment_container}/{segment}", "etag": etag,
                        "size_bytes": len(piece)})
    conn.put_object(segment_container, inner, json.dumps(entries),
                    query_string="multipart-manifest=put")
    inner_etag = hashlib.md5("".join(e["etag"] for e in entries).encode()).hexdigest()
    conn.put_object(container, name, json.dumps([{
        "path": f"/{segment_container}/{inner}", "etag": inner_etag,
        "size_bytes": len(data)}]), query_string="multipart-manifest=put",
        headers=headers or {})
    conn.close()
    return [entry["path"].split("/", 2)[2] for entry in entries]


@pytest.fixture
def nested(devswift, swift_container, tmp_path):
    """A nested object "big" of 3.5 segments of 1 MiB, and its bytes."""
    data = os.urandom(3 * MIB + MIB // 2)
    segments = store_nested(devswift, swift_container.container, "big", data, MIB)
    (tmp_path / "big").write_bytes(data)
    return data, segments


def test_a_nested_object_is_read_from_its_leaf_segments(swift_container, nested, tmp_path,
                                                        devswift):
    data, segments = nested
    stored = swift_container.download("big", str(tmp_path / "out"))
    assert read(tmp_path / "out") == data
    assert stored.large and stored.size == len(data)
    assert swift_container.check("big").size == len(data)
    for segment in segments:
        wait_for_logged(devswift, f" GET /v1/AUTH_test/{swift_container.segment_container}/"
                                  f"{segment} ")


def test_a_corrupted_leaf_segment_of_a_nested_object_fails_its_checksum(
        swift_container, nested, tmp_path, devswift):
    data, segments = nested
    conn = raw_connection(devswift)
    conn.put_object(swift_container.segment_container, segments[1], os.urandom(MIB))
    conn.close()
    with pytest.raises(ChecksumMismatchError, match="segment 2 of 4: received bytes have MD5"):
        swift_container.download("big", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == ["big"], "no partial file is left"


def test_a_flat_large_object_is_read_in_parallel_segments(swift_container, tmp_path,
                                                          devswift):
    data = os.urandom(24 * MIB + 5)
    (tmp_path / "big").write_bytes(data)
    swift_container.upload("big", str(tmp_path / "big"))
    swift_container.download("big", str(tmp_path / "out"))
    assert read(tmp_path / "out") == data
    gets = wait_for_logged(devswift, f" GET /v1/AUTH_test/{swift_container.segment_container}"
                                     "/big/", count=25)
    spans = sorted(tuple(map(float, line.split()[-4:-2])) for line in gets)  # start, end
    overlapping = sum(1 for (_, end), (start, _) in zip(spans, spans[1:], strict=False)
                      if start < end)
    assert overlapping, "segment GETs overlap in time"


def test_a_corrupted_segment_on_disk_fails_the_parallel_download(swift_container, tmp_path,
                                                                devswift):
    data = os.urandom(6 * MIB)
    (tmp_path / "big").write_bytes(data)
    swift_container.upload("big", str(tmp_path / "big"))
    corrupt_on_disk(devswift, data[4 * MIB:5 * MIB])
    with pytest.raises(ChecksumMismatchError, match="segment 5 of 6"):
        swift_container.check("big")


def test_encrypted_segments_are_decrypted_in_parallel(credentials, container_name, tmp_path,
                                                      devswift):
    container = SwiftContainer(credentials, container_name, large_object_threshold=4 * MIB,
                               segment_size=MIB, encryption=Keyring.from_text(KEY))
    try:
        data = os.urandom(9 * MIB + 12345)
        (tmp_path / "big").write_bytes(data)
        assert container.upload("big", str(tmp_path / "big")).large
        assert MIB % (CHUNK_SIZE + TAG_SIZE), "segments end inside encrypted chunks"
        container.download("big", str(tmp_path / "out"))
        assert read(tmp_path / "out") == data

        cipher = Keyring.from_text(KEY).new_cipher()
        with cipher.reader(io.BytesIO(data), len(data)) as reader:
            ciphertext = reader.read()
        store_nested(devswift, container_name, "nested", ciphertext, 3 * MIB + 7, headers={
            "X-Object-Meta-Swiftblobs-Encryption": cipher.header})
        container.download("nested", str(tmp_path / "nested"))
        assert read(tmp_path / "nested") == data
    finally:
        container.close()


def test_examine_holds_and_copy_see_the_leaf_segments_of_a_nested_object(
        swift_container, nested, tmp_path, devswift):
    data, segments = nested
    assert swift_container.examine_large_object("big") == (None, None)
    assert swift_container.holds_file("big", str(tmp_path / "big"))
    (tmp_path / "other").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert not swift_container.holds_file("big", str(tmp_path / "other"))
    assert swift_container.segment_groups("big") == {"pending/x/upload/"}

    copied = swift_container.copy("big", "copy")
    assert copied.large and copied.size == len(data)
    assert swift_container.delete("big")
    assert [o.name for o in swift_container.list(container=swift_container.segment_container)
            if not o.name.startswith("copy/")] == [], "the nested object went whole"
    swift_container.download("copy", str(tmp_path / "out"))
    assert read(tmp_path / "out") == data


def test_examine_reports_a_missing_nested_manifest_or_leaf(swift_container, nested,
                                                          devswift, tmp_path):
    _, segments = nested
    conn = raw_connection(devswift)
    conn.delete_object(swift_container.segment_container, segments[2])
    problem, _ = swift_container.examine_large_object("big")
    assert problem == f"its segment /{swift_container.segment_container}/{segments[2]} " \
                      "is missing"
    with pytest.raises(ChecksumMismatchError, match=f"its segment .*{segments[2]} is missing"):
        swift_container.check("big")
    conn.delete_object(swift_container.segment_container, "pending/x")
    conn.close()
    problem, _ = swift_container.examine_large_object("big")
    assert problem == f"its segment /{swift_container.segment_container}/pending/x is missing"
    assert not swift_container.holds_file("big", str(tmp_path / "big"))
    with pytest.raises(ChecksumMismatchError, match="its segment .*/pending/x is missing"):
        swift_container.download("big", str(tmp_path / "out"))


def test_a_scheduled_deletion_covers_the_nested_manifest_and_its_segments(
        swift_container, nested, devswift):
    _, segments = nested
    conn = raw_connection(devswift)

    def delete_at(name):
        return conn.head_object(swift_container.segment_container, name).get("x-delete-at")
    assert swift_container.schedule_deletion("big", 3600) is None
    at = swift_container.deletion_scheduled("big")
    assert at is not None
    assert [delete_at(name) for name in ["pending/x"] + segments] == [str(at)] * 5
    assert swift_container.examine_large_object("big") == (None, at)

    conn.post_object(swift_container.segment_container, "pending/x",
                     headers={"X-Delete-At": str(at - 60)})
    assert swift_container.examine_large_object("big") == (None, at - 60), \
        "the nested manifest's own schedule shows"
    assert swift_container.deletion_scheduled("big") == at - 60

    assert swift_container.cancel_deletion("big") is True
    assert [delete_at(name) for name in ["pending/x"] + segments] == [None] * 5
    assert swift_container.deletion_scheduled("big") is None
    assert swift_container.head("big").delete_at is None
    conn.close()


def test_a_large_object_download_cut_mid_segment_resumes_each_segment(
        start_cluster, container_name, tmp_path, caplog):
    import logging

    from conftest import download_cut_mid_stream
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.swift")
    cluster = start_cluster("segment-faults")
    container = SwiftContainer(credentials_for(cluster), container_name, deadline=30,
                               timeout=2, initial_backoff=0.1, max_backoff=0.5,
                               large_object_threshold=16 * MIB, segment_size=16 * MIB)
    try:
        with open(tmp_path / "big", "wb") as f:
            for _ in range(128):
                f.write(os.urandom(MIB))
        assert container.upload("big", str(tmp_path / "big")).large
        cut_at = download_cut_mid_stream(cluster, container, "big", tmp_path / "copy")
        assert cut_at is not None, "the download finished before the cut"
        assert file_md5(str(tmp_path / "copy")) == file_md5(str(tmp_path / "big"))
        resumed = [int(re.search(r"at byte (\d+)", r.getMessage()).group(1))
                   for r in caplog.records if "resuming download" in r.getMessage()]
        assert resumed and any(offset % (16 * MIB) for offset in resumed), \
            "segments resumed where they were cut"
    finally:
        container.close()
        cluster.stop()


def test_a_range_of_a_nested_manifest_gives_the_leaf_ranges_it_covers(
        swift_container, nested, tmp_path, devswift):
    data, _ = nested
    conn = raw_connection(devswift)
    inner = f"/{swift_container.segment_container}/pending/x"
    etag = conn.head_object(swift_container.segment_container, "pending/x")["etag"].strip('"')
    conn.put_object(swift_container.container, "ranged", json.dumps([
        {"path": inner, "etag": etag, "range": f"{MIB - 10}-{2 * MIB + 99}"},
        {"path": inner, "etag": etag, "range": f"{3 * MIB}-{3 * MIB + 4}"}]),
        query_string="multipart-manifest=put")
    conn.close()
    swift_container.download("ranged", str(tmp_path / "out"))
    assert read(tmp_path / "out") == data[MIB - 10:2 * MIB + 100] + data[3 * MIB:3 * MIB + 5]


def test_a_segment_download_past_its_deadline_stops_every_segment(swift_container,
                                                                   tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(32 * MIB))
    swift_container.upload("big", str(tmp_path / "big"))
    with pytest.raises(SwiftUnavailableError, match="exceeded in segment"):
        swift_container.download("big", str(tmp_path / "out"), deadline=0.01)
    assert os.listdir(tmp_path) == ["big"], "no partial file is left"
    swift_container.download("big", str(tmp_path / "out"))
    assert read(tmp_path / "out") == read(tmp_path / "big")

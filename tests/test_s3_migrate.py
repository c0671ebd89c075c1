"""Moving in from zodb-s3blobs: convert-config, and migrate --s3 from the S3 API of the
real Swift (its s3api middleware), the bucket written as zodb-s3blobs writes it."""

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import boto3
import pytest
import ZODB
import ZODB.config
from botocore.config import Config
from ZODB.blob import BlobStorage
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf
from ZODB.utils import oid_repr, p64, u64

from conftest import child_environment, corrupt_on_disk, store_blobs, wait_for
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.migrate import blob_directory_revisions
from zodb_swiftblobs.swift import SwiftContainer
from zodb_swiftblobs.swift.objects import encryption_header

MULTIPART = 9 << 20  # boto3's upload_file sends files from 8 MiB on in parts


@dataclass
class S3Deployment:
    """A zodb-s3blobs deployment: its configuration file, and what its bucket holds."""

    config: str
    prefix: str
    current: dict = field(default_factory=dict)  # root name: the blob's bytes
    referenced: dict = field(default_factory=dict)  # (oid, tid): bytes, still in Data.fs
    left: int = 0  # objects of revisions the database does not reference


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(capsys, *argv):
    """Run the command in this process; (exit status, parsed --json output)."""
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def s3_client(cluster):
    """boto3 on the cluster's S3 API (TempAuth: access key account:user, secret its key)."""
    settings = cluster.settings()
    return boto3.client("s3", endpoint_url=settings.auth_url.rsplit("/auth/", 1)[0],
                        aws_access_key_id=settings.user, aws_secret_access_key=settings.key,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def zodb_s3blobs_key(prefix, oid, tid):
    """The key zodb-s3blobs gives revision *tid* of blob *oid* (S3BlobStorage._s3_key
    and S3Client._full_key): hex without 0x or leading zeros, under the prefix."""
    def hex_(id8):
        return oid_repr(id8).removeprefix("0x").lstrip("0") or "0"
    key = f"blobs/{hex_(oid)}/{hex_(tid)}.blob"
    return f"{prefix.rstrip('/')}/{key}" if prefix.rstrip("/") else key


def s3_config_text(cluster, bucket, directory, prefix="", *, secret=None):
    settings = cluster.settings()
    return f"""%import zodb_s3blobs
<zodb main>
  <s3blobstorage>
    bucket-name {bucket}
    {f"s3-prefix {prefix}" if prefix else ""}
    s3-endpoint-url {settings.auth_url.rsplit("/auth/", 1)[0]}
    s3-region us-east-1
    s3-access-key {settings.user}
    s3-secret-key {secret or settings.key}
    s3-use-ssl false
    s3-addressing-style path
    cache-dir {directory}/s3cache
    <filestorage>
      path {directory}/Data.fs
    </filestorage>
  </s3blobstorage>
</zodb>
"""


def make_s3_deployment(cluster, bucket, directory, prefix="", rounds=None):
    """A site on zodb-s3blobs: Data.fs (no blob directory), and a bucket holding every
    revision its blobs had, uploaded with boto3's upload_file as zodb-s3blobs uploads
    them; then packed, which leaves older revisions in the bucket (zodb-s3blobs' pack
    deletes only the objects of oids the database lost).  The bucket also holds an
    upload of a transaction that never committed, one of a deleted oid, and a stray
    file.  *rounds* lists the transactions: {root name: bytes} each."""
    rounds = rounds or [
        {"a": os.urandom(1000), "b": os.urandom(MULTIPART), "empty": b""},
        {"a": os.urandom(2000)},
        {"c": os.urandom(3000) + b"c"},
    ]
    db = ZODB.DB(BlobStorage(str(directory / "blobs"), FileStorage(str(directory / "Data.fs"))))
    for blobs in rounds:
        store_blobs(db, **blobs)
    db.close()
    s3 = s3_client(cluster)
    s3.create_bucket(Bucket=bucket)
    deployment = S3Deployment(str(directory / "s3.conf"), prefix,
                              {name: data for blobs in rounds for name, data in blobs.items()})
    revisions = {}
    last = None
    for oid, tid, path, _ in blob_directory_revisions(str(directory / "blobs")):
        s3.upload_file(path, bucket, zodb_s3blobs_key(prefix, oid, tid))
        with open(path, "rb") as f:
            revisions[oid, tid] = f.read()
        last = max(last or tid, tid)
    some_oid = next(iter(revisions))[0]
    for oid, tid in ((some_oid, p64(u64(last) + 12345)), (p64(0x7777), last)):
        s3.put_object(Bucket=bucket, Key=zodb_s3blobs_key(prefix, oid, tid), Body=b"stray")
    s3.put_object(Bucket=bucket, Key=zodb_s3blobs_key(prefix, p64(1), p64(1)).replace(
        "1/1.blob", "notes.txt"), Body=b"not a blob")
    for root, _, names in os.walk(directory / "blobs", topdown=False):
        for name in names:
            os.remove(os.path.join(root, name))
        os.rmdir(root)
    storage = FileStorage(str(directory / "Data.fs"))
    storage.pack(time.time(), referencesf)
    for ids, data in revisions.items():
        try:
            storage.loadSerial(*ids)
            deployment.referenced[ids] = data
        except POSKeyError:
            deployment.left += 1
    storage.close()
    deployment.left += 2  # the uncommitted upload and the deleted oid's
    with open(deployment.config, "w") as f:
        f.write(s3_config_text(cluster, bucket, directory, prefix))
    return deployment


def swift_config_of(capsys, deployment, directory):
    """The deployment's configuration converted by convert-config, written beside it."""
    status, converted = run(capsys, "convert-config", deployment.config)
    assert status == 0 and "<swiftblobstorage>" in converted["config"]
    path = directory / "swift.conf"
    path.write_text(converted["config"])
    return str(path)


@pytest.fixture
def swift_environment(devswift, monkeypatch):
    """Swift's credentials in the environment, where a converted file finds them."""
    for name, value in devswift.settings().environ().items():
        monkeypatch.setenv(name, value)


def assert_every_blob_reads_back(config, deployment):
    """The database of the file *config* reads each of the deployment's blobs as it was."""
    db = ZODB.config.databaseFromURL(config)
    try:
        with db.transaction() as conn:
            for name, data in deployment.current.items():
                with conn.root()[name].open() as f:
                    assert f.read() == data, name
    finally:
        db.close()


def migrated_objects(credentials, container, prefix):
    """{(oid, tid): md5} of the blob revisions in Swift under the storage's prefix."""
    layout = ObjectLayout(prefix)
    view = SwiftContainer(credentials, container)
    try:
        return {layout.parse(stored.name): stored.md5 for stored in view.list(prefix)
                if layout.parse(stored.name)}
    finally:
        view.close()


def test_a_zodb_s3blobs_site_moves_with_one_command(devswift, credentials, tmp_path,
                                                   container_name, capsys, swift_environment,
                                                   monkeypatch):
    deployment = make_s3_deployment(devswift, container_name, tmp_path, prefix="site1")
    assert (len(deployment.referenced), deployment.left) == (4, 3)  # "a" lost a revision
    config = swift_config_of(capsys, deployment, tmp_path)
    status, dry = run(capsys, "migrate", config, "--s3", deployment.config, "--dry-run")
    assert (status, dry["blobs"], dry["uploaded"], dry["dry_run"]) == (0, 4, 4, True)
    assert migrated_objects(credentials, container_name, "site1/") == {}

    status, report = run(capsys, "migrate", config, "--s3", deployment.config, "--jobs", "3")
    assert (status, report["ok"], report["blobs"], report["uploaded"], report["skipped"],
            report["failed"]) == (0, True, 4, 4, 0, 0)
    assert (report["unreferenced"], report["other_objects"], report["size_checked_only"]) \
        == (3, 1, 0)
    assert report["bytes_uploaded"] == sum(map(len, deployment.referenced.values()))
    assert migrated_objects(credentials, container_name, "site1/") == {
        ids: hashlib.md5(data).hexdigest() for ids, data in deployment.referenced.items()}

    assert_every_blob_reads_back(config, deployment)  # the same Data.fs, blobs in Swift
    status, verified = run(capsys, "verify", config)
    assert (status, verified["referenced"], verified["present"], verified["orphans"]) == \
        (0, 4, 4, [])
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, again = run(capsys, "migrate", config, "--s3", deployment.config)
    assert (status, again["uploaded"], again["skipped"]) == (0, 0, 4)
    assert "migrating: 7/7 blobs, 100%" in terminal.getvalue()  # those left in S3 too


def test_an_interrupted_migration_resumes_and_repairs(devswift, credentials, tmp_path,
                                                     container_name, capsys,
                                                     swift_environment):
    rounds = [{f"blob{round_}-{index}": os.urandom(20000 + index) for index in range(10)}
              for round_ in range(12)]
    rounds[0]["big"] = os.urandom(MULTIPART)
    deployment = make_s3_deployment(devswift, container_name, tmp_path, rounds=rounds)
    total = len(deployment.referenced)
    config = swift_config_of(capsys, deployment, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "zodb_swiftblobs.cli", "migrate", config, "--s3",
         deployment.config, "--jobs", "1"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**child_environment(), **devswift.settings().environ()})
    try:
        wait_for(lambda: len(migrated_objects(credentials, container_name, "")) >= 30,
                 "30 blobs in Swift")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    time.sleep(1)  # a request the proxy had whole when the process died ends meanwhile
    held = set(migrated_objects(credentials, container_name, ""))
    assert 30 <= len(held) < total
    big = next(ids for ids, data in deployment.referenced.items() if len(data) == MULTIPART)
    view = SwiftContainer(credentials, container_name)  # a wrong object, of the right size
    view.put_bytes(ObjectLayout().object_name(*big), os.urandom(MULTIPART))
    view.close()
    held.add(big)

    status, report = run(capsys, "migrate", config, "--s3", deployment.config)
    assert (status, report["ok"], report["failed"]) == (0, True, 0)
    assert (report["skipped"], report["uploaded"]) == (len(held) - 1, total - len(held) + 1)
    assert migrated_objects(credentials, container_name, "") == {
        ids: hashlib.md5(data).hexdigest() for ids, data in deployment.referenced.items()}


def test_only_the_keys_zodb_s3blobs_writes_are_copied(devswift, credentials, tmp_path,
                                                      container_name, capsys,
                                                      swift_environment):
    deployment = make_s3_deployment(devswift, container_name, tmp_path, rounds=[{"a": b"good"}])
    (oid, tid), _ = next(iter(deployment.referenced.items()))
    key = zodb_s3blobs_key("", oid, tid)
    oid_hex, tid_hex = key.removeprefix("blobs/").removesuffix(".blob").split("/")
    odd_keys = [f"blobs/0{oid_hex}/{tid_hex}.blob",  # leading zeros: another key, same ids
                f"blobs/{oid_hex}/00{tid_hex}.blob", f"blobs/0x{oid_hex}/{tid_hex}.blob",
                f"blobs/{oid_hex}/{tid_hex.upper()}.blob", f"blobs/{oid_hex}/x/{tid_hex}.blob",
                f"blobs/1{'0' * 16}/{tid_hex}.blob", "blobs/x/y.blob", "blobs/caf\u00e9 1/2.blob"]
    s3 = s3_client(devswift)
    for odd in odd_keys:
        s3.put_object(Bucket=container_name, Key=odd, Body=b"not what zodb-s3blobs reads")
    config = swift_config_of(capsys, deployment, tmp_path)
    for _ in range(2):
        status, report = run(capsys, "migrate", config, "--s3", deployment.config,
                             "--jobs", "1")
        assert (status, report["blobs"], report["other_objects"]) == (0, 1, len(odd_keys) + 1)
        assert migrated_objects(credentials, container_name, "") == {
            (oid, tid): hashlib.md5(b"good").hexdigest()}
    assert (report["uploaded"], report["skipped"]) == (0, 1)


def test_content_that_does_not_match_s3s_etag_is_not_copied(devswift, credentials, tmp_path,
                                                           container_name, capsys,
                                                           swift_environment):
    plain, parted = os.urandom(50000), os.urandom(MULTIPART)
    deployment = make_s3_deployment(devswift, container_name, tmp_path,
                                    rounds=[{"plain": plain, "parted": parted, "good": b"good"}])
    corrupt_on_disk(devswift, plain)
    corrupt_on_disk(devswift, parted[:8 << 20])  # the first part's segment
    config = swift_config_of(capsys, deployment, tmp_path)
    status, report = run(capsys, "migrate", config, "--s3", deployment.config)
    assert (status, report["ok"], report["failed"], report["uploaded"]) == (1, False, 2, 1)
    # Swift's large objects cut the stream at a segment that does not match its MD5.
    failures = " | ".join(report["failures"])
    assert "do not match S3's ETag" in failures and "bytes expected" in failures
    assert list(migrated_objects(credentials, container_name, "").values()) == \
        [hashlib.md5(b"good").hexdigest()]


def test_the_database_chosen_with_d_is_the_one_copied(devswift, credentials, tmp_path,
                                                      container_name, capsys,
                                                      swift_environment):
    deployments = {}
    for database, rounds in (("main", [{"a": b"a"}]), ("catalog", [{"b": b"b"}, {"c": b"c"}])):
        directory = tmp_path / database
        directory.mkdir()
        deployments[database] = make_s3_deployment(devswift, f"{container_name}-{database}",
                                                   directory, rounds=rounds)
    both = tmp_path / "zope.conf"  # as a site with two databases has them
    both.write_text(open(deployments["main"].config).read() + open(
        deployments["catalog"].config).read().replace("%import zodb_s3blobs\n", "").replace(
        "<zodb main>", "<zodb catalog>"))
    status, converted = run(capsys, "convert-config", str(both))
    config = tmp_path / "swift.conf"
    config.write_text(converted["config"])
    status, report = run(capsys, "migrate", str(config), "-d", "catalog", "--s3", str(both))
    assert (status, report["blobs"], report["uploaded"]) == (0, 2, 2)
    assert migrated_objects(credentials, f"{container_name}-catalog", "") == {
        ids: hashlib.md5(data).hexdigest()
        for ids, data in deployments["catalog"].referenced.items()}


def test_s3_and_configuration_errors_exit_2(devswift, tmp_path, container_name, capsys,
                                           swift_environment):
    deployment = make_s3_deployment(devswift, container_name, tmp_path,
                                    rounds=[{"a": b"a"}])
    config = swift_config_of(capsys, deployment, tmp_path)
    wrong = tmp_path / "wrong.conf"
    wrong.write_text(s3_config_text(devswift, container_name, tmp_path, secret="wrong"))
    status, result = run(capsys, "migrate", config, "--s3", str(wrong))
    assert status == 2 and "SignatureDoesNotMatch" in result["error"]
    missing = tmp_path / "missing.conf"
    missing.write_text(s3_config_text(devswift, container_name + "-none", tmp_path))
    status, result = run(capsys, "migrate", config, "--s3", str(missing))
    assert status == 2 and "NoSuchBucket" in result["error"]
    status, result = run(capsys, "migrate", config, "--s3", config)
    assert status == 2 and "no <s3blobstorage> section" in result["error"]


def test_convert_config_prints_the_file_and_its_notes_apart(tmp_path):
    config = tmp_path / "zope.conf"
    config.write_text("%import zodb_s3blobs\n<zodb main>\n<s3blobstorage>\nbucket-name b\n"
                      "s3-secret-key $(SECRET)\ncache-dir /c\n<mappingstorage/>\n"
                      "</s3blobstorage>\n</zodb>\n")
    converted = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", "convert-config",
                                str(config)], capture_output=True, text=True, timeout=60,
                               env=child_environment())
    assert converted.returncode == 0 and converted.stdout.startswith("%import zodb_swiftblobs\n")
    assert "\ncontainer b\n" in converted.stdout and "$(SECRET)" not in converted.stdout
    assert converted.stderr.startswith("note: database 'main': Swift's credentials")
    config.write_text("<zodb main>\n<mappingstorage/>\n</zodb>\n")
    failed = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", "convert-config",
                             str(config)], capture_output=True, text=True, timeout=60,
                            env=child_environment())
    assert failed.returncode == 2 and "no <s3blobstorage> section" in failed.stderr
    assert failed.stdout == ""


def test_the_sse_c_key_becomes_the_encryption_key_and_a_rerun_skips_by_content(
        devswift, credentials, tmp_path, container_name, capsys, swift_environment):
    key = base64.b64encode(os.urandom(32)).decode()
    deployment = make_s3_deployment(devswift, container_name, tmp_path)
    with open(deployment.config) as f:
        text = f.read()
    with open(deployment.config, "w") as f:  # Swift's s3api ignores SSE-C
        f.write(text.replace("    cache-dir", f"    s3-sse-customer-key {key}\n    cache-dir"))
    config = swift_config_of(capsys, deployment, tmp_path)
    assert f"encryption-key {key}" in open(config).read()
    status, report = run(capsys, "migrate", config, "--s3", deployment.config)
    assert (status, report["uploaded"], report["failed"]) == (0, 4, 0)
    view = SwiftContainer(credentials, container_name)
    try:
        assert all(encryption_header(view.head(ObjectLayout().object_name(*ids)).metadata)
                   for ids in deployment.referenced)
    finally:
        view.close()
    status, again = run(capsys, "migrate", config, "--s3", deployment.config)
    assert (status, again["uploaded"], again["skipped"]) == (0, 0, 4)  # compared encrypted
    assert_every_blob_reads_back(config, deployment)


def test_an_s3_api_that_does_not_answer_fails_within_the_deadline(start_cluster, devswift,
                                                                 tmp_path, container_name,
                                                                 capsys, swift_environment):
    """An S3 endpoint that takes connections and never answers (its proxy
    frozen): --deadline bounds each S3 request too, and the command ends with
    its report and the error, not a traceback."""
    source = start_cluster("s3-unanswering")
    deployment = make_s3_deployment(source, container_name, tmp_path, rounds=[{"a": b"a"}])
    config = swift_config_of(capsys, deployment, tmp_path)
    started = time.monotonic()
    source.pause_server("proxy")
    try:
        process = subprocess.run(
            [sys.executable, "-m", "zodb_swiftblobs.cli", "migrate", config, "--s3",
             deployment.config, "--deadline", "2", "--json"], capture_output=True, text=True,
            timeout=300, env=child_environment())
    finally:
        source.resume_server("proxy")
    assert process.returncode == 1 and time.monotonic() - started < 40, process.stderr
    assert "Traceback" not in process.stderr
    result = json.loads(process.stdout)
    assert result["ok"] is False and result["blobs"] == 0
    assert result["error"].startswith(f"listing s3://{container_name}/blobs/: Read timeout")

"""The zodb-swiftblobs command: migrate, verify, gc, cache and url, against the real Swift."""

import io
import json
import os
import pty
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import ZODB
import ZODB.config
from swiftclient import client as swiftclient
from ZODB.blob import Blob, BlobStorage
from ZODB.FileStorage import FileStorage

from conftest import (blob_objects, child_environment, corrupt_on_disk, sqlite_relstorage,
                      swift_config)
from zodb_swiftblobs.cli import build_parser, main
from zodb_swiftblobs.progress import Progress
from zodb_swiftblobs.swift import NotFoundError, SwiftContainer


def run(capsys, *argv):
    """Run the command in this process; (exit status, parsed --json output)."""
    status = main([*argv, "--json"])
    output = capsys.readouterr().out
    return status, json.loads(output)


def make_deployment(directory, layout="bushy", transactions=4):
    """A FileStorage with a blob directory, as a site has before migrating:
    several blobs, some with more than one revision.  Returns {name: bytes}."""
    os.makedirs(directory / "blobs")
    if layout == "lawn":
        (directory / "blobs" / ".layout").write_text("lawn")
    db = ZODB.DB(BlobStorage(str(directory / "blobs"), FileStorage(str(directory / "Data.fs"))))
    expected = {}
    for round_ in range(transactions):
        with db.transaction() as conn:
            for index in range(round_ + 1):
                name = f"blob{index}"
                data = os.urandom(1000 + 300 * index) + f"{name} {round_}".encode()
                if name in conn.root():
                    with conn.root()[name].open("w") as f:
                        f.write(data)
                else:
                    conn.root()[name] = Blob(data)
                expected[name] = data
    db.close()
    return expected


def blob_files(blob_dir):
    return sorted(os.path.join(root, name) for root, _, names in os.walk(blob_dir)
                  for name in names if name.endswith(".blob")
                  and os.path.relpath(root, blob_dir).split(os.sep)[0] != "tmp")


def read_all(config_path, names):
    db = ZODB.config.databaseFromURL(str(config_path))
    try:
        with db.transaction() as conn:
            result = {}
            for name in names:
                with conn.root()[name].open() as f:
                    result[name] = f.read()
            return result
    finally:
        db.close()


@pytest.fixture
def view(credentials, container_name):
    container = SwiftContainer(credentials, container_name)
    yield container
    container.close()


@pytest.mark.parametrize("layout", ["bushy", "lawn"])
def test_migrate_a_blob_directory_keeps_data_fs_and_is_idempotent(
        devswift, tmp_path, container_name, view, capsys, layout):
    expected = make_deployment(tmp_path, layout)
    files = blob_files(tmp_path / "blobs")
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                                   prefix="site/"))

    status, dry = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"),
                      "--dry-run")
    assert (status, dry["dry_run"], dry["blobs"], dry["uploaded"]) == (0, True, len(files),
                                                                      len(files))
    with pytest.raises(NotFoundError):
        list(view.list())  # not even the container was created

    status, report = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))
    assert (status, report["blobs"], report["uploaded"], report["skipped"]) == \
        (0, len(files), len(files), 0)
    assert report["bytes_uploaded"] == sum(os.path.getsize(f) for f in files)
    assert len(blob_objects(view, "site/")) == len(files)
    # Data.fs unchanged and the wrapped storage serves every blob.
    assert read_all(config, expected) == expected

    status, again = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))
    assert (status, again["uploaded"], again["skipped"]) == (0, 0, len(files))

    # One object lost, one replaced by other bytes of the same size: both uploaded again.
    stored = blob_objects(view, "site/")
    view.delete(stored[0].name)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(os.urandom(stored[1].size))
    view.upload(stored[1].name, str(wrong))
    status, repair = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))
    assert (status, repair["uploaded"], repair["skipped"]) == (0, 2, len(files) - 2)
    assert {o.name: o.md5 for o in blob_objects(view, "site/")} == {o.name: o.md5 for o in stored}


def _url_token(cluster):
    """A storage URL and token, to set container and account metadata as an operator."""
    settings = cluster.settings()
    return swiftclient.get_auth(settings.auth_url, settings.user, settings.key)


def test_migrate_reports_failures_and_exits_non_zero(devswift, tmp_path, container_name,
                                                     capsys):
    make_deployment(tmp_path, transactions=2)
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   "<mappingstorage/>"))
    url, token = _url_token(devswift)  # a quota no blob fits in: Swift refuses each one
    swiftclient.put_container(url, token, container_name, {"X-Container-Meta-Quota-Bytes": "1"})
    status, report = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))
    assert (status, report["ok"], report["blobs"], report["failed"]) == (1, False, 3, 3)
    assert "413" in report["failures"][0]
    assert main(["migrate", str(config), "--blob-dir", str(tmp_path / "blobs")]) == 1
    assert "run the same command again" in capsys.readouterr().out


def relstorage_source_config(path):
    return f"""%import relstorage
<relstorage source>
  keep-history true
  blob-dir {path / 'source-blobs'}
  shared-blob-dir true
  <sqlite3>
    data-dir {path / 'source-db'}
  </sqlite3>
</relstorage>
"""


def test_migrate_copies_a_storage_with_blobs_and_resumes(devswift, tmp_path, container_name,
                                                        view, capsys):
    source_config = tmp_path / "source.conf"
    source_config.write_text(relstorage_source_config(tmp_path))
    source = sqlite_relstorage(tmp_path / "source-db", True, tmp_path / "source-blobs")
    db = ZODB.DB(source)
    expected = {}

    def commit(round_):
        with db.transaction() as conn:
            for index in range(3):
                name = f"b{index}"
                expected[name] = f"{name} round {round_} ".encode() * (round_ + 1)
                if name in conn.root():
                    with conn.root()[name].open("w") as f:
                        f.write(expected[name])
                else:
                    conn.root()[name] = Blob(expected[name])
    for round_ in range(3):
        commit(round_)
    db.close()
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))

    status, report = run(capsys, "migrate", str(config), "--source", str(source_config),
                         "--jobs", "3")
    assert (status, report["transactions"], report["blobs"], report["uploaded"]) == \
        (0, 4, 9, 9)  # the root's creation, then three transactions of three blobs
    assert len(blob_objects(view)) == 9
    assert read_all(config, expected) == expected

    db = ZODB.DB(sqlite_relstorage(tmp_path / "source-db", True, tmp_path / "source-blobs"))
    commit(3)
    db.close()
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert (status, report["transactions"], report["uploaded"]) == (0, 1, 3)
    assert read_all(config, expected) == expected
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert (status, report["transactions"], report["uploaded"]) == (0, 0, 0)

    foreign = tmp_path / "foreign.conf"  # a database with a history of its own
    foreign.write_text(swift_config(devswift, container_name, tmp_path / "cache3",
                                    f"<filestorage>\npath {tmp_path / 'F.fs'}\n</filestorage>",
                                    prefix="foreign/"))
    ZODB.config.databaseFromURL(str(foreign)).close()
    status, report = run(capsys, "migrate", str(foreign), "--source", str(source_config))
    assert status == 1 and "not in the source" in report["error"]


def filestorage_source(tmp_path, count):
    """A FileStorage with a blob directory, one blob per transaction, and the
    configuration file naming it; returns (path of that file, blob files by name)."""
    config = tmp_path / "source.conf"
    config.write_text(f"<filestorage source>\n  path {tmp_path / 'old.fs'}\n"
                      f"  blob-dir {tmp_path / 'old-blobs'}\n</filestorage>\n")
    db = ZODB.DB(ZODB.config.storageFromFile(open(config)))
    files = {}
    for index in range(count):
        with db.transaction() as conn:
            conn.root()[f"b{index}"] = Blob(f"blob number {index}".encode())
        with db.transaction() as conn:
            blob = conn.root()[f"b{index}"]
            blob._p_activate()
            files[f"b{index}"] = db.storage.fshelper.getBlobFilename(blob._p_oid,
                                                                     blob._p_serial)
    db.close()
    return config, files


def test_migrate_d_copies_the_source_database_of_that_name(devswift, tmp_path,
                                                          container_name, capsys):
    """Without --source-database, the source's database is the one -d names
    (when the source has several), not main."""
    sources = {}
    for database, count in (("main", 1), ("catalog", 3)):
        (tmp_path / database).mkdir()
        config, _ = filestorage_source(tmp_path / database, count)
        sources[database] = config.read_text().replace("<filestorage source>",
                                                       f"<filestorage {database}>")
    source_config = tmp_path / "source.conf"
    source_config.write_text(sources["main"] + sources["catalog"])
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'C.fs'}\n</filestorage>",
                                   database="catalog"))
    status, dry = run(capsys, "migrate", str(config), "-d", "catalog", "--source",
                      str(source_config), "--dry-run")
    assert (status, dry["transactions"], dry["uploaded"]) == (0, 4, 3)


def test_migrate_dry_run_changes_nothing_and_a_stopped_copy_resumes(
        devswift, tmp_path, container_name, view, capsys):
    source_config, files = filestorage_source(tmp_path, 4)
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))
    status, dry = run(capsys, "migrate", str(config), "--source", str(source_config),
                      "--dry-run")
    assert (status, dry["transactions"], dry["uploaded"]) == (0, 5, 4)
    assert not os.path.exists(tmp_path / "Data.fs")
    with pytest.raises(NotFoundError):
        list(view.list())  # not even the container was created

    # The third blob cannot be read: its transaction and those after it stay uncopied.
    os.rename(files["b2"], tmp_path / "put-aside")
    os.mkdir(files["b2"])
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config),
                         "--jobs", "1")
    assert (status, report["ok"], report["transactions"], report["failed"]) == \
        (1, False, 3, 1)  # the root's creation, b0 and b1
    assert "not copied" in report["error"] and "IsADirectoryError" in report["failures"][0]
    assert read_all(config, ["b0", "b1"]) == {"b0": b"blob number 0", "b1": b"blob number 1"}

    os.rmdir(files["b2"])
    os.rename(tmp_path / "put-aside", files["b2"])
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert (status, report["transactions"], report["uploaded"] + report["skipped"]) == \
        (0, 2, 2)
    expected = {f"b{index}": f"blob number {index}".encode() for index in range(4)}
    assert read_all(config, expected) == expected

    # A copy killed after uploading, before committing, leaves objects and no records:
    names = sorted(o.name for o in blob_objects(view))
    for suffix in ("", ".index", ".lock", ".tmp"):
        if os.path.exists(f"{tmp_path / 'Data.fs'}{suffix}"):
            os.remove(f"{tmp_path / 'Data.fs'}{suffix}")
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert (status, report["transactions"], report["uploaded"], report["skipped"]) == \
        (0, 5, 0, 4)
    assert sorted(o.name for o in blob_objects(view)) == names


def test_migrate_reports_blobs_the_source_lacks(devswift, tmp_path, container_name, capsys):
    source_config, files = filestorage_source(tmp_path, 2)
    os.remove(files["b1"])
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))
    status, report = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert (status, report["ok"], report["transactions"], report["missing_in_source"]) == \
        (1, False, 3, 1)
    assert "no file" in report["failures"][0]


def test_migrate_repairs_a_large_object_that_lost_a_segment(devswift, tmp_path,
                                                            container_name, view, capsys):
    os.makedirs(tmp_path / "blobs")
    db = ZODB.DB(BlobStorage(str(tmp_path / "blobs"), FileStorage(str(tmp_path / "Data.fs"))))
    video = os.urandom(3 << 20)
    with db.transaction() as conn:
        conn.root()["video"] = Blob(video)
    db.close()
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(
        devswift, container_name, tmp_path / "cache",
        f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
        extra="large-object-threshold 1MB\n    segment-size 1MB"))
    assert run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))[0] == 0
    segments = list(view.list(container=view.segment_container))
    view.delete_many(segments[1:2], container=view.segment_container)
    assert run(capsys, "verify", str(config))[0] == 1
    status, report = run(capsys, "migrate", str(config), "--blob-dir", str(tmp_path / "blobs"))
    assert (status, report["uploaded"], report["skipped"]) == (0, 1, 0)
    assert run(capsys, "verify", str(config), "--deep")[0] == 0
    assert read_all(config, ["video"]) == {"video": video}


def wrapped_db(devswift, tmp_path, container_name, **extra):
    config = tmp_path / "swift.conf"
    options = "\n".join(f"{key.replace('_', '-')} {value}" for key, value in extra.items())
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                                   extra=options))
    return config, ZODB.config.databaseFromURL(str(config))


def commit_blobs(db, blobs):
    with db.transaction() as conn:
        for name, data in blobs.items():
            conn.root()[name] = Blob(data)
    with db.transaction() as conn:
        ids = {}
        for name in blobs:
            blob = conn.root()[name]
            blob._p_activate()
            ids[name] = (blob._p_oid, blob._p_serial)
        return ids


def test_verify_finds_missing_corrupt_and_orphaned_objects(devswift, tmp_path,
                                                          container_name, view, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name,
                            large_object_threshold="1MB", segment_size="512KB")
    big = os.urandom(3 << 20)
    small = {f"s{i}": os.urandom(2000) + bytes([i]) for i in range(5)}
    ids = commit_blobs(db, {"big": big, **small})
    db.close()
    status, report = run(capsys, "verify", str(config))
    assert (status, report["referenced"], report["present"], report["ok"]) == (0, 6, 6, True)
    assert report["missing"] == report["corrupt"] == report["orphans"] == []
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["ok"], report["bytes"]) == (0, True, len(big) + 2001 * 5)

    storage_keys = {name: f"{oid.hex()}/{tid.hex()}.blob" for name, (oid, tid) in ids.items()}
    view.delete(storage_keys["s0"])
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"nobody references me")
    orphan_name = f"{'00' * 7}ff/{ids['s1'][1].hex()}.blob"
    view.upload(orphan_name, str(orphan))
    corrupt_on_disk(devswift, small["s2"])
    status, report = run(capsys, "verify", str(config))
    assert status == 1 and not report["ok"]
    assert report["missing"] == [storage_keys["s0"]]
    assert report["orphans"] == [orphan_name]
    assert report["corrupt"] == []  # only reading the bytes finds bit rot
    status, report = run(capsys, "verify", str(config), "--deep")
    assert status == 1 and [c.split(":")[0] for c in report["corrupt"]] == [storage_keys["s2"]]

    segments = [o.name for o in view.list(container=view.segment_container)]
    view.delete_many([segments[1]], container=view.segment_container)
    status, report = run(capsys, "verify", str(config))
    corrupt = dict(c.split(": ", 1) for c in report["corrupt"])
    assert status == 1 and "segment" in corrupt[storage_keys["big"]] \
        and "missing" in corrupt[storage_keys["big"]]

    human = main(["verify", str(config)])
    output = capsys.readouterr().out
    assert human == 1 and "PROBLEMS FOUND" in output and storage_keys["s0"] in output


def test_gc_deletes_only_old_enough_orphans(devswift, tmp_path, container_name, view, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    ids = commit_blobs(db, {"kept": b"committed and referenced"})
    db.close()
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"left by a crashed commit")
    tid = ids["kept"][1].hex()
    orphans = [f"{oid:016x}/{tid}.blob" for oid in (0xf1, 0xf2)]
    for name in orphans:
        view.upload(name, str(orphan))

    status, report = run(capsys, "gc", str(config), "--dry-run", "--min-age", "0")
    assert (status, report["orphans"], report["deleted"]) == (0, 2, 0)
    assert len(blob_objects(view)) == 3
    status, report = run(capsys, "gc", str(config))  # default minimum age: one hour
    assert (status, report["orphans"], report["too_young"], report["deleted"]) == (0, 0, 2, 0)
    status, report = run(capsys, "gc", str(config), "--min-age", "0")
    assert (status, report["orphans"], report["deleted"]) == (0, 2, 2)
    assert [o.name for o in blob_objects(view)] == [f"{ids['kept'][0].hex()}/{tid}.blob"]
    assert read_all(config, ["kept"]) == {"kept": b"committed and referenced"}


def test_gc_runs_next_to_a_site_holding_the_filestorage(devswift, tmp_path, container_name,
                                                       capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    commit_blobs(db, {"a": b"a"})
    try:  # the site keeps Data.fs open (and locked) while the tool runs
        status, report = run(capsys, "gc", str(config), "--dry-run")
        assert (status, report["examined"]) == (0, 1)
        status, report = run(capsys, "verify", str(config))
        assert (status, report["present"]) == (0, 1)
    finally:
        db.close()


def test_cache_stats_prune_and_clear(devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    blobs = {f"b{i}": os.urandom(10_000) for i in range(4)}
    commit_blobs(db, blobs)
    db.close()
    status, before = run(capsys, "cache", str(config))
    assert (status, before["entries"], before["size"]) == (0, 4, 40_000)  # published at commit
    assert before["misses"] == 0 and before["budget"] == 10 << 30

    status, stats = run(capsys, "cache", str(config), "clear")
    assert (status, stats["removed"], stats["entries"]) == (0, 4, 0)
    read_all(config, blobs)  # four misses
    read_all(config, blobs)  # four hits, in another process's counters alike
    status, stats = run(capsys, "cache", str(config), "stats")
    assert (stats["misses"], stats["bytes_downloaded"], stats["entries"]) == (4, 40_000, 4)
    assert stats["hits"] >= before["hits"] + 4  # ZODB asks for a blob's file more than once
    assert stats["hit_rate"] == stats["hits"] / (stats["hits"] + 4)
    status, stats = run(capsys, "cache", str(config), "prune", "--size", "25000")
    assert (status, stats["removed"], stats["entries"], stats["size"]) == (0, 2, 2, 20_000)
    assert main(["cache", str(config)]) == 0
    assert f"hit rate {100 * stats['hit_rate']:.1f}%" in capsys.readouterr().out


def fetch(url, method="GET"):
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_url_serves_a_blob_revision_straight_from_swift(devswift, tmp_path, container_name,
                                                       capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    ids = commit_blobs(db, {"doc": b"first version"})
    with db.transaction() as conn:
        with conn.root()["doc"].open("w") as f:
            f.write(b"second version")
    db.close()
    oid, first_serial = ids["doc"]
    status, result = run(capsys, "url", str(config), f"0x{oid.hex()}")
    assert status == 1 and "no TempURL key" in result["error"]

    url, token = _url_token(devswift)
    swiftclient.post_container(url, token, container_name,
                               {"X-Container-Meta-Temp-URL-Key": "tempurl-secret-1"})
    status, result = run(capsys, "url", str(config), f"0x{oid.hex()}")
    assert status == 0 and result["method"] == "GET" and "temp_url_sig" in result["url"]
    assert "tempurl-secret-1" not in json.dumps(result)
    assert fetch(result["url"])[2] == b"second version"
    status, result = run(capsys, "url", str(config), str(int.from_bytes(oid, "big")),
                         "--serial", first_serial.hex(), "--filename", "report.txt")
    response_status, headers, body = fetch(result["url"])
    assert body == b"first version" and "report.txt" in headers["Content-Disposition"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch(result["url"], "PUT")
    assert refused.value.code == 401

    status, result = run(capsys, "url", str(config), f"0x{oid.hex()}", "--expires", "1")
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as expired:
        fetch(result["url"])
    assert expired.value.code == 401

    status, result = run(capsys, "url", str(config), "0x7777")
    assert status == 1 and result["error"] == "no such blob revision"


def test_storage_blob_url_with_a_configured_key(devswift, tmp_path, container_name):
    url, token = _url_token(devswift)
    swiftclient.post_account(url, token, {"X-Account-Meta-Temp-URL-Key-2": "account-key"})
    try:
        config, db = wrapped_db(devswift, tmp_path, container_name, temp_url_key="account-key")
        ids = commit_blobs(db, {"img": b"\x89PNG..."})
        storage = db.storage
        oid = ids["img"][0]
        status, headers, body = fetch(storage.blob_url(oid, method="HEAD"), "HEAD")
        assert (status, headers["Content-Length"]) == (200, "7")
        assert fetch(storage.blob_url(oid, expires=60))[2] == b"\x89PNG..."
        with pytest.raises(ValueError, match="GET and HEAD only"):
            storage.blob_url(oid, method="PUT")
        db.close()
    finally:
        swiftclient.post_account(url, token, {"X-Account-Meta-Temp-URL-Key-2": ""})


def test_without_a_terminal_there_is_no_progress_line(devswift, tmp_path, container_name):
    make_deployment(tmp_path, transactions=2)
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   "<mappingstorage/>"))
    process = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", "migrate",
                              str(config), "--blob-dir", str(tmp_path / "blobs")],
                             capture_output=True, text=True, timeout=120,
                             env=child_environment())
    assert process.returncode == 0 and "3 uploaded" in process.stdout
    assert process.stderr == ""


def test_configuration_errors_exit_2(tmp_path):
    config = tmp_path / "nothing.conf"
    config.write_text("<mappingstorage/>\n")
    process = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", "cache",
                              str(config)], capture_output=True, text=True, timeout=60,
                             env=child_environment())
    assert process.returncode == 2 and "no <swiftblobstorage>" in process.stderr


def test_storages_wrapped_around_the_swift_one_are_opened_too(devswift, tmp_path,
                                                                container_name, capsys):
    config = tmp_path / "hex.conf"
    config.write_text(swift_config(
        devswift, container_name, tmp_path / "cache",
        f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>").replace(
            "<swiftblobstorage>", "<hexstorage>\n<swiftblobstorage>").replace(
            "</swiftblobstorage>", "</swiftblobstorage>\n</hexstorage>").replace(
            "%import zodb_swiftblobs", "%import zodb_swiftblobs\n%import ZODB.tests"))
    db = ZODB.config.databaseFromURL(str(config))
    assert type(db.storage).__name__ == "HexStorage"
    ids = commit_blobs(db, {"a": b"under a record transform", "b": b"another"})
    db.close()
    status, report = run(capsys, "verify", str(config))  # records read through the hex
    assert (status, report["referenced"], report["present"], report["orphans"]) == \
        (0, 2, 2, [])
    status, result = run(capsys, "url", str(config), f"0x{ids['a'][0].hex()}")
    assert status == 1 and "no TempURL key" in result["error"]  # the blob was recognised
    source_config, _ = filestorage_source(tmp_path, 1)
    status, result = run(capsys, "migrate", str(config), "--source", str(source_config))
    assert status == 2 and "no storage wrapped around it" in result["error"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_rate_and_eta_on_a_terminal_only():
    quiet = io.StringIO()
    with Progress("migrating", total=4, unit="blobs", stream=quiet) as progress:
        progress.advance(1, 1 << 20)
    assert quiet.getvalue() == "" and progress.done == 1
    terminal = Terminal()
    with Progress("migrating", total=4, unit="blobs", stream=terminal) as progress:
        progress.advance(2, 3 << 20)
        line = progress.line(progress.started + 2.0)
    assert line.startswith("migrating: 2/4 blobs, 50%, 3.0 MiB, 1.5 MiB/s, 1.0 blobs/s")
    assert "ETA 0:00:02" in line
    assert terminal.getvalue().startswith("\r") and terminal.getvalue().endswith("\n")


def test_the_command_shows_progress_on_a_terminal(devswift, tmp_path, container_name):
    make_deployment(tmp_path, transactions=2)
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   "<mappingstorage/>"))
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "zodb_swiftblobs.cli", "migrate", str(config),
             "--blob-dir", str(tmp_path / "blobs")],
            stdout=subprocess.PIPE, stderr=terminal, timeout=120, env=child_environment())
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert process.returncode == 0
    assert b"migrating: 3/3 blobs, 100%" in drawn and b"ETA" in drawn
    assert b"\r" not in process.stdout and b"3 uploaded" in process.stdout


def test_verify_and_gc_over_relstorage(devswift, tmp_path, container_name, view, capsys):
    config = tmp_path / "swift.conf"
    config.write_text("%import relstorage\n" + swift_config(
        devswift, container_name, tmp_path / "cache",
        f"<relstorage>\nkeep-history false\n<sqlite3>\ndata-dir {tmp_path / 'db'}\n"
        "</sqlite3>\n</relstorage>"))
    db = ZODB.config.databaseFromURL(str(config))
    ids = commit_blobs(db, {"a": b"first"})
    with db.transaction() as conn:  # history-free: the first revision is garbage now
        with conn.root()["a"].open("w") as f:
            f.write(b"second")
    db.close()
    status, report = run(capsys, "verify", str(config))
    assert (status, report["referenced"], report["present"], len(report["orphans"])) == \
        (0, 1, 1, 1)
    status, report = run(capsys, "gc", str(config), "--min-age", "0")
    assert (status, report["examined"], report["deleted"]) == (0, 2, 1)
    names = [o.name for o in blob_objects(view)]
    assert f"{ids['a'][0].hex()}/{ids['a'][1].hex()}.blob" not in names
    assert read_all(config, ["a"]) == {"a": b"second"}


def test_read_only_commands_create_no_container(devswift, tmp_path, container_name, view,
                                                capsys):
    config = tmp_path / "typo.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))
    ZODB.config.databaseFromString(  # a database with no blobs, in a FileStorage
        f"<zodb>\n<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>\n</zodb>").close()
    for command in ("verify", "gc"):
        status, result = run(capsys, command, str(config))
        assert status == 1 and "does not exist" in result["error"]
    with pytest.raises(NotFoundError):
        list(view.list())


BAD_CONFIGURATIONS = [
    ("cache-size 0", "cache_size"), ("deadline 0", "deadline"), ("deadline -1", "deadline"),
    ("deadline inf", "deadline"), ("deadline nan", "deadline"), ("timeout 0", "timeout"),
    ("upload-concurrency 0", "upload_concurrency"), ("segment-size 0", "segment_size"),
    ("segment-concurrency 0", "segment_concurrency"), ("initial-backoff 0", "initial_backoff"),
    ("max-backoff 0.1", "initial_backoff <= max_backoff"),
    ("encryption-key c2hvcnQga2V5IG9mIDE2IGJ5dGVz", "encryption key"),
    ("temp-url-key", "temp_url_key"), ("prefix ../victim/", "prefix"),
    ("container .", "container name"), ("container a/b", "container name")]
STORAGE_COMMANDS = [["verify"], ["gc"], ["cache"], ["claim"], ["url", "0x01"],
                    ["migrate", "--blob-dir", "."]]


@pytest.mark.parametrize("setting, named", BAD_CONFIGURATIONS,
                         ids=[setting for setting, _ in BAD_CONFIGURATIONS])
def test_every_bad_setting_exits_2_from_every_command(devswift, tmp_path, capsys, setting,
                                                      named):
    config = tmp_path / "bad.conf"
    text = swift_config(devswift, "never-created", tmp_path / "cache",
                        f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                        extra=setting)
    key = setting.split()[0]
    config.write_text("\n".join(line for line in text.splitlines()
                                if line.split()[:1] != [key] or line.strip() == setting))
    for command in STORAGE_COMMANDS:
        status = main([command[0], str(config), *command[1:]])
        err = capsys.readouterr().err
        assert status == 2, (command, err)
        assert err.startswith(f"zodb-swiftblobs {command[0]}: {config}: ") and named in err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "Data.fs").exists() and not (tmp_path / "cache").exists()
    process = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", "verify",
                              str(config)], capture_output=True, text=True, timeout=120,
                             env=child_environment())
    assert process.returncode == 2 and "Traceback" not in process.stderr


def test_the_command_says_its_version_and_takes_options_after_the_command_too(
        devswift, tmp_path, container_name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("zodb-swiftblobs 0.")
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))
    for argv in (["cache", str(config)], ["cache", str(config), "stats"],
                 ["cache", "stats", str(config)], ["-v", "cache", str(config)],
                 ["cache", "stats", str(config), "-v"]):
        status, stats = run(capsys, *argv)
        assert status == 0 and stats["entries"] == 0, argv
    assert main(["cache", "prune", str(config), "--size", "1GB"]) == 0
    assert "removed 0 files" in capsys.readouterr().out
    assert main(["cache", str(config), "empty"]) == 2
    assert "no cache action 'empty'" in capsys.readouterr().err
    for argv, verbose in ((["cache", "c"], False), (["-v", "cache", "c"], True),
                          (["gc", "c", "-v"], True), (["devswift", "env", "-v"], True)):
        assert build_parser().parse_args(argv).verbose is verbose, argv

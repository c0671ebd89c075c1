"""Garbage collection with a grace period, against the real Swift: orphans are
scheduled for deletion (X-Delete-At, large objects' segments included), a
database restored from a backup older than the pack gets its blobs back with
``verify --repair``, and what nobody repairs is gone once the grace period
has passed."""

import base64
import json
import os
import shutil
import time

import pytest
import transaction
import ZODB
import ZODB.config
from swiftclient import client as swiftclient
from swiftclient.exceptions import ClientException
from ZODB.FileStorage import FileStorage

from conftest import (blob_objects, blob_revision, credentials_for, store_blobs, swift_config,
                      swift_storage)
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.keys import KeyLayout
from zodb_swiftblobs.swiftaccess import NotFoundError, SwiftContainer
from zodb_swiftblobs.verify import referenced_revisions

GRACE = 15  # seconds: room for a verification and a repair on a loaded machine
KEY = base64.b64encode(b"k" * 32).decode()
WEEK = 7 * 24 * 3600


@pytest.fixture
def view(devswift, container_name):
    view = SwiftContainer(credentials_for(devswift), container_name, encryption=None)
    yield view
    view.close()


@pytest.fixture
def swift_http(devswift):
    """A raw client, to see what Swift holds (headers, segments) as it is."""
    settings = devswift.settings()
    url, token = swiftclient.get_auth(settings.auth_url, settings.user, settings.key)
    return lambda method, container, name, **options: getattr(
        swiftclient, f"{method}_object")(url, token, container, name, **options)


def write_config(devswift, tmp_path, container_name, cache, grace=GRACE):
    path = tmp_path / f"{cache}.conf"
    path.write_text(swift_config(
        devswift, container_name, tmp_path / cache,
        f"<filestorage>\n path {tmp_path / 'Data.fs'}\n</filestorage>",
        extra=f"encryption-key {KEY}\n large-object-threshold 1MB\n segment-size 256KB",
        gc_grace_period=grace))
    return path


def run(capsys, *argv):
    status = main([*argv, "--json"])
    return status, json.loads(capsys.readouterr().out)


def delete_at(swift_http, container, name):
    """The X-Delete-At of an object (None: not scheduled); NotFoundError-like
    ClientException 404 when Swift no longer serves it."""
    value = swift_http("head", container, name).get("x-delete-at")
    return int(value) if value else None


def segments_of(view, name):
    return [o.name for o in view.list(name + "/", container=view.segment_container)]


def gone(swift_http, container, name):
    try:
        swift_http("head", container, name)
    except ClientException as exc:
        return exc.http_status == 404
    return False


def test_a_database_restored_from_a_backup_gets_its_blobs_back(
        devswift, tmp_path, container_name, view, swift_http, capsys):
    config = write_config(devswift, tmp_path, container_name, "cache")
    db = ZODB.config.databaseFromURL(str(config))
    keys, expected = KeyLayout(), {}

    def commit(**blobs):
        store_blobs(db, **blobs)
        for name, data in blobs.items():
            expected[keys.key(*blob_revision(db, name))] = data
    commit(small=os.urandom(2000), big=os.urandom(1_500_000))
    old = {name: keys.key(*blob_revision(db, name)) for name in ("small", "big")}
    commit(small=os.urandom(3000), big=os.urandom(1_200_000))
    db.close()
    shutil.copy(tmp_path / "Data.fs", tmp_path / "backup.fs")  # last night's backup
    backed_up = dict(expected)
    db = ZODB.config.databaseFromURL(str(config))
    commit(late=os.urandom(1_100_000))
    late = keys.key(*blob_revision(db, "late"))
    commit(late=b"replaced")
    db.pack()  # the mistake is made, the site packed: three revisions are orphans
    db.close()

    for segment in segments_of(view, old["big"]):
        assert delete_at(swift_http, view.segment_container, segment) is not None

    os.remove(tmp_path / "Data.fs.index")
    shutil.copy(tmp_path / "backup.fs", tmp_path / "Data.fs")  # the restore
    status, report = run(capsys, "verify", str(config))
    assert (status, report["ok"], report["missing"]) == (1, False, [])
    assert report["scheduled"] == sorted(old.values())
    assert main(["verify", str(config)]) == 1
    assert "verify --repair cancels their deletion" in capsys.readouterr().out
    status, report = run(capsys, "verify", str(config), "--repair")
    assert (status, report["ok"], report["repaired"]) == (0, True, sorted(old.values()))
    status, report = run(capsys, "verify", str(config))
    assert (status, report["scheduled"], report["repaired"]) == (0, [], [])
    for segment in segments_of(view, old["big"]):
        assert delete_at(swift_http, view.segment_container, segment) is None
    assert next(o for o in view.list(old["big"])).marked_for_deletion is None

    stored = next(o for o in view.list(late))  # the genuine orphan stays scheduled
    scheduled = delete_at(swift_http, container_name, late)
    assert stored.marked_for_deletion == scheduled is not None, "listings show the schedule"
    segments = segments_of(view, late)
    assert len(segments) >= 4
    last = max([scheduled] + [delete_at(swift_http, view.segment_container, segment)
                              for segment in segments])
    while time.time() < last + 2:  # Swift answers 404 once X-Delete-At has passed
        time.sleep(0.5)
    deadline = time.monotonic() + 60
    while not gone(swift_http, container_name, late) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gone(swift_http, container_name, late), "the genuine orphan is gone"
    assert all(gone(swift_http, view.segment_container, segment) for segment in segments)

    db = ZODB.config.databaseFromURL(str(write_config(devswift, tmp_path, container_name,
                                                      "fresh-cache")))
    try:
        revisions = referenced_revisions(db.storage)
        assert {keys.key(r[:8], r[8:]) for r in revisions} == set(backed_up)
        for revision in revisions:
            with open(db.storage.loadBlob(revision[:8], revision[8:]), "rb") as f:
                assert f.read() == backed_up[keys.key(revision[:8], revision[8:])]
    finally:
        db.close()


def test_a_grace_period_of_zero_deletes_at_once(devswift, tmp_path, container_name, view):
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache", gc_grace_period=0)
    db = ZODB.DB(storage)
    store_blobs(db, b=b"first")
    first = KeyLayout().key(*blob_revision(db, "b"))
    store_blobs(db, b=b"second")
    db.pack()
    with pytest.raises(NotFoundError):
        view.head(first)
    assert [o.name for o in blob_objects(view)] == [KeyLayout().key(*blob_revision(db, "b"))]
    db.close()


def test_by_default_orphans_are_deleted_a_week_later(devswift, tmp_path, container_name,
                                                     swift_http, capsys):
    config = write_config(devswift, tmp_path, container_name, "cache", grace=None)
    db = ZODB.config.databaseFromURL(str(config))
    store_blobs(db, b=b"first")
    first = KeyLayout().key(*blob_revision(db, "b"))
    store_blobs(db, b=b"second")
    before = time.time()
    db.pack()
    db.close()
    scheduled = delete_at(swift_http, container_name, first)
    assert before + WEEK <= scheduled <= time.time() + WEEK + 1
    status, report = run(capsys, "gc", str(config), "--min-age", "0", "--grace-period", "8d")
    assert (status, report["grace_period"], report["orphans"], report["already_scheduled"],
            report["scheduled"], report["deleted"]) == (0, 8 * 24 * 3600, 1, 1, 0, 0)
    assert delete_at(swift_http, container_name, first) == scheduled, "not pushed later"
    assert main(["gc", str(config), "--min-age", "0"]) == 0  # the configured default
    assert "1 orphans (0.0 MiB), scheduled 0 for deletion in 7d (1 scheduled earlier)" in \
        capsys.readouterr().out


def test_orphaned_segments_are_scheduled_once(devswift, tmp_path, container_name,
                                              swift_container, swift_http):
    """The segments of a large upload whose manifest never came (or went) are
    scheduled for deletion too, and a later sweep leaves them as they are."""
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache", gc_grace_period=3600)
    db = ZODB.DB(storage)
    store_blobs(db, kept=b"kept")
    _, tid = blob_revision(db, "kept")
    name = KeyLayout().key(b"\0" * 7 + b"\xf1", tid)
    (tmp_path / "large").write_bytes(os.urandom(5 << 20))
    swift_container.upload(name, str(tmp_path / "large"))
    swift_container.delete(name, large=False)  # the manifest only
    segments = segments_of(swift_container, name)
    assert len(segments) == 5

    report = storage.collect_garbage()
    assert (report.orphan_segments, report.scheduled_segments, report.deleted_segments) == \
        (5, 5, 0)
    times = [delete_at(swift_http, swift_container.segment_container, s) for s in segments]
    assert None not in times
    report = storage.collect_garbage(grace_period=7200)
    assert (report.orphan_segments, report.scheduled_segments) == (5, 0)
    assert times == [delete_at(swift_http, swift_container.segment_container, s)
                     for s in segments], "not pushed later"
    db.close()


def test_a_deep_verification_sees_schedules_listings_do_not_show(
        devswift, tmp_path, container_name, swift_http, capsys):
    """A deletion scheduled without the mark in the listing (its listing update
    queued while a container server was down, or set by hand) escapes the
    listing; reading every object finds it, and --repair cancels it keeping
    the encryption metadata."""
    config = write_config(devswift, tmp_path, container_name, "cache")
    db = ZODB.config.databaseFromURL(str(config))
    store_blobs(db, b=b"referenced")
    name = KeyLayout().key(*blob_revision(db, "b"))
    db.close()
    metadata = {key: value for key, value in swift_http("head", container_name, name).items()
                if key.startswith("x-object-meta-")}
    assert metadata, "encrypted: the object has metadata to keep"
    swift_http("post", container_name, name,
               headers={**metadata, "X-Delete-At": str(int(time.time()) + 3600)})

    status, report = run(capsys, "verify", str(config))
    assert (status, report["scheduled"]) == (0, []), "no mark in the listing: not seen"
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["scheduled"]) == (1, [name])
    status, report = run(capsys, "verify", str(config), "--deep", "--repair")
    assert (status, report["repaired"]) == (0, [name])
    assert delete_at(swift_http, container_name, name) is None
    db = ZODB.config.databaseFromURL(str(write_config(devswift, tmp_path, container_name,
                                                      "fresh-cache")))
    with db.transaction() as conn, conn.root()["b"].open() as f:
        assert f.read() == b"referenced"
    db.close()


def test_undo_to_a_revision_scheduled_for_deletion_copies_no_schedule(
        devswift, tmp_path, container_name, view, swift_http):
    """In a restored database not repaired yet, undo brings back a revision
    whose object is scheduled for deletion: the copy made for the undoing
    transaction (a large object: its segments too) is not scheduled."""
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache", gc_grace_period=3600,
                            large_object_threshold=1 << 20, segment_size=256 << 10)
    db = ZODB.DB(storage)
    first = os.urandom(1_100_000)
    store_blobs(db, big=first, small=b"first")
    scheduled = [KeyLayout().key(*blob_revision(db, name)) for name in ("big", "small")]
    store_blobs(db, big=os.urandom(1_000_000), small=b"second")
    for name in scheduled:  # as the garbage collection before the restore did
        assert view.schedule_deletion(name, 3600) is None
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    copies = [KeyLayout().key(*blob_revision(db, name)) for name in ("big", "small")]
    assert set(copies).isdisjoint(scheduled)
    for name in copies:
        assert delete_at(swift_http, container_name, name) is None
        assert next(o for o in view.list(name)).marked_for_deletion is None
    segments = segments_of(view, copies[0])
    assert len(segments) == 5
    for segment in segments:
        assert delete_at(swift_http, view.segment_container, segment) is None
    with db.transaction() as conn, conn.root()["big"].open() as f:
        assert f.read() == first
    db.close()

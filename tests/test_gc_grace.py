"""Garbage collection with a grace period, against the real Swift: orphans are
scheduled for deletion (X-Delete-At, large objects' segments included), a
database restored from a backup older than the pack gets its blobs back with
``verify --repair``, and what nobody repairs is gone once the grace period
has passed."""

import base64
import json
import logging
import os
import shutil
import time

import pytest
import transaction
import ZODB.POSException
import ZODB
import ZODB.config
from swiftclient import client as swiftclient
from swiftclient.exceptions import ClientException
from ZODB.FileStorage import FileStorage

from conftest import (blob_objects, blob_revision, credentials_for, store_blobs, swift_config,
                      swift_storage)
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import NotFoundError, SwiftContainer
from zodb_swiftblobs.verify import referenced_revisions

HOUR = 3600  # a grace period nothing in a test outlasts, however slow the machine
SHORT = 3  # seconds: a grace period a test waits out, to see Swift delete
KEY = base64.b64encode(b"k" * 32).decode()
WEEK = 7 * 24 * 3600


@pytest.fixture(scope="module")
def faulty_swift(start_cluster):
    """A cluster of this module's own with fault injection in its proxy; each
    test leaves its fault rules cleared."""
    cluster = start_cluster("gc-grace-faults", faults=True)
    yield cluster
    cluster.stop()


def view_of(cluster, container_name):
    return SwiftContainer(credentials_for(cluster), container_name, encryption=None)


@pytest.fixture
def view(devswift, container_name):
    view = view_of(devswift, container_name)
    yield view
    view.close()


def raw_client(cluster):
    """A raw client, to see what Swift holds (headers, segments) as it is."""
    settings = cluster.settings()
    url, token = swiftclient.get_auth(settings.auth_url, settings.user, settings.key)
    return lambda method, container, name, **options: getattr(
        swiftclient, f"{method}_object")(url, token, container, name, **options)


@pytest.fixture
def swift_http(devswift):
    return raw_client(devswift)


def write_config(cluster, tmp_path, container_name, cache, grace=HOUR, extra=""):
    path = tmp_path / f"{cache}.conf"
    path.write_text(swift_config(
        cluster, container_name, tmp_path / cache,
        f"<filestorage>\n path {tmp_path / 'Data.fs'}\n</filestorage>",
        extra=f"encryption-key {KEY}\n large-object-threshold 1MB\n segment-size 256KB\n"
              f" {extra}", gc_grace_period=grace))
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


def schedules(swift_http, view, name):
    """The X-Delete-At of object *name* and of each of its segments (None:
    not scheduled)."""
    return [delete_at(swift_http, view.container, name)] + [
        delete_at(swift_http, view.segment_container, segment)
        for segment in segments_of(view, name)]


def restore(tmp_path):
    """Put last night's backup of Data.fs back in place."""
    os.remove(tmp_path / "Data.fs.index")
    shutil.copy(tmp_path / "backup.fs", tmp_path / "Data.fs")


def check_blobs(devswift, tmp_path, container_name, expected):
    """Every blob revision the database references is *expected*'s, read
    through an empty cache."""
    keys = ObjectLayout()
    db = ZODB.config.databaseFromURL(str(write_config(devswift, tmp_path, container_name,
                                                      "fresh-cache")))
    try:
        revisions = referenced_revisions(db.storage)
        assert {keys.object_name(r[:8], r[8:]) for r in revisions} == set(expected)
        for revision in revisions:
            with open(db.storage.loadBlob(revision[:8], revision[8:]), "rb") as f:
                assert f.read() == expected[keys.object_name(revision[:8], revision[8:])]
    finally:
        db.close()


class Site:
    """A database whose blob revisions are recorded as they are committed."""

    def __init__(self, config):
        self.config, self.layout, self.expected = config, ObjectLayout(), {}
        self.db = ZODB.config.databaseFromURL(str(config))

    def commit(self, **blobs):
        store_blobs(self.db, **blobs)
        for name, data in blobs.items():
            self.expected[self.object_name(name)] = data

    def object_name(self, name):
        return self.layout.object_name(*blob_revision(self.db, name))


def restored_site(devswift, tmp_path, container_name, **options):
    """A site packed (a grace period of an hour) after last night's backup,
    then restored from it: the backup's revisions of blobs "small" and "big"
    (large), replaced after the backup, are orphans the pack scheduled for
    deletion, referenced again; "late" (large), committed after the backup,
    is a genuine orphan.  Returns the configuration, the backup's revisions'
    object names, late's, and the blobs of the backup."""
    config = write_config(devswift, tmp_path, container_name, "cache", **options)
    site = Site(config)
    site.commit(small=os.urandom(2000), big=os.urandom(1_500_000))
    old = sorted(site.object_name(name) for name in ("small", "big"))
    site.db.close()
    shutil.copy(tmp_path / "Data.fs", tmp_path / "backup.fs")  # last night's backup
    backed_up = dict(site.expected)
    site.db = ZODB.config.databaseFromURL(str(config))
    site.commit(small=os.urandom(3000), big=os.urandom(1_200_000))
    site.commit(late=os.urandom(1_100_000))
    late = site.object_name("late")
    site.commit(late=b"replaced")
    site.db.pack()  # the mistake is made, the site packed: three revisions are orphans
    site.db.close()
    view = view_of(devswift, container_name)
    try:
        for name in old:
            assert None not in schedules(raw_client(devswift), view, name)
    finally:
        view.close()
    restore(tmp_path)
    return config, old, late, backed_up


def test_a_database_restored_from_a_backup_gets_its_blobs_back(
        devswift, tmp_path, container_name, view, swift_http, capsys):
    config, old, late, backed_up = restored_site(devswift, tmp_path, container_name)
    status, report = run(capsys, "verify", str(config))
    assert (status, report["ok"], report["missing"]) == (1, False, [])
    assert report["scheduled"] == old
    assert main(["verify", str(config)]) == 1
    assert "verify --repair cancels their deletion" in capsys.readouterr().out
    status, report = run(capsys, "verify", str(config), "--repair")
    assert (status, report["ok"], report["repaired"]) == (0, True, old)
    status, report = run(capsys, "verify", str(config))
    assert (status, report["scheduled"], report["repaired"]) == (0, [], [])
    for name in old:
        assert set(schedules(swift_http, view, name)) == {None}
        assert next(o for o in view.list(name)).marked_for_deletion is None
    stored = next(o for o in view.list(late))  # the genuine orphan stays scheduled
    assert stored.marked_for_deletion == delete_at(swift_http, container_name, late) \
        is not None, "listings show the schedule"

    site = Site(write_config(devswift, tmp_path, container_name, "cache", grace=SHORT))
    site.commit(fresh=os.urandom(1_100_000))  # a genuine orphan of the restored site
    fresh = site.object_name("fresh")
    site.commit(fresh=b"replaced")
    current = site.object_name("fresh")
    site.db.pack()
    site.db.close()
    segments = segments_of(view, fresh)
    assert len(segments) >= 4
    last = max(schedules(swift_http, view, fresh))
    while time.time() < last + 2:  # Swift answers 404 once X-Delete-At has passed
        time.sleep(0.5)
    deadline = time.monotonic() + 60
    while not gone(swift_http, container_name, fresh) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gone(swift_http, container_name, fresh), "the genuine orphan is gone"
    assert all(gone(swift_http, view.segment_container, segment) for segment in segments)
    check_blobs(devswift, tmp_path, container_name, backed_up | {current: b"replaced"})


def test_the_nightly_pack_after_a_restore_cancels_the_deletion_of_its_blobs(
        devswift, tmp_path, container_name, view, swift_http, capsys, caplog):
    """Nobody ran verify --repair after the restore: the next garbage
    collection cancels the deletion of the revisions the database references
    (segments too), and says so in one warning."""
    config, old, late, backed_up = restored_site(devswift, tmp_path, container_name)
    status, report = run(capsys, "gc", str(config), "--dry-run")
    assert (status, report["rescued"]) == (0, 2)
    assert all(None not in schedules(swift_http, view, name) for name in old), "a dry run"
    site = Site(config)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zodb_swiftblobs.gc"):
        site.db.pack()
    site.db.close()
    for name in old:
        assert set(schedules(swift_http, view, name)) == {None}
        assert next(o for o in view.list(name)).marked_for_deletion is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 revisions the database references" in warnings[0] \
        and "restored from a backup" in warnings[0]
    assert delete_at(swift_http, container_name, late) is not None, "an orphan stays scheduled"
    status, report = run(capsys, "gc", str(config), "--min-age", "0")
    assert (status, report["rescued"]) == (0, 0)
    status, report = run(capsys, "verify", str(config))
    assert (status, report["scheduled"]) == (0, [])
    check_blobs(devswift, tmp_path, container_name, backed_up)


@pytest.mark.parametrize("refused", ["manifest", "third segment"])
def test_a_schedule_cut_short_shows_on_the_manifest_and_is_cancelled_whole(
        faulty_swift, tmp_path, container_name, capsys, refused):
    """Swift refuses a POST of the garbage collection that schedules a large
    object's deletion (a process killed there leaves the same): whatever part
    was scheduled shows on the manifest, so that after a restore verify
    reports it and --repair cancels every part, segments included."""
    config = write_config(faulty_swift, tmp_path, container_name, "cache", extra="deadline 2")
    view, swift_http = view_of(faulty_swift, container_name), raw_client(faulty_swift)
    site = Site(config)
    site.commit(big=os.urandom(1_500_000))
    old = site.object_name("big")
    shutil.copy(tmp_path / "Data.fs", tmp_path / "backup.fs")
    backed_up = dict(site.expected)
    site.commit(big=os.urandom(1_200_000))
    segments = segments_of(view, old)
    assert len(segments) == 6
    path = f"/{container_name}/{old}" if refused == "manifest" else f"/{segments[2]}"
    faulty_swift.inject_faults({"method": "POST", "path": path, "status": 503,
                                "times": 100000})
    try:
        with pytest.raises(ZODB.POSException.StorageError):
            site.db.pack()
    finally:
        faulty_swift.inject_faults()
        site.db.close()
    scheduled = [at is not None for at in schedules(swift_http, view, old)]
    assert scheduled == {"manifest": [False] * 7,
                         "third segment": [True] * 3 + [False] * 4}[refused]
    restore(tmp_path)
    status, report = run(capsys, "verify", str(config), "--deep", "--repair")
    reported = [old] if any(scheduled) else []
    assert (status, report["scheduled"], report["repaired"]) == (0, reported, reported)
    assert set(schedules(swift_http, view, old)) == {None}
    view.close()
    check_blobs(faulty_swift, tmp_path, container_name, backed_up)


def test_verify_sees_segments_scheduled_under_a_manifest_that_is_not(
        devswift, tmp_path, container_name, view, swift_http, capsys):
    """Segments scheduled for deletion under a manifest that is not (left by
    a garbage collection of an earlier release, which scheduled segments
    first, cut short) are found, and --repair cancels their deletion."""
    config = write_config(devswift, tmp_path, container_name, "cache")
    site = Site(config)
    site.commit(big=os.urandom(1_100_000))
    name = site.object_name("big")
    site.db.close()
    for segment in segments_of(view, name)[:2]:
        assert view.schedule_deletion(segment, HOUR, container=view.segment_container) is None
    status, report = run(capsys, "verify", str(config))
    assert (status, report["scheduled"]) == (1, [name])
    status, report = run(capsys, "verify", str(config), "--deep", "--repair")
    assert (status, report["scheduled"], report["repaired"]) == (0, [name], [name])
    assert set(schedules(swift_http, view, name)) == {None}
    check_blobs(devswift, tmp_path, container_name, site.expected)


def test_a_grace_period_of_zero_deletes_at_once(devswift, tmp_path, container_name, view):
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache", gc_grace_period=0)
    db = ZODB.DB(storage)
    store_blobs(db, b=b"first")
    first = ObjectLayout().object_name(*blob_revision(db, "b"))
    store_blobs(db, b=b"second")
    db.pack()
    with pytest.raises(NotFoundError):
        view.head(first)
    assert [o.name for o in blob_objects(view)] == [
        ObjectLayout().object_name(*blob_revision(db, "b"))]
    db.close()


def test_by_default_orphans_are_deleted_a_week_later(devswift, tmp_path, container_name,
                                                     swift_http, capsys):
    config = write_config(devswift, tmp_path, container_name, "cache", grace=None)
    db = ZODB.config.databaseFromURL(str(config))
    store_blobs(db, b=b"first")
    first = ObjectLayout().object_name(*blob_revision(db, "b"))
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
    name = ObjectLayout().object_name(b"\0" * 7 + b"\xf1", tid)
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
    name = ObjectLayout().object_name(*blob_revision(db, "b"))
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
    scheduled = [ObjectLayout().object_name(*blob_revision(db, name)) for name in ("big", "small")]
    store_blobs(db, big=os.urandom(1_000_000), small=b"second")
    for name in scheduled:  # as the garbage collection before the restore did
        assert view.schedule_deletion(name, 3600) is None
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    copies = [ObjectLayout().object_name(*blob_revision(db, name)) for name in ("big", "small")]
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

"""SwiftBlobStorage under real faults: Swift's servers stopped, paused or
answering with errors, and the application killed in the middle of a commit.

Each test checks that no committed blob is lost and no uncommitted one is
visible.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import ZODB
import ZODB.config
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, z64

from conftest import (blob_objects, blob_revision, child_environment, credentials_for,
                      in_background, logged, mint_token, read, sqlite_relstorage,
                      store_blobs, swift_config, swift_storage, wait_for, wait_for_logged)
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs import SwiftStorageError, SwiftTransientError
from zodb_swiftblobs.swift import (UPLOAD_ATTEMPTS, ChecksumMismatchError, Credentials,
                                   NotFoundError, SwiftContainer, SwiftUnavailableError)

DEADLINE = 2.0
SLACK = 2.5  # seconds a failure may take beyond its deadline on a loaded machine


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster of this module's own with fault injection in its proxy; each
    test leaves its servers running and its fault rules cleared."""
    cluster = start_cluster("commit-faults", faults=True)
    yield cluster
    cluster.stop()


@pytest.fixture
def view(cluster, container_name):
    view = SwiftContainer(credentials_for(cluster), container_name, deadline=30)
    yield view
    view.close()


@contextlib.contextmanager
def server_fault(cluster, server, mode):
    """Stop or pause *server* (*mode*: "stopped" or "paused") for the block."""
    if mode == "stopped":
        cluster.stop_server(server)
    else:
        cluster.pause_server(server)
    try:
        yield
    finally:
        if mode == "stopped":
            cluster.start_server(server)
        else:
            cluster.resume_server(server)


@contextlib.contextmanager
def injected(cluster, *rules):
    cluster.inject_faults(*rules)
    try:
        yield
    finally:
        cluster.inject_faults()


def open_db(cluster, tmp_path, container, *, deadline=DEADLINE, timeout=1, **options):
    storage = swift_storage(cluster, FileStorage(str(tmp_path / "Data.fs")), container,
                            tmp_path / "cache", deadline=deadline, timeout=timeout, **options)
    return ZODB.DB(storage), storage


def blob_bytes(db, name):
    with db.transaction() as conn:
        with conn.root()[name].open() as f:
            return f.read()


def stage_new_blob(storage, txn, template_oid, template_serial, path, data):
    """Store a new blob object in *txn* (a blob record like the template's)."""
    with open(path, "wb") as f:
        f.write(data)
    oid = storage.new_oid()
    storage.storeBlob(oid, z64, storage.loadSerial(template_oid, template_serial), str(path),
                      "", txn)
    return oid


def staged_files(storage):
    return [name for name in os.listdir(storage.temporaryDirectory())
            if name.startswith("commit-")]


@pytest.mark.parametrize("mode", ["stopped", "paused"])
def test_proxy_lost_during_the_vote(cluster, tmp_path, container_name, view, mode):
    """Small blobs upload during the vote (FileStorage begins there): with the
    proxy gone, the vote and the abort fail within their deadlines, and
    nothing of the transaction stays but orphans for garbage collection."""
    db, storage = open_db(cluster, tmp_path, container_name)
    store_blobs(db, kept=b"committed before")
    kept_oid, kept_serial = blob_revision(db, "kept")
    transactions = len(list(storage.iterator()))
    data_fs_size = os.path.getsize(tmp_path / "Data.fs")
    keys = ObjectLayout()

    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    oids = [stage_new_blob(storage, txn, kept_oid, kept_serial, tmp_path / name,
                           name.encode() * 5000)
            for name in ("a", "b")]
    with server_fault(cluster, "proxy", mode):
        started = time.monotonic()
        with pytest.raises(SwiftTransientError) as info:
            storage.tpc_vote(txn)
        voted = time.monotonic() - started
        names = [keys.object_name(oid, storage.base._tid) for oid in oids]
        storage.tpc_abort(txn)
        aborted = time.monotonic() - started - voted
        assert "gave up" in str(info.value) and not isinstance(info.value, POSKeyError)
        assert voted < DEADLINE + SLACK, f"the vote failed after {voted:.1f}s"
        assert aborted < DEADLINE + SLACK, f"the abort took {aborted:.1f}s"
        assert staged_files(storage) == []
        assert len(list(storage.iterator())) == transactions, "the base keeps no trace"
        assert os.path.getsize(tmp_path / "Data.fs") == data_fs_size
        assert blob_bytes(db, "kept") == b"committed before", "cached: served while down"

    if mode == "paused":
        # The resumed proxy carries out the uploads the client gave up waiting
        # for: they land now, as orphans.  Wait until they are logged.
        for name in names:
            wait_for_logged(cluster, f"PUT /v1/AUTH_test/{container_name}/{name} ")
    orphans = {o.name for o in blob_objects(view)} & set(names)
    store_blobs(db, after=b"committed after the proxy returned")
    assert blob_bytes(db, "after") == b"committed after the proxy returned"
    assert storage.collect_garbage().deleted == len(orphans)
    assert {o.name for o in blob_objects(view)} == {keys.object_name(*blob_revision(db, "kept")),
                                                   keys.object_name(*blob_revision(db, "after"))}
    db.close()


def attempts(message):
    """The number of attempts a "gave up after N attempt(s)" message reports."""
    return int(re.search(r"gave up after (\d+) attempt", message).group(1))


def test_proxy_down_during_a_relstorage_vote(cluster, tmp_path, container_name, view):
    """RelStorage learns the transaction id, and uploads, at the end of its vote."""
    storage = swift_storage(cluster, sqlite_relstorage(tmp_path / "db", True), container_name,
                            tmp_path / "cache", deadline=DEADLINE, timeout=1)
    db = ZODB.DB(storage)
    store_blobs(db, kept=b"committed before")
    before = store_blobs(db, other=b"other")
    with server_fault(cluster, "proxy", "stopped"):
        started = time.monotonic()
        with pytest.raises(SwiftTransientError):
            store_blobs(db, kept=b"lost", new=b"lost too")
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE + SLACK, f"the commit failed after {elapsed:.1f}s"
        assert staged_files(storage) == []
    fresh = sqlite_relstorage(tmp_path / "db", True)
    assert fresh.lastTransaction() == before, "the base keeps no trace"
    fresh.close()
    assert blob_bytes(db, "kept") == b"committed before"
    store_blobs(db, kept=b"after")
    assert blob_bytes(db, "kept") == b"after"
    db.close()


def test_segments_a_failed_large_upload_could_not_remove_are_collected(
        cluster, tmp_path, container_name, view):
    db, storage = open_db(cluster, tmp_path, container_name,
                          large_object_threshold=1 << 20, segment_size=256 << 10)
    kept = os.urandom(2 << 20)
    store_blobs(db, kept=kept)
    kept_name = ObjectLayout().object_name(*blob_revision(db, "kept"))
    manifest_refused = {"method": "PUT", "path": f"/{container_name}/", "status": 503,
                        "times": 1000}
    cleanup_refused = {"method": "DELETE", "status": 503, "times": 1000}  # bulk's too
    with injected(cluster, manifest_refused, cleanup_refused):
        with pytest.raises(SwiftTransientError):
            store_blobs(db, failed=os.urandom(3 << 20))
        # The proxy may still carry out a request whose client gave up waiting
        # (a bulk delete): end it before the faults are cleared.
        cluster.kill_server("proxy")
    cluster.start_server("proxy")
    segments = SwiftContainer(credentials_for(cluster), f"{container_name}_segments")
    left = [o.name for o in segments.list() if not o.name.startswith(f"{kept_name}/")]
    assert len(left) == 12, "the failed upload's segments were left behind"

    store_blobs(db, later=b"a later transaction")
    report = storage.collect_garbage()
    assert (report.orphan_segments, report.deleted_segments) == (12, 12)
    groups = {o.name.rsplit("/", 1)[0] + "/" for o in segments.list()}
    assert groups == view.segment_groups(kept_name), "only the kept object's segments stay"
    segments.close()
    storage.cache.clear()
    assert blob_bytes(db, "kept") == kept
    db.close()


@pytest.mark.parametrize("outage", ["short", "beyond the deadline"])
def test_object_server_down_while_a_manifest_is_checked(cluster, tmp_path, container_name,
                                                       view, outage):
    """Swift checks (HEAD) each segment of a large object's manifest, and answers
    400 when a check fails: with the object server down at that moment, the
    manifest is sent again within the deadline, and a failure is transient."""
    deadline = 30 if outage == "short" else 6
    db, storage = open_db(cluster, tmp_path, container_name, deadline=deadline, timeout=30,
                          large_object_threshold=1 << 20, segment_size=256 << 10)
    store_blobs(db, kept=b"kept")
    release = tmp_path / "release"
    segments = f"/{container_name}_segments/"
    # Every check of a segment waits until the object server is down.
    hold = {"method": "HEAD", "path": segments, "hold_until": str(release), "times": 10000}
    manifest_puts = (f"PUT /v1/AUTH_test/{container_name}/", "multipart-manifest")
    data = os.urandom(3 << 20)
    with injected(cluster, hold):
        _, join = in_background(store_blobs, db, large=data)
        wait_for(lambda: [r for r in cluster.faults_applied() if segments in r["path"]],
                 "the manifest's check of a segment to be held")
        with server_fault(cluster, "object", "stopped"):
            release.touch()
            if outage == "short":
                wait_for_logged(cluster, *manifest_puts, " 400 ")
            else:
                with pytest.raises(SwiftTransientError, match="segments unavailable"):
                    join()
        if outage == "short":
            join()
    wait_for_logged(cluster, "HEAD ", segments, " 503 ")  # a check met the server down
    wait_for_logged(cluster, *manifest_puts, " 400 ")  # and Swift refused the manifest
    if outage == "short":
        storage.cache.clear()
        assert blob_bytes(db, "large") == data
    else:
        with db.transaction() as conn:
            assert "large" not in conn.root()
        store_blobs(db, kept=b"after the outage")
        assert blob_bytes(db, "kept") == b"after the outage"
    db.close()


def test_queued_uploads_are_cancelled_after_a_failure(cluster, tmp_path, container_name,
                                                      caplog):
    concurrency = 2
    db, storage = open_db(cluster, tmp_path, container_name, upload_concurrency=concurrency)
    store_blobs(db, kept=b"kept")
    kept = blob_revision(db, "kept")
    refused = {"method": "PUT", "path": f"/{container_name}/", "status": 503, "times": 10000}
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    with injected(cluster, refused):
        for index in range(12):
            stage_new_blob(storage, txn, *kept, tmp_path / f"b{index}", b"x" * 1000)
        with pytest.raises(SwiftTransientError):
            storage.tpc_vote(txn)
        storage.tpc_abort(txn)
    reached_swift = {r["path"] for r in cluster.faults_applied()
                     if f"/{container_name}/" in r["path"]}
    (summary,) = [record.getMessage() for record in caplog.records
                  if "blob uploads failed" in record.getMessage()]
    failed, total, cancelled = map(int, re.match(
        r"(\d+) of (\d+) blob uploads failed \((\d+) cancelled", summary).groups())
    assert (failed, total) == (len(reached_swift), 12)
    assert failed + cancelled == 12, "every upload that was not cancelled ran and failed"
    # The first two run; when they fail, each worker may have taken the next
    # one before the vote cancels the rest.
    assert len(reached_swift) <= 2 * concurrency, f"{len(reached_swift)} uploads were tried"
    assert staged_files(storage) == []
    db.close()


def test_cold_read_with_the_proxy_down(cluster, tmp_path, container_name):
    db, storage = open_db(cluster, tmp_path, container_name)
    store_blobs(db, cached=b"in the cache", cold=b"only in Swift")
    cold = blob_revision(db, "cold")
    storage.cache.discard(*cold)
    with server_fault(cluster, "proxy", "stopped"):
        assert blob_bytes(db, "cached") == b"in the cache"
        started = time.monotonic()
        with pytest.raises(SwiftTransientError) as info:
            storage.loadBlob(*cold)
        elapsed = time.monotonic() - started
        assert not isinstance(info.value, POSKeyError)
        assert elapsed < DEADLINE + SLACK, f"gave up after {elapsed:.1f}s"
        assert not os.path.exists(storage.cache.path(*cold))
    assert blob_bytes(db, "cold") == b"only in Swift"
    db.close()


def test_object_server_down_fails_the_commit_transiently(cluster, tmp_path, container_name,
                                                        view):
    db, storage = open_db(cluster, tmp_path, container_name)
    store_blobs(db, kept=b"kept")
    with server_fault(cluster, "object", "stopped"):
        with pytest.raises(SwiftTransientError, match="503"):
            store_blobs(db, kept=b"lost", new=b"lost too")
        assert staged_files(storage) == []
    assert blob_bytes(db, "kept") == b"kept"
    store_blobs(db, kept=b"second")
    assert blob_bytes(db, "kept") == b"second"
    db.close()


def test_container_server_down(cluster, tmp_path, container_name, view):
    """Objects are written and read without the container server (the proxy
    knows the container from its cache, and Swift records the listing update
    for later); listing, and so garbage collection, fails transiently and
    deletes nothing."""
    if not cluster.state["ports"].get("memcached"):
        pytest.skip("needs memcached (apt-get install memcached): without it Swift's proxy "
                    "caches no container information and asks the container server on "
                    "every write, so commits fail while it is down")
    db, storage = open_db(cluster, tmp_path, container_name)
    store_blobs(db, kept=b"kept")
    orphan = storage.object_layout.object_name(p64(0xDEAD), blob_revision(db, "kept")[1])
    (tmp_path / "orphan").write_bytes(b"a revision the database does not have")
    view.upload(orphan, str(tmp_path / "orphan"))
    with server_fault(cluster, "container", "stopped"):
        store_blobs(db, kept=b"written while the container server is down")
        storage.cache.clear()
        assert blob_bytes(db, "kept") == b"written while the container server is down"
        with pytest.raises(SwiftTransientError, match="503"):
            storage.collect_garbage()
        assert view.head(orphan), "the failed garbage collection deleted nothing"
    assert storage.collect_garbage().deleted == 1, "the orphan was garbage all along"
    with pytest.raises(NotFoundError):
        view.head(orphan)
    storage.cache.clear()
    assert blob_bytes(db, "kept") == b"written while the container server is down"
    db.close()


@pytest.mark.parametrize("status", [429, 498])
def test_rate_limiting_is_waited_out(cluster, tmp_path, container_name, status):
    db, storage = open_db(cluster, tmp_path, container_name, deadline=10)
    store_blobs(db, kept=b"kept")
    rule = {"method": "PUT", "path": f"/{container_name}/", "status": status,
            "retry_after": 1, "times": 2}
    with injected(cluster, rule):
        started = time.monotonic()
        store_blobs(db, kept=b"after two refusals")
        elapsed = time.monotonic() - started
    assert len([r for r in cluster.faults_applied()
                if f"/{container_name}/" in r["path"]]) == 2, "refused twice, sent a third time"
    assert elapsed >= 2, "Retry-After was not honoured"
    storage.cache.clear()
    assert blob_bytes(db, "kept") == b"after two refusals"
    name = storage.object_layout.object_name(*blob_revision(db, "kept"))
    with injected(cluster, {**rule, "method": "GET", "times": 1000}):
        with pytest.raises(SwiftUnavailableError, match=str(status)):
            storage.swift_container.download(name, str(tmp_path / "copy"), deadline=2)
    db.close()


def test_bytes_damaged_on_the_way_are_sent_again(cluster, tmp_path, container_name, view):
    db, storage = open_db(cluster, tmp_path, container_name)
    rule = {"method": "PUT", "path": f"/{container_name}/", "flip_body": True, "times": 1}

    def sent(name):
        """The PUTs of object *name* whose body the proxy damaged."""
        return [r for r in cluster.faults_applied() if r["path"].endswith(f"/{name}")]

    with injected(cluster, rule):
        store_blobs(db, damaged=os.urandom(50_000))
    oid, serial = blob_revision(db, "damaged")
    name = ObjectLayout().object_name(oid, serial)
    assert len(sent(name)) == 1, "damaged once"
    assert len(wait_for_logged(cluster, f"PUT /v1/AUTH_test/{container_name}/{name} ",
                               count=2)) == 2, "sent again once"
    expected = read(storage.loadBlob(oid, serial))
    storage.cache.clear()
    assert read(storage.loadBlob(oid, serial)) == expected
    with injected(cluster, {**rule, "times": 1000}):
        with pytest.raises(SwiftStorageError, match="MD5"):
            store_blobs(db, damaged=b"never stored intact" * 1000)
    attempts = [r for r in cluster.faults_applied()
                if f"/{container_name}/{oid.hex()}/" in r["path"] and name not in r["path"]]
    assert len(attempts) == UPLOAD_ATTEMPTS and len({r["path"] for r in attempts}) == 1
    names = [o.name for o in blob_objects(view)]
    assert names == [name], "the damaged objects were deleted"
    with pytest.raises(ChecksumMismatchError):
        with injected(cluster, {**rule, "times": 1000}):
            (tmp_path / "f").write_bytes(b"f" * 1000)
            view.upload("direct", str(tmp_path / "f"))
    assert len(sent("direct")) == UPLOAD_ATTEMPTS
    db.close()


def test_token_expiring_during_a_long_upload(cluster, tmp_path, container_name, caplog):
    """A large object's segments outlive the token they started with: the
    token is renewed from the credentials, or, with a pre-authenticated token
    alone, the upload fails clearly (its segments stay: nothing can delete
    them without a valid token, and a warning says so)."""
    settings = cluster.settings()
    size, segment = 12 << 20, 1 << 20
    (tmp_path / "big").write_bytes(os.urandom(size))
    segments = SwiftContainer(credentials_for(cluster), f"{container_name}_segments")
    segments.info()  # authenticated before the count below

    def upload_with(credentials, name):
        container = SwiftContainer(credentials, container_name, deadline=60, timeout=10,
                                   large_object_threshold=4 << 20, segment_size=segment,
                                   segment_concurrency=1)
        container.ensure_container()
        failure = []

        def run():
            try:
                container.upload(name, str(tmp_path / "big"))
            except Exception as exc:
                failure.append(exc)
        thread = threading.Thread(target=run)
        container.info()
        with server_fault(cluster, "object", "paused"):
            thread.start()  # its first segment is sent, and waits for the object server
            time.sleep(5)  # the token expires meanwhile (3 to 4 s: Fernet counts whole seconds)
        thread.join()
        return container, failure

    renewable = Credentials(auth_url=settings.auth_url, user=settings.user, key=settings.key,
                            preauth_url=settings.storage_url,
                            preauth_token=mint_token(cluster, age=cluster.token_life - 3))
    auths = len(logged(cluster, "GET /auth/v1.0"))
    container, failure = upload_with(renewable, "renewed")
    assert failure == []
    assert len(wait_for_logged(cluster, "GET /auth/v1.0", count=auths + 1)) == auths + 1
    container.download("renewed", str(tmp_path / "copy"))
    assert read(tmp_path / "copy") == read(tmp_path / "big")
    container.close()

    token_only = Credentials(preauth_url=settings.storage_url,
                             preauth_token=mint_token(cluster, age=cluster.token_life - 3))
    container, failure = upload_with(token_only, "expired")
    assert len(failure) == 1 and "expired" in str(failure[0])
    assert token_only.preauth_token not in str(failure[0])
    assert "could not remove the segments of failed upload 'expired'" in caplog.text
    assert token_only.preauth_token not in caplog.text
    segments.close()
    container.close()


CHILD = r"""
import os, signal, sys
sys.path.insert(0, {tests!r})
import ZODB
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from conftest import sqlite_relstorage
from zodb_swiftblobs.storage import SwiftBlobStorage

def base():
    if {kind!r} == "FileStorage":
        return FileStorage(os.path.join({directory!r}, "Data.fs"))
    return sqlite_relstorage(os.path.join({directory!r}, "db"), True)

storage = SwiftBlobStorage(base(), container={container!r},
                           cache_dir=os.path.join({directory!r}, "cache"),
                           auth_url={auth_url!r}, user={user!r}, key={key!r})
db = ZODB.DB(storage)
with db.transaction() as conn:
    conn.root()["kept"] = Blob(b"committed")
with db.transaction() as conn:
    blob = conn.root()["kept"]
    blob._p_activate()
    oid, serial = blob._p_oid, blob._p_serial
txn = TransactionMetaData()
storage.tpc_begin(txn)
with open(os.path.join({directory!r}, "doomed"), "wb") as f:
    f.write(b"voted, never finished")
storage.storeBlob(oid, serial, storage.loadSerial(oid, serial),
                  os.path.join({directory!r}, "doomed"), "", txn)
storage.tpc_vote(txn)
print(oid.hex(), serial.hex(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kind", ["FileStorage", "RelStorage"])
def test_killed_between_vote_and_finish(cluster, tmp_path, container_name, view, kind):
    settings = cluster.settings()
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(
            tests=os.path.dirname(__file__), kind=kind, directory=str(tmp_path),
            container=container_name, auth_url=settings.auth_url, user=settings.user,
            key=settings.key)],
        capture_output=True, text=True, env=child_environment(), timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    oid, serial = (bytes.fromhex(part) for part in child.stdout.split())
    keys = ObjectLayout()
    names = {o.name for o in blob_objects(view)}
    assert keys.object_name(oid, serial) in names and len(names) == 2, "the vote uploaded the blob"
    (voted,) = names - {keys.object_name(oid, serial)}
    _, voted_tid = keys.parse(voted)
    tmp = tmp_path / "cache" / "tmp"
    assert [n for n in os.listdir(tmp) if n.startswith("commit-")], "left staged"

    base = FileStorage(str(tmp_path / "Data.fs")) if kind == "FileStorage" else \
        sqlite_relstorage(tmp_path / "db", True)
    storage = swift_storage(cluster, base, container_name, tmp_path / "cache")
    assert [n for n in os.listdir(tmp) if n.startswith("commit-")] == [], "swept at open"
    db = ZODB.DB(storage)
    with pytest.raises(POSKeyError):
        storage.loadSerial(oid, voted_tid)  # the killed transaction is not committed
    assert blob_revision(db, "kept") == (oid, serial)
    storage.cache.clear()
    assert blob_bytes(db, "kept") == b"committed"
    store_blobs(db, later=b"a later transaction")
    report = storage.collect_garbage()
    assert report.deleted == 1
    assert {o.name for o in blob_objects(view)} == {keys.object_name(oid, serial),
                                                    keys.object_name(*blob_revision(db, "later"))}
    db.close()


def test_opening_keeps_the_staged_files_of_live_processes(cluster, tmp_path, container_name):
    first = swift_storage(cluster, FileStorage(str(tmp_path / "a.fs")), container_name,
                          tmp_path / "cache")
    db = ZODB.DB(first)
    store_blobs(db, kept=b"kept")
    txn = TransactionMetaData()
    first.tpc_begin(txn)
    stage_new_blob(first, txn, *blob_revision(db, "kept"), tmp_path / "s", b"staged")
    assert len(staged_files(first)) == 1
    second = swift_storage(cluster, FileStorage(str(tmp_path / "a.fs"), read_only=True),
                           container_name, tmp_path / "cache")
    assert len(staged_files(first)) == 1, "a live process's staged file stays"
    first.tpc_vote(txn)
    first.tpc_finish(txn)
    second.close()
    db.close()


def wait_for_lines(path, count, timeout=60.0):
    """Wait until the file *path* has *count* lines (generous: a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout:.0f}s")


def test_verify_looks_up_what_a_lagging_listing_lacks(cluster, tmp_path, container_name,
                                                      view, capsys):
    """Blobs committed while the container server is down are in Swift, but
    listed only once Swift's object updater has run (the embedded Swift runs
    none): verify finds them by a HEAD, reports nothing missing, and says
    that the listing lags.  The uploads are held once the proxy has looked the
    container up, the container server is stopped, then they go on."""
    config = tmp_path / "zodb.conf"
    config.write_text(swift_config(cluster, container_name, tmp_path / "cache",
                                   f"<filestorage>\n path {tmp_path / 'Data.fs'}\n"
                                   "</filestorage>"))
    db = ZODB.config.databaseFromURL(str(config))
    store_blobs(db, listed=b"committed with every server up")
    release, failures = tmp_path / "release", []

    def commit():
        try:
            store_blobs(db, a=b"a" * 100, b=b"b" * 200, c=b"c" * 300)
        except Exception as exc:  # re-raised below
            failures.append(exc)
    hold = {"method": "PUT", "path": f"/{container_name}/", "hold_body": str(release),
            "times": 3}
    with injected(cluster, hold):
        committer = threading.Thread(target=commit)
        committer.start()
        wait_for_lines(tmp_path / "release.held", 3)
        with server_fault(cluster, "container", "stopped"):
            release.touch()
            committer.join(120)
    assert not committer.is_alive() and failures == []
    unlisted = {ObjectLayout().object_name(*blob_revision(db, name)) for name in "abc"}
    db.close()
    assert unlisted.isdisjoint(o.name for o in blob_objects(view)), "the listing lags"

    status = main(["verify", str(config), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (status, report["ok"], report["missing"]) == (0, True, [])
    assert (report["referenced"], report["present"], report["listing_lag"]) == (4, 4, 3)
    assert main(["verify", str(config), "--deep"]) == 0
    output = capsys.readouterr().out
    assert "listing lags: 3 objects" in output and "all is well" in output

"""SwiftBlobStorage's own behaviour, against the real local Swift."""

import contextlib
import os
import threading
import time
import uuid

import pytest
import transaction
import ZODB
from ZODB.blob import Blob, BlobStorage
from ZODB.Connection import TransactionMetaData
from ZODB.DemoStorage import DemoStorage
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import POSKeyError
from ZODB.serialize import referencesf
from ZODB.utils import p64, u64

from conftest import blob_objects, credentials_for, swift_storage, wait_for
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs import SwiftBlobStorage, SwiftStorageError, SwiftTransientError
from zodb_swiftblobs.swift import SwiftContainer


def wrap(cluster, base, tmp_path, container, **options):
    return swift_storage(cluster, base, container, tmp_path / "cache", **options)


@pytest.fixture
def swift_view(devswift, container_name):
    """The test's container seen directly through the access layer."""
    view = SwiftContainer(credentials_for(devswift), container_name)
    yield view
    view.close()


def names(view):
    return [o.name for o in blob_objects(view)]


def commit_blob(db, key, data):
    with db.transaction() as conn:
        if key not in conn.root():
            conn.root()[key] = Blob()
        with conn.root()[key].open("w") as f:
            f.write(data)
    with db.transaction() as conn:
        blob = conn.root()[key]
        blob._p_activate()
        return blob._p_oid, blob._p_serial


def read_blob(db, key):
    with db.transaction() as conn:
        with conn.root()[key].open() as f:
            return f.read()


def store_new_revision(storage, oid, serial, tmp_path, data, txn=None):
    """Begin a transaction (unless given) and store *data* as a new revision of blob *oid*."""
    if txn is None:
        txn = TransactionMetaData()
        storage.tpc_begin(txn)
    (tmp_path / "new").write_bytes(data)
    storage.storeBlob(oid, serial, storage.loadSerial(oid, serial), str(tmp_path / "new"),
                      "", txn)
    return txn


@pytest.fixture
def file_storage_db(devswift, tmp_path, container_name):
    storage = wrap(devswift, FileStorage(str(tmp_path / "Data.fs")), tmp_path, container_name)
    db = ZODB.DB(storage)
    yield db, storage
    db.close()


def test_commit_puts_each_revision_in_swift_under_its_tid(file_storage_db, swift_view):
    db, storage = file_storage_db
    oid, first = commit_blob(db, "b", b"one")
    _, second = commit_blob(db, "b", b"two")
    keys = ObjectLayout()
    assert names(swift_view) == [keys.object_name(oid, first), keys.object_name(oid, second)]
    assert read_blob(db, "b") == b"two"
    with open(storage.loadBlob(oid, first), "rb") as f:
        assert f.read() == b"one"
    assert os.listdir(storage.temporaryDirectory()) == [], "staging is cleaned up"


def test_cold_cache_downloads_and_counts(devswift, tmp_path, container_name):
    base_path = str(tmp_path / "Data.fs")
    storage = wrap(devswift, FileStorage(base_path), tmp_path, container_name)
    db = ZODB.DB(storage)
    oid, serial = commit_blob(db, "b", b"x" * 100_000)
    db.close()
    cold = wrap(devswift, FileStorage(base_path), tmp_path / "other", container_name)
    db = ZODB.DB(cold)
    assert read_blob(db, "b") == b"x" * 100_000
    assert read_blob(db, "b") == b"x" * 100_000
    stats = cold.cache_stats()
    assert stats["misses"] == 1 and stats["bytes_downloaded"] == 100_000
    assert stats["hits"] >= 1
    db.close()


def test_staged_blob_is_visible_only_to_its_own_transaction(file_storage_db, tmp_path):
    db, storage = file_storage_db
    oid, serial = commit_blob(db, "b", b"committed")
    txn = store_new_revision(storage, oid, serial, tmp_path, b"uncommitted")
    with open(storage.loadBlob(oid, serial), "rb") as f:
        assert f.read() == b"committed", "another reader of the committed serial"
    seen = {}
    reader = threading.Thread(target=lambda: seen.update(data=read_blob(db, "b")))
    reader.start()
    reader.join()
    assert seen["data"] == b"committed"
    storage.tpc_abort(txn)
    assert read_blob(db, "b") == b"committed"


@pytest.fixture
def fault_cluster(start_cluster):
    """A cluster of the test's own, whose servers the test may stop."""
    cluster = start_cluster(f"faults-{uuid.uuid4().hex[:6]}")
    yield cluster
    cluster.stop()


@contextlib.contextmanager
def proxy_down(cluster):
    cluster.stop_server("proxy")
    try:
        yield
    finally:
        cluster.start_server("proxy")


def test_failed_upload_aborts_the_transaction_cleanly(fault_cluster, tmp_path,
                                                      container_name):
    storage = wrap(fault_cluster, FileStorage(str(tmp_path / "Data.fs")), tmp_path,
                   container_name, deadline=2, timeout=1)
    db = ZODB.DB(storage)
    commit_blob(db, "b", b"before")
    last = storage.lastTransaction()
    with proxy_down(fault_cluster):
        with pytest.raises(SwiftTransientError):
            commit_blob(db, "b", b"lost")
    assert storage.lastTransaction() == last, "the base keeps no trace"
    assert os.listdir(storage.temporaryDirectory()) == []
    assert read_blob(db, "b") == b"before"
    commit_blob(db, "b", b"after")
    assert read_blob(db, "b") == b"after"
    db.close()


def test_abort_after_vote_deletes_what_was_uploaded(file_storage_db, swift_view, tmp_path):
    db, storage = file_storage_db
    oid, serial = commit_blob(db, "b", b"committed")
    before = names(swift_view)
    txn = store_new_revision(storage, oid, serial, tmp_path, b"doomed")
    storage.tpc_vote(txn)
    assert len(names(swift_view)) == len(before) + 1
    storage.tpc_abort(txn)
    assert names(swift_view) == before
    assert os.listdir(storage.temporaryDirectory()) == []


def test_undo_copies_the_old_revision_inside_swift(file_storage_db, swift_view):
    db, storage = file_storage_db
    oid, first = commit_blob(db, "b", b"first")
    commit_blob(db, "b", b"second")
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    assert read_blob(db, "b") == b"first"
    undo_tid = storage.lastTransaction()
    assert ObjectLayout().object_name(oid, undo_tid) in names(swift_view)
    copied = swift_view.head(ObjectLayout().object_name(oid, undo_tid))
    assert copied.md5 == swift_view.head(ObjectLayout().object_name(oid, first)).md5


def test_copy_transactions_from_a_blob_directory_lands_blobs_in_swift(
        devswift, tmp_path, container_name, swift_view):
    source = BlobStorage(str(tmp_path / "blobs"), FileStorage(str(tmp_path / "old.fs")))
    old = ZODB.DB(source)
    revisions = [commit_blob(old, "b", data) for data in (b"v1", b"v2")]
    commit_blob(old, "c", b"other")
    destination = wrap(devswift, FileStorage(str(tmp_path / "new.fs")), tmp_path,
                       container_name)
    destination.copyTransactionsFrom(source)
    old.close()
    keys = ObjectLayout()
    stored = names(swift_view)
    for oid, tid in revisions:
        assert keys.object_name(oid, tid) in stored
    assert len(stored) == 3
    destination.close()
    db = ZODB.DB(wrap(devswift, FileStorage(str(tmp_path / "new.fs")), tmp_path / "fresh",
                      container_name))
    assert read_blob(db, "b") == b"v2" and read_blob(db, "c") == b"other"
    db.close()


def test_pack_removes_revisions_the_base_dropped_and_orphans(file_storage_db, swift_view,
                                                              tmp_path):
    db, storage = file_storage_db
    oid, first = commit_blob(db, "b", b"first")
    _, second = commit_blob(db, "b", b"second")
    keys = ObjectLayout()
    orphan = keys.object_name(p64(0x7777), p64(u64(first) - 1))
    (tmp_path / "orphan").write_bytes(b"from a crashed commit")
    swift_view.upload(orphan, str(tmp_path / "orphan"))
    future = keys.object_name(p64(0x7778), p64(u64(second) + 10**9))
    swift_view.upload(future, str(tmp_path / "orphan"))
    time.sleep(0.01)
    storage.pack(time.time(), referencesf)
    assert names(swift_view) == [keys.object_name(oid, second), future], \
        "the packed-away revision and the orphan are gone; a newer tid is kept"
    with pytest.raises(POSKeyError):
        storage.loadBlob(oid, first)
    assert read_blob(db, "b") == b"second"


def test_pack_with_gc_false_keeps_unreachable_but_present_revisions(file_storage_db,
                                                                    swift_view):
    db, storage = file_storage_db
    commit_blob(db, "b", b"current")
    with db.transaction() as conn:
        del conn.root()["b"]
    before = names(swift_view)
    storage.pack(time.time(), referencesf, gc=False)
    assert names(swift_view) == before


def test_swift_unreachable_is_transient_not_poskeyerror(fault_cluster, tmp_path,
                                                       container_name):
    storage = wrap(fault_cluster, FileStorage(str(tmp_path / "Data.fs")), tmp_path,
                   container_name, deadline=2, timeout=1)
    db = ZODB.DB(storage)
    oid, serial = commit_blob(db, "b", b"data")
    db.close()
    cold = wrap(fault_cluster, FileStorage(str(tmp_path / "Data.fs")), tmp_path / "cold",
                container_name, deadline=2, timeout=1)
    with proxy_down(fault_cluster):
        with pytest.raises(SwiftTransientError) as info:
            cold.loadBlob(oid, serial)
        assert not isinstance(info.value, POSKeyError)
    with open(cold.loadBlob(oid, serial), "rb") as f:
        assert f.read() == b"data"
    with pytest.raises(POSKeyError):
        cold.loadBlob(oid, p64(u64(serial) + 1))
    cold.close()


@pytest.mark.parametrize("make_base", [MappingStorage,
                                       lambda: DemoStorage(changes=MappingStorage())],
                         ids=["MappingStorage", "DemoStorage"])
def test_other_supported_bases(devswift, tmp_path, container_name, make_base, swift_view):
    db = ZODB.DB(wrap(devswift, make_base(), tmp_path, container_name))
    oid, serial = commit_blob(db, "b", b"mapped")
    assert read_blob(db, "b") == b"mapped"
    assert names(swift_view) == [ObjectLayout().object_name(oid, serial)]
    db.close()


def test_bad_configurations_fail_at_open(devswift, tmp_path, container_name):
    credentials = credentials_for(devswift)
    with pytest.raises(ValueError, match="without a blob directory"):
        SwiftBlobStorage(FileStorage(str(tmp_path / "a.fs"), blob_dir=str(tmp_path / "b")),
                         container=container_name, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="without a blob directory"):
        SwiftBlobStorage(DemoStorage(), container=container_name,
                         cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="cannot wrap"):
        SwiftBlobStorage(object(), container=container_name, cache_dir=str(tmp_path / "c"))
    with pytest.raises(SwiftStorageError, match="rejected") as info:
        SwiftBlobStorage(MappingStorage(), container=container_name,
                         cache_dir=str(tmp_path / "c"), auth_url=credentials.auth_url,
                         user=credentials.user, key="wrong-key-123")
    assert "wrong-key-123" not in str(info.value)
    with pytest.raises(ValueError, match="cache_dir"):
        SwiftBlobStorage(MappingStorage(), container=container_name)


def test_historical_connection_reads_the_old_revision(file_storage_db):
    db, storage = file_storage_db
    oid, first = commit_blob(db, "b", b"first")
    commit_blob(db, "b", b"second")
    conn = db.open(at=first)
    with conn.root()["b"].open() as f:
        assert f.read() == b"first"
    conn.close()


def test_unreachable_swift_and_unusable_cache_fail_at_open(devswift, tmp_path,
                                                           container_name):
    started = time.monotonic()
    with pytest.raises(SwiftTransientError, match="unreachable|ConnectionError"):
        SwiftBlobStorage(MappingStorage(), container=container_name,
                         cache_dir=str(tmp_path / "c"), auth_url="http://127.0.0.1:1/auth/v1.0",
                         user="u", key="k", deadline=2)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="container"):
        wrap(devswift, MappingStorage(), tmp_path, "")
    (tmp_path / "not-a-directory").write_bytes(b"")
    with pytest.raises(OSError, match="not-a-directory"):
        credentials = credentials_for(devswift)
        SwiftBlobStorage(MappingStorage(), container=container_name,
                         cache_dir=str(tmp_path / "not-a-directory"),
                         auth_url=credentials.auth_url, user=credentials.user,
                         key=credentials.key)


def test_open_committed_blob_file_survives_eviction(file_storage_db):
    db, storage = file_storage_db
    oid, serial = commit_blob(db, "b", b"evicted meanwhile")
    path = storage.loadBlob(oid, serial)
    os.remove(path)  # what an eviction by another process does
    with storage.openCommittedBlobFile(oid, serial) as f:
        assert f.read() == b"evicted meanwhile"
    assert storage.cache_stats()["misses"] == 1


def test_big_blobs_start_uploading_before_the_vote(devswift, tmp_path, container_name,
                                                  swift_view):
    storage = wrap(devswift, FileStorage(str(tmp_path / "Data.fs")), tmp_path, container_name,
                   early_upload_threshold=8)
    db = ZODB.DB(storage)
    oid, serial = commit_blob(db, "b", b"committed")
    txn = store_new_revision(storage, oid, serial, tmp_path, b"on its way")

    def uploaded():
        return [o.name for o in swift_view.list("commits/",
                                                container=swift_view.segment_container)
                if o.name.endswith(f"/{oid.hex()}")]
    wait_for(uploaded, "the upload of the new revision, before the vote")
    storage.tpc_vote(txn)
    tid = storage.tpc_finish(txn)
    with storage.openCommittedBlobFile(oid, tid) as f:
        assert f.read() == b"on its way"
    db.close()


def test_public_import():
    from zodb_swiftblobs import SwiftBlobStorage as exported
    assert exported is SwiftBlobStorage


def test_object_missing_in_swift_for_an_existing_revision_is_not_poskeyerror(
        devswift, tmp_path, container_name, swift_view):
    storage = wrap(devswift, FileStorage(str(tmp_path / "Data.fs")), tmp_path, container_name)
    db = ZODB.DB(storage)
    oid, serial = commit_blob(db, "b", b"here, then gone")
    db.close()
    swift_view.delete(ObjectLayout().object_name(oid, serial))
    cold = wrap(devswift, FileStorage(str(tmp_path / "Data.fs")), tmp_path / "cold",
                container_name, deadline=2)
    with pytest.raises(SwiftTransientError, match="has revision"):
        cold.loadBlob(oid, serial)
    with pytest.raises(POSKeyError):
        cold.loadBlob(oid, p64(u64(serial) + 1))
    cold.close()


def test_undo_replacing_a_blob_staged_in_the_same_transaction_leaves_no_file(
        file_storage_db, tmp_path):
    db, storage = file_storage_db
    oid, first = commit_blob(db, "b", b"first")
    _, second = commit_blob(db, "b", b"second")
    undone = db.undoLog(0, 1)[0]["id"]
    txn = store_new_revision(storage, oid, second, tmp_path, b"staged, then undone")
    try:
        storage.undo(undone, txn)
    except ZODB.POSException.UndoError:
        storage.tpc_abort(txn)
        pytest.skip("this base refuses undoing an object stored in the same transaction")
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)
    assert os.listdir(storage.temporaryDirectory()) == [], "the replaced staged file is gone"
    data, serial = storage.load(oid)
    with open(storage.loadBlob(oid, serial), "rb") as f:
        assert f.read() == b"first", "the undo's revision wins over the staged one"


def test_undo_of_a_redone_creation(file_storage_db):
    db, storage = file_storage_db
    commit_blob(db, "b", b"created")
    for _ in range(3):  # undo the creation, redo it, undo the redo
        db.undo(db.undoLog(0, 1)[0]["id"])
        transaction.commit()
    with db.transaction() as conn:
        assert "b" not in conn.root()
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    assert read_blob(db, "b") == b"created"


def test_a_blob_stored_twice_in_one_transaction_keeps_the_last(file_storage_db, swift_view,
                                                               tmp_path):
    db, storage = file_storage_db
    oid, serial = commit_blob(db, "b", b"committed")
    txn = store_new_revision(storage, oid, serial, tmp_path, b"first try")
    store_new_revision(storage, oid, serial, tmp_path, b"second try", txn)
    storage.tpc_vote(txn)
    tid = storage.tpc_finish(txn)
    with storage.openCommittedBlobFile(oid, tid) as f:
        assert f.read() == b"second try"
    swift_view.download(ObjectLayout().object_name(oid, tid), str(tmp_path / "stored"))
    assert (tmp_path / "stored").read_bytes() == b"second try"


def test_no_garbage_collection_over_a_demo_storage(devswift, tmp_path, container_name,
                                                   swift_view):
    storage = wrap(devswift, DemoStorage(changes=MappingStorage()), tmp_path, container_name)
    (tmp_path / "orphan").write_bytes(b"not the demo's to delete")
    swift_view.upload(ObjectLayout().object_name(p64(9), p64(1)), str(tmp_path / "orphan"))
    with pytest.raises(SwiftStorageError, match="DemoStorage"):
        storage.collect_garbage()
    assert len(names(swift_view)) == 1
    storage.close()


def test_credentials_from_the_environment(devswift, tmp_path, container_name, monkeypatch):
    for name, value in devswift.settings().environ().items():
        monkeypatch.setenv(name, value)
    db = ZODB.DB(SwiftBlobStorage(MappingStorage(), container=container_name,
                                  cache_dir=str(tmp_path / "cache")))
    commit_blob(db, "b", b"credentials from ST_AUTH, ST_USER and ST_KEY")
    assert read_blob(db, "b") == b"credentials from ST_AUTH, ST_USER and ST_KEY"
    db.close()


def test_undo_under_a_record_transforming_wrapper(devswift, tmp_path, container_name):
    """ZODB's HexStorage transforms records above the wrapper (as zc.zlibstorage
    does); undo must still recognise blob records."""
    from ZODB.tests.hexstorage import HexStorage

    storage = wrap(devswift, FileStorage(str(tmp_path / "Data.fs")), tmp_path, container_name)
    db = ZODB.DB(HexStorage(storage))
    commit_blob(db, "b", b"first")
    commit_blob(db, "b", b"second")
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    assert read_blob(db, "b") == b"first"
    db.close()

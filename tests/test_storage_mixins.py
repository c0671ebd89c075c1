"""ZODB's generic storage tests run against SwiftBlobStorage: around
FileStorage, combined as ZODB's own FileStorage tests combine them; around
RelStorage on the session's PostgreSQL server, history-preserving and
history-free, combined as RelStorage's own tests combine them; and ZODB's
IExternalGC doctest."""

import unittest
import uuid

import pytest
from ZODB.FileStorage import FileStorage
from ZODB.tests import (BasicStorage, ConflictResolution, HistoryStorage, IteratorStorage,
                        MTStorage, PackableStorage, PersistentStorage, ReadOnlyStorage,
                        RecoveryStorage, RevisionStorage, StorageTestBase, Synchronization,
                        TransactionalUndoStorage)

from conftest import postgres_relstorage, swift_storage


class SwiftStorageTest:
    """Opens FileStorages wrapped in SwiftBlobStorage, in a container per test."""

    @pytest.fixture(autouse=True)
    def _swift(self, devswift):
        self._cluster = devswift
        self._container = f"mixins-{uuid.uuid4().hex[:10]}"

    def wrap(self, base, name):
        return swift_storage(self._cluster, base, self._container, f"{name}.blobs",
                             prefix=f"{name}/")


class TestSwiftFileStorage(
    SwiftStorageTest,
    StorageTestBase.StorageTestBase,
    BasicStorage.BasicStorage,
    TransactionalUndoStorage.TransactionalUndoStorage,
    RevisionStorage.RevisionStorage,
    PackableStorage.PackableStorageWithOptionalGC,
    PackableStorage.PackableUndoStorage,
    Synchronization.SynchronizedStorage,
    ConflictResolution.ConflictResolvingStorage,
    ConflictResolution.ConflictResolvingTransUndoStorage,
    HistoryStorage.HistoryStorage,
    IteratorStorage.IteratorStorage,
    IteratorStorage.ExtendedIteratorStorage,
    PersistentStorage.PersistentStorage,
    MTStorage.MTStorage,
    ReadOnlyStorage.ReadOnlyStorage,
):
    use_extension_bytes = True

    def open(self, **kwargs):
        self._storage = self.wrap(FileStorage("FileStorageTests.fs", **kwargs), "data")

    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self.open(create=1)


class TestSwiftFileStorageRecovery(
    SwiftStorageTest,
    StorageTestBase.StorageTestBase,
    RecoveryStorage.RecoveryStorage,
):

    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self._storage = self.wrap(FileStorage("Source.fs", create=True), "source")
        self._dst = self.wrap(FileStorage("Dest.fs", create=True), "dest")

    def tearDown(self):
        self._dst.close()
        StorageTestBase.StorageTestBase.tearDown(self)

    def new_dest(self):
        return self.wrap(FileStorage("Dest.fs"), "dest")


class InstancePerThread(MTStorage.StorageClientThread):
    """MTStorage's threads share one storage, but an instance of RelStorage
    serves one thread: each thread gets an instance of its own, as in
    RelStorage's own tests."""

    def __init__(self, storage, *args, **kwargs):
        super().__init__(storage.new_instance(), *args, **kwargs)

    def runtest(self):
        try:
            super().runtest()
        finally:
            self.storage.release()


class ExtInstancePerThread(InstancePerThread, MTStorage.ExtStorageClientThread):
    """MTStorage's threads that commit with extended methods, an instance each."""


def skipping(reasons):
    """A class decorator: the named tests skip, for the reasons given."""
    def decorate(cls):
        for name, reason in reasons.items():
            setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
        return cls
    return decorate


SHARED_INSTANCE = ("uses one instance of RelStorage from several threads (RelStorage's own "
                   "tests run it through a locking wrapper)")
NO_UNDO_RESOLUTION = "RelStorage resolves no conflicts when undoing (its own tests skip this)"


class SwiftPostgresStorageTest(SwiftStorageTest):
    """Opens RelStorages on PostgreSQL wrapped in SwiftBlobStorage, on a
    database emptied for each test."""

    keep_history = None

    @pytest.fixture(autouse=True)
    def _postgresql(self, postgresql, monkeypatch):
        mode = "hp" if self.keep_history else "hf"
        self._dsn = postgresql.empty_database(f"mixins_{mode}", self.keep_history)
        monkeypatch.setattr(MTStorage, "StorageClientThread", InstancePerThread)
        monkeypatch.setattr(MTStorage, "ExtStorageClientThread", ExtInstancePerThread)

    def open(self, read_only=False):
        self._storage = self.wrap(
            postgres_relstorage(self._dsn, self.keep_history, read_only=read_only), "data")

    def setUp(self):
        StorageTestBase.StorageTestBase.setUp(self)
        self.open()


GENERIC_RELSTORAGE_MIXINS = (
    BasicStorage.BasicStorage,
    PackableStorage.PackableStorage,
    Synchronization.SynchronizedStorage,
    ConflictResolution.ConflictResolvingStorage,
    PersistentStorage.PersistentStorage,
    MTStorage.MTStorage,
    ReadOnlyStorage.ReadOnlyStorage,
)


@skipping({
    "test_checkCurrentSerialInTransaction": SHARED_INSTANCE,
    "test_tid_ordering_w_commit": SHARED_INSTANCE,
    "testPackUndoLog": "RelStorage's undo log is empty after this pack, where the test "
                       "expects the last transaction (RelStorage's own tests replace it)",
    "testTransactionalUndoIterator": "RelStorage's iterator gives the records an undo "
                                     "restores no data_txn (RelStorage's own tests replace it)",
    "testUndoMultipleConflictResolution": NO_UNDO_RESOLUTION,
    "testUndoMultipleConflictResolutionReversed": NO_UNDO_RESOLUTION,
})
class TestSwiftPostgresHistoryPreserving(
    SwiftPostgresStorageTest,
    StorageTestBase.StorageTestBase,
    *GENERIC_RELSTORAGE_MIXINS,
    TransactionalUndoStorage.TransactionalUndoStorage,
    IteratorStorage.IteratorStorage,
    IteratorStorage.ExtendedIteratorStorage,
    RevisionStorage.RevisionStorage,
    PackableStorage.PackableUndoStorage,
    HistoryStorage.HistoryStorage,
):
    keep_history = True
    use_extension_bytes = True


@skipping({
    "test_checkCurrentSerialInTransaction": SHARED_INSTANCE,
    "test_tid_ordering_w_commit": SHARED_INSTANCE,
    "testWriteMethods": "expects a read-only storage's undo to raise ReadOnlyError: "
                        "history-free RelStorage has no undo",
    "test_race_loadopen_vs_local_invalidate": "loads and invalidations take the same path "
                                              "in both modes: history-preserving runs it",
})
class TestSwiftPostgresHistoryFree(
    SwiftPostgresStorageTest,
    StorageTestBase.StorageTestBase,
    *GENERIC_RELSTORAGE_MIXINS,
):
    keep_history = False


@pytest.mark.parametrize("grace", [0, 3600])
def test_external_gc(devswift, tmp_path, monkeypatch, grace):
    """ZODB's IExternalGC doctest: deleteObject, then pack, then the blob is
    gone (for the database at once, whether Swift deletes it now or later)."""
    monkeypatch.chdir(tmp_path)
    container = f"externalgc-{uuid.uuid4().hex[:10]}"
    suite = PackableStorage.IExternalGC_suite(lambda: swift_storage(
        devswift, FileStorage("data.fs", pack_gc=False), container, "blobs",
        gc_grace_period=grace))
    result = unittest.TestResult()
    suite.run(result)
    problems = [text for _, text in result.errors + result.failures]
    assert result.testsRun == 1 and not problems, "\n".join(problems)


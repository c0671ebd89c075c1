"""ZODB's generic storage tests, combined as ZODB's own FileStorage tests
combine them, run against SwiftBlobStorage around FileStorage, and ZODB's
IExternalGC doctest."""

import unittest
import uuid

import pytest
from ZODB.FileStorage import FileStorage
from ZODB.tests import (BasicStorage, ConflictResolution, HistoryStorage, IteratorStorage,
                        MTStorage, PackableStorage, PersistentStorage, ReadOnlyStorage,
                        RecoveryStorage, RevisionStorage, StorageTestBase, Synchronization,
                        TransactionalUndoStorage)

from conftest import swift_storage


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


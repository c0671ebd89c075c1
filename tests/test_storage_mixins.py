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

from conftest import credentials_for
from zodb_swiftblobs.storage import SwiftBlobStorage


class SwiftStorageTest:
    """Opens FileStorages wrapped in SwiftBlobStorage, in a container per test."""

    @pytest.fixture(autouse=True)
    def _swift(self, devswift):
        self._credentials = credentials_for(devswift)
        self._container = f"mixins-{uuid.uuid4().hex[:10]}"

    def wrap(self, base, name):
        return SwiftBlobStorage(
            base, container=self._container, prefix=f"{name}/", cache_dir=f"{name}.blobs",
            auth_url=self._credentials.auth_url, user=self._credentials.user,
            key=self._credentials.key)


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


def test_external_gc(devswift, tmp_path, monkeypatch):
    """ZODB's IExternalGC doctest: deleteObject, then pack, then the blob is gone."""
    monkeypatch.chdir(tmp_path)
    credentials = credentials_for(devswift)
    container = f"externalgc-{uuid.uuid4().hex[:10]}"
    suite = PackableStorage.IExternalGC_suite(lambda: SwiftBlobStorage(
        FileStorage("data.fs", pack_gc=False), container=container, cache_dir="blobs",
        auth_url=credentials.auth_url, user=credentials.user, key=credentials.key))
    result = unittest.TestResult()
    suite.run(result)
    problems = [text for _, text in result.errors + result.failures]
    assert result.testsRun == 1 and not problems, "\n".join(problems)


"""Conformance of wrapped ZEO clients: the storage tests ZEO runs against
ClientStorage, ZODB's reusable blob suite and IExternalGC doctest, run
against SwiftBlobStorage around ClientStorage, whose server is a real ZEO
server process over a ``<swiftblobstorage>`` around ``<filestorage>`` (same
container and prefix), also with the server's client-conflict-resolution on;
then historical connections, undo and pack through a wrapped client.

A case of the reusable blob suite must pass, unless ZEO's own blob support
(a plain client, ZODB's BlobStorage on the server) fails it too, in the same
doctest examples or more: as root, one example of blob_transaction.txt fails
for every storage (root may write a read-only file).  The few tests that do
not apply are left out below, each with its reason.
"""

import itertools
import os
import re
import tempfile
import time
import unittest
import uuid

import persistent
import pytest
import transaction
import ZEO
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZEO.tests import forker, testZEO
from ZODB.POSException import POSKeyError
from ZODB.tests.PackableStorage import IExternalGC_suite
from ZODB.tests.testblob import storage_reusable_suite

from conftest import blob_objects, blob_revision, credentials_for, store_blobs, swift_storage
from blob_suite import case_name, failed_examples, flatten, run_case, run_case_named
from test_zeo import wait_for as wait_for_commit
import test_zeo_clients
from test_zeo_clients import MIB, SERVER_STORAGE, read_blobs
from zodb_swiftblobs.layout import ObjectLayout

THRESHOLD = 16 << 10  # the clients' early-upload-threshold: smaller blobs are
#                       copied by the server, bigger ones published by manifest


def server_storage(cluster, container, prefix, directory, filestorage_options=""):
    """The storage section of a ZEO server over a wrapped FileStorage in *directory*."""
    credentials = credentials_for(cluster)
    return SERVER_STORAGE.format(
        container=container, prefix=prefix, cache=os.path.join(directory, "server-cache"),
        auth_url=credentials.auth_url, user=credentials.user, key=credentials.key,
        segment_size=MIB, path=os.path.join(directory, "Data.fs"),
    ).replace("</filestorage>", f"  {filestorage_options}\n  </filestorage>")


def wrapped_client(cluster, client, container, prefix, cache_dir):
    return swift_storage(cluster, client, container, cache_dir, prefix=prefix,
                         early_upload_threshold=THRESHOLD, segment_size=MIB)


# -- the tests ZEO runs against ClientStorage -------------------------------------------

def collecting_check_methods(cls):
    """ZEO's own mixins name their tests check*, as ZODB's did: pytest
    collects them as test_check*."""
    for name in dir(cls):
        if name.startswith("check") and callable(getattr(cls, name)):
            setattr(cls, f"test_{name}", getattr(cls, name))
    return cls


class WrappedClients:
    """ZEO's test clients wrapped in SwiftBlobStorage, their server's storage
    wrapped too, each server's database under a prefix of its own."""

    @pytest.fixture(autouse=True)
    def _swift(self, devswift):
        self._cluster = devswift
        self._container = f"zeo-mixins-{uuid.uuid4().hex[:10]}"
        self._prefixes = (f"{uuid.uuid4().hex[:8]}/" for _ in itertools.count())
        self._caches = itertools.count()

    def getConfig(self):
        """A new database's: its own directory and prefix (the next client's)."""
        self._prefix = next(self._prefixes)
        return server_storage(self._cluster, self._container, self._prefix,
                              tempfile.mkdtemp(dir=os.getcwd()))

    def _wrap_client(self, client):
        cache = os.path.abspath(f"client-cache-{next(self._caches)}")
        return wrapped_client(self._cluster, client, self._container, self._prefix, cache)

    def open(self, read_only=0):
        addr = self._storage._addr
        self._storage.close()
        self._storage = self._wrap_client(ClientStorage(addr, read_only=read_only, wait=1))


@collecting_check_methods
class TestWrappedClientStorage(WrappedClients, testZEO.BlobAdaptedFileStorageTests):
    """ZEO's tests of a client of a server with blobs: FullGenericTests (basic,
    packing, synchronization, MT, read-only, commit lock, threads, undo with
    the cache, conflict resolution, revisions, iterators) and the blob tests."""


def leave_out(cls, reasons):
    """Skip the tests of *cls* named in *reasons*, each with its reason."""
    for name, reason in reasons.items():
        setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))


leave_out(TestWrappedClientStorage, {
    "test_checkStoreBlob": "looks for the blob in ZEO's blob-dir, which a wrapped client "
                           "leaves unused",
    "test_checkStoreBlob_wrong_partition": "test_checkStoreBlob, with os.rename failing",
    "test_checkStoreAndLoadBlob": "looks for the blob in ZEO's blob-dir and the server's",
    "test_checkTemporaryDirectory": "a wrapped client's is in its own cache, not ZEO's",
})


class TestWrappedClientConflictResolution(WrappedClients, testZEO.ClientConflictResolutionTests):
    """ZEO's conflict resolution tests with the server's client-conflict-resolution
    on: the client resolves conflicts."""


class TestPlainClientConflictResolution(TestWrappedClientConflictResolution):
    """The same with plain clients."""

    def _wrap_client(self, client):
        return client



class Counters(persistent.Persistent):
    """Resolves conflicts by adding the changes, noting which process resolved."""

    def _p_resolveConflict(self, old, committed, new):
        return {name: committed.get(name, 0) + new.get(name, 0) - old.get(name, 0)
                for name in ("a", "b")} | {"resolved_by": os.getpid()}


def test_with_client_conflict_resolution_the_server_resolves(devswift, tmp_path,
                                                            container_name):
    """As over ZODB's BlobStorage, the server's storage resolves the conflicts
    it can: a conflict left to a client makes ZEO's server replay, at its
    second vote, a blob's record without the blob (it used the blob up at
    the first)."""
    address, stop = ZEO.server(
        storage_conf=server_storage(devswift, container_name, "db/", str(tmp_path)),
        zeo_conf=dict(client_conflict_resolution=True), threaded=False)
    databases = [ZODB.DB(wrapped_client(devswift, ClientStorage(address, wait=1),
                                        container_name, "db/", tmp_path / f"cache-{n}"))
                 for n in (1, 2)]
    try:
        with databases[0].transaction() as conn:
            conn.root.counters = Counters()
        wait_for_commit(databases[1], databases[0].lastTransaction())
        managers = [transaction.TransactionManager() for _ in databases]
        for db, manager, name in zip(databases, managers, "ab", strict=True):
            setattr(db.open(manager).root.counters, name, 1)
        for manager in managers:
            manager.commit()
        wait_for_commit(databases[0], databases[1].lastTransaction())
        with databases[0].transaction() as conn:
            counters = conn.root.counters
            assert (counters.a, counters.b) == (1, 1) and counters.resolved_by != os.getpid()
    finally:
        for db in databases:
            db.close()
        stop()


@collecting_check_methods
class TestWrappedClientRecovery(WrappedClients, testZEO.FileStorageRecoveryTests):
    """ZEO's recovery tests (copyTransactionsFrom, restore), between wrapped
    clients of two servers."""

    def _new_storage(self):
        address, stop = forker.start_zeo_server(self.getConfig(),
                                                forker.ZEOConfig(("127.0.0.1", 0)))
        self._servers.append(stop)
        storage = self._wrap_client(ClientStorage(address, wait=1,
                                                  blob_dir=tempfile.mkdtemp(dir=".")))
        storage.registerDB(testZEO.DummyDB())
        return storage


# -- ZODB's reusable blob suite and IExternalGC doctest ---------------------------------

class Servers:
    """The ZEO server processes of one test, each stopped once."""

    def __init__(self):
        self._stops = {}

    def start(self, storage_conf):
        """Start a server of *storage_conf*; its address."""
        address, stop = ZEO.server(storage_conf=storage_conf, threaded=False)
        self._stops[address] = stop
        return address

    def stop(self, address):
        stop = self._stops.pop(address, None)
        if stop is not None:
            stop()

    def stop_all(self):
        for address in list(self._stops):
            self.stop(address)


class ServedClient(ClientStorage):
    """A ZEO client of a server process of its own, started with it and
    stopped when it closes (as ZEO runs these suites)."""

    def __init__(self, servers, storage_conf, blob_dir):
        self._servers = servers
        self._server_address = servers.start(storage_conf)
        super().__init__(self._server_address, blob_dir=blob_dir, wait=1)

    def close(self):
        try:
            super().close()
        finally:
            self._servers.stop(self._server_address)


class Factory:
    """The storages of one case: wrapped clients, each storage name ('data',
    '1', '2', 'dest') a server's database of its own, under a prefix of that
    name in the case's container (the same name opens the same database)."""

    cluster = container = servers = None
    filestorage_options = ""

    def __call__(self, name="data", blob_dir="data.bobs"):
        prefix, directory = f"{name}/", os.path.abspath(f"{name}.server")
        os.makedirs(directory, exist_ok=True)
        conf = server_storage(self.cluster, self.container, prefix, directory,
                              self.filestorage_options)
        client = ServedClient(self.servers, conf, f"{blob_dir}.zeo")
        return wrapped_client(self.cluster, client, self.container, prefix, blob_dir)


FACTORY = Factory()
SUITE = storage_reusable_suite("SwiftZEOClient", FACTORY, test_blob_storage_recovery=True)
CASES = list(flatten(SUITE))


@pytest.fixture
def factory(devswift, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    FACTORY.cluster, FACTORY.servers = devswift, Servers()
    FACTORY.container = f"zeo-conformance-{uuid.uuid4().hex[:10]}"
    yield FACTORY
    FACTORY.servers.stop_all()


def test_the_suite_runs_every_case():
    assert len(CASES) == 21


def zeo_failures(case_id):
    """What ZEO's own blob support fails in the same case."""
    return run_case_named(
        storage_reusable_suite("ZEOClient", testZEO.ServerManagingClientStorage), case_id)


@pytest.mark.parametrize("case", CASES, ids=[case_name(case) for case in CASES])
def test_reusable_blob_suite(case, factory):
    problems = run_case(case, SUITE)
    if not problems:
        return
    native = zeo_failures(case_name(case))
    assert native, "fails where ZEO's own blob support passes:\n" + "\n".join(problems)
    ours, theirs = failed_examples(problems), failed_examples(native)
    assert ours and set(ours) <= set(theirs), (
        "fails doctest examples ZEO's own blob support passes:\n" + "\n".join(problems))


def empty(cache):
    """Remove every committed file of *cache*, as ZEO empties its blob cache
    (clear() would spare a file opened a moment ago, pinned a few seconds)."""
    for oid in filter(re.compile("[0-9a-f]{16}").fullmatch, os.listdir(cache.directory)):
        for name in os.listdir(os.path.join(cache.directory, oid)):
            if re.fullmatch("[0-9a-f]{16}[.]blob", name):
                cache.discard(bytes.fromhex(oid), bytes.fromhex(name[:16]))


def test_external_gc(factory, monkeypatch):
    """ZODB's IExternalGC doctest, as ZEO runs it: the server's FileStorage
    packs without gc, and after a pack the client's caches are emptied (the
    wrapper's as ZEO's)."""
    monkeypatch.setattr(factory, "filestorage_options", "pack-gc false")

    def storage():
        wrapped = factory()
        pack = wrapped.pack

        def pack_emptying_caches(pack_time, referencesf):
            pack(pack_time, referencesf)
            wrapped.base._cache.clear()
            empty(wrapped.cache)
        wrapped.pack = pack_emptying_caches
        return wrapped

    result = unittest.TestResult()
    IExternalGC_suite(storage).run(result)
    problems = [text for _, text in result.errors + result.failures]
    assert result.testsRun == 1 and not problems, "\n".join(problems)


# -- historical connections, undo and pack through a wrapped client ---------------------

deployment, view = test_zeo_clients.deployment, test_zeo_clients.view  # their fixtures


def revisions(small, big):
    return {"small": small, "big": os.urandom(2 * MIB + big)}


def read_at(db, **when):
    """The root's blobs as the historical connection opened with *when* sees them."""
    conn = db.open(**when)
    try:
        contents = {}
        for name in ("small", "big"):
            with conn.root()[name].open() as f:
                contents[name] = f.read()
        return contents
    finally:
        conn.close()


def test_historical_connections_read_old_blob_revisions(deployment):
    writer = deployment.wrapped("writer")
    old, new = revisions(b"small 1", 0), revisions(b"small 2", 1)
    first = store_blobs(writer, **old)
    second = store_blobs(writer, **new)
    reader = deployment.wrapped("reader")  # a host of its own: nothing cached
    wait_for_commit(reader, second)
    for db in (writer, reader):
        assert read_at(db, at=first) == old
        assert read_at(db, before=second) == old
        assert read_at(db, at=second) == new
        assert read_at(db) == new


def test_undo_through_a_wrapped_client_brings_an_old_blob_revision_back(deployment, view):
    wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
    old = revisions(b"small 1", 0)
    store_blobs(wrapped, **old)
    store_blobs(wrapped, **revisions(b"small 2", 1))
    wrapped.undo(wrapped.undoLog(0, 1)[0]["id"])
    transaction.commit()
    undone = wrapped.lastTransaction()
    wait_for_commit(plain, undone)
    for db in (wrapped, plain):
        assert read_blobs(db, "small", "big") == old
    layout = ObjectLayout(deployment.prefix)
    copies = {layout.object_name(blob_revision(wrapped, name)[0], undone)
              for name in ("small", "big")}
    assert copies <= {o.name for o in blob_objects(view, deployment.prefix)}


def test_pack_through_a_wrapped_client_collects_old_blob_revisions(deployment, view):
    wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
    first = store_blobs(wrapped, **revisions(b"small 1", 0))
    new = revisions(b"small 2", 1)
    second = store_blobs(wrapped, **new)
    oids = [blob_revision(wrapped, name)[0] for name in ("small", "big")]
    layout = ObjectLayout(deployment.prefix)

    def names():
        return {o.name for o in blob_objects(view, deployment.prefix)}
    assert names() == {layout.object_name(oid, tid) for oid in oids for tid in (first, second)}
    wrapped.pack(time.time() + 1)
    assert names() == {layout.object_name(oid, second) for oid in oids}
    reader = deployment.wrapped("reader")  # a host of its own: nothing cached
    wait_for_commit(reader, second)
    for oid in oids:
        with pytest.raises(POSKeyError):
            reader.storage.loadBlob(oid, first)
    for db in (reader, plain):
        assert read_blobs(db, "small", "big") == new

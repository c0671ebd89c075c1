"""Wrapped ZEO clients: defects found reviewing them, each pinned by a test.

A real ZEO server (its own process, or ZEO.server's) serves a wrapped
FileStorage; wrapped and plain clients run here.  See :mod:`zeo_deployments`.
"""

from __future__ import annotations

import os

import persistent
import pytest
import transaction
import ZEO
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob

from conftest import wait_for
from test_zeo import wait_for as wait_for_commit
from test_zeo_conformance import server_storage as conformance_server_storage
from test_zeo_conformance import wrapped_client
from zeo_deployments import THRESHOLD, Deployment, committed_blob_and_its_reference, read_blob


@pytest.fixture
def deployment(devswift, tmp_path, container_name):
    deployment = Deployment(devswift, tmp_path, container_name)
    yield deployment
    deployment.stop()


def test_a_refused_republication_leaves_the_committed_blob_whole(deployment):
    wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
    data, reference = committed_blob_and_its_reference(deployment, wrapped, plain)
    with pytest.raises(Exception, match="published before"):
        with plain.transaction() as conn:
            with conn.root()["blob"].open("w") as f:
                f.write(reference)
    # the server's abort deletes the manifest it published, not the client's
    # pending object it names: the committed revision names it too
    assert read_blob(deployment.wrapped("fresh"), "blob") == data  # from Swift


def test_a_commit_of_copied_blobs_leaves_nothing_under_commits(deployment):
    wrapped = deployment.wrapped("w")
    with wrapped.transaction() as conn:
        conn.root()["small"], conn.root()["empty"] = Blob(b"small"), Blob(b"")
    wait_for(lambda: deployment.commit_names() == [],
             "the client to delete its pending objects, the record and the marker")


class Counter(persistent.Persistent):
    """Resolves conflicts by adding the increments."""

    def __init__(self):
        self.value = 0

    def _p_resolveConflict(self, old, committed, new):
        return {"value": committed["value"] + new["value"] - old["value"]}


@pytest.mark.parametrize("kind", ["wrapped", "plain"])
def test_a_blob_beside_a_resolvable_conflict_commits(devswift, tmp_path, container_name,
                                                     kind):
    """With client-conflict-resolution, the second client (wrapped or plain)
    commits a new blob beside a conflict the server resolves."""
    address, stop = ZEO.server(
        storage_conf=conformance_server_storage(devswift, container_name, "db/",
                                                str(tmp_path)),
        zeo_conf=dict(client_conflict_resolution=True), threaded=False)
    databases = [ZODB.DB(wrapped_client(devswift, ClientStorage(address, wait=1),
                                        container_name, "db/", tmp_path / f"cache-{n}"))
                 for n in (1, 2)]
    if kind == "plain":
        databases[1].close()
        databases[1] = ZEO.DB(address, blob_dir=str(tmp_path / "plain-blobs"))
    try:
        with databases[0].transaction() as conn:
            conn.root.counter = Counter()
        wait_for_commit(databases[1], databases[0].lastTransaction())
        managers = [transaction.TransactionManager() for _ in databases]
        connections = [db.open(manager) for db, manager in zip(databases, managers, strict=True)]
        for conn in connections:
            conn.root.counter.value += 1
        data = os.urandom(THRESHOLD * 2)  # published by manifest
        connections[1].root.blob = Blob(data)
        managers[0].commit()
        managers[1].commit()  # its counter conflicts; the server resolves it
        wait_for_commit(databases[0], databases[1].lastTransaction())
        with databases[0].transaction() as conn:
            assert conn.root.counter.value == 2
            with conn.root.blob.open() as f:
                assert f.read() == data
    finally:
        for db in databases:
            db.close()
        stop()

"""Wrapped ZEO clients under faults: clients killed or frozen at each stage
of a commit, garbage collection and packs meanwhile, a server held while it
publishes or killed, conflicts, crafted references, misconfigured clients.

A real ZEO server (its own process) serves a wrapped FileStorage; wrapped
clients run in child processes the tests kill (SIGKILL) or freeze (SIGSTOP)
at a known point of their commit, or in this process.  Requests are held in
the embedded Swift's proxy (its fault middleware) to catch the server while
it publishes.  See :mod:`zeo_deployments`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest
import transaction
import ZEO
import ZODB
import ZODB.FileStorage
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.utils import z64

from conftest import read, swift_storage, wait_for
from test_zeo import wait_for as wait_for_commit
from zeo_deployments import (LAYOUT, LEASE, MIB, PREFIX, THRESHOLD, Deployment,
                             assert_failed, assert_round_trip, commit_from_plain,
                             commit_held_while_publishing, committed_blob_and_its_reference,
                             committed_names, committed_tid, crafted_reference, pending_of,
                             read_blob, server_storage, uploaded, wait_for_blob)


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster of this module's own, with fault injection in its proxy."""
    cluster = start_cluster("zeo-client-faults", faults=True)
    yield cluster
    cluster.stop()


@pytest.fixture
def deployment(cluster, tmp_path, container_name, capsys):
    # requests held in the proxy longer than the default socket timeout (10 s)
    # must not be sent again: the server waits for them
    deployment = Deployment(cluster, tmp_path, container_name, server_extra="timeout 30")
    yield deployment
    deployment.stop()
    cluster.inject_faults()


@pytest.mark.parametrize("size", [1000, 3 * MIB], ids=["copied", "manifest"])
def test_a_client_killed_after_its_uploads_leaves_only_what_gc_collects(deployment, size):
    child = deployment.child("c")
    oid = child.store("blob", os.urandom(size))
    child.tell("commit", "before-vote")
    assert child.answer() == "before-vote"
    uploaded(deployment, oid)
    child.signal(signal.SIGKILL)
    child.end()
    deployment.collected()
    assert deployment.blob_names() == []
    commit_from_plain(deployment)


@pytest.mark.parametrize("size", [1000, 3 * MIB], ids=["copied", "manifest"])
def test_a_client_killed_while_the_server_publishes_leaves_nothing_committed(deployment, size):
    child = deployment.child("c")
    oid = child.store("blob", os.urandom(size))
    release = commit_held_while_publishing(deployment, child, oid)
    child.signal(signal.SIGKILL)
    child.end()
    release.touch()
    # the server's vote ends, then it aborts the dead client's transaction
    plain = commit_from_plain(deployment)
    wait_for(lambda: committed_names(deployment, oid) == [], "the server's abort")
    deployment.collected()
    with plain.transaction() as conn:
        assert "blob" not in conn.root()


def test_a_client_killed_between_its_vote_and_finish_leaves_nothing_committed(deployment):
    child = deployment.child("c")
    small, big = child.store("small", b"small"), child.store("big", os.urandom(3 * MIB))
    child.tell("commit", "after-vote")
    assert child.answer() == "after-vote"
    assert committed_names(deployment, small) and committed_names(deployment, big)
    child.signal(signal.SIGKILL)
    child.end()
    plain = commit_from_plain(deployment)  # the server released its lock
    assert committed_names(deployment, small) == committed_names(deployment, big) == []
    deployment.collected()
    with plain.transaction() as conn:
        assert "small" not in conn.root() and "big" not in conn.root()


def test_a_client_frozen_between_vote_and_finish_keeps_its_blobs_through_gc(deployment):
    child = deployment.child("c")
    small, big = b"small" * 100, os.urandom(3 * MIB + 1)
    child.store("small", small)
    child.store("big", big)
    child.tell("commit", "after-vote")
    assert child.answer() == "after-vote"
    child.signal(signal.SIGSTOP)
    try:
        time.sleep(LEASE + 2)  # its lease has lapsed: gc may take its commit for abandoned
        deployment.gc()
    finally:
        child.signal(signal.SIGCONT)
    child.tell("go")
    tid = committed_tid(child)
    fresh = deployment.wrapped("fresh")  # a cold cache: from Swift
    plain = deployment.plain("p")
    for db in (fresh, plain):
        wait_for_commit(db, tid)
        assert read_blob(db, "small") == small and read_blob(db, "big") == big
    deployment.gc()
    fresh.storage.cache.clear()
    assert read_blob(fresh, "big") == big, "gc kept the big blob's pending object"


def test_a_client_frozen_before_its_vote_until_gc_took_its_uploads_fails_cleanly(deployment):
    child = deployment.child("c")
    oid = child.store("big", os.urandom(3 * MIB))
    child.tell("commit", "before-vote")
    assert child.answer() == "before-vote"
    uploaded(deployment, oid)
    child.signal(signal.SIGSTOP)
    try:
        deployment.collected("gc to take the frozen commit's uploads")
    finally:
        child.signal(signal.SIGCONT)
    child.tell("go")
    assert_failed(child, "SwiftTransientError", "without a refresh")
    assert deployment.blob_names() == []
    deployment.collected()
    data = os.urandom(2 * MIB)  # the client commits again
    child.store("again", data)
    child.tell("commit")
    tid = committed_tid(child)
    plain = deployment.plain("p")
    wait_for_commit(plain, tid)
    assert read_blob(plain, "again") == data


def test_gc_while_the_server_publishes_leaves_the_commit_alone(deployment):
    child = deployment.child("c", lease=600)
    data = os.urandom(3 * MIB)
    oid = child.store("big", data)
    release = commit_held_while_publishing(deployment, child, oid)
    deployment.gc()
    release.touch()
    tid = committed_tid(child)
    deployment.gc()
    plain = deployment.plain("p")
    wait_for_commit(plain, tid)
    assert read_blob(plain, "big") == data


def test_the_server_refuses_to_publish_once_its_hold_outlived_a_frozen_clients_lease(
        deployment):
    child = deployment.child("c")
    oid = child.store("big", os.urandom(3 * MIB))
    release = commit_held_while_publishing(deployment, child, oid)
    child.signal(signal.SIGSTOP)
    try:
        time.sleep(LEASE + 2)
        deployment.gc()  # the lease lapsed: the pending object is gone
        assert pending_of(deployment, oid) == []
        release.touch()  # the manifest is stored, naming what is gone
    finally:
        child.signal(signal.SIGCONT)
    assert_failed(child, "ServerException", "longer than the ZEO client's lease allows")
    assert committed_names(deployment, oid) == []
    deployment.collected()
    commit_from_plain(deployment)


def test_two_clients_writing_one_blob_conflict_and_the_loser_leaves_nothing(deployment):
    plain = commit_from_plain(deployment, "shared", b"first")
    first, second = deployment.child("first", lease=600), deployment.child("second", lease=600)
    data = {first: os.urandom(3 * MIB), second: os.urandom(3 * MIB + 7)}
    for child in (first, second):
        child.write("shared", data[child])
        child.tell("commit", "before-vote")
        assert child.answer() == "before-vote"
    wait_for(lambda: len({name.split("/")[2] for name in deployment.commit_names()}) == 2,
             "both clients' uploads")
    first.tell("go")
    tid = committed_tid(first)
    second.tell("go")
    assert_failed(second, "ConflictError")
    tokens = {name.split("/")[2] for name in deployment.commit_names()}
    assert len(tokens) == 1, "the loser's pending upload and marker are gone"
    deployment.gc()
    wait_for_commit(plain, tid)
    fresh = deployment.wrapped("fresh")
    wait_for_commit(fresh, tid)
    assert read_blob(fresh, "shared") == read_blob(plain, "shared") == data[first]


SIZES = [0, MIB - 1, MIB, MIB + 1, 2 * MIB, 2 * MIB + 1]  # the threshold and a segment: 1 MiB


def test_blobs_at_the_threshold_and_segment_boundaries_savepoints_and_blobs_stored_twice(
        deployment):
    wrapped = deployment.wrapped("w")
    contents = {f"size{size}": os.urandom(size) for size in SIZES}
    with wrapped.transaction() as conn:
        for name in contents:
            conn.root()[name] = Blob(b"overwritten after a savepoint")
        conn.transaction_manager.savepoint()
        for name, data in contents.items():
            with conn.root()[name].open("w") as f:
                f.write(data)
    twice = os.urandom(MIB + 3)
    with wrapped.transaction() as conn:
        record = wrapped.storage.load(conn.root()["size0"]._p_oid)[0]
    oid, tid = store_one_blob_twice(wrapped.storage, record, os.urandom(MIB), twice)
    plain = deployment.plain("p")
    wait_for_commit(plain, tid)
    deployment.gc()
    fresh = deployment.wrapped("fresh")
    wait_for_commit(fresh, tid)
    for db in (wrapped, plain, fresh):
        assert {name: read_blob(db, name) for name in contents} == contents
        assert read(db.storage.loadBlob(oid, tid)) == twice
    # the copied pending objects are deleted after the commit: those published
    # by manifest stay, named in their commits' records
    wait_for(lambda: len(pending_of(deployment)) == 5,
             "the copied pending objects' deletion")


def store_one_blob_twice(storage, record, first, second):
    """Store a new blob (of *record*) twice in one transaction through
    *storage*'s API, *first* then *second*; its oid and the transaction's id."""
    transaction = TransactionMetaData()
    storage.tpc_begin(transaction)
    oid = storage.new_oid()
    for index, data in enumerate((first, second)):
        path = os.path.join(storage.temporaryDirectory(), f"twice{index}")
        with open(path, "wb") as f:
            f.write(data)
        storage.storeBlob(oid, z64, record, path, "", transaction)
    storage.tpc_vote(transaction)
    return oid, storage.tpc_finish(transaction)



def test_a_plain_client_cannot_store_a_crafted_reference(deployment):
    plain = deployment.plain("p")
    with plain.transaction() as conn:
        conn.root()["existing"] = existing = Blob(b"committed")
    other = existing._p_oid
    child = deployment.child("c", lease=600)  # a commit in progress: a live token
    data = os.urandom(2 * MIB)
    victim = child.store("big", data)
    child.tell("commit", "before-vote")
    assert child.answer() == "before-vote"
    uploaded(deployment, victim)
    token = LAYOUT.commit_token_of(pending_of(deployment, victim)[0])
    cases = {
        "another prefix": (dict(prefix="other/"), "prefix 'other/'"),
        "another container": (dict(container="other"), "container 'other'"),
        "another oid": (dict(oid=other.hex(), pending_name=LAYOUT.pending_name(token, other)),
                        "was stored as blob"),
        "another blob's pending object": (dict(pending_name=LAYOUT.pending_name(token, victim)),
                                          "not a pending upload of its blob"),
        "a delete-at header": (dict(pending_headers={"X-Delete-At": "1"}), "not object metadata"),
        "an empty manifest": (dict(publish="manifest", pending_size=0), "empty pending object"),
        "a bad etag": (dict(pending_etag="x" * 32), "malformed"),
        "no JSON": (dict(text="{"), "malformed"),
        "a token without marker": (dict(token="0123456789abcdef", pending_name=None),
                                   "marker is gone"),
    }
    for case, (changes, words) in cases.items():
        conn = plain.open()
        conn.root()[case] = blob = Blob()
        conn.add(blob)
        with blob.open("w") as f:
            f.write(crafted_reference(deployment, blob._p_oid, token, **changes))
        with pytest.raises(Exception) as failure:
            conn.transaction_manager.commit()
        conn.transaction_manager.abort()
        conn.close()
        assert words in str(failure.value), case
    assert deployment.blob_names() == [f"{PREFIX}{other.hex()}/{blob_revision(plain)}.blob"]
    child.tell("go")  # the commit in progress is untouched
    tid = committed_tid(child)
    wait_for_commit(plain, tid)
    assert read_blob(plain, "big") == data


def blob_revision(db, name="existing"):
    with db.transaction() as conn:
        blob = conn.root()[name]
        blob._p_activate()
        return blob._p_serial.hex()


@pytest.mark.parametrize("where", ["prefix", "container"])
def test_a_client_of_another_prefix_or_container_cannot_commit_and_leaves_nothing(
        deployment, cluster, tmp_path, container_name, where):
    # that prefix or container belongs to another database: the client opens
    other = dict(prefix="other/") if where == "prefix" else dict(container=f"{container_name}-2")
    swift_storage(cluster, ZODB.FileStorage.FileStorage(str(tmp_path / "Other.fs")),
                  other.get("container", container_name), tmp_path / "other-cache",
                  prefix=other.get("prefix", PREFIX)).close()
    wrapped = deployment.wrapped("w", **other)
    for size in (1000, 2 * MIB):
        with pytest.raises(Exception) as failure:
            with wrapped.transaction() as conn:
                conn.root()["blob"] = Blob(os.urandom(size))
        assert "configure the client's swiftblobstorage with the server's" in str(failure.value)
    assert deployment.blob_names() == []
    view = wrapped.storage.swift_container
    assert list(view.list(wrapped.storage.object_layout.commits_prefix,
                          container=view.segment_container)) == [], "the aborts removed all"


def test_a_client_without_the_servers_encryption_key_cannot_open(deployment, cluster,
                                                                  tmp_path, container_name):
    (tmp_path / "encrypting").mkdir()
    encrypting = Deployment(cluster, tmp_path / "encrypting", f"{container_name}-e",
                            server_extra=f"encryption-key {'0' * 64}")
    try:
        with pytest.raises(Exception, match="no encryption key is configured here"):
            encrypting.wrapped("w")
        assert_round_trip(encrypting, encrypting.wrapped("w", encryption_keys="0" * 64),
                          2 * MIB)
    finally:
        encrypting.stop()


@pytest.mark.parametrize("client_key", ["1" * 64, "2" * 64])
def test_the_server_refuses_blobs_encrypted_with_a_key_it_lacks(cluster, tmp_path,
                                                                container_name, client_key):
    server_extra = "" if client_key == "1" * 64 else f"encryption-key {'0' * 64}"
    deployment = Deployment(cluster, tmp_path, container_name, server_extra=server_extra)
    try:
        wrapped = deployment.wrapped("w", encryption_keys=client_key)
        for size in (1000, 2 * MIB):
            with pytest.raises(Exception) as failure:
                with wrapped.transaction() as conn:
                    conn.root()["blob"] = Blob(os.urandom(size))
            assert "encrypted" in str(failure.value)
        assert deployment.blob_names() == []
    finally:
        deployment.stop()


SERVER_WRAPPED_STORAGE = """
%import ZODB.tests
<serverhexstorage>
{storage}
</serverhexstorage>
"""


def test_a_server_whose_storage_wraps_the_swiftblobstorage_adopts_references(
        cluster, tmp_path, container_name):
    # as zc.zlibstorage's serverzlibstorage does: ZODB's test wrapper stands in
    storage_conf = SERVER_WRAPPED_STORAGE.format(
        storage=server_storage(cluster, tmp_path, container_name))
    address, stop = ZEO.server(storage_conf=storage_conf, threaded=False)
    try:
        wrapped = ZODB.DB(swift_storage(
            cluster, ClientStorage(address, blob_dir=str(tmp_path / "w-zeo")), container_name,
            tmp_path / "w-cache", prefix=PREFIX, early_upload_threshold=THRESHOLD))
        plain = ZEO.DB(address, blob_dir=str(tmp_path / "p-blobs"))
        try:
            contents = {"small": b"small", "big": os.urandom(2 * MIB)}
            with wrapped.transaction() as conn:
                for name, data in contents.items():
                    conn.root()[name] = Blob(data)
            wait_for_commit(plain, wrapped.storage.lastTransaction())
            assert {name: read_blob(plain, name) for name in contents} == contents
        finally:
            wrapped.close()
            plain.close()
    finally:
        stop()


def test_a_wrapped_client_of_a_server_without_swiftblobstorage_cannot_commit(
        cluster, tmp_path, container_name):
    # the container and prefix exist (another database, or this server's
    # before its storage was configured without swiftblobstorage)
    swift_storage(cluster, ZODB.FileStorage.FileStorage(str(tmp_path / "Other.fs")),
                  container_name, tmp_path / "other-cache", prefix=PREFIX).close()
    address, stop = ZEO.server(path=str(tmp_path / "Data.fs"), blob_dir=str(tmp_path / "blobs"),
                               threaded=False)
    try:
        wrapped = ZODB.DB(swift_storage(
            cluster, ClientStorage(address, blob_dir=str(tmp_path / "w-zeo")), container_name,
            tmp_path / "w-cache", prefix=PREFIX))
        plain = ZEO.DB(address, blob_dir=str(tmp_path / "p-blobs"))
        try:
            committed = False
            with contextlib.suppress(Exception):
                with wrapped.transaction() as conn:
                    conn.root()["blob"] = Blob(b"content")
                committed = True
            if committed:
                wait_for_commit(plain, wrapped.storage.lastTransaction())
                assert read_blob(plain, "blob") == b"content", "the reference is the content"
        finally:
            wrapped.close()
            plain.close()
    finally:
        stop()


def test_a_client_whose_threshold_exceeds_the_clusters_largest_object_commits(
        small_swift, tmp_path, container_name):
    # the cluster stores objects of at most 8 MiB: bigger ones are large objects
    deployment = Deployment(small_swift, tmp_path, container_name)
    try:
        assert_round_trip(deployment, deployment.wrapped("w", early_upload_threshold=16 * MIB),
                          10 * MIB)
    finally:
        deployment.stop()


def test_gc_and_packs_leave_a_live_clients_uploads_alone(deployment):
    child = deployment.child("c")
    data = os.urandom(3 * MIB)
    oid = child.store("big", data)
    child.tell("commit", "before-vote")
    assert child.answer() == "before-vote"
    uploaded(deployment, oid)
    plain = deployment.plain("p")
    for _ in range(3):  # the last gc comes more than a lease after the first
        plain.pack()
        deployment.gc()
        time.sleep(LEASE / 2)  # the child's keeper renews its lease meanwhile
    assert pending_of(deployment, oid)
    child.tell("go")
    tid = committed_tid(child)
    wait_for_commit(plain, tid)
    assert read_blob(plain, "big") == data


def test_a_committed_pending_object_is_never_published_again(deployment):
    wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
    data, reference = committed_blob_and_its_reference(deployment, wrapped, plain)
    republished = False
    with contextlib.suppress(Exception):
        with plain.transaction() as conn:
            with conn.root()["blob"].open("w") as f:
                f.write(reference)
        republished = True
    plain.pack()  # drops the first revision: gc deletes its manifest and its segments
    fresh = deployment.plain("fresh")
    assert not republished or read_blob(fresh, "blob") == data


def test_a_client_waiting_for_the_commit_lock_longer_than_half_its_lease_commits(deployment):
    plain = deployment.plain("p")
    with plain.transaction() as conn:
        conn.root()["first"], conn.root()["second"] = Blob(b"1"), Blob(b"2")
    holder, waiter = deployment.child("holder", lease=600), deployment.child("waiter")
    holder.write("first", b"holds the lock")
    holder.tell("commit", "after-vote")
    assert holder.answer() == "after-vote"  # the server's commit lock is held
    data = os.urandom(2 * MIB)
    waiter.write("second", data)
    waiter.tell("commit")
    time.sleep(LEASE / 2 + 1)  # the waiter is alive, and waits for the lock
    holder.tell("go")
    committed_tid(holder)
    tid = committed_tid(waiter)
    wait_for_commit(plain, tid)
    assert read_blob(plain, "second") == data



def test_an_undone_revision_published_by_manifest_survives_the_pack_of_the_original(
        deployment):
    wrapped = deployment.wrapped("w")
    first = os.urandom(3 * MIB + 1)  # a manifest naming a pending large object
    with wrapped.transaction() as conn:
        conn.root()["blob"] = Blob(first)
    with wrapped.transaction() as conn:
        with conn.root()["blob"].open("w") as f:
            f.write(b"second")
    wrapped.undo(wrapped.undoLog(0, 1)[0]["id"])
    transaction.commit()
    oid, _ = wait_for_blob(wrapped, wrapped)
    wrapped.pack()  # drops the first revision: gc deletes its manifest and what it names
    deployment.gc()
    assert len(committed_names(deployment, oid)) == 1, "only the undo's revision is left"
    fresh = deployment.wrapped("fresh")
    wait_for_commit(fresh, wrapped.storage.lastTransaction())
    assert read_blob(fresh, "blob") == first
    assert read_blob(deployment.plain("p"), "blob") == first


def test_a_server_killed_while_it_publishes_leaves_only_what_gc_collects(deployment):
    child = deployment.child("c")
    oid = child.store("big", os.urandom(3 * MIB))
    release = commit_held_while_publishing(deployment, child, oid)
    deployment.stop_server(signal.SIGKILL)
    release.touch()  # the held manifest is stored: a revision never committed
    assert_failed(child, "ClientDisconnected")
    wait_for(lambda: committed_names(deployment, oid), "the held manifest's PUT")
    deployment.start_server()
    child.tell("connect")
    assert child.answer() == "connected"
    data = os.urandom(2 * MIB)  # the client commits again
    oid_again = child.store("again", data)
    child.tell("commit")
    tid = committed_tid(child)
    kept = LAYOUT.commit_token_of(pending_of(deployment, oid_again)[0])

    def only_the_committed_left():
        deployment.gc()
        return {LAYOUT.commit_token_of(name) for name in deployment.commit_names()} == {kept}
    wait_for(only_the_committed_left, "the killed commit's lease to lapse")
    assert committed_names(deployment, oid) == [], "gc removed the uncommitted revision"
    plain = deployment.plain("p")
    wait_for_commit(plain, tid)
    assert read_blob(plain, "again") == data
    assert len(committed_names(deployment, oid_again)) == 1


def test_a_publication_refused_by_swift_fails_the_vote_and_both_sides_clean_up(deployment):
    child = deployment.child("c", lease=600)
    small, big = child.store("small", b"small"), child.store("big", os.urandom(3 * MIB))
    deployment.cluster.inject_faults({"method": "PUT", "status": 400, "times": 1,
                                      "path": f"/{deployment.container}/{PREFIX}{small.hex()}/"})
    child.tell("commit")
    assert_failed(child, "ServerException", "400")
    assert deployment.blob_names() == []
    wait_for(lambda: deployment.commit_names() == [], "the client's abort to remove its uploads")
    deployment.cluster.inject_faults()
    child.store("again", b"again")
    child.tell("commit")
    committed_tid(child)
    assert len(committed_names(deployment, big)) == 0

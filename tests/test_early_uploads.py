"""Big blobs upload before the commit lock, and their uploads are safe.

A blob of at least ``early_upload_threshold`` bytes starts uploading when
it is stored, as a pending object under the commit's lease; the vote then
publishes it under its final name with one request.  Requests are held in
the embedded Swift's proxy (its fault middleware) to catch a commit at a
known point: other transactions commit meanwhile, a garbage collection in
another process leaves the commit's uploads alone, and what a killed
process left is collected once its lease has lapsed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import ZODB
import ZODB.FileStorage
from persistent.mapping import PersistentMapping
from ZODB.blob import Blob
from ZODB.POSException import ConflictError

from conftest import (child_environment, credentials_for, in_background,
                      sqlite_relstorage, swift_storage, wait_for, wait_for_logged)
from zodb_swiftblobs.swift import SwiftContainer
from zodb_swiftblobs.testing.devswift import DevSwift

MIB = 1 << 20
THRESHOLD = MIB
BIG = 3 * MIB


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster of this module's own, with fault injection in its proxy."""
    cluster = start_cluster("early-uploads", faults=True)
    yield cluster
    cluster.stop()


@pytest.fixture
def view(cluster, container_name):
    view = SwiftContainer(credentials_for(cluster), container_name, deadline=30)
    yield view
    view.close()


@pytest.fixture(params=["FileStorage", "RelStorage"])
def db(request, cluster, container_name, tmp_path):
    if request.param == "FileStorage":
        base = ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs"))
    else:
        base = sqlite_relstorage(tmp_path / "sqlite", keep_history=True)
    storage = swift_storage(cluster, base, container_name, tmp_path / "cache",
                            early_upload_threshold=THRESHOLD)
    db = ZODB.DB(storage)
    yield db
    db.close()
    cluster.inject_faults()


def pending_names(view):
    """Names under ``commits/`` in the segment container (pending objects,
    their segments, lease markers)."""
    try:
        return [stored.name for stored in view.list("commits/",
                                                    container=view.segment_container)]
    except Exception:
        return []


def new_blob(db, key):
    """A blob added to the root's mapping "big" under *key* (not committed):
    its oid is known.  Other writers use the mapping "small": no conflict."""
    with db.transaction() as conn:
        conn.root()["big"], conn.root()["small"] = PersistentMapping(), PersistentMapping()
    conn = db.open()
    blob = Blob()
    conn.add(blob)
    conn.root()["big"][key] = blob
    return conn, blob


def hold(cluster, tmp_path, piece):
    """Hold the body of the next PUT whose path has *piece*; returns the
    release file (create it to let the request go on)."""
    release = tmp_path / "release"
    cluster.inject_faults({"method": "PUT", "path": piece, "hold_body": str(release),
                           "times": 1})
    return release


def test_other_transactions_commit_while_a_big_blob_uploads(db, cluster, container_name,
                                                            tmp_path):
    data = os.urandom(BIG)
    conn, blob = new_blob(db, "blob")
    with blob.open("w") as f:
        f.write(data)
    # the big blob's pending object (one segment: itself), commits/<token>/<oid>
    release = hold(cluster, tmp_path, f"/{blob._p_oid.hex()}")

    def commit_big():
        conn.transaction_manager.commit()
    big, join_big = in_background(commit_big)
    wait_for(lambda: os.path.exists(f"{release}.held"), "the big blob's upload to start")

    def commit_small():
        for index in range(3):
            with db.transaction() as other:
                other.root()["small"][f"blob{index}"] = Blob(b"small %d" % index)
                other.root()["small"][f"plain{index}"] = index
    small, join_small = in_background(commit_small)
    small.join(120)
    still_uploading = big.is_alive()
    release.touch()
    join_small()
    join_big()
    assert not small.is_alive(), "small commits waited for the big blob's upload"
    assert still_uploading
    conn.close()
    db.storage.cache.clear()
    with db.transaction() as check:
        assert check.root()["small"]["blob2"].open().read() == b"small 2"
        with check.root()["big"]["blob"].open() as f:
            assert f.read() == data


def test_an_aborted_commit_removes_its_pending_uploads(db, view):
    with db.transaction() as conn:
        conn.root()["counter"] = 0
    first = db.open()
    first.root()["big"] = Blob(os.urandom(BIG))
    first.root()["counter"] = 1
    with db.transaction() as second:
        second.root()["counter"] = 2
    with pytest.raises(ConflictError):
        first.transaction_manager.commit()
    first.transaction_manager.abort()
    first.close()
    assert pending_names(view) == []


def test_a_small_blob_is_uploaded_under_its_final_name(db, view):
    with db.transaction() as conn:
        conn.root()["small"] = Blob(b"x" * (THRESHOLD - 1))
    assert pending_names(view) == []


CHILD = textwrap.dedent("""
    import os, sys, transaction, ZODB, ZODB.FileStorage
    from ZODB.blob import Blob
    from zodb_swiftblobs.storage import SwiftBlobStorage
    auth_url, user, key, container, directory, lease = sys.argv[1:7]
    base = ZODB.FileStorage.FileStorage(os.path.join(directory, "Data.fs"))
    storage = SwiftBlobStorage(base, container=container,
                               cache_dir=os.path.join(directory, "child-cache"),
                               auth_url=auth_url, user=user, key=key,
                               early_upload_threshold={threshold},
                               commit_lease=float(lease))
    db = ZODB.DB(storage)
    conn = db.open()
    blob = Blob()
    conn.add(blob)
    conn.root()["big"] = blob
    with blob.open("w") as f:
        f.write(os.urandom({size}))
    print(blob._p_oid.hex(), flush=True)
    sys.stdin.readline()  # the parent holds the request it wants, then says go
    transaction.commit()
    db.close()
    print("committed", flush=True)
""").format(threshold=THRESHOLD, size=BIG)


def start_child(cluster, container, directory, lease):
    settings = cluster.settings()
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, settings.auth_url, settings.user, settings.key,
         container, str(directory), str(lease)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_environment())


def publishing_child(cluster, container, directory, lease):
    """A child process committing a big blob, held in the proxy while it
    publishes it (its pending upload done); returns (child, oid hex, the
    release file of the held request)."""
    child = start_child(cluster, container, directory, lease)
    try:
        oid = child.stdout.readline().strip()
        release = hold(cluster, directory, f"{container}/{oid}/")  # the final manifest's PUT
        child.stdin.write("go\n")
        child.stdin.flush()
        wait_for(lambda: os.path.exists(f"{release}.held"), "the child to publish")
    except BaseException:
        child.kill()
        child.wait()
        raise
    return child, oid, release


def parent_storage(cluster, container, directory):
    base = ZODB.FileStorage.FileStorage(str(directory / "Data.fs"), read_only=True)
    return swift_storage(cluster, base, container, directory / "parent-cache")


def test_gc_in_another_process_leaves_a_commit_in_progress_alone(cluster, container_name,
                                                                   view, tmp_path):
    child, _, release = publishing_child(cluster, container_name, tmp_path, 600)
    try:
        parent = parent_storage(cluster, container_name, tmp_path)
        try:
            report = parent.collect_garbage(b"\xff" * 8, min_age=0)
        finally:
            parent.close()
        assert report.commits_in_progress == 1
        assert report.deleted_pending == 0
        release.touch()
        assert child.stdout.readline().strip() == "committed"
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    db = ZODB.DB(parent_storage(cluster, container_name, tmp_path))
    with db.transaction() as conn:
        assert len(conn.root()["big"].open().read()) == BIG
    db.close()


def test_what_a_killed_commit_left_is_collected_once_its_lease_lapses(
        cluster, container_name, view, tmp_path):
    child, oid, release = publishing_child(cluster, container_name, tmp_path, 3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert pending_names(view)  # the marker, the pending object and its segment
    release.touch()  # the publishing request of the killed process goes on, or fails
    wait_for_logged(cluster, f"PUT /v1/AUTH_test/{container_name}/{oid}/")
    parent = parent_storage(cluster, container_name, tmp_path)
    try:
        def collected():
            report = parent.collect_garbage(b"\xff" * 8)
            return report.commits_in_progress == 0 and not pending_names(view)
        wait_for(collected, "the killed commit's lease to lapse and its uploads to go")
    finally:
        parent.close()
    assert [o.name for o in view.list() if o.name.startswith(f"{oid}/")] == []


def test_encrypted_big_blobs_upload_early(cluster, container_name, view, tmp_path):
    key = "0" * 64
    base = ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs"))
    storage = swift_storage(cluster, base, container_name, tmp_path / "cache",
                            early_upload_threshold=THRESHOLD, encryption_keys=key)
    data = os.urandom(BIG)
    db = ZODB.DB(storage)
    with db.transaction() as conn:
        conn.root()["big"] = Blob(data)
    storage.cache.clear()
    with db.transaction() as conn:
        assert conn.root()["big"].open().read() == data
    db.close()
    raw = b"".join(view.read_small(name, container=view.segment_container).data
                   for name in pending_names(view) if name.count("/") == 2)  # one segment
    assert raw and data not in raw


def test_a_big_blob_of_several_segments_is_read_and_collected(cluster, container_name, view,
                                                              tmp_path):
    base = ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs"))
    storage = swift_storage(cluster, base, container_name, tmp_path / "cache",
                            early_upload_threshold=THRESHOLD, segment_size=MIB)
    data = os.urandom(BIG + 1)
    db = ZODB.DB(storage)
    with db.transaction() as conn:
        conn.root()["big"] = Blob(data)
    assert len([n for n in pending_names(view) if n.count("/") == 4]) == 4  # segments
    storage.cache.clear()
    with db.transaction() as conn:
        assert conn.root()["big"].open().read() == data
        del conn.root()["big"]
    db.pack()
    db.close()
    # the pack deleted the pending object and its segments with the revision;
    # the commit's marker and its record of final names stay until its lease lapses
    assert [name.rsplit("/", 1)[-1] if name.count("/") == 2 else "marker"
            for name in pending_names(view)] == ["marker", "published"]
    assert [o.name for o in view.list() if o.name.endswith(".blob")] == []


def test_a_cluster_without_slo_uploads_every_blob_under_the_lock(tmp_path, container_name):
    no_slo = DevSwift(str(tmp_path / "swift"), without_middleware=("slo",))
    no_slo.start()
    try:
        base = ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs"))
        storage = swift_storage(no_slo, base, container_name, tmp_path / "cache",
                                early_upload_threshold=THRESHOLD)
        data = os.urandom(BIG)
        db = ZODB.DB(storage)
        with db.transaction() as conn:
            conn.root()["big"] = Blob(data)
        storage.cache.clear()
        with db.transaction() as conn:
            assert conn.root()["big"].open().read() == data
        view = storage.swift_container
        assert [o.name for o in view.list() if o.name.endswith(".blob")]
        assert pending_names(view) == []
        db.close()
    finally:
        no_slo.stop()


UPLOADING_CHILD = textwrap.dedent("""
    import os, sys, time, ZODB.FileStorage
    from ZODB.Connection import TransactionMetaData
    from zodb_swiftblobs.storage import SwiftBlobStorage
    auth_url, user, key, container, directory, lease = sys.argv[1:7]
    storage = SwiftBlobStorage(
        ZODB.FileStorage.FileStorage(os.path.join(directory, "Data.fs")),
        container=container, cache_dir=os.path.join(directory, "child-cache"),
        auth_url=auth_url, user=user, key=key, early_upload_threshold={threshold},
        commit_lease=float(lease))
    path = os.path.join(directory, "blob")
    with open(path, "wb") as f:
        f.write(os.urandom({size}))
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    oid = storage.new_oid()
    storage.storeBlob(oid, b"\\0" * 8, b"a blob record", path, "", txn)
    view = storage.swift_container
    while not [o for o in view.list("commits/", container=view.segment_container)
               if o.name.endswith(oid.hex())]:
        time.sleep(0.05)
    print("uploaded", flush=True)
    sys.stdin.readline()
""").format(threshold=THRESHOLD, size=BIG)


def test_what_a_commit_killed_before_its_vote_left_is_collected_once_its_lease_lapses(
        cluster, container_name, view, tmp_path):
    settings = cluster.settings()
    child = subprocess.Popen(
        [sys.executable, "-c", UPLOADING_CHILD, settings.auth_url, settings.user,
         settings.key, container_name, str(tmp_path), "3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_environment())
    try:
        assert child.stdout.readline().strip() == "uploaded"
    finally:
        child.kill()
        child.wait()
    # its marker (written before the upload) and its pending object
    assert sorted(name.count("/") for name in pending_names(view)) == [1, 2]
    parent = parent_storage(cluster, container_name, tmp_path)
    try:
        def collected():
            parent.collect_garbage(b"\xff" * 8)
            return not pending_names(view)
        wait_for(collected, "the killed commit's lease to lapse and its uploads to go")
    finally:
        parent.close()

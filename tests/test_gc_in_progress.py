"""Garbage collection in another process never deletes the blob of a commit
that is between its vote and its finish, whatever the minimum age, over
FileStorage, RelStorage on SQLite and a ZEO server's storage.

Each test holds a real commit in that window (its blob already in Swift),
runs ``zodb-swiftblobs gc --min-age 0`` as a separate process, finishes the
commit, and reads the blob back through an empty cache.  A genuine orphan
shows that the sweep did run and delete.
"""

import json
import subprocess
import sys

import pytest
import ZEO
import ZODB
from ZODB.blob import Blob
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage
from ZODB.utils import p64, u64

from conftest import (blob_objects, blob_revision, child_environment, credentials_for,
                      sqlite_relstorage, store_blobs, swift_config, swift_storage)
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import SwiftContainer

LAYOUT = ObjectLayout()


@pytest.fixture
def view(devswift, container_name):
    container = SwiftContainer(credentials_for(devswift), container_name)
    yield container
    container.close()


def run_gc(config, database="main"):
    """``zodb-swiftblobs gc --min-age 0`` in a process of its own; its JSON report."""
    process = subprocess.run(
        [sys.executable, "-m", "zodb_swiftblobs.cli", "gc", str(config), "--database",
         database, "--min-age", "0", "--json"],
        capture_output=True, text=True, env=child_environment(), timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout)


def plant_orphan(view, tmp_path, oid, tid):
    """An object of a revision the database never had, older than its last
    transaction: what an aborted commit leaves, and what gc must delete."""
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"left by an aborted commit")
    name = LAYOUT.object_name(p64(u64(oid) + 1000), tid)
    view.upload(name, str(orphan))
    return name


def vote_new_revision(storage, oid, serial, path, data):
    """Begin a transaction storing a new revision of blob *oid*, and vote."""
    path.write_bytes(data)
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    storage.storeBlob(oid, serial, storage.loadSerial(oid, serial), str(path), "", txn)
    storage.tpc_vote(txn)
    return txn


def held_commit_survives_gc(storage, db, view, tmp_path, config, database="main"):
    """Hold a commit of *storage* between vote and finish while gc runs; return
    the finished transaction's id and the gc report."""
    oid, serial = blob_revision(db, "kept")
    orphan = plant_orphan(view, tmp_path, oid, serial)
    txn = vote_new_revision(storage, oid, serial, tmp_path / "new", b"voted, then finished")
    voted = {o.name for o in blob_objects(view)} - {LAYOUT.object_name(oid, serial), orphan}
    assert len(voted) == 1, "the vote uploaded the new revision"
    report = run_gc(config, database)
    tid = storage.tpc_finish(txn)
    assert voted == {LAYOUT.object_name(oid, tid)}
    assert report["deleted"] == 1, "the sweep ran and deleted the genuine orphan"
    assert LAYOUT.object_name(oid, tid) in {o.name for o in blob_objects(view)}, \
        "gc deleted the blob of a transaction that then committed"
    return oid, tid


def wrapped_commit_survives_gc(cluster, base, container, view, tmp_path, config):
    """*base* wrapped, with one blob committed, holds a commit while gc runs."""
    storage = swift_storage(cluster, base, container, tmp_path / "cache")
    db = ZODB.DB(storage)
    try:
        store_blobs(db, kept=b"committed")
        return held_commit_survives_gc(storage, db, view, tmp_path, config)
    finally:
        db.close()


def read_through_empty_cache(cluster, base, container, cache_dir, oid, tid):
    fresh = swift_storage(cluster, base, container, cache_dir)
    try:
        with open(fresh.loadBlob(oid, tid), "rb") as f:
            return f.read()
    finally:
        fresh.close()


def test_filestorage(devswift, tmp_path, container_name, view):
    config = tmp_path / "site.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "gc-cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>"))
    oid, tid = wrapped_commit_survives_gc(devswift, FileStorage(str(tmp_path / "Data.fs")),
                                          container_name, view, tmp_path, config)
    assert read_through_empty_cache(
        devswift, FileStorage(str(tmp_path / "Data.fs"), read_only=True), container_name,
        tmp_path / "empty-cache", oid, tid) == b"voted, then finished"


@pytest.mark.parametrize("keep_history", [True, False],
                         ids=["history-preserving", "history-free"])
def test_relstorage_on_sqlite(devswift, tmp_path, container_name, view, keep_history):
    config = tmp_path / "site.conf"
    config.write_text("%import relstorage\n" + swift_config(
        devswift, container_name, tmp_path / "gc-cache",
        f"<relstorage>\nkeep-history {str(keep_history).lower()}\n<sqlite3>\n"
        f"data-dir {tmp_path / 'db'}\n</sqlite3>\n</relstorage>"))
    oid, tid = wrapped_commit_survives_gc(
        devswift, sqlite_relstorage(tmp_path / "db", keep_history), container_name, view,
        tmp_path, config)
    assert read_through_empty_cache(
        devswift, sqlite_relstorage(tmp_path / "db", keep_history), container_name,
        tmp_path / "empty-cache", oid, tid) == b"voted, then finished"


def test_zeo_server_storage(devswift, tmp_path, container_name, view):
    """The server votes (and uploads) when its client votes; gc reads the
    server's zeo.conf and opens its Data.fs read-only beside it."""
    storage_conf = swift_config(
        devswift, container_name, tmp_path / "server-cache",
        f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>", database="1")
    storage_conf = storage_conf[storage_conf.index("<swiftblobstorage>"):
                                storage_conf.index("</zodb>")]
    zeo_conf = tmp_path / "zeo.conf"
    zeo_conf.write_text("%import zodb_swiftblobs\n<zeo>\n  address 127.0.0.1:0\n</zeo>\n"
                        + storage_conf.replace("<swiftblobstorage>", "<swiftblobstorage 1>"))
    address, stop = ZEO.server(storage_conf="%import zodb_swiftblobs\n" + storage_conf,
                               threaded=False)
    try:
        db = ZEO.DB(address, blob_dir=str(tmp_path / "client"))
        try:
            with db.transaction() as conn:
                conn.root()["kept"] = Blob(b"committed")
            oid, tid = held_commit_survives_gc(db.storage, db, view, tmp_path, zeo_conf,
                                               database="1")
        finally:
            db.close()
    finally:
        stop()
    assert read_through_empty_cache(
        devswift, FileStorage(str(tmp_path / "Data.fs"), read_only=True), container_name,
        tmp_path / "empty-cache", oid, tid) == b"voted, then finished"

"""SwiftBlobStorage around RelStorage on SQLite, history-preserving and history-free."""

import json
import subprocess
import sys
import time

import pytest
import ZODB
from ZODB.serialize import referencesf

from conftest import (blob_objects, blob_revision, child_environment, credentials_for,
                      sqlite_relstorage, store_blobs, swift_storage)
from zodb_swiftblobs import SwiftBlobStorage
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import SwiftContainer


def open_db(cluster, directory, container, keep_history, cache="cache"):
    return ZODB.DB(swift_storage(cluster, sqlite_relstorage(directory / "db", keep_history),
                                 container, directory / cache))


def read(db, name, **open_options):
    conn = db.open(**open_options)
    try:
        with conn.root()[name].open() as f:
            return f.read()
    finally:
        conn.close()


def stored(cluster, container):
    view = SwiftContainer(credentials_for(cluster), container)
    try:
        return [view_object.name for view_object in blob_objects(view)]
    finally:
        view.close()


@pytest.mark.parametrize("keep_history", [True, False],
                         ids=["history-preserving", "history-free"])
def test_commits_reach_other_processes_and_pack_collects(devswift, tmp_path, container_name,
                                                         keep_history):
    db = open_db(devswift, tmp_path, container_name, keep_history)
    first = store_blobs(db, b=b"one")
    second = store_blobs(db, b=b"two")
    other = open_db(devswift, tmp_path, container_name, keep_history, cache="other-cache")
    assert read(other, "b") == b"two", "another process sees the commit"
    if keep_history:
        assert read(db, "b", at=first) == b"one", "a historical connection reads the past"
    assert len(stored(devswift, container_name)) == 2
    db.storage.pack(time.time() + 1, referencesf, prepack_only=True)
    assert len(stored(devswift, container_name)) == 2, "a prepack collects nothing"
    db.pack(time.time() + 1)
    with other.transaction() as conn:
        current = ObjectLayout().object_name(conn.root()["b"]._p_oid, second)
    assert stored(devswift, container_name) == [current], \
        "the revision the pack (or history-free storage) dropped is gone from Swift"
    assert read(other, "b") == b"two"
    other.close()
    db.close()


COMMITTER = """
import json, sys, ZODB
from relstorage.adapters.sqlite.adapter import Sqlite3Adapter
from relstorage.options import Options
from relstorage.storage import RelStorage
from transaction.interfaces import TransientError
from ZODB.blob import Blob
from zodb_swiftblobs.storage import SwiftBlobStorage
directory, container, auth_url, user, key, rounds = sys.argv[1:]
options = Options(keep_history=True)
storage = SwiftBlobStorage(
    RelStorage(Sqlite3Adapter(directory + "/db", {}, options=options), options=options),
    container=container, cache_dir=directory + "/committer-cache",
    auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
committed = []
for round in range(int(rounds)):
    name = "k%d" % (round % 4)
    data = ("round %d" % round).encode()
    for attempt in range(20):
        try:
            with db.transaction() as conn:
                if name in conn.root():
                    with conn.root()[name].open("w") as f:
                        f.write(data)
                else:
                    conn.root()[name] = Blob(data)
            break
        except TransientError:  # a lock a pack held; anything else fails the test
            if attempt == 19:
                raise
    with db.transaction() as conn:
        blob = conn.root()[name]
        blob._p_activate()
        committed.append([blob._p_oid.hex(), blob._p_serial.hex(), data.decode()])
db.close()
print(json.dumps(committed))
"""


def test_gc_while_another_process_commits(devswift, tmp_path, container_name):
    """Packs (at a time before the other process began, so that they keep
    every revision it commits) and direct garbage collections, by a process
    whose first storage instance never polls, while another commits."""
    db = open_db(devswift, tmp_path, container_name, True)
    store_blobs(db, seed=b"seed")
    began = time.time()
    credentials = credentials_for(devswift)
    committer = subprocess.Popen(
        [sys.executable, "-c", COMMITTER, str(tmp_path), container_name,
         credentials.auth_url, credentials.user, credentials.key, "24"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_environment())
    collections = 0
    while committer.poll() is None:
        if collections % 4 == 0:
            db.pack(began)  # RelStorage's pack polls the first instance once done
        db.storage.collect_garbage()
        collections += 1
    out, err = committer.communicate(timeout=120)
    assert committer.returncode == 0, err[-3000:]
    assert collections >= 2, "the collections did not overlap the commits"
    db.storage.collect_garbage()
    fresh = swift_storage(devswift, sqlite_relstorage(tmp_path / "db", True), container_name,
                          tmp_path / "fresh-cache")
    for oid, serial, data in json.loads(out):
        with open(fresh.loadBlob(bytes.fromhex(oid), bytes.fromhex(serial)), "rb") as f:
            assert f.read() == data.encode(), f"revision {serial} of {oid} was lost"
    fresh.close()
    assert read(db, "seed") == b"seed"
    db.close()


def test_gc_sees_what_other_processes_committed_since_it_last_looked(devswift, tmp_path,
                                                                    container_name):
    """The storage a DB was opened with keeps the snapshot it last read;
    garbage collection must not take newer revisions for orphans."""
    db = open_db(devswift, tmp_path, container_name, True)
    store_blobs(db, blob=b"first")
    storage = db.storage
    storage.lastTransaction()
    storage.load(b"\0" * 8)  # the first instance now holds a snapshot
    other = open_db(devswift, tmp_path, container_name, True, cache="other-cache")
    serial = store_blobs(other, blob=b"committed elsewhere")
    other.close()
    storage.collect_garbage()
    fresh = open_db(devswift, tmp_path, container_name, True, cache="fresh-cache")
    assert read(fresh, "blob") == b"committed elsewhere"
    name = ObjectLayout().object_name(*blob_revision(fresh, "blob"))
    assert name in stored(devswift, container_name)
    assert blob_revision(fresh, "blob")[1] == serial
    fresh.close()
    db.close()


def test_a_relstorage_without_what_the_wrapper_uses_is_refused_at_open(tmp_path, monkeypatch):
    """A RelStorage release that renamed the vote's private step the wrapper
    uses (see bases.py): a clear error at open, not an AttributeError at the
    first commit with blobs."""
    from relstorage.storage.tpc.vote import AbstractVote

    monkeypatch.delattr(AbstractVote, "_lock_and_move")
    base = sqlite_relstorage(tmp_path / "db", True)
    try:
        with pytest.raises(ValueError, match=r"RelStorage \S+: it supports RelStorage 3.4 to 4"):
            SwiftBlobStorage(base, cache_dir=str(tmp_path / "cache"))
    finally:
        base.close()

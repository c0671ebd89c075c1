"""SwiftBlobStorage around RelStorage on SQLite, history-preserving and history-free."""

import json
import subprocess
import sys
import time

import pytest
import ZODB
from ZODB.serialize import referencesf

from conftest import (blob_objects, child_environment, credentials_for, sqlite_relstorage,
                      store_blobs, swift_storage)
from zodb_swiftblobs.keys import KeyLayout
from zodb_swiftblobs.swiftaccess import SwiftContainer


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
        current = KeyLayout().key(conn.root()["b"]._p_oid, second)
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
from ZODB.blob import Blob
from zodb_swiftblobs.storage import SwiftBlobStorage
directory, container, auth_url, user, key, rounds = sys.argv[1:]
options = Options(keep_history=True)
storage = SwiftBlobStorage(
    RelStorage(Sqlite3Adapter(directory + "/db", {}, options=options), options=options),
    container=container, cache_dir=directory + "/committer-cache",
    auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
last = {}
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
        except Exception as exc:
            if attempt == 19:
                raise
    last[name] = data.decode()
db.close()
print(json.dumps(last))
"""


def test_gc_while_another_process_commits(devswift, tmp_path, container_name):
    db = open_db(devswift, tmp_path, container_name, True)
    store_blobs(db, seed=b"seed")
    credentials = credentials_for(devswift)
    committer = subprocess.Popen(
        [sys.executable, "-c", COMMITTER, str(tmp_path), container_name,
         credentials.auth_url, credentials.user, credentials.key, "24"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_environment())
    packs = 0
    while committer.poll() is None:
        db.pack(time.time())
        packs += 1
    out, err = committer.communicate(timeout=120)
    assert committer.returncode == 0, err[-3000:]
    assert packs >= 2, "the packs did not overlap the commits"
    last = json.loads(out)
    fresh = open_db(devswift, tmp_path, container_name, True, cache="fresh-cache")
    for name, data in last.items():
        assert read(fresh, name) == data.encode(), f"{name} lost its last committed blob"
    assert read(fresh, "seed") == b"seed"
    fresh.close()
    db.close()

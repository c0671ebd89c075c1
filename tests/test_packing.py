"""Packing, with the intent of ZODB's blob_packing doctest: a pack to time T
keeps in Swift (and in the cache) exactly the blob revisions the base still
needs for states from T on, and removes the rest."""

import time

import pytest
import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from conftest import blob_objects, credentials_for, sqlite_relstorage, swift_storage
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import NotFoundError, SwiftContainer


def relstorage(keep_history):
    return lambda directory: sqlite_relstorage(directory / "db", keep_history)


BASES = {
    "FileStorage": (lambda directory: FileStorage(str(directory / "Data.fs")), True),
    "RelStorage-history-preserving": (relstorage(True), True),
    "RelStorage-history-free": (relstorage(False), False),
}


@pytest.fixture(params=list(BASES))
def packing(request, devswift, tmp_path, container_name):
    open_base, history = BASES[request.param]
    storage = swift_storage(devswift, open_base(tmp_path), container_name, tmp_path / "cache")
    db = ZODB.DB(storage)
    view = SwiftContainer(credentials_for(devswift), container_name)
    yield db, storage, view, history
    view.close()
    db.close()


def in_swift(view, oid, tids):
    present = []
    for tid in tids:
        try:
            view.head(ObjectLayout().object_name(oid, tid))
            present.append(True)
        except NotFoundError:
            present.append(False)
    return present


def test_pack_keeps_exactly_the_revisions_still_needed(packing):
    db, storage, view, history = packing
    conn = db.open()
    root = conn.root()
    times, tids = [], []
    for i in range(5):
        transaction.begin()
        times.append(time.time())
        time.sleep(0.02)
        if i == 0:
            root["blob"] = Blob()
        with root["blob"].open("w") as f:
            f.write(b"this is blob data %d" % i)
        transaction.commit()
        root["blob"]._p_activate()
        tids.append(root["blob"]._p_serial)
        time.sleep(0.02)
    oid = root["blob"]._p_oid
    assert in_swift(view, oid, tids) == [True] * 5, "every revision was uploaded"

    for k, expected_history in [(0, [True] * 5), (1, [True] * 5),
                                (2, [False, True, True, True, True]),
                                (3, [False, False, True, True, True]),
                                (4, [False, False, False, True, True])]:
        db.pack(times[k])
        expected = expected_history if history else [False] * 4 + [True]
        assert in_swift(view, oid, tids) == expected, f"after a pack to revision {k}"
    db.pack(time.time())
    assert in_swift(view, oid, tids) == [False] * 4 + [True]
    cache = storage.cache_stats()
    assert cache["entries"] == 1, "the cache dropped the removed revisions too"

    del root["blob"]
    transaction.commit()
    db.pack(time.time() + 1)
    assert in_swift(view, oid, tids) == [False] * 5
    assert [o.name for o in blob_objects(view)] == []
    assert storage.cache_stats()["entries"] == 0
    conn.close()

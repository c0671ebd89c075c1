"""python-swiftclient's log: expected misses (404) log nothing, real
failures are still logged."""

import logging

import pytest
import ZODB
from ZODB.FileStorage import FileStorage

from conftest import blob_objects, credentials_for, mint_token, store_blobs, swift_storage
from zodb_swiftblobs.swift import AuthenticationError, Credentials, SwiftContainer


def swiftclient_lines(caplog):
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records
            if r.name.startswith("swiftclient")]


def test_a_pack_without_a_segment_container_logs_no_swiftclient_line(devswift, tmp_path,
                                                                       container_name, caplog):
    caplog.set_level(logging.INFO)
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache")
    db = ZODB.DB(storage)
    view = SwiftContainer(credentials_for(devswift), container_name)
    try:
        store_blobs(db, doc=b"first")
        store_blobs(db, doc=b"second")
        assert len(blob_objects(view)) == 2
        db.pack()
        assert len(blob_objects(view)) == 1, "the pack's garbage collection ran"
        report = storage.collect_garbage()
        assert report.examined == 1
        storage.cache.clear()
        with db.transaction() as conn:
            assert conn.root()["doc"].open().read() == b"second"
        assert swiftclient_lines(caplog) == []
    finally:
        db.close()
        view.delete_many(view.list())
        view.close()


def test_failures_are_still_logged(devswift, container_name, caplog):
    caplog.set_level(logging.INFO)
    settings = devswift.settings()
    expired = mint_token(devswift, age=devswift.token_life + 60)
    stale = SwiftContainer(Credentials(preauth_url=settings.storage_url, preauth_token=expired),
                           container_name)
    try:
        with pytest.raises(AuthenticationError):
            stale.head("anything")
    finally:
        stale.close()
    lines = swiftclient_lines(caplog)
    assert lines[0].startswith("INFO REQ: curl -i ") and f"/{container_name}/anything" in lines[0]
    assert lines[1] == "INFO RESP STATUS: 401 Unauthorized"

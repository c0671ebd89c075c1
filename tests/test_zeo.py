"""A real ZEO server (its own process) serving a SwiftBlobStorage to two clients."""

import json
import time

import ZEO
from ZODB.blob import Blob

from conftest import blob_objects, credentials_for
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import SwiftContainer

SERVER_STORAGE = """
%import zodb_swiftblobs
<swiftblobstorage>
  container {container}
  cache-dir {cache}
  auth-url {auth_url}
  user {user}
  key {key}
  <filestorage>
    path {path}
  </filestorage>
</swiftblobstorage>
"""


def wait_for(db, tid, timeout=30.0):
    """ZEO tells clients of other clients' commits asynchronously: wait for it."""
    deadline = time.monotonic() + timeout
    while db.storage.lastTransaction() < tid:
        assert time.monotonic() < deadline, "the other client's commit never arrived"
        time.sleep(0.01)


def test_two_clients_read_each_others_blobs(devswift, tmp_path, container_name):
    credentials = credentials_for(devswift)
    address, stop = ZEO.server(storage_conf=SERVER_STORAGE.format(
        container=container_name, cache=tmp_path / "server-cache",
        auth_url=credentials.auth_url, user=credentials.user, key=credentials.key,
        path=tmp_path / "Data.fs"), threaded=False)
    try:
        first = ZEO.DB(address, blob_dir=str(tmp_path / "client1"))
        second = ZEO.DB(address, blob_dir=str(tmp_path / "client2"))
        with first.transaction() as conn:
            conn.root.a = Blob(b"from client 1")
        wait_for(second, first.storage.lastTransaction())
        with second.transaction() as conn:
            with conn.root.a.open() as f:
                assert f.read() == b"from client 1"
            conn.root.b = Blob(b"from client 2")
        wait_for(first, second.storage.lastTransaction())
        with first.transaction() as conn:
            with conn.root.b.open() as f:
                assert f.read() == b"from client 2"
            for blob in (conn.root.a, conn.root.b):
                blob._p_activate()
            revisions = [(blob._p_oid, blob._p_serial) for blob in (conn.root.a, conn.root.b)]
        first.close()
        second.close()
    finally:
        stop()
    view = SwiftContainer(credentials, container_name)
    layout = ObjectLayout()
    assert [o.name for o in blob_objects(view)] == sorted(layout.object_name(*r) for r in revisions)
    view.close()


def test_the_command_reads_the_servers_zeo_conf_while_it_serves(devswift, tmp_path,
                                                                container_name, capsys):
    credentials = credentials_for(devswift)
    storage_conf = SERVER_STORAGE.format(
        container=container_name, cache=tmp_path / "server-cache",
        auth_url=credentials.auth_url, user=credentials.user, key=credentials.key,
        path=tmp_path / "Data.fs")
    zeo_conf = tmp_path / "zeo.conf"
    zeo_conf.write_text("<zeo>\n  address 127.0.0.1:0\n</zeo>\n"
                        + storage_conf.replace("<swiftblobstorage>", "<swiftblobstorage 1>"))
    address, stop = ZEO.server(storage_conf=storage_conf, threaded=False)
    try:
        db = ZEO.DB(address, blob_dir=str(tmp_path / "client"))
        with db.transaction() as conn:
            conn.root.a = Blob(b"served by ZEO")
        db.close()
        # The server holds Data.fs; the command opens it read-only beside it.
        assert main(["verify", str(zeo_conf), "--database", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["present"] == 1
        assert main(["gc", str(zeo_conf), "--json"]) == 0  # its only storage
        assert json.loads(capsys.readouterr().out)["examined"] == 1
    finally:
        stop()

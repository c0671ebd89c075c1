"""Wrapped ZEO clients: a real ZEO server (its own process) whose storage is a
SwiftBlobStorage, and clients wrapped in SwiftBlobStorage that write and
read blobs in Swift themselves, beside plain ZEO clients."""

import json
import os

import pytest
import ZEO
import ZODB
from ZEO.ClientStorage import ClientStorage
import ZODB.config
from ZODB.blob import Blob, BlobStorage
from ZODB.FileStorage import FileStorage
from ZODB.POSException import StorageError

from conftest import (blob_objects, blob_revision, credentials_for, read, swift_config,
                      swift_storage, wait_for)
from test_zeo import wait_for as wait_for_commit
from zodb_swiftblobs.blob_references import MAGIC, InvalidBlobReference
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import SwiftContainer
from zodb_swiftblobs.testing.devswift import DevSwift

MIB = 1 << 20
THRESHOLD = MIB  # the clients' early-upload-threshold: smaller blobs are copied by the server

SERVER_STORAGE = """
%import zodb_swiftblobs
<swiftblobstorage>
  container {container}
  prefix {prefix}
  cache-dir {cache}
  auth-url {auth_url}
  user {user}
  key {key}
  gc-grace-period 0
  segment-size {segment_size}
  <filestorage>
    path {path}
  </filestorage>
</swiftblobstorage>
"""


class Deployment:
    """A ZEO server subprocess over a wrapped FileStorage, and its clients."""

    def __init__(self, cluster, tmp_path, container, prefix="db/"):
        self.cluster, self.tmp_path = cluster, tmp_path
        self.container, self.prefix = container, prefix
        credentials = credentials_for(cluster)
        self.address, self._stop = ZEO.server(storage_conf=SERVER_STORAGE.format(
            container=container, prefix=prefix, cache=tmp_path / "server-cache",
            auth_url=credentials.auth_url, user=credentials.user, key=credentials.key,
            segment_size=MIB, path=tmp_path / "Data.fs"), threaded=False)
        self.databases = []

    def wrapped(self, name, **options):
        """A database on a wrapped client, with its own cache (a host of its own)."""
        return self._opened(ZODB.DB(self.wrapped_storage(name, **options)))

    def wrapped_storage(self, name, **options):
        """A wrapped client, with its own cache (a host of its own)."""
        options.setdefault("early_upload_threshold", THRESHOLD)
        options.setdefault("segment_size", MIB)
        client = ClientStorage(self.address, blob_dir=str(self.tmp_path / f"{name}-zeo-blobs"))
        return swift_storage(self.cluster, client, self.container,
                             self.tmp_path / f"{name}-cache", prefix=self.prefix, **options)

    def plain(self, name):
        """A database on a plain ZEO client (blobs through the server)."""
        return self._opened(ZEO.DB(self.address, blob_dir=str(self.tmp_path / f"{name}-blobs")))

    def _opened(self, db):
        self.databases.append(db)
        return db

    def stop(self):
        for db in self.databases:
            db.close()
        self._stop()


@pytest.fixture
def deployment(devswift, tmp_path, container_name):
    deployment = Deployment(devswift, tmp_path, container_name)
    yield deployment
    deployment.stop()


@pytest.fixture
def view(devswift, container_name):
    view = SwiftContainer(credentials_for(devswift), container_name)
    yield view
    view.close()


def commit_blobs(db, **blobs):
    with db.transaction() as conn:
        for name, data in blobs.items():
            conn.root()[name] = Blob(data)
    return db.storage.lastTransaction()


def read_blobs(db, *names):
    with db.transaction() as conn:
        return {name: conn.root()[name].open().read() for name in names}


def test_wrapped_and_plain_clients_read_each_others_blobs(deployment, view):
    small, big = os.urandom(1000), os.urandom(3 * MIB + 5)
    wrapped, plain, other = (deployment.wrapped("w1"), deployment.plain("p"),
                             deployment.wrapped("w2"))
    tid = commit_blobs(wrapped, small=small, big=big, empty=b"")
    for db in (plain, other):
        wait_for_commit(db, tid)
        assert read_blobs(db, "small", "big", "empty") == {"small": small, "big": big,
                                                           "empty": b""}
    tid = commit_blobs(plain, from_plain=b"through the server")
    wait_for_commit(wrapped, tid)
    assert read_blobs(wrapped, "from_plain") == {"from_plain": b"through the server"}
    names = {o.name for o in blob_objects(view, "db/")}
    assert len(names) == 4 and all(name.endswith(".blob") for name in names)
    # the server copied the small blobs, and the client then deleted their
    # pending objects; the big one's stays, named in its commit's record
    big_oid = blob_revision(wrapped, "big")[0].hex()
    wait_for(lambda: commit_names(view) == ["marker", big_oid, "published"],
             "the copied pending objects deleted")


def commit_names(view):
    """What is under db/commits/, segments left out: "marker", oids, "published"."""
    names = [o.name.split("/")[2:] for o in view.list("db/commits/",
                                                      container=view.segment_container)]
    return [parts[1] if len(parts) == 2 else "marker" for parts in names if len(parts) <= 2]


def files_of_at_least(directory, size):
    return [os.path.join(d, f) for d, _, files in os.walk(directory) for f in files
            if os.path.getsize(os.path.join(d, f)) >= size]


def test_the_server_never_holds_a_wrapped_clients_blob(deployment, tmp_path):
    wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
    big = os.urandom(2 * MIB)
    tid = commit_blobs(wrapped, big=big)
    wait_for_commit(plain, tid)
    assert files_of_at_least(tmp_path / "server-cache", MIB) == []
    assert read_blobs(plain, "big") == {"big": big}  # the server downloads it for plain clients
    assert len(files_of_at_least(tmp_path / "server-cache", MIB)) == 1
    assert read(wrapped.storage.loadBlob(*blob_revision(wrapped, "big"))) == big
    commit_blobs(plain, through=big)  # a plain client's blob passes through the server
    assert len(files_of_at_least(tmp_path / "server-cache", MIB)) == 2
    assert [f for f in files_of_at_least(tmp_path / "w-zeo-blobs", 1)
            if not os.path.basename(f).startswith(".")] == [], "its ZEO blob-dir is unused"


def test_a_swiftblobstorage_section_wraps_a_zeoclient_section(deployment, devswift, tmp_path,
                                                              container_name, capsys):
    host, port = deployment.address
    config = tmp_path / "zope-client.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "conf-cache", f"""
    <zeoclient>
      server {host}:{port}
      blob-dir {tmp_path / "conf-zeo-blobs"}
      shared-blob-dir false
    </zeoclient>""", prefix="db/"))
    db = ZODB.config.databaseFromFile(open(config))
    deployment.databases.append(db)
    assert isinstance(db.storage.base, ClientStorage)
    tid = commit_blobs(db, configured=b"via zope.conf")
    assert not [f for f in files_of_at_least(tmp_path / "server-cache", 1)
                if read(f) == b"via zope.conf"], "the server never had its bytes"
    plain = deployment.plain("p")
    wait_for_commit(plain, tid)
    assert read_blobs(plain, "configured") == {"configured": b"via zope.conf"}
    capsys.readouterr()
    assert main(["verify", str(config), "--json"]) == 0  # through the server, read-only
    assert json.loads(capsys.readouterr().out)["present"] == 1
    assert main(["gc", str(config)]) != 0
    assert "ZEO server's configuration" in capsys.readouterr().err


def test_a_wrapped_client_refuses_a_prefix_no_database_owns(deployment, devswift, tmp_path):
    client = ClientStorage(deployment.address)
    with pytest.raises(StorageError, match="not claimed by any database"):
        swift_storage(devswift, client, deployment.container, tmp_path / "cache",
                      prefix="elsewhere/")
    client.close()


def test_copy_transactions_into_a_wrapped_client(deployment, tmp_path, view):
    source = BlobStorage(str(tmp_path / "old-blobs"), FileStorage(str(tmp_path / "old.fs")))
    old = ZODB.DB(source)
    second = os.urandom(2 * MIB)
    commit_blobs(old, first=b"v1")
    revisions = [blob_revision(old, "first")]
    commit_blobs(old, first=b"v2", second=second)  # new blobs: three in all
    revisions += [blob_revision(old, name) for name in ("first", "second")]
    wrapped = deployment.wrapped_storage("w")  # the server's database is still empty
    wrapped.copyTransactionsFrom(source)
    last = wrapped.lastTransaction()
    wrapped.close()
    old.close()
    layout = ObjectLayout("db/")
    assert {o.name for o in blob_objects(view, "db/")} == {
        layout.object_name(oid, tid) for oid, tid in revisions}
    plain = deployment.plain("p")
    wait_for_commit(plain, last)
    assert read_blobs(plain, "first", "second") == {"first": b"v2", "second": second}


def test_a_local_storage_refuses_a_file_that_looks_like_a_reference(devswift, tmp_path,
                                                                     container_name):
    """A storage wrapped in other storage wrappers cannot tell whether a ZEO
    server serves it: every storage takes such a file for a reference."""
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            tmp_path / "cache")
    db = ZODB.DB(storage)
    with pytest.raises(InvalidBlobReference, match="malformed"):
        commit_blobs(db, looks_like=MAGIC + b'{"not": "a reference"}')
    commit_blobs(db, fine=b"the next transaction commits")
    db.close()


def test_a_crafted_reference_from_a_plain_client_is_refused(deployment):
    plain = deployment.plain("p")
    with pytest.raises(Exception, match=r"malformed blob reference \(no 'pending'\)") as info:
        commit_blobs(plain, crafted=MAGIC + b'{"not": "a reference"}')
    assert InvalidBlobReference.__name__ in str(info.value)  # as ZEO's client reports it
    commit_blobs(plain, fine=b"the transaction after it commits")


def test_without_slo_a_wrapped_client_sends_its_blobs_through_the_server(tmp_path,
                                                                         container_name):
    no_slo = DevSwift(str(tmp_path / "swift"), without_middleware=("slo",))
    no_slo.start()
    deployment = Deployment(no_slo, tmp_path, container_name)
    try:
        wrapped, plain = deployment.wrapped("w"), deployment.plain("p")
        data = os.urandom(2 * MIB)
        tid = commit_blobs(wrapped, big=data, small=b"small")
        wait_for_commit(plain, tid)
        assert read_blobs(plain, "big", "small") == {"big": data, "small": b"small"}
        assert len(files_of_at_least(tmp_path / "server-cache", 2 * MIB)) == 1
    finally:
        deployment.stop()
        no_slo.stop()

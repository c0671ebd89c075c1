"""Wrapped ZEO clients of a real ZEO server, for the fault tests: the server
(a runzeo process over a wrapped FileStorage, which a test may kill and
start again), clients in this process, and wrapped clients in child
processes that a test tells what to store and commit, and stops at a known
point of their commit (see :class:`Child`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import ZEO
import ZODB
from ZEO.ClientStorage import ClientStorage
from ZODB.blob import Blob

from conftest import child_environment, credentials_for, swift_storage, wait_for
from test_zeo import wait_for as wait_for_commit
from test_zeo_clients import SERVER_STORAGE
from zodb_swiftblobs.blob_references import MAGIC
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import NotFoundError, SwiftContainer

MIB = 1 << 20
THRESHOLD = MIB      # the clients' early-upload-threshold: smaller blobs are copied
SEGMENT = MIB        # everyone's segment size
LEASE = 8.0          # the child clients' commit lease (refreshed every 2 s; 4 s of slack)
PREFIX = "db/"
LAYOUT = ObjectLayout(PREFIX)

def server_storage(cluster, directory, container, extra=""):
    """The storage section of a ZEO server: a FileStorage in *directory*
    wrapped in a swiftblobstorage of *container* with *extra* settings."""
    credentials = credentials_for(cluster)
    return SERVER_STORAGE.replace("  <filestorage>", f"  {extra}\n  <filestorage>").format(
        container=container, prefix=PREFIX, cache=directory / "server-cache",
        auth_url=credentials.auth_url, user=credentials.user, key=credentials.key,
        segment_size=SEGMENT, path=directory / "Data.fs")


class Deployment:
    """A ZEO server process (runzeo) over a wrapped FileStorage, configured
    by its zeo.conf, and its clients here and in child processes."""

    def __init__(self, cluster, tmp_path, container, *, server_extra=""):
        self.cluster, self.tmp_path, self.container = cluster, tmp_path, container
        storage_conf = server_storage(cluster, tmp_path, container, server_extra)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.address = probe.getsockname()
        self.zeo_conf = tmp_path / "zeo.conf"
        self.zeo_conf.write_text(f"<zeo>\n  address {self.address[0]}:{self.address[1]}\n"
                                 "</zeo>\n" + storage_conf)
        self.databases, self.children = [], []
        self.server = None
        self.start_server()
        self.view = SwiftContainer(credentials_for(cluster), container, deadline=30)

    def start_server(self):
        with open(self.tmp_path / "server.log", "ab") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "ZEO.runzeo", "-C", str(self.zeo_conf)],
                stdout=log, stderr=subprocess.STDOUT, env=child_environment())

        def listening():
            assert self.server.poll() is None, "the ZEO server ended: see server.log"
            with socket.socket() as connection:
                return connection.connect_ex(self.address) == 0
        wait_for(listening, "the ZEO server to listen")

    def stop_server(self, signal_number=signal.SIGTERM):
        if self.server.poll() is None:
            self.server.send_signal(signal_number)
        self.server.wait(30)

    def wrapped(self, name, **options):
        """A database on a wrapped client in this process (a host of its own)."""
        options.setdefault("early_upload_threshold", THRESHOLD)
        options.setdefault("segment_size", SEGMENT)
        options.setdefault("prefix", PREFIX)
        client = ClientStorage(self.address, blob_dir=str(self.tmp_path / f"{name}-zeo-blobs"))
        try:
            storage = swift_storage(self.cluster, client,
                                    options.pop("container", self.container),
                                    self.tmp_path / f"{name}-cache", **options)
        except BaseException:
            client.close()
            raise
        return self._opened(ZODB.DB(storage))

    def plain(self, name):
        """A database on a plain ZEO client (blobs through the server)."""
        return self._opened(ZEO.DB(self.address, blob_dir=str(self.tmp_path / f"{name}-blobs")))

    def _opened(self, db):
        self.databases.append(db)
        return db

    def child(self, name, lease=LEASE):
        """A wrapped client in a child process (see :class:`Child`)."""
        child = Child(self, name, lease)
        self.children.append(child)
        return child

    def gc(self):
        """The command's garbage collection on the server's zeo.conf, no minimum age."""
        assert main(["gc", str(self.zeo_conf), "--min-age", "0", "--json"]) == 0

    def commit_names(self):
        """What is under the prefix's commits/ (markers, pending objects, segments)."""
        try:
            return [o.name for o in self.view.list(LAYOUT.commits_prefix,
                                                   container=self.view.segment_container)]
        except NotFoundError:  # no segment container
            return []

    def blob_names(self):
        return sorted(o.name for o in self.view.list(PREFIX) if o.name.endswith(".blob"))

    def collected(self, what="what the commit left to be collected"):
        """Run gc until nothing is under commits/ (a lease must lapse first)."""
        def nothing_left():
            self.gc()
            return not self.commit_names()
        wait_for(nothing_left, what, timeout=60)

    def stop(self):
        for child in self.children:
            child.end()
        for db in self.databases:
            db.close()
        self.stop_server()
        self.view.close()


CHILD = textwrap.dedent("""
    import os, sys, time, transaction, ZODB
    from ZEO.ClientStorage import ClientStorage
    from ZODB.blob import Blob
    from zodb_swiftblobs.storage import SwiftBlobStorage

    host, port, auth_url, user, key, container, prefix, directory, lease = sys.argv[1:10]
    client = ClientStorage((host, int(port)), blob_dir=os.path.join(directory, "zeo-blobs"),
                           wait_timeout=5)
    storage = SwiftBlobStorage(client, container=container, prefix=prefix,
                               cache_dir=os.path.join(directory, "cache"),
                               auth_url=auth_url, user=user, key=key,
                               early_upload_threshold={threshold}, segment_size={segment},
                               commit_lease=float(lease))
    db = ZODB.DB(storage)


    class Stop:
        # A data manager that stops the commit before (sort key first) or
        # after (last) the storage's vote, until told to go on.
        def __init__(self, where):
            self.where = where
        def sortKey(self):
            return "\\x00" if self.where == "before-vote" else "\\xff"
        def tpc_vote(self, txn):
            print(self.where, flush=True)
            sys.stdin.readline()
        abort = tpc_begin = commit = tpc_finish = tpc_abort = lambda self, txn: None


    def say(*words):
        print(*words, flush=True)


    conn = db.open()
    for line in sys.stdin:
        command, *args = line.split()
        try:
            if command == "store":      # store NAME PATH: a new blob of that file's bytes
                conn.root()[args[0]] = blob = Blob()
                conn.add(blob)
                with open(args[1], "rb") as source, blob.open("w") as target:
                    target.write(source.read())
                say("stored")
            elif command == "commit":   # commit [before-vote|after-vote]
                if args:
                    transaction.get().join(Stop(args[0]))
                try:
                    transaction.commit()
                except Exception as exc:
                    transaction.abort()
                    say("failed", type(exc).__name__, str(exc).replace("\\n", " "))
                else:
                    say("committed", storage.lastTransaction().hex())
            elif command == "write":    # write NAME PATH: a new revision of blob NAME
                with open(args[1], "rb") as source, conn.root()[args[0]].open("w") as target:
                    target.write(source.read())
                say("stored")
            elif command == "connect":  # wait until connected to the server
                while not client.is_connected():
                    time.sleep(0.05)
                say("connected")
            elif command == "oid":      # oid NAME
                blob = conn.root()[args[0]]
                say(blob._p_oid.hex())
            elif command == "read":     # read NAME: its size
                conn.sync()
                with conn.root()[args[0]].open() as f:
                    say(len(f.read()))
        except Exception as exc:
            say("error", type(exc).__name__, exc)
""").format(threshold=THRESHOLD, segment=SEGMENT)


class Child:
    """A wrapped client of the deployment's server in a child process, told
    by lines on its standard input what to store and commit."""

    def __init__(self, deployment, name, lease):
        settings = deployment.cluster.settings()
        host, port = deployment.address
        self.directory = deployment.tmp_path / name
        self.directory.mkdir()
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, host, str(port), settings.auth_url, settings.user,
             settings.key, deployment.container, PREFIX, str(self.directory), str(lease)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_environment())
        self.pid = self.process.pid

    def tell(self, *words):
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()

    def answer(self):
        line = self.process.stdout.readline().strip()
        assert line, f"the child ended ({self.process.wait()})"
        return line

    def store(self, name, data):
        """Store a new blob *name* of *data*; its oid."""
        path = self.directory / f"{name}.data"
        path.write_bytes(data)
        self.tell("store", name, str(path))
        assert self.answer() == "stored"
        self.tell("oid", name)
        return bytes.fromhex(self.answer())

    def write(self, name, data):
        """Write *data* into the existing blob *name*."""
        path = self.directory / f"{name}.data"
        path.write_bytes(data)
        self.tell("write", name, str(path))
        assert self.answer() == "stored"

    def signal(self, number):
        os.kill(self.pid, number)

    def end(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def assert_failed(child, error, *words):
    """The child's commit failed with *error*, whose message has *words*."""
    answer = child.answer()
    assert answer.startswith(f"failed {error}") and all(w in answer for w in words), answer


def pending_of(deployment, oid=None):
    """The names of the pending objects (not their segments) of *oid*, or of all."""
    return [name for name in deployment.commit_names()
            if LAYOUT.parse_commit_name(name) and LAYOUT.parse_commit_name(name)[1]
            and (oid is None or name.endswith(f"/{oid.hex()}"))]


def committed_tid(child):
    answer = child.answer()
    assert answer.startswith("committed "), answer
    return bytes.fromhex(answer.split()[1])


def assert_round_trip(deployment, wrapped, size):
    """A blob of *size* committed through *wrapped* is what a plain client reads."""
    data = os.urandom(size)
    with wrapped.transaction() as conn:
        conn.root()["blob"] = Blob(data)
    plain = deployment.plain("p")
    wait_for_commit(plain, wrapped.storage.lastTransaction())
    assert read_blob(plain, "blob") == data


def read_blob(db, name):
    with db.transaction() as conn:
        with conn.root()[name].open() as f:
            return f.read()


def hold_publishing(deployment, oid):
    """Hold the server's next publishing request for blob *oid* (the PUT of
    its final object: a manifest, or a copy) in the proxy; the release file."""
    release = deployment.tmp_path / f"release-{oid.hex()}"
    deployment.cluster.inject_faults({"method": "PUT", "times": 1, "hold_until": str(release),
                                      "path": f"/{deployment.container}/{PREFIX}{oid.hex()}/"})
    return release


def commit_held_while_publishing(deployment, child, oid):
    """Have *child* commit, and hold the server's publishing request for
    blob *oid* in the proxy until the release file (returned) exists."""
    release = hold_publishing(deployment, oid)
    child.tell("commit")

    def held():
        return [fault for fault in deployment.cluster.faults_applied()
                if f"/{deployment.container}/{PREFIX}{oid.hex()}/" in fault["path"]]
    wait_for(held, "the server's publishing request to be held")
    return release


def uploaded(deployment, *oids):
    """Wait until the pending objects of *oids* are in Swift."""
    wait_for(lambda: all(pending_of(deployment, oid) for oid in oids),
             "the child's pending uploads")


def committed_names(deployment, oid):
    return [name for name in deployment.blob_names() if name.startswith(f"{PREFIX}{oid.hex()}/")]


def commit_from_plain(deployment, name="after", data=b"the server is free"):
    """A plain client commits a blob (the server's commit lock is free) and reads it."""
    plain = deployment.plain(f"plain-{name}")
    with plain.transaction() as conn:
        conn.root()[name] = Blob(data)
    assert read_blob(plain, name) == data
    return plain


def crafted_reference(deployment, oid, token, /, *, text=None, **changes):
    """A blob file a plain client stores: a reference to the pending object of
    *oid* in commit *token*, with *changes* to its fields (``pending_x`` for
    the pending object's field x), or *text* after the magic line."""
    body = {"container": deployment.container, "prefix": PREFIX, "token": token,
            "oid": oid.hex(), "publish": "copy",
            "pending": {"name": LAYOUT.pending_name(token, oid), "size": 5,
                        "etag": hashlib.md5(b"hello").hexdigest(), "headers": {}}}
    if changes.get("pending_name", "") is None:  # the name in the commit *changes* names
        changes["pending_name"] = LAYOUT.pending_name(changes["token"], oid)
    for key, value in changes.items():
        if key.startswith("pending_"):
            body["pending"][key[len("pending_"):]] = value
        else:
            body[key] = value
    return MAGIC + (text.encode() if text is not None else json.dumps(body).encode())


def wait_for_blob(plain, wrapped):
    """(oid, serial) of the root's "blob" once *plain* sees *wrapped*'s last commit."""
    wait_for_commit(plain, wrapped.storage.lastTransaction())
    with plain.transaction() as conn:
        blob = conn.root()["blob"]
        blob._p_activate()
        return blob._p_oid, blob._p_serial


def committed_blob_and_its_reference(deployment, wrapped, plain):
    """*wrapped* commits a blob published by manifest (the root's "blob");
    its data, and a reference to its committed pending object, which a plain
    client could store as a new revision of it (who learnt the commit's token
    from a listing, or a manifest)."""
    data = os.urandom(THRESHOLD)  # one segment: its etag is its MD5
    with wrapped.transaction() as conn:
        conn.root()["blob"] = Blob(data)
    oid, _ = wait_for_blob(plain, wrapped)
    token = LAYOUT.commit_token_of(pending_of(deployment, oid)[0])
    return data, crafted_reference(deployment, oid, token, publish="manifest",
                                   pending_size=len(data),
                                   pending_etag=hashlib.md5(data).hexdigest())

"""The workloads Z1 and Z2: clients of one ZEO server beside a client that
moves a big blob, and the bytes the server carries for blobs.

Every subject runs a real ZEO server, ``runzeo`` in a process of its own:

- ``local``: ZODB's BlobStorage on the server (FileStorage with a blob-dir),
  plain ZEO clients with blob-dirs of their own;
- ``plain``: SwiftBlobStorage over FileStorage on the server, plain ZEO
  clients (the set-up before wrapped clients);
- ``swiftblobs``: the same server, wrapped clients:
  ``SwiftBlobStorage(ClientStorage(...))`` with the server's container and
  prefix.

Z1: client A reads a blob cold (new caches, and a new server process whose
wrapper's cache is new too) while client B loads a small object from the
server in a loop (``loadSerial``: always a round trip).  Z2: A commits a big
blob while B commits small transactions (no blobs).  The measure: B's worst
latency during A's read or commit, as a share of its duration (target at most
10 %), and that worst latency over B's worst alone.  Z1 also counts, with a
:class:`CountingRelay` between the clients and the server, the bytes the ZEO
connections carry for the commit of the blob it reads and for a cold read by
another client (neither of them timed).  The ``plain`` subject's values have
rows of their own, in the zodb-swiftblobs column.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import ZODB
from persistent.mapping import PersistentMapping
from ZEO.ClientStorage import ClientStorage

from concurrency import Repeated, add_mappings, alongside, linked_copy
from relay import CountingRelay
from report import Below
from subjects import LOCAL, MIB, SWIFTBLOBS, CpuSeconds, add_blobs, opened
from workloads import Bench, order

PLAIN = "plain"
SUBJECTS = (LOCAL, PLAIN, SWIFTBLOBS)
BLOCKED_LIMIT = 10.0    # % of A's read or commit, at most
BYTES_LIMIT = 1.0       # MiB through the server: less than any blob of Z1 (no blob bytes)
LOADS_ALONE = 200       # Z1: B's loads timed alone first
PREFIX = ""             # the wrapped clients' and the server's
PLAIN_MEASURE = "  the same, plain clients via the server's wrapper"
SERVER_START_TIMEOUT = 60.0
SERVER_STOP_TIMEOUT = 60.0

ZEO_CONF = """<zeo>
  address 127.0.0.1:{port}
</zeo>

{storage}
"""

LOCAL_STORAGE = """<filestorage 1>
  path {directory}/Data.fs
  blob-dir {directory}/blobs
</filestorage>
"""

SWIFT_STORAGE = """%import zodb_swiftblobs
<swiftblobstorage 1>
  container {container}
  prefix {prefix}
  cache-dir {cache}
  auth-url {auth_url}
  user {user}
  key {key}
  {options}
  <filestorage>
    path {directory}/Data.fs
  </filestorage>
</swiftblobstorage>
"""


# -- the server and its clients ----------------------------------------------------------

def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


class ZeoServer:
    """A ZEO server in a process of its own (``runzeo``, its output in
    ``zeo.log``) serving the storage section *storage* at ``address``."""

    def __init__(self, directory: str, storage: str) -> None:
        self.address = ("127.0.0.1", _free_port())
        config = os.path.join(directory, "zeo.conf")
        with open(config, "w") as f:
            f.write(ZEO_CONF.format(port=self.address[1], storage=storage))
        self._log = os.path.join(directory, "zeo.log")
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ZEO.runzeo", "-C", config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_until_listening(self) -> None:
        give_up = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the ZEO server exited ({self.process.returncode}): "
                                   f"{self._log_tail()}")
            try:
                socket.create_connection(self.address, timeout=1).close()
                return
            except OSError as error:
                if time.monotonic() > give_up:
                    raise RuntimeError(f"the ZEO server never listened: "
                                       f"{self._log_tail()}") from error
                time.sleep(0.05)

    def _log_tail(self) -> str:
        with open(self._log, errors="replace") as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        """Stop the server (SIGTERM: it closes its storage) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ZeoServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@dataclass
class ZeoSetUp:
    """One subject's database (files under the label's directory, blobs in
    *container* for the subjects in Swift): its servers and clients."""

    bench: Bench
    subject: str
    label: str
    container: str

    @property
    def directory(self) -> str:
        path = os.path.join(self.bench.databases.directory, self.label)
        os.makedirs(path, exist_ok=True)
        return path

    def server(self) -> ZeoServer:
        """A new server process over the database; a Swift wrapper's cache is new (cold)."""
        if self.subject == LOCAL:
            return ZeoServer(self.directory, LOCAL_STORAGE.format(directory=self.directory))
        settings, sizes = self.bench.databases.settings, self.bench.sizes
        options = [f"large-object-threshold {sizes.large_object_threshold}"
                   if sizes.large_object_threshold else "",
                   f"segment-size {sizes.segment_size}" if sizes.segment_size else ""]
        return ZeoServer(self.directory, SWIFT_STORAGE.format(
            container=self.container, prefix=PREFIX,
            cache=os.path.join(self.directory, f"server-cache-{uuid.uuid4().hex[:8]}"),
            auth_url=settings.auth_url, user=settings.user, key=settings.key,
            options="\n  ".join(option for option in options if option),
            directory=self.directory))

    def client(self, address: tuple[str, int], role: str) -> ZODB.DB:
        """A new client of the server at *address*, its caches new (empty)."""
        name = f"{role}-{uuid.uuid4().hex[:8]}"
        base = ClientStorage(address, blob_dir=os.path.join(self.directory, f"{name}-blobs"))
        if self.subject != SWIFTBLOBS:
            return ZODB.DB(base)
        try:
            storage = self.bench.databases.swift_storage(
                self.label, self.container, cache=f"{name}-cache", prefix=PREFIX, base=base)
        except BaseException:
            base.close()
            raise
        return ZODB.DB(storage)

    def remove(self) -> None:
        shutil.rmtree(self.directory)


# -- one client beside another's big read or commit ----------------------------------------

@dataclass
class WorstWait:
    """What Z1 and Z2 measure for one subject: B's calls alone, then during
    A's operation."""

    duration: float          # seconds A's operation took
    median_alone: float      # seconds
    worst_alone: float       # seconds
    worst_during: float      # seconds
    server_cpu: float        # CPU seconds the ZEO server used during A's operation

    @property
    def blocked(self) -> float:
        """B's worst latency during A's operation, % of its duration."""
        return 100 * self.worst_during / self.duration

    def text(self, operation: str) -> str:
        return (f"the {operation} took {self.duration:.3f} s (ZEO server CPU "
                f"{self.server_cpu:.2f} s, B's included); alone: median "
                f"{_milliseconds(self.median_alone)}, worst {_milliseconds(self.worst_alone)}; "
                f"worst during it {_milliseconds(self.worst_during)}")


def beside(repeated: Repeated, operation: Callable[[], object], alone: int,
           server_pid: int) -> WorstWait:
    """*repeated*'s calls, *alone* of them, then alongside *operation*."""
    latencies = repeated.alone(alone)
    with CpuSeconds([server_pid]) as cpu:
        start, end = alongside(repeated, operation)
    return WorstWait(end - start, statistics.median(latencies), max(latencies),
                     max(repeated.during(start, end)), cpu.servers)


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _amount(nbytes: int) -> str:
    return f"{nbytes / MIB:,.2f} MiB" if nbytes >= MIB else f"{nbytes / 1024:,.1f} KiB"


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB"


@dataclass(frozen=True)
class Rows:
    """A measure's rows: one for local and wrapped clients, one for plain clients."""

    wrapped: tuple[str, str, str]
    plain: tuple[str, str, str]

    def declare(self, bench: Bench) -> None:
        for row in (self.wrapped, self.plain):
            bench.row(*row)

    def record(self, bench: Bench, subject: str, value: float) -> None:
        """*subject*'s value: plain clients' in their own row, zodb-swiftblobs column."""
        if subject == PLAIN:
            bench.record(*self.plain, SWIFTBLOBS, value)
        else:
            bench.record(*self.wrapped, subject, value)


@dataclass(frozen=True)
class BlockedRows:
    """The rows of B's blocked share and of its worst latency over alone."""

    share: Rows
    worst: Rows

    @classmethod
    def declare(cls, bench: Bench, key: str, what: str) -> BlockedRows:
        """The rows of workload *key* (declared in table order), the share's target set."""
        rows = cls(Rows((key, what, "%"), (f"{key} plain", PLAIN_MEASURE, "%")),
                   Rows((f"{key} worst", "  its worst latency during it / alone", "x"),
                        (f"{key} plain worst", "  its worst latency during it / alone", "x")))
        for row in (rows.share.wrapped, rows.worst.wrapped, rows.share.plain,
                    rows.worst.plain):
            bench.row(*row)
        bench.target(key, Below(key, SWIFTBLOBS, BLOCKED_LIMIT, inclusive=True))
        return rows

    def record(self, bench: Bench, subject: str, result: WorstWait) -> None:
        self.share.record(bench, subject, result.blocked)
        self.worst.record(bench, subject, result.worst_during / result.worst_alone)


def each_subject(bench: Bench, repetition: int, workload: str, size: int,
                 measure: Callable[[ZeoSetUp, str], Any]) -> list[tuple[str, Any]]:
    """(subject, *measure*'s result) for each subject, *measure* given the
    subject's set-up (removed after) and a new link to a file of *size*
    random bytes (to consume)."""
    source = bench.files(f"zeo-{size}", 1, size)[0]
    results = []
    for subject in order(repetition, SUBJECTS):
        label = f"{workload}-{repetition}-{subject}"
        setup = ZeoSetUp(bench, subject, label, f"bench-{workload}-{uuid.uuid4().hex[:8]}")
        try:
            results.append((subject, measure(setup, linked_copy(bench, source, label, "big"))))
        finally:
            setup.remove()
    bench.remove_scratch()
    return results


# -- Z1: loads beside a cold read, and the bytes through the server ---------------------------

def commit_blob(setup: ZeoSetUp, address: tuple[str, int],
                path: str) -> tuple[bytes, bytes, bytes]:
    """Commit, through a new client, the file *path* as blob "big" and a
    mapping "small" in one transaction: their oids and its id."""
    with opened(setup.client(address, "writer")) as (conn, manager):
        blob, = add_blobs(conn, manager, {"big": path})
        small = conn.root()["small"] = PersistentMapping()
        manager.commit()
        return blob._p_oid, small._p_oid, conn.db().storage.lastTransaction()


def read_beside_loads(setup: ZeoSetUp, path: str) -> tuple[WorstWait, int, int]:
    """Commit *path* through a relay; restart the server (cold) and time A's
    read beside B's loads; read it again through a relay: the result and the
    bytes the relay carried for the commit and for the read."""
    with setup.server() as server, CountingRelay(server.address) as relay:
        oid, small_oid, tid = commit_blob(setup, relay.address, path)
    committed = relay.total
    with setup.server() as server:
        with closing(setup.client(server.address, "reader")) as reader, \
                closing(setup.client(server.address, "loader")) as loader:
            result = beside(Repeated(lambda: loader.storage.loadSerial(small_oid, tid)),
                            lambda: reader.storage.loadBlob(oid, tid), LOADS_ALONE, server.pid)
        with CountingRelay(server.address) as relay, \
                closing(setup.client(relay.address, "other-reader")) as other:
            other.storage.loadBlob(oid, tid)
    return result, committed, relay.total


def cold_read(bench: Bench, repetition: int) -> None:
    size = bench.sizes.big_read
    blocked = BlockedRows.declare(bench, "Z1", f"loads blocked by a cold {_size_label(size)} "
                                               "read, % of it")
    carried = Rows(("Z1 bytes", f"through the ZEO server: a {_size_label(size)} commit, "
                                "a cold read", "MiB"),
                   ("Z1 bytes plain", PLAIN_MEASURE, "MiB"))
    carried.declare(bench)
    bench.target("Z1 bytes", Below("Z1 bytes", SWIFTBLOBS, BYTES_LIMIT))
    timings, amounts = [], []
    for subject, (result, committed, read) in each_subject(bench, repetition, "z1", size,
                                                           read_beside_loads):
        blocked.record(bench, subject, result)
        carried.record(bench, subject, (committed + read) / MIB)
        timings.append(f"{subject}: {result.text('read')}")
        amounts.append(f"{subject}: {_amount(committed)} for the commit, {_amount(read)} "
                       "for the read")
    bench.rows["Z1"].note = (
        "clients A and B of a ZEO server process (local: ZODB's BlobStorage on the server, "
        "plain clients; plain: SwiftBlobStorage on the server, plain clients; swiftblobs: "
        "the same server, wrapped clients); B's loads; " + "; ".join(timings))
    bench.rows["Z1 bytes"].note = "; ".join(amounts)


# -- Z2: small commits beside a big one ------------------------------------------------------

def commit_beside_commits(setup: ZeoSetUp, path: str, alone: int) -> WorstWait:
    """A's commit of the file *path* beside B's small commits (no blobs)."""
    with setup.server() as server, closing(setup.client(server.address, "writer")) as writer:
        add_mappings(writer, "small", "big")
        with closing(setup.client(server.address, "committer")) as committer, \
                opened(writer, close_db=False) as (conn, manager), \
                opened(committer, close_db=False) as (small_conn, small_manager):
            add_blobs(conn, manager, {"blob": path}, into=conn.root()["big"])
            counter = itertools.count()

            def change() -> None:
                small_conn.root()["small"]["n"] = next(counter)
            return beside(Repeated(small_manager.commit, change), manager.commit, alone,
                          server.pid)


def big_commit(bench: Bench, repetition: int) -> None:
    size = bench.sizes.big_commit_blob
    blocked = BlockedRows.declare(bench, "Z2", f"commits blocked by a {_size_label(size)} "
                                               "commit, % of it")
    timings = []
    for subject, result in each_subject(
            bench, repetition, "z2", size,
            lambda setup, path: commit_beside_commits(setup, path,
                                                      bench.sizes.small_commits_alone)):
        blocked.record(bench, subject, result)
        timings.append(f"{subject}: {result.text('commit')}")
    bench.rows["Z2"].note = "B's commits; " + "; ".join(timings)


WORKLOADS = {"Z1": cold_read, "Z2": big_commit}

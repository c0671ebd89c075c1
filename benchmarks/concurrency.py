"""The workloads W9 and W10: writers of one database committing at the same time.

W9: small commits in one thread while another commits a big blob; a small
commit counts as blocked from ``BLOCKED_FACTOR`` times its median latency
alone (measured just before) until it ends, and the measure is the share of
the big commit's duration covered by blocked small commits.  Beside it, the
same measure for raw python-swiftclient: small PUTs (what a small commit
sends Swift) while another thread PUTs the big blob, which shows what the
cluster and the machine impose on any client; and, over FileStorage, how
long the big commit held the base's commit lock.
W10: ``WRITERS`` threads, each with a connection of its own to one database,
commit a blob each at the same moment, against as many parallel raw PUTs.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import ZODB
from persistent.mapping import PersistentMapping

from report import Below, Ratio
from subjects import LOCAL, MIB, RAW, SWIFTBLOBS, CpuSeconds, Stopwatch, add_blobs, opened
from workloads import Bench, new_database, order

BLOCKED_FACTOR = 10     # W9: blocked beyond this many times the median latency alone
BLOCKED_LIMIT = 10.0    # W9: % of the big commit's duration, at most
SMALL_BLOB = 4096       # W9: bytes of each small commit's blob
WRITERS = 4             # W10
FILESTORAGE, RELSTORAGE = "FileStorage", "RelStorage"


def _size_label(size: int) -> str:
    return f"{size // MIB} MiB"


def add_mappings(db: ZODB.DB, *keys: str) -> None:
    """Commit an empty mapping under each root key, so that writers of different
    keys never conflict."""
    with opened(db, close_db=False) as (conn, manager):
        for key in keys:
            conn.root()[key] = PersistentMapping()
        manager.commit()


def linked_copy(bench: Bench, source: str, *parts: str) -> str:
    """A new hard link to *source* (a blob consumes it by renaming: no copy)."""
    path = os.path.join(bench.scratch(*parts[:-1]), parts[-1])
    os.link(source, path)
    return path


# -- W9: small commits beside a big one ------------------------------------------------

def _nothing() -> None:
    pass


@dataclass
class Repeated:
    """A call made again and again, one after the other, each after an
    untimed *prepare*: when each call began and ended (``time.perf_counter``
    seconds)."""

    call: Callable[[], object]
    prepare: Callable[[], object] = _nothing
    spans: list[tuple[float, float]] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, keep_going: Callable[[], bool]) -> None:
        """Call while *keep_going()*; an error is kept, for :meth:`check`."""
        clock = time.perf_counter
        try:
            while keep_going():
                self.prepare()
                began = clock()
                self.call()
                self.spans.append((began, clock()))
        except BaseException as error:
            self.error = error

    def alone(self, count: int) -> list[float]:
        """The latencies of *count* calls in this thread (then forgotten)."""
        self.run(lambda: len(self.spans) < count)
        self.check()
        latencies = [end - began for began, end in self.spans]
        self.spans = []
        return latencies

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def during(self, start: float, end: float) -> list[float]:
        """The latencies of the calls that overlapped [*start*, *end*]."""
        return [stop - began for began, stop in self.spans if stop >= start and began <= end]


def alongside(repeated: Repeated, operation: Callable[[], object]) -> tuple[float, float]:
    """Run *operation* once *repeated*'s calls are under way in a thread of
    their own (stopped after one began after it ended): when it began and ended."""
    finished = threading.Event()
    thread = threading.Thread(target=repeated.run, args=(lambda: not finished.is_set(),))
    thread.start()
    try:
        while not repeated.spans and thread.is_alive():
            time.sleep(0.001)
        start = time.perf_counter()
        operation()
        end = time.perf_counter()
        while thread.is_alive() and repeated.spans[-1][0] <= end:
            time.sleep(0.001)
    finally:
        finished.set()
        thread.join()
    repeated.check()
    return start, end


@dataclass
class Beside:
    """What W9 measures for one subject."""

    big_commit: float        # seconds
    blocked_share: float     # % of the big commit's duration
    median_alone: float      # seconds
    worst_alone: float       # seconds
    worst_during: float      # seconds
    thread: int = 0          # the big commit's
    lock_held: float | None = None  # seconds the big commit held the base's lock


def blocked_share(spans: list[tuple[float, float]], threshold: float,
                  start: float, end: float) -> float:
    """The % of [*start*, *end*] covered by the small commits' blocked parts:
    from *threshold* seconds after a commit began until it ended."""
    blocked = sum(max(0.0, min(stop, end) - max(began + threshold, start))
                  for began, stop in spans)
    return 100 * blocked / (end - start)


def beside_big_commit(bench: Bench, db: ZODB.DB, big_blob: str) -> Beside:
    """Small commits alone, then during the commit of the file *big_blob*."""
    add_mappings(db, "small", "big")
    data = os.urandom(SMALL_BLOB)
    with opened(db, close_db=False) as (small_conn, small_manager), \
            opened(db, close_db=False) as (conn, manager):
        small = Repeated(small_manager.commit, lambda: add_blobs(
            small_conn, small_manager, {"latest": data}, into=small_conn.root()["small"]))
        alone = small.alone(bench.sizes.small_commits_alone)
        add_blobs(conn, manager, {"big": big_blob}, into=conn.root()["big"])
        start, end = alongside(small, manager.commit)
    threshold = BLOCKED_FACTOR * statistics.median(alone)
    return Beside(end - start, blocked_share(small.spans, threshold, start, end),
                  statistics.median(alone), max(alone), max(small.during(start, end)),
                  threading.get_ident())


def raw_beside_big_put(bench: Bench, big_blob: str) -> Beside:
    """Small raw PUTs alone, then while another thread PUTs the file *big_blob*."""
    raw = bench.raw
    container = raw.new_container("w9")
    connection = raw.connection()
    data = os.urandom(SMALL_BLOB)
    small = Repeated(lambda: connection.put_object(container, "small", data))
    alone = small.alone(bench.sizes.small_commits_alone)
    start, end = alongside(small, lambda: raw.put_files(container, [("big", big_blob)], 1))
    threshold = BLOCKED_FACTOR * statistics.median(alone)
    return Beside(end - start, blocked_share(small.spans, threshold, start, end),
                  statistics.median(alone), max(alone), max(small.during(start, end)))


class LockHolds:
    """How long each thread's transactions held a FileStorage's commit lock
    (from its ``tpc_begin`` to its ``tpc_finish``), measured around the base."""

    def __init__(self, base) -> None:
        self.base, self.longest = base, {}
        self._begin, self._finish = base.tpc_begin, base.tpc_finish
        self._since: dict[int, float] = {}
        base.tpc_begin, base.tpc_finish = self.tpc_begin, self.tpc_finish

    def tpc_begin(self, *args, **kwargs):
        result = self._begin(*args, **kwargs)
        self._since[threading.get_ident()] = time.perf_counter()
        return result

    def tpc_finish(self, *args, **kwargs):
        result = self._finish(*args, **kwargs)
        ident = threading.get_ident()
        held = time.perf_counter() - self._since.pop(ident)
        self.longest[ident] = max(held, self.longest.get(ident, 0.0))
        return result


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def small_beside_big(bench: Bench, repetition: int) -> None:
    size = bench.sizes.big_commit_blob
    source = bench.files("w9", 1, size)[0]
    databases = bench.databases
    notes: dict[str, list[str]] = {FILESTORAGE: [], RELSTORAGE: []}
    runs = ((FILESTORAGE, LOCAL), (FILESTORAGE, SWIFTBLOBS), (RELSTORAGE, SWIFTBLOBS))
    for base, subject in order(repetition, runs):
        share = (f"W9 {base}", f"small commits blocked during a {_size_label(size)} "
                 f"commit, {base}", "%")
        worst = (f"W9 {base} worst", "  their worst latency during it / alone", "x")
        bench.target(share[0], Below(share[0], SWIFTBLOBS, BLOCKED_LIMIT, inclusive=True))
        label = f"w9-{repetition}-{base}-{subject}"
        container = f"bench-w9-{uuid.uuid4().hex[:8]}"
        if subject == LOCAL:
            db = databases.local(label)
        elif base == FILESTORAGE:
            db = databases.swift(label, container)
        else:
            db = ZODB.DB(databases.swift_storage(label, container,
                                                 base=databases.relstorage(label)))
        holds = LockHolds(getattr(db.storage, "base", db.storage)) \
            if base == FILESTORAGE else None
        try:
            result = beside_big_commit(bench, db, linked_copy(bench, source, label, "big"))
        finally:
            db.close()
        if holds is not None:
            result.lock_held = holds.longest.get(result.thread, 0.0)
        bench.record(*share, subject, result.blocked_share)
        bench.record(*worst, subject, result.worst_during / result.worst_alone)
        notes[base].append(
            f"{subject}: the big commit took {result.big_commit:.3f} s"
            + (f" (it held the commit lock {_milliseconds(result.lock_held)})"
               if result.lock_held is not None else "")
            + f"; small commits alone: median {_milliseconds(result.median_alone)}, worst "
            f"{_milliseconds(result.worst_alone)}; worst during it "
            f"{_milliseconds(result.worst_during)}")
    floor = raw_beside_big_put(bench, linked_copy(bench, source, "w9-raw", "big"))
    share = ("W9 raw", f"  raw: {SMALL_BLOB // 1024} KiB PUTs blocked during a "
             f"{_size_label(size)} PUT", "%")
    bench.record(*share, RAW, floor.blocked_share)
    notes[FILESTORAGE].append(
        f"raw: the big PUT took {floor.big_commit:.3f} s; small PUTs alone: median "
        f"{_milliseconds(floor.median_alone)}, worst during it "
        f"{_milliseconds(floor.worst_during)}")
    for base, lines in notes.items():
        bench.rows[f"W9 {base} worst"].note = "; ".join(lines)
    bench.remove_scratch()


# -- W10: parallel writers -------------------------------------------------------------

def parallel_commits(db: ZODB.DB, blobs: list[str]) -> float:
    """Seconds from the moment one thread per file of *blobs*, each with its own
    connection to *db*, commits it, until the last commit ends."""
    keys = [f"writer{index}" for index in range(len(blobs))]
    add_mappings(db, *keys)
    ready = threading.Barrier(len(blobs) + 1)
    errors: list[BaseException] = []

    def write(key: str, path: str) -> None:
        try:
            with opened(db, close_db=False) as (conn, manager):
                add_blobs(conn, manager, {"blob": path}, into=conn.root()[key])
                ready.wait()
                manager.commit()
        except BaseException as error:  # reported below
            errors.append(error)
            ready.abort()

    threads = [threading.Thread(target=write, args=item) for item in zip(keys, blobs,
                                                                         strict=True)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass  # a writer failed: raised below
    with Stopwatch() as watch:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return watch.seconds


def parallel_writers(bench: Bench, repetition: int) -> None:
    size = bench.sizes.writer_blob
    paths = bench.files("w10", WRITERS, size)
    key = "W10"
    row = (key, f"{WRITERS} writers commit a {_size_label(size)} blob each, at once",
           "MiB/s")
    bench.target(key, Ratio(key, SWIFTBLOBS, key, RAW, at_least=0.8))
    cpu = {subject: CpuSeconds(bench.server_pids) for subject in (RAW, SWIFTBLOBS)}
    holds: list[float] = []
    for subject in order(repetition, (RAW, LOCAL, SWIFTBLOBS)):
        if subject == RAW:
            container = bench.raw.new_container("w10")
            with cpu[RAW], Stopwatch() as watch:
                bench.raw.put_files(container, [(f"w{index}", path) for index, path in
                                                enumerate(paths)], WRITERS)
            seconds = watch.seconds
        else:
            db = new_database(bench, "w10", repetition, subject, {})
            blobs = [linked_copy(bench, path, "w10", subject, str(index))
                     for index, path in enumerate(paths)]
            locks = LockHolds(getattr(db.storage, "base", db.storage))
            try:
                with cpu.get(subject, contextlib.nullcontext()):
                    seconds = parallel_commits(db, blobs)
            finally:
                db.close()
            if subject == SWIFTBLOBS:
                holds = sorted(locks.longest.values())
        bench.record(*row, subject, WRITERS * size / MIB / seconds)
    bench.rows[key].note = (
        f"raw: {WRITERS} parallel PUTs, a connection each; ZODB: one database, {WRITERS} "
        f"threads with a connection each; CPU seconds, this process + the embedded "
        f"Swift's servers (2 cores): raw {cpu[RAW].text()}, swiftblobs "
        f"{cpu[SWIFTBLOBS].text()}; each swiftblobs commit held FileStorage's commit lock "
        f"(one after the other) {', '.join(_milliseconds(hold) for hold in holds)}")
    bench.remove_scratch()


WORKLOADS = {"W9": small_beside_big, "W10": parallel_writers}

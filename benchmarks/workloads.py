"""The workloads W1-W8 (one writer at a time) and the state every workload shares:
each workload runs once per repetition, its subjects interleaved."""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import ZODB.MappingStorage
from ZODB.utils import p64

from report import Below, Flat, Ratio, Row
from subjects import (LOCAL, MIB, RAW, SWIFTBLOBS, Databases, PeakMemory, RawSwift,
                      Stopwatch, add_blobs, opened, percentile)
from zodb_swiftblobs import SwiftBlobStorage
from zodb_swiftblobs.cache import BlobCache

GIB = 1 << 30
PARALLEL_PUT_THREADS = 8  # the raw client's threads for bulk PUT
MEMORY_LIMIT = 64  # MiB of peak RSS growth allowed for W5 and W6
FLAT_SLACK = 4  # MiB: W8's growth from 10 % to all objects
DEFAULT_SEGMENT_SIZE = inspect.signature(SwiftBlobStorage).parameters["segment_size"].default


@dataclass(frozen=True)
class Sizes:
    blobs: int = 64                 # W1, W3, W4: blobs of 1 MiB in one transaction
    small_commits: int = 200        # W2: transactions of one 4 KiB blob
    warm_passes: int = 10           # W4: reads of every blob
    large_blob: int = 2 * GIB       # W5
    large_object_threshold: int | None = None   # W5: the package's defaults
    segment_size: int | None = None
    orphans: int = 10_000           # W6
    cache_entries: int = 100_000    # W7
    latency_seconds: float = 2.0    # W7: sampling time without eviction
    listed_objects: int = 100_000   # W8
    big_commit_blob: int = 256 * MIB  # W9: the blob committed beside small commits
    small_commits_alone: int = 20   # W9: small commits timed alone first
    writer_blob: int = 16 * MIB     # W10: each writer's blob
    big_read: int = 256 * MIB       # R1: the big blob read cold
    big_read_segment: int = 32 * MIB  # R1: its segments


FULL = Sizes()
QUICK = Sizes(blobs=16, small_commits=30, warm_passes=3, large_blob=48 * MIB,
              large_object_threshold=16 * MIB, segment_size=8 * MIB, orphans=400,
              cache_entries=4_000, latency_seconds=0.5, listed_objects=3_000,
              big_commit_blob=16 * MIB, small_commits_alone=10, writer_blob=4 * MIB,
              big_read=16 * MIB, big_read_segment=4 * MIB)


class Bench:
    """The state shared by the workloads of one benchmark run."""

    def __init__(self, directory: str, raw: RawSwift, databases: Databases,
                 sizes: Sizes, server_pids: list[int] | None = None) -> None:
        self.directory = directory
        self.server_pids = server_pids or []  # the embedded Swift's, for CPU time
        self.raw = raw
        self.databases = databases
        self.sizes = sizes
        self.rows: dict[str, Row] = {}
        self.targets: dict[str, list] = {}
        self._files: dict[str, list[str]] = {}
        self.w8_storage: tuple | None = None

    def row(self, key: str, measure: str, unit: str) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(key, measure, unit)
        return self.rows[key]

    def target(self, key: str, target) -> None:
        if not any(existing == target for existing in self.targets.get(key, [])):
            self.targets.setdefault(key, []).append(target)

    def record(self, key: str, measure: str, unit: str, subject: str, value: float) -> None:
        self.row(key, measure, unit).add(subject, value)
        print(f"  {key:<24} {subject:<11} {value:12.2f} {unit}", file=sys.stderr, flush=True)

    def files(self, label: str, count: int, size: int) -> list[str]:
        """*count* files of *size* random bytes (made once per run)."""
        if label not in self._files:
            directory = os.path.join(self.directory, "data", label)
            os.makedirs(directory, exist_ok=True)
            paths = []
            for index in range(count):
                path = os.path.join(directory, f"{index:06d}")
                with open(path, "wb") as f:
                    left = size
                    while left:
                        chunk = os.urandom(min(left, MIB))
                        f.write(chunk)
                        left -= len(chunk)
                paths.append(path)
            self._files[label] = paths
        return self._files[label]

    def scratch(self, *parts: str) -> str:
        path = os.path.join(self.directory, "scratch", *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def remove_scratch(self) -> None:
        shutil.rmtree(os.path.join(self.directory, "scratch"), ignore_errors=True)


def order(repetition: int, subjects: tuple[str, ...]) -> tuple[str, ...]:
    """Subjects in alternating order, so no subject always runs first."""
    return subjects if repetition % 2 == 0 else tuple(reversed(subjects))


def new_database(bench: Bench, workload: str, repetition: int, subject: str,
                 containers: dict[str, str]):
    """A ZODB subject's database for one repetition of *workload*; for
    SWIFTBLOBS in a new container, noted in *containers*."""
    label = f"{workload}-{repetition}-{subject}"
    if subject == LOCAL:
        return bench.databases.local(label)
    containers[SWIFTBLOBS] = f"bench-{workload}-{uuid.uuid4().hex[:8]}"
    return bench.databases.swift(label, containers[SWIFTBLOBS])


def _mib_per_second(nbytes: int, seconds: float) -> float:
    return nbytes / MIB / seconds


# -- W1, W3, W4: one transaction of many 1 MiB blobs, read cold and warm ------------------

def many_blobs(bench: Bench, repetition: int) -> None:
    count = bench.sizes.blobs
    paths = bench.files("w1", count, MIB)
    datas = {f"b{i:04d}": open(path, "rb").read() for i, path in enumerate(paths)}
    total = count * MIB
    raw, databases = bench.raw, bench.databases
    containers = {}
    for key, subject, target in (("W1", SWIFTBLOBS, RAW), ("W3", SWIFTBLOBS, RAW),
                                 ("W4", SWIFTBLOBS, LOCAL)):
        bench.target(key, Ratio(key, subject, key, target,
                                at_least=0.8 if key == "W1" else 0.9))
    w1 = ("W1", f"commit {count} x 1 MiB blobs, one transaction", "MiB/s")
    for subject in order(repetition, (RAW, LOCAL, SWIFTBLOBS)):
        if subject == RAW:
            containers[RAW] = raw.new_container("w1")
            with Stopwatch() as watch:
                raw.put_files(containers[RAW], list(zip(datas, paths, strict=True)),
                              PARALLEL_PUT_THREADS)
        else:
            db = new_database(bench, "w1", repetition, subject, containers)
            with opened(db) as (conn, manager):
                add_blobs(conn, manager, datas)
                with Stopwatch() as watch:
                    manager.commit()
        bench.record(*w1, subject, _mib_per_second(total, watch.seconds))

    w3 = ("W3", "cold read of W1 (new cache)", "MiB/s")
    w3_md5 = ("W3 md5", "  raw checking MD5s too (as zodb-swiftblobs does)", "MiB/s")
    bench.row(*w3)
    cold_cache = f"cache-{uuid.uuid4().hex[:8]}"
    for subject in order(repetition, (RAW, SWIFTBLOBS)):
        if subject == RAW:
            target = bench.scratch("w3")
            with Stopwatch() as watch:
                for name in datas:
                    raw.get_to_file(containers[RAW], name, os.path.join(target, name),
                                    check=True)
            bench.record(*w3_md5, RAW, _mib_per_second(total, watch.seconds))
            with Stopwatch() as watch:
                for name in datas:
                    raw.get_to_file(containers[RAW], name, os.path.join(target, name))
        else:
            db = databases.swift(f"w1-{repetition}-{subject}", containers[SWIFTBLOBS],
                                 cache=cold_cache)
            with opened(db) as (conn, manager):
                blobs = [conn.root()[name] for name in datas]
                with Stopwatch() as watch:
                    for blob in blobs:
                        blob._p_activate()  # loads the record, then loadBlob
        bench.record(*w3, subject, _mib_per_second(total, watch.seconds))
    bench.remove_scratch()

    w4 = ("W4", "warm read of W1 (open, read)", "MiB/s")
    passes = bench.sizes.warm_passes
    for subject in order(repetition, (LOCAL, SWIFTBLOBS)):
        label = f"w1-{repetition}-{subject}"
        db = databases.local(label) if subject == LOCAL else databases.swift(
            label, containers[SWIFTBLOBS], cache=cold_cache)
        with opened(db) as (conn, manager):
            blobs = [conn.root()[name] for name in datas]
            for blob in blobs:
                blob._p_activate()
            with Stopwatch() as watch:
                for _ in range(passes):
                    for blob in blobs:
                        with blob.open("r") as f:
                            f.read()
        bench.record(*w4, subject, _mib_per_second(total * passes, watch.seconds))


# -- W2: many small transactions -----------------------------------------------------------

def small_commits(bench: Bench, repetition: int) -> None:
    count = bench.sizes.small_commits
    path = bench.files("w2", 1, 4096)[0]
    data = open(path, "rb").read()
    raw, databases = bench.raw, bench.databases
    bench.target("W2", Ratio("W2", SWIFTBLOBS, "W2", RAW, at_least=0.8))
    w2 = ("W2", f"{count} transactions of one 4 KiB blob", "commits/s")
    for subject in order(repetition, (RAW, LOCAL, SWIFTBLOBS)):
        label = f"w2-{repetition}-{subject}"
        if subject == RAW:
            container = raw.new_container("w2")
            conn = raw.connection()
            with Stopwatch() as watch:
                for index in range(count):
                    with open(path, "rb") as body:
                        conn.put_object(container, f"s{index:06d}", body, content_length=4096)
        else:
            db = databases.local(label) if subject == LOCAL else databases.swift(
                label, f"bench-w2-{uuid.uuid4().hex[:8]}")
            with opened(db) as (conn, manager):
                with Stopwatch() as watch:
                    for index in range(count):
                        add_blobs(conn, manager, {f"s{index:06d}": data})
                        manager.commit()
        bench.record(*w2, subject, count / watch.seconds)


# -- W5: one large blob -------------------------------------------------------------------

def large_blob(bench: Bench, repetition: int) -> None:
    sizes = bench.sizes
    source = bench.files("w5", 1, sizes.large_blob)[0]
    raw, databases = bench.raw, bench.databases
    segment_size = sizes.segment_size or DEFAULT_SEGMENT_SIZE
    size_label = f"{sizes.large_blob / GIB:g} GiB" if sizes.large_blob >= GIB else \
        f"{sizes.large_blob // MIB} MiB"
    commit = ("W5 commit", f"commit one {size_label} blob (large object)", "MiB/s")
    commit_memory = ("W5 commit memory", "  peak RSS growth", "MiB")
    read = ("W5 read", f"cold read of the {size_label} blob", "MiB/s")
    read_memory = ("W5 read memory", "  peak RSS growth", "MiB")
    bench.target(commit[0], Ratio(commit[0], SWIFTBLOBS, commit[0], RAW, at_least=0.8))
    bench.target(commit_memory[0], Below(commit_memory[0], SWIFTBLOBS, MEMORY_LIMIT))
    bench.target(read[0], Ratio(read[0], SWIFTBLOBS, read[0], RAW, at_least=0.8))
    bench.target(read_memory[0], Below(read_memory[0], SWIFTBLOBS, MEMORY_LIMIT))
    containers = {}
    for subject in order(repetition, (RAW, LOCAL, SWIFTBLOBS)):
        if subject == RAW:
            containers[RAW] = raw.new_container("w5")
            with PeakMemory() as memory, Stopwatch() as watch:
                raw.put_large(containers[RAW], "large", source, segment_size,
                              PARALLEL_PUT_THREADS)
        else:
            db = new_database(bench, "w5", repetition, subject, containers)
            linked = os.path.join(bench.scratch("w5"), "large.blob")
            os.link(source, linked)  # consumed (renamed) by the blob: no copy
            with opened(db) as (conn, manager):
                add_blobs(conn, manager, {"large": linked})
                with PeakMemory() as memory, Stopwatch() as watch:
                    manager.commit()
        bench.record(*commit, subject, _mib_per_second(sizes.large_blob, watch.seconds))
        bench.record(*commit_memory, subject, memory.growth)

    for subject in order(repetition, (RAW, SWIFTBLOBS)):
        if subject == RAW:
            target = os.path.join(bench.scratch("w5"), "download")
            with PeakMemory() as memory, Stopwatch() as watch:
                raw.get_to_file(containers[RAW], "large", target)
        else:
            db = databases.swift(f"w5-{repetition}-{subject}", containers[SWIFTBLOBS],
                                 cache="cold-cache")
            with opened(db) as (conn, manager):
                blob = conn.root()["large"]
                with PeakMemory() as memory, Stopwatch() as watch:
                    blob._p_activate()
        bench.record(*read, subject, _mib_per_second(sizes.large_blob, watch.seconds))
        bench.record(*read_memory, subject, memory.growth)
    bench.remove_scratch()
    for subject in (LOCAL, SWIFTBLOBS):
        shutil.rmtree(os.path.join(databases.directory, f"w5-{repetition}-{subject}"))
    for container in containers.values():
        raw.delete_large_objects(container)


# -- W6: garbage collection of many orphans --------------------------------------------

def orphan_names(storage: SwiftBlobStorage, count: int, first_oid: int) -> list[str]:
    """Object names of *count* blob revisions the storage does not have, all
    older than its last transaction (so that garbage collection may remove them)."""
    tid = storage.lastTransaction()
    keys = storage.object_layout
    return [keys.object_name(p64(first_oid + index), tid) for index in range(count)]


def commit_one_blob(db) -> None:
    with opened(db) as (conn, manager):
        add_blobs(conn, manager, {"kept": b"a blob that stays"})
        manager.commit()


def orphans(bench: Bench, repetition: int) -> None:
    count = bench.sizes.orphans
    raw, databases = bench.raw, bench.databases
    key = "W6"
    w6 = (key, f"pack + GC removing {count:,} orphans", "s")
    memory_row = ("W6 memory", "  peak RSS growth", "MiB")
    bench.target(key, Ratio(key, SWIFTBLOBS, key, RAW, at_most=1.25))
    bench.target(memory_row[0], Below(memory_row[0], SWIFTBLOBS, MEMORY_LIMIT))
    for subject in order(repetition, (RAW, SWIFTBLOBS)):
        if subject == RAW:
            container = raw.new_container("w6")
            names = [f"orphan/{index:08d}.blob" for index in range(count)]
            raw.populate(container, names)
            with PeakMemory() as memory, Stopwatch() as watch:
                raw.bulk_delete(container, names, raw.max_deletes_per_request())
            left = raw.count(container)
        else:
            container = f"bench-w6-{uuid.uuid4().hex[:8]}"
            label = f"w6-{repetition}"
            commit_one_blob(databases.swift(label, container))
            storage = databases.swift_storage(label, container, gc_grace_period=0)
            try:
                raw.populate(container, orphan_names(storage, count, 1 << 40))
                db = ZODB.DB(storage)
                with PeakMemory() as memory, Stopwatch() as watch:
                    db.pack(time.time() + 1)
                db.close()
            finally:
                storage.close()
            left = raw.count(container) - 2  # the blob that stays, the ownership marker
        if left:
            raise RuntimeError(f"W6 {subject}: {left} orphans were not deleted")
        bench.record(*w6, subject, watch.seconds)
        bench.record(*memory_row, subject, memory.growth)


# -- W7: loadBlob latency while the cache evicts -------------------------------------------

CACHE_ENTRY_SIZE = 1024
HOT_ENTRIES = 1000


def _revision(index: int) -> tuple[bytes, bytes]:
    return p64(index + 1), p64(0x03E0000000000000 + index)


def fill_cache(cache: BlobCache, count: int) -> None:
    """Put *count* 1 KiB entries into *cache* (those missing), oldest first."""
    payload = os.urandom(CACHE_ENTRY_SIZE)
    for index in range(count):
        oid, tid = _revision(index)
        if os.path.exists(cache.path(oid, tid)):
            continue
        staged = os.path.join(cache.temporary_directory, "entry")
        with open(staged, "wb") as f:
            f.write(payload)
        cache.publish(staged, oid, tid)


def _latencies(storage, revisions, keep_going) -> list[float]:
    samples = []
    clock = time.perf_counter
    while keep_going():
        for oid, tid in revisions:
            started = clock()
            storage.loadBlob(oid, tid)
            samples.append(clock() - started)
    return samples


def eviction(bench: Bench, repetition: int) -> None:
    count = bench.sizes.cache_entries
    directory = os.path.join(bench.directory, "w7-cache")
    size = int(count * CACHE_ENTRY_SIZE / 1.05)  # a pass evicts about 14 % of the entries
    filler = BlobCache(directory, 1 << 40)
    fill_cache(filler, count)
    filler.close()
    storage = SwiftBlobStorage(
        ZODB.MappingStorage.MappingStorage(), "bench-w7", cache_dir=directory,
        cache_size=size, auth_url=bench.databases.settings.auth_url,
        user=bench.databases.settings.user, key=bench.databases.settings.key)
    hot = [_revision(index) for index in range(count - HOT_ENTRIES, count)]
    quiet = ("W7 quiet", f"loadBlob p99, {count:,} entries, no eviction", "us")
    busy = ("W7 evicting", "loadBlob p99 during an eviction pass", "us")
    bench.target(busy[0], Ratio(busy[0], SWIFTBLOBS, quiet[0], SWIFTBLOBS, at_most=2.0))
    try:
        deadline = time.monotonic() + bench.sizes.latency_seconds
        without = _latencies(storage, hot, lambda: time.monotonic() < deadline)
        evictor = BlobCache(directory, size)
        result = {}
        thread = threading.Thread(  # what a reader making room does (in a child process)
            target=lambda: result.update(removed=evictor.evict()))
        with Stopwatch() as watch:
            thread.start()
            during = _latencies(storage, hot, thread.is_alive)
        thread.join()
        evictor.close()
    finally:
        storage.close()
    if not result.get("removed"):
        raise RuntimeError("W7: the eviction pass removed nothing")
    bench.record(*quiet, SWIFTBLOBS, percentile(without, 0.99) * 1e6)
    bench.record(*busy, SWIFTBLOBS, percentile(during, 0.99) * 1e6)
    bench.rows[busy[0]].note = (f"a pass over {count:,} entries took {watch.seconds:.2f} s "
                                f"and evicted {result['removed']:,}")


# -- W8: garbage collection memory over a long listing ------------------------------------

class _MemoryProbe:
    """A progress callback that notes peak memory growth after *checkpoint* objects."""

    def __init__(self, memory: PeakMemory, checkpoint: int) -> None:
        self.memory, self.checkpoint, self.seen, self.at_checkpoint = memory, checkpoint, 0, None

    def advance(self, count: int = 1, nbytes: int = 0) -> None:
        self.seen += count
        if self.at_checkpoint is None and self.seen >= self.checkpoint:
            self.at_checkpoint = self.memory.so_far()


def listing(bench: Bench, repetition: int) -> None:
    count = bench.sizes.listed_objects
    raw, databases = bench.raw, bench.databases
    if bench.w8_storage is None:
        container = f"bench-w8-{uuid.uuid4().hex[:8]}"
        commit_one_blob(databases.swift("w8", container))
        storage = databases.swift_storage("w8", container)
        raw.populate(container, orphan_names(storage, count, 1 << 40))
        bench.w8_storage = (storage, container)
    storage, container = bench.w8_storage
    first = ("W8 first", f"GC peak RSS growth, first {count // 10:,} objects", "MiB")
    every = ("W8 all", f"GC peak RSS growth, all {count:,} objects", "MiB")
    bench.row(*first)
    bench.target(every[0], Flat(first[0], every[0], SWIFTBLOBS, FLAT_SLACK))
    for subject in order(repetition, (RAW, SWIFTBLOBS)):
        if subject == RAW:
            with PeakMemory() as memory:
                raw.connection().get_container(container, full_listing=True)
        else:
            with PeakMemory() as memory:
                probe = _MemoryProbe(memory, count // 10)
                report = storage.collect_garbage(dry_run=True, progress=probe)
            if report.orphans != count:
                raise RuntimeError(f"W8: {report.orphans} orphans found, not {count}")
            bench.record(*first, subject, probe.at_checkpoint)
        bench.record(*every, subject, memory.growth)
    bench.rows[every[0]].note = "raw: one full listing (swiftclient full_listing=True)"


WORKLOADS = {"W1": many_blobs, "W2": small_commits, "W5": large_blob, "W6": orphans,
             "W7": eviction, "W8": listing}


def close(bench: Bench) -> None:
    if bench.w8_storage is not None:
        bench.w8_storage[0].close()

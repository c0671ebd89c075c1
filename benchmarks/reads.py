"""The workload R1: a cold read of a big blob, against python-swiftclient's
single stream and against zodb-s3blobs' read method.

The blob is stored as this package stores big blobs: a Static Large Object
in the main container whose manifest has one entry, a manifest in the
segment container (``commits/<token>/<oid>``) over segments of
``big_read_segment`` bytes.  It is committed with the package (a flat large
object of such segments), then its manifest is published again in that
nested form with python-swiftclient (as the commit does once big blobs are
uploaded before the commit lock).  The raw client reads a plain object of
the same size in one stream; the peer method (zodb-s3blobs' reads, emulated
with python-swiftclient on the same Swift) reads that plain object in 8 MiB
ranged GETs on 10 threads into a file, unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor

from report import Below, Ratio
from subjects import (MIB, RAW, SWIFTBLOBS, CpuSeconds, PeakMemory, RawSwift, Stopwatch,
                      add_blobs, opened)
from workloads import MEMORY_LIMIT, Bench, order

PEER = "peer"  # zodb-s3blobs' method, reported in the raw column of its own row
PEER_PART = 8 * MIB
PEER_THREADS = 10


def peer_read(raw: RawSwift, container: str, name: str, size: int, path: str) -> None:
    """zodb-s3blobs' read: ranged GETs of PEER_PART bytes on PEER_THREADS
    threads, each written at its offset of the file *path*; nothing checked."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def get(offset: int) -> None:
        last = min(offset + PEER_PART, size) - 1
        _, body = raw.connection().get_object(container, name,
                                              headers={"Range": f"bytes={offset}-{last}"})
        os.pwrite(descriptor, body, offset)
    try:
        with ThreadPoolExecutor(PEER_THREADS) as pool:
            list(pool.map(get, range(0, size, PEER_PART)))
    finally:
        os.close(descriptor)


def publish_nested(raw: RawSwift, container: str, name: str, oid: bytes) -> None:
    """Publish large object *name* again as a manifest of one entry: a
    manifest of its segments in the segment container, as a pending upload's."""
    conn = raw.connection()
    headers, body = conn.get_object(container, name, query_string="multipart-manifest=get")
    segments = json.loads(body)
    segment_container = f"{container}_segments"
    pending = f"commits/{uuid.uuid4().hex[:16]}/{oid.hex()}"
    conn.put_object(segment_container, pending, json.dumps([
        {"path": s["name"], "etag": s["hash"], "size_bytes": s["bytes"]} for s in segments]),
        query_string="multipart-manifest=put")
    etag = hashlib.md5("".join(s["hash"] for s in segments).encode(),
                       usedforsecurity=False).hexdigest()
    metadata = {key: value for key, value in headers.items()
                if key.startswith("x-object-meta-")}
    conn.put_object(container, name, json.dumps([{
        "path": f"/{segment_container}/{pending}", "etag": etag,
        "size_bytes": sum(s["bytes"] for s in segments)}]),
        query_string="multipart-manifest=put", headers=metadata)


def commit_nested_blob(bench: Bench, label: str, container: str, source: str) -> None:
    """Commit the file *source* as blob "big" of a new database, stored nested."""
    segment = bench.sizes.big_read_segment
    db = bench.databases.swift(label, container, large_object_threshold=segment,
                               segment_size=segment)
    linked = os.path.join(bench.scratch("r1"), "big.blob")
    os.link(source, linked)  # consumed (renamed) by the blob: no copy
    with opened(db, close_db=False) as (conn, manager):
        blob, = add_blobs(conn, manager, {"big": linked})
        manager.commit()
    oid = blob._p_oid
    name = db.storage.object_layout.object_name(oid, db.storage.lastTransaction())
    db.close()
    publish_nested(bench.raw, container, name, oid)


def big_read(bench: Bench, repetition: int) -> None:
    size = bench.sizes.big_read
    source = bench.files("r1", 1, size)[0]
    raw = bench.raw
    read = ("R1", f"cold read of a {size // MIB} MiB blob (nested, "
                  f"{bench.sizes.big_read_segment // MIB} MiB segments)", "MiB/s")
    peer = ("R1 peer", f"  peer method: {PEER_PART // MIB} MiB ranged GETs on "
                       f"{PEER_THREADS} threads, unverified", "MiB/s")
    memory_row = ("R1 memory", "  peak RSS growth", "MiB")
    bench.row(*read)
    bench.row(*peer)
    bench.target(read[0], Ratio(read[0], SWIFTBLOBS, read[0], RAW, at_least=1.0))
    bench.target(read[0], Ratio(read[0], SWIFTBLOBS, peer[0], RAW, at_least=1.5,
                                label="peer method"))
    bench.target(memory_row[0], Below(memory_row[0], SWIFTBLOBS, MEMORY_LIMIT))
    plain = raw.new_container("r1")
    with open(source, "rb") as f:
        raw.connection().put_object(plain, "big", f, content_length=size)
    label, container = f"r1-{repetition}", f"bench-r1-{uuid.uuid4().hex[:8]}"
    commit_nested_blob(bench, label, container, source)
    target = os.path.join(bench.scratch("r1"), "download")
    cpu: dict[str, CpuSeconds] = {}
    for subject in order(repetition, (RAW, PEER, SWIFTBLOBS)):
        cpu[subject] = CpuSeconds(bench.server_pids)
        if subject == SWIFTBLOBS:
            db = bench.databases.swift(label, container, cache=f"cold-{uuid.uuid4().hex[:8]}")
            with opened(db) as (conn, manager):
                blob = conn.root()["big"]
                with PeakMemory() as memory, cpu[subject], Stopwatch() as watch:
                    blob._p_activate()  # loads the record, then loadBlob
            bench.record(*memory_row, subject, memory.growth)
        else:
            with cpu[subject], Stopwatch() as watch:
                if subject == RAW:
                    raw.get_to_file(plain, "big", target)
                else:
                    peer_read(raw, plain, "big", size, target)
        row = peer if subject == PEER else read
        bench.record(*row, RAW if subject == PEER else subject,
                     size / MIB / watch.seconds)
    bench.rows[read[0]].note = (
        "CPU seconds of one read, this process + the embedded Swift's servers (2 cores): "
        + "; ".join(f"{subject} {cpu[subject].text()}" for subject in (RAW, PEER, SWIFTBLOBS)))
    bench.remove_scratch()
    shutil.rmtree(os.path.join(bench.databases.directory, label))
    raw.connection().delete_object(plain, "big")
    raw.delete_large_objects(container)


WORKLOADS = {"R1": big_read}

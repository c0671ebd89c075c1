"""Several processes (Zope instances on one host) sharing one cache directory.

Each process commits new revisions of its own blobs and reads everybody's
(and earlier revisions of its own), for a bounded time, through one small
cache that is evicting all the time (blobs of up to a fifth of it: their
history does not fit).  Every read is checked against the log of what was
committed at that exact revision: no torn, missing or wrong-revision file may
ever be read, and the cache's size, sampled every 0.3 s, stays within its
bound.
"""

import hashlib
import inspect
import json
import math
import os
import subprocess
import sys
import time

import ZODB
from ZODB.blob import Blob

from conftest import child_environment, credentials_for, sqlite_relstorage, swift_storage

PROCESSES = 4
SECONDS = 20.0
SAMPLE_INTERVAL = 0.3
CACHE_SIZE = 2_000_000
BOUND = 1.5 * CACHE_SIZE  # never above it
USUAL_BOUND = 1.2 * CACHE_SIZE  # nor above this one in more than 5 % of the samples
HISTORY_READS = 2  # earlier revisions of its own blob each process reads in each round


def content(name, counter):
    """Self-checking bytes: a header, then a digest of it repeated, 10 to 400 KB."""
    header = f"{name}:{counter}:".encode()
    digest = hashlib.sha256(header).hexdigest().encode()
    return (header + digest * 6250)[:10_000 + int(digest[:8], 16) % 390_000]


WORKER = """
import hashlib, json, random, sys, time, ZODB
from relstorage.adapters.sqlite.adapter import Sqlite3Adapter
from relstorage.options import Options
from relstorage.storage import RelStorage
from zodb_swiftblobs.storage import SwiftBlobStorage
from ZODB.POSException import ConflictError
""" + inspect.getsource(content) + """
(worker, directory, container, auth_url, user, key, processes, seconds, cache_size,
 history_reads) = sys.argv[1:]
options = Options(keep_history=True)
storage = SwiftBlobStorage(
    RelStorage(Sqlite3Adapter(directory + "/db", {}, options=options), options=options),
    container=container, cache_dir=directory + "/shared-cache", cache_size=int(cache_size),
    auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
mine = "blob%s" % worker
committed, reads = [], []
until = time.monotonic() + float(seconds)
counter = 0
while time.monotonic() < until:
    counter += 1
    for attempt in range(50):
        try:
            with db.transaction() as conn:
                blob = conn.root()[mine]
                with blob.open("w") as f:
                    f.write(content(mine, counter))
            break
        except ConflictError:
            continue
    with db.transaction() as conn:
        blob = conn.root()[mine]
        blob._p_activate()
        committed.append([mine, blob._p_serial.hex(), counter])
        oid = blob._p_oid
    for name in random.sample(["blob%d" % i for i in range(int(processes))], int(processes)):
        with db.transaction() as conn:
            blob = conn.root()[name]
            blob._p_activate()
            with blob.open() as f:
                data = f.read()
            reads.append([name, blob._p_serial.hex(), data.split(b":")[1].decode(),
                          data == content(name, int(data.split(b":")[1]))])
    for name, serial, _ in random.choices(committed, k=int(history_reads)):  # mostly misses
        with storage.openCommittedBlobFile(oid, bytes.fromhex(serial)) as f:
            data = f.read()
        reads.append([name, serial, data.split(b":")[1].decode(),
                      data == content(name, int(data.split(b":")[1]))])
stats = storage.cache_stats()
db.close()
with open(directory + "/result-" + worker + ".json", "w") as f:
    json.dump({"committed": committed, "reads": reads, "stats": stats}, f)
"""


def test_processes_sharing_a_small_cache_never_read_wrong_bytes(devswift, tmp_path,
                                                                 container_name):
    credentials = credentials_for(devswift)
    db = ZODB.DB(swift_storage(devswift, sqlite_relstorage(tmp_path / "db", True),
                               container_name, tmp_path / "setup-cache"))
    with db.transaction() as conn:
        for i in range(PROCESSES):
            conn.root()[f"blob{i}"] = Blob(content(f"blob{i}", 0))
    initial = {}
    with db.transaction() as conn:
        for i in range(PROCESSES):
            blob = conn.root()[f"blob{i}"]
            blob._p_activate()
            initial[(f"blob{i}", blob._p_serial.hex())] = 0
    db.close()

    # Results and errors go to files: a worker writing more than a pipe holds
    # would wait for a reader that only reads once every worker has ended.
    environment = child_environment()
    workers = []
    for worker in range(PROCESSES):
        with open(tmp_path / f"errors-{worker}", "w") as errors:
            workers.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(worker), str(tmp_path), container_name,
                 credentials.auth_url, credentials.user, credentials.key, str(PROCESSES),
                 str(SECONDS), str(CACHE_SIZE), str(HISTORY_READS)],
                stdout=subprocess.DEVNULL, stderr=errors, env=environment))
    samples = []
    while any(process.poll() is None for process in workers):
        samples.append(cached_bytes(tmp_path / "shared-cache"))
        time.sleep(SAMPLE_INTERVAL)
    results = []
    for worker, process in enumerate(workers):
        assert process.wait(timeout=240) == 0, \
            (tmp_path / f"errors-{worker}").read_text()[-3000:]
        results.append(json.loads((tmp_path / f"result-{worker}.json").read_text()))

    revisions = dict(initial)
    for result in results:
        for name, serial, counter in result["committed"]:
            revisions[(name, serial)] = counter
    reads = [read for result in results for read in result["reads"]]
    assert all(len(result["committed"]) >= 3 for result in results), "too few rounds"
    assert len(reads) == (PROCESSES + HISTORY_READS) * sum(
        len(result["committed"]) for result in results)
    for name, serial, counter, intact in reads:
        assert intact, f"torn or foreign bytes read for {name} at {serial}"
        assert revisions[(name, serial)] == int(counter), \
            f"{name} at {serial} gave the bytes of revision {counter}"
    evictions = sum(result["stats"]["evictions"] for result in results)
    assert evictions > 0, "the cache never evicted: the test proves less than it claims"
    assert len(samples) >= 20, "too few samples"
    assert max(samples) <= BOUND, f"{max(samples)} bytes in a cache of {CACHE_SIZE}"
    usual = sorted(samples)[math.ceil(0.95 * len(samples)) - 1]
    assert usual <= USUAL_BOUND, \
        f"{usual} bytes in a cache of {CACHE_SIZE} in 5 % of {len(samples)} samples"
    total = cached_bytes(tmp_path / "shared-cache")
    assert 0 < total <= BOUND, f"{total} bytes in a cache of {CACHE_SIZE}"


def cached_bytes(directory):
    """The bytes of the committed files in a cache directory (not staged ones)."""
    total = 0
    for root, directories, names in os.walk(directory):
        if root == str(directory) and "tmp" in directories:
            directories.remove("tmp")  # uncommitted and staged blobs, at any depth
        for name in names:
            if name.endswith(".blob"):
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except FileNotFoundError:
                    continue  # evicted meanwhile
    return total

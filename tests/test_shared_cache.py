"""Several processes (Zope instances on one host) sharing one cache directory.

Each process commits new revisions of its own blobs and reads everybody's,
through one small cache that is evicting all the time.  Every read is checked
against the log of what was committed at that exact revision: no torn, missing
or wrong-revision file may ever be read.
"""

import hashlib
import json
import os
import subprocess
import sys

import ZODB
from ZODB.blob import Blob

from conftest import child_environment, credentials_for, sqlite_relstorage, swift_storage

PROCESSES = 3
ROUNDS = 12
CACHE_SIZE = 60_000


def content(name, counter):
    """Self-checking bytes: a header, then a digest of it repeated (~10 KB)."""
    header = f"{name}:{counter}:".encode()
    return header + hashlib.sha256(header).hexdigest().encode() * 300


WORKER = """
import hashlib, json, random, sys, ZODB
from relstorage.adapters.sqlite.adapter import Sqlite3Adapter
from relstorage.options import Options
from relstorage.storage import RelStorage
from zodb_swiftblobs.storage import SwiftBlobStorage
from ZODB.POSException import ConflictError

def content(name, counter):
    header = f"{name}:{counter}:".encode()
    return header + hashlib.sha256(header).hexdigest().encode() * 300

worker, directory, container, auth_url, user, key, processes, rounds, cache_size = sys.argv[1:]
options = Options(keep_history=True)
storage = SwiftBlobStorage(
    RelStorage(Sqlite3Adapter(directory + "/db", {}, options=options), options=options),
    container=container, cache_dir=directory + "/shared-cache", cache_size=int(cache_size),
    auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
mine = "blob%s" % worker
committed, reads = [], []
for counter in range(1, int(rounds) + 1):
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
    for name in random.sample(["blob%d" % i for i in range(int(processes))], int(processes)):
        with db.transaction() as conn:
            blob = conn.root()[name]
            blob._p_activate()
            with blob.open() as f:
                data = f.read()
            reads.append([name, blob._p_serial.hex(), data.split(b":")[1].decode(),
                          data == content(name, int(data.split(b":")[1]))])
stats = storage.cache_stats()
db.close()
print(json.dumps({"committed": committed, "reads": reads, "stats": stats}))
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

    environment = child_environment()
    workers = [subprocess.Popen(
        [sys.executable, "-c", WORKER, str(worker), str(tmp_path), container_name,
         credentials.auth_url, credentials.user, credentials.key, str(PROCESSES),
         str(ROUNDS), str(CACHE_SIZE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
        for worker in range(PROCESSES)]
    results = []
    for process in workers:
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-3000:]
        results.append(json.loads(out))

    revisions = dict(initial)
    for result in results:
        for name, serial, counter in result["committed"]:
            revisions[(name, serial)] = counter
    reads = [read for result in results for read in result["reads"]]
    assert len(reads) == PROCESSES * ROUNDS * PROCESSES
    for name, serial, counter, intact in reads:
        assert intact, f"torn or foreign bytes read for {name} at {serial}"
        assert revisions[(name, serial)] == int(counter), \
            f"{name} at {serial} gave the bytes of revision {counter}"
    evictions = sum(result["stats"]["evictions"] for result in results)
    assert evictions > 0, "the cache never evicted: the test proves less than it claims"
    total = sum(os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(tmp_path / "shared-cache")
                for name in names if name.endswith(".blob"))
    assert total <= CACHE_SIZE * 1.5, f"{total} bytes in a cache of {CACHE_SIZE}"

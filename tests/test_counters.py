"""The blob cache's counters: shared by processes in a file that may go bad,
saved while a process is idle, kept when it is killed (real processes, the
real local Swift)."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import ZODB
from ZODB.FileStorage import FileStorage

from conftest import child_environment, credentials_for, make_non_file, swift_storage
from test_storage import commit_blob
from zodb_swiftblobs.cache import BlobCache
from zodb_swiftblobs.cache.counters import COUNTERS, MalformedCounters, parse_counters

OID, TID = b"\0" * 8, b"\1" * 8
WAIT = 120  # seconds: the bound of every wait in these tests

MALFORMED = {
    "a list": b"[]",
    "null": b"null",
    "a null count": b'{"hits": null}',
    "a text": b'"many"',
    "a count as text": b'{"hits": "3"}',
    "an infinite count": b'{"hits": 1e400, "misses": 2}',
    "a fractional count": b'{"hits": 1.5}',
    "a negative count": b'{"hits": -4}',
    "a true count": b'{"hits": true}',
    "garbage bytes": b"\xff\xfe\x00{garbage",
    "deep nesting": b"[" * 100_000,
    "a 5000-digit count": b'{"hits": ' + b"9" * 5000 + b"}",
    "truncated": b'{"hits": 4, "mis',
}


def make_malformed(path, kind):
    """Put something bad at *path*: content of MALFORMED, or another kind of file."""
    if kind == "an empty directory":
        os.mkdir(path)
    elif kind == "a directory with files":
        os.makedirs(os.path.join(path, "inner"))
        with open(os.path.join(path, "inner", "file"), "w") as f:
            f.write("x")
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a socket":
        make_non_file(path, "socket")
    elif kind == "a dangling link":
        os.symlink(os.path.join(os.path.dirname(path), "nowhere"), path)
    else:
        with open(path, "wb") as f:
            f.write(MALFORMED[kind])


KINDS = [*MALFORMED, "an empty directory", "a directory with files", "a FIFO", "a socket",
         "a dangling link"]


@pytest.mark.parametrize("kind", MALFORMED)
def test_parse_counters_refuses_malformed_content(kind):
    with pytest.raises(MalformedCounters):
        parse_counters(MALFORMED[kind])


def test_parse_counters_reads_counts_and_takes_missing_ones_as_zero():
    assert parse_counters(b"") == dict.fromkeys(COUNTERS, 0)
    assert parse_counters(b'{"hits": 3, "misses": 12345678901234567890, "other": "x"}') == \
        dict.fromkeys(COUNTERS, 0) | {"hits": 3, "misses": 12345678901234567890}


def test_counters_are_shared_between_processes(tmp_path):
    first = BlobCache(str(tmp_path / "cache"), 1 << 20)  # as two processes would open it
    second = BlobCache(str(tmp_path / "cache"), 1 << 20)
    try:
        staged = tmp_path / "cache" / "tmp" / "staged"
        staged.write_bytes(b"x" * 100)
        first.publish(str(staged), OID, TID)
        first.get(OID, TID, fetch=_never)
        second.get(OID, b"\2" * 8, fetch=_writer(b"y" * 50))
        first.counters.flush()
        totals = second.totals()
        assert (totals["hits"], totals["misses"], totals["bytes_downloaded"],
                totals["entries"]) == (1, 1, 50, 2)
        assert first.stats()["misses"] == 0, "stats are this process's own"
    finally:
        first.close()
        second.close()
    assert saved_counters(tmp_path / "cache")["misses"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_malformed_counters_file_never_fails_a_read_and_is_replaced(tmp_path, kind, caplog):
    cache = BlobCache(str(tmp_path / "cache"), 1 << 20)
    try:
        staged = tmp_path / "cache" / "tmp" / "staged"
        staged.write_bytes(b"cached")
        path = cache.publish(str(staged), OID, TID)
        counters_path = os.path.join(cache.directory, ".counters.json")
        make_malformed(counters_path, kind)
        with caplog.at_level(logging.WARNING, logger="zodb_swiftblobs"):
            assert cache.get(OID, TID, fetch=_never) == path
            totals = cache.totals()
        assert (totals["hits"], totals["misses"], totals["entries"]) == (1, 0, 1)
        assert len(caplog.records) == 1, caplog.text
        assert counters_path in caplog.text
        with open(counters_path, "rb") as f:
            assert parse_counters(f.read())["hits"] == 1
        caplog.clear()
        cache.get(OID, TID, fetch=_never)
        assert cache.totals()["hits"] == 2 and not caplog.records, caplog.text
    finally:
        cache.close()


@pytest.mark.parametrize("kind", ["a list", "an infinite count", "garbage bytes",
                                  "a directory with files"])
def test_the_cache_command_survives_a_malformed_counters_file(tmp_path, kind):
    cache = BlobCache(str(tmp_path / "cache"), 1 << 20)
    cache.close()
    make_malformed(os.path.join(cache.directory, ".counters.json"), kind)
    config = tmp_path / "zodb.conf"
    config.write_text(f"""%import zodb_swiftblobs
<zodb>
  <swiftblobstorage>
    container unused
    cache-dir {cache.directory}
    auth-url http://127.0.0.1:9/auth/v1.0
    user test:tester
    key testing
    <filestorage>
      path {tmp_path / "Data.fs"}
    </filestorage>
  </swiftblobstorage>
</zodb>
""")
    for _ in range(2):  # the first run replaces the file, the second reads it
        process = subprocess.run(
            [sys.executable, "-m", "zodb_swiftblobs.cli", "cache", str(config), "--json"],
            capture_output=True, text=True, env=child_environment(), timeout=WAIT)
        assert process.returncode == 0 and "Traceback" not in process.stderr, process.stderr
        assert json.loads(process.stdout)["hits"] == 0


READER = """
import sys, ZODB
from ZODB.FileStorage import FileStorage
from zodb_swiftblobs.cache import counters
from zodb_swiftblobs.storage import SwiftBlobStorage

data_fs, cache_dir, container, auth_url, user, key, then = sys.argv[1:]
counters.FLUSH_INTERVAL = 0.2 if then == "idle" else 3600

storage = SwiftBlobStorage(FileStorage(data_fs, read_only=True), container=container,
                           cache_dir=cache_dir, auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
with db.transaction() as conn:
    blob = conn.root()["blob"]
    for _ in range(2):  # a miss, then a hit
        with blob.open() as f:
            f.read()
print(storage.cache_stats()["hits"], storage.cache_stats()["misses"], flush=True)
if then == "idle":
    sys.stdin.read()  # idle until the test is done with it
"""


def saved_counters(cache_dir):
    """The counts in the cache's counters file (none while it is missing or malformed)."""
    try:
        with open(os.path.join(cache_dir, ".counters.json"), "rb") as f:
            return parse_counters(f.read())
    except (FileNotFoundError, MalformedCounters):
        return dict.fromkeys(COUNTERS, 0)


def commit_a_blob(cluster, data_fs, container_name, cache_dir):
    db = ZODB.DB(swift_storage(cluster, FileStorage(data_fs), container_name, cache_dir))
    try:
        commit_blob(db, "blob", b"read twice by the reader")
    finally:
        db.close()


def reader_command(cluster, data_fs, cache_dir, container_name, then):
    credentials = credentials_for(cluster)
    return [sys.executable, "-c", READER, data_fs, str(cache_dir), container_name,
            credentials.auth_url, credentials.user, credentials.key, then]


def test_an_idle_process_saves_its_counts_and_they_survive_its_kill(devswift, tmp_path,
                                                                    container_name):
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    commit_a_blob(devswift, data_fs, container_name, tmp_path / "writer-cache")
    os.makedirs(cache_dir)
    make_malformed(os.path.join(cache_dir, ".counters.json"), "a null count")
    reader = subprocess.Popen(
        reader_command(devswift, data_fs, cache_dir, container_name, "idle"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_environment())
    try:
        counted = reader.stdout.readline()
        hits, misses = (int(part) for part in counted.split())
        assert misses == 1 and hits >= 1, counted
        deadline = time.monotonic() + WAIT
        while (saved_counters(cache_dir)["hits"], saved_counters(cache_dir)["misses"]) \
                != (hits, misses):
            assert time.monotonic() < deadline, "the idle process never saved its counts"
            assert reader.poll() is None, reader.stderr.read()
            time.sleep(0.1)
        os.kill(reader.pid, signal.SIGKILL)
    finally:
        reader.kill()
        reader.wait(timeout=WAIT)
        reader.stdout.close()
        reader.stderr.close()
        reader.stdin.close()
    assert reader.returncode == -signal.SIGKILL
    cache = BlobCache(str(cache_dir), 1 << 20)
    try:
        totals = cache.totals()
    finally:
        cache.close()
    assert (totals["hits"], totals["misses"]) == (hits, misses)


def test_a_process_exiting_without_closing_its_storage_saves_its_counts(devswift, tmp_path,
                                                                        container_name):
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    commit_a_blob(devswift, data_fs, container_name, tmp_path / "writer-cache")
    reader = subprocess.run(reader_command(devswift, data_fs, cache_dir, container_name, "exit"),
                            capture_output=True, text=True, env=child_environment(),
                            timeout=WAIT)
    assert reader.returncode == 0, reader.stderr[-3000:]
    hits, misses = (int(part) for part in reader.stdout.split())
    saved = saved_counters(cache_dir)
    assert (saved["hits"], saved["misses"]) == (hits, misses) and misses == 1


def _never(path):
    raise AssertionError("fetched a cached file")


def _writer(data):
    def fetch(path):
        with open(path, "wb") as f:
            f.write(data)
    return fetch

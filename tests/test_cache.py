"""The local blob cache, against the real file system, threads and processes."""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import subprocess
import re
import stat
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (awaited_locks, child_environment, corrupt_cached_file, make_non_file,
                      mounted, read, wait_for)
import zodb_swiftblobs.cache.lookup
from zodb_swiftblobs.cache import pins
from zodb_swiftblobs.cache import BlobCache, CacheDirectoryError

MIB = 1 << 20
KIB = 1 << 10
WAIT = 10  # seconds: the bound of every wait in these tests
READABLE = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
WRITABLE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def ident(number):
    """An 8-byte ZODB oid or tid."""
    return number.to_bytes(8, "big")


OID = ident(7)
TID = ident(0x03E5_0000_0000_0001)
PROCESS_DATA = b"fetched once for all processes\n" * 1000


class FetchFailed(Exception):
    pass


@pytest.fixture
def make_cache(tmp_path):
    """Make caches (in tmp_path/cache unless told); close them all afterwards."""
    caches = []

    def make(directory=None, size=MIB, **options):
        cache = BlobCache(str(directory or tmp_path / "cache"), size, **options)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        cache.close()


def writer(data, calls=None):
    """A fetch function writing *data*, recording its calls in *calls*."""
    def fetch(temporary_path):
        if calls is not None:
            calls.append(temporary_path)
        with open(temporary_path, "wb") as f:
            f.write(data)
    return fetch


def stage(cache, data):
    """Stage a file in the cache's temporary directory, as a commit does."""
    descriptor, path = tempfile.mkstemp(dir=cache.temporary_directory)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)
    return path


def backdate(path, seconds_ago):
    """Set the access time of *path* (as if last used *seconds_ago*)."""
    accessed = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(accessed, os.stat(path).st_mtime_ns))


def wait_until_blocked_on(path):
    """Wait until a thread waits for the flock of *path* (Linux's /proc/locks shows it)."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + WAIT
    while True:
        with open("/proc/locks") as f:
            waiting = [line.split() for line in f if " -> FLOCK " in line]
        if any(int(fields[6].rsplit(":", 1)[1]) == inode for fields in waiting):
            return
        assert time.monotonic() < deadline, f"nobody waits for {path}"
        time.sleep(0.01)


def committed_paths(cache):
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(cache.directory)
        for name in names if name.endswith(".blob") and not name.startswith("."))


# Directories and modes

def test_path_layout(make_cache, tmp_path):
    cache = make_cache(tmp_path / "parent" / "cache")
    assert cache.directory == f"{tmp_path}/parent/cache"
    assert cache.temporary_directory == f"{tmp_path}/parent/cache/tmp"
    assert os.path.isdir(cache.temporary_directory)
    assert cache.path(OID, TID) == f"{cache.directory}/0000000000000007/03e5000000000001.blob"


@pytest.mark.parametrize("umask", [0o022, 0o277], ids=["umask-022", "umask-277"])
def test_directories_are_private_and_files_read_only(make_cache, tmp_path, umask):
    previous = os.umask(umask)
    try:
        cache = make_cache()
        fetched = cache.get(OID, TID, writer(b"fetched"))
        published = cache.publish(stage(cache, b"published"), ident(8), TID)
        (tmp_path / "uncommitted").write_bytes(b"uncommitted")  # mode 0o644 under umask 022
        staged = os.path.join(cache.temporary_directory, "staged")
        cache.stage(str(tmp_path / "uncommitted"), staged)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(staged).st_mode) == 0o600
    for directory in (cache.directory, cache.temporary_directory, os.path.dirname(fetched),
                      os.path.dirname(published)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    for path in (fetched, published):
        mode = os.stat(path).st_mode
        assert stat.S_IMODE(mode) == 0o400
        assert mode & WRITABLE == 0
        # ZODB's own check for committed blob files:
        assert (mode & READABLE) == (os.stat(os.path.dirname(path)).st_mode & READABLE)


def test_existing_directory_keeps_its_mode(make_cache, tmp_path):
    directory = tmp_path / "existing"
    directory.mkdir()
    directory.chmod(0o750)
    cache = make_cache(directory)
    assert stat.S_IMODE(os.stat(cache.directory).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(cache.temporary_directory).st_mode) == 0o700


def test_rejects_a_file_as_directory(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=re.escape(str(tmp_path / "file"))):
        BlobCache(str(tmp_path / "file"), MIB)


def test_rejects_an_unwritable_directory(tmp_path):
    """A read-only mount stops root too (root ignores a directory's mode)."""
    directory = tmp_path / "unwritable"
    directory.mkdir()
    if os.geteuid() == 0:
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                str(directory)], capture_output=True, text=True)
        if mount.returncode:
            pytest.skip(f"a read-only mount is not allowed here: {mount.stderr.strip()}")
        undo = ["umount", str(directory)]
    else:
        directory.chmod(0o500)
        undo = ["chmod", "700", str(directory)]
    try:
        with pytest.raises(OSError, match=re.escape(str(directory))):
            BlobCache(str(directory), MIB)
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize("size", [0, -1])
def test_rejects_bad_sizes(tmp_path, size):
    with pytest.raises(ValueError):
        BlobCache(str(tmp_path), size)


# Fetching and publishing

def test_miss_fetches_into_a_new_name_beside_the_file_then_hits(make_cache):
    cache = make_cache()
    final = cache.path(OID, TID)
    seen = []

    def fetch(temporary_path):
        seen.append((temporary_path, os.path.exists(temporary_path), os.path.exists(final)))
        writer(b"data")(temporary_path)

    assert cache.get(OID, TID, fetch) == final
    [(temporary_path, existed, final_existed)] = seen
    assert os.path.dirname(temporary_path) == os.path.dirname(final)
    assert temporary_path != final and not existed and not final_existed
    assert not os.path.exists(temporary_path)
    assert cache.get(OID, TID, fetch) == final
    assert len(seen) == 1 and read(final) == b"data"
    assert os.listdir(os.path.dirname(final)) == [os.path.basename(final)]  # no lock file left


def test_file_appears_only_complete(make_cache):
    """While a fetch writes, neither the final path nor a waiting reader sees the file."""
    cache = make_cache()
    half_written, finish = threading.Event(), threading.Event()
    first, second = b"a" * 100_000, b"b" * 100_000

    def slow_fetch(temporary_path):
        with open(temporary_path, "wb") as f:
            f.write(first)
            f.flush()
            half_written.set()
            assert finish.wait(WAIT)
            f.write(second)

    second_fetches = []
    with ThreadPoolExecutor(2) as pool:
        fetching = pool.submit(cache.get, OID, TID, slow_fetch)
        assert half_written.wait(WAIT)
        waiting = pool.submit(cache.get, OID, TID, writer(b"wrong", second_fetches))
        wait_for(lambda: awaited_locks(os.path.dirname(cache.path(OID, TID))),
                 "the second reader to wait for the revision's lock")
        assert not os.path.exists(cache.path(OID, TID))
        finish.set()
        assert fetching.result(WAIT) == waiting.result(WAIT) == cache.path(OID, TID)
    assert read(cache.path(OID, TID)) == first + second
    assert second_fetches == []


def test_publish_renames_the_staged_file(make_cache):
    cache = make_cache()
    staged = stage(cache, b"committed")
    inode = os.stat(staged).st_ino
    path = cache.publish(staged, OID, TID)
    assert path == cache.path(OID, TID)
    assert not os.path.exists(staged)
    assert os.stat(path).st_ino == inode  # renamed, not copied: it appears complete
    assert read(path) == b"committed"
    assert cache.publish(stage(cache, b"committed"), OID, TID) == path  # same revision again
    assert read(path) == b"committed"
    assert os.listdir(cache.temporary_directory) == []
    stats = cache.stats()
    assert (stats["misses"], stats["bytes_downloaded"], stats["entries"]) == (0, 0, 1)


def test_concurrent_misses_in_threads_fetch_once(make_cache):
    cache = make_cache()
    data = b"shared" * 10_000
    calls = []
    start = threading.Barrier(16)

    def fetch(temporary_path):
        calls.append(temporary_path)
        time.sleep(0.2)  # a slow download: the other threads miss meanwhile
        writer(data)(temporary_path)

    def reader():
        start.wait(WAIT)
        path = cache.get(OID, TID, fetch)
        return path, read(path)

    with ThreadPoolExecutor(16) as pool:
        results = [future.result(WAIT) for future in [pool.submit(reader) for _ in range(16)]]
    assert len(calls) == 1
    assert results == [(cache.path(OID, TID), data)] * 16
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["bytes_downloaded"]) == (1, 15, len(data))


def get_in_process(directory, start, counter_path, results):
    """One process of test_concurrent_misses_in_processes_fetch_once."""
    cache = BlobCache(directory, MIB)

    def fetch(temporary_path):
        with open(counter_path, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.2)  # a slow download: the other processes miss meanwhile
        writer(PROCESS_DATA)(temporary_path)

    start.wait(WAIT)
    path = cache.get(OID, TID, fetch)
    stats = cache.stats()
    results.put((path, read(path), stats["misses"], stats["hits"], stats["corrupt"]))
    cache.close()


def get_in_processes(directory, count):
    """Run get_in_process in *count* new processes at once: (outcomes, fetches)."""
    context = multiprocessing.get_context("spawn")
    counter_path = f"{directory}.fetches"
    start, results = context.Barrier(count), context.Queue()
    processes = [context.Process(target=get_in_process,
                                 args=(directory, start, counter_path, results))
                 for _ in range(count)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=WAIT * 3) for _ in processes]
    finally:
        for process in processes:
            process.join(WAIT)
    assert [process.exitcode for process in processes] == [0] * count
    with open(counter_path) as f:
        return outcomes, len(f.readlines())


def test_concurrent_misses_in_processes_fetch_once(tmp_path):
    directory = str(tmp_path / "cache")
    outcomes, fetches = get_in_processes(directory, 4)
    assert fetches == 1
    path = f"{directory}/{OID.hex()}/{TID.hex()}.blob"
    assert {outcome[:2] for outcome in outcomes} == {(path, PROCESS_DATA)}
    assert sorted(outcome[2:] for outcome in outcomes) == [(0, 1, 0)] * 3 + [(1, 0, 0)]


def test_lock_file_left_by_a_fetcher_that_died_after_publishing(make_cache):
    """The reader that gets the lock next looks again, finds the file, and removes the lock file."""
    cache = make_cache()
    lock_path = f"{cache.directory}/{OID.hex()}/.{TID.hex()}.lock"
    os.mkdir(os.path.dirname(lock_path), 0o700)
    dying_fetcher = os.open(lock_path, os.O_RDONLY | os.O_CREAT, 0o600)
    fcntl.flock(dying_fetcher, fcntl.LOCK_EX)
    calls = []
    with ThreadPoolExecutor(1) as pool:
        reader = pool.submit(cache.get, OID, TID, writer(b"fetched again", calls))
        wait_until_blocked_on(lock_path)
        cache.publish(stage(cache, b"published"), OID, TID)
        os.close(dying_fetcher)  # its lock dies with it; its lock file stays
        assert reader.result(WAIT) == cache.path(OID, TID)
    assert calls == []
    assert read(cache.path(OID, TID)) == b"published"
    assert not os.path.exists(lock_path)
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (1, 0)


@pytest.mark.parametrize("kind", ["directory", "FIFO", "socket", "dangling link"])
def test_a_non_file_at_the_eviction_lock_is_replaced_with_a_warning(make_cache, kind, caplog):
    cache = make_cache()
    lock_path = os.path.join(cache.directory, ".evict.lock")
    make_non_file(lock_path, kind)
    with caplog.at_level(logging.WARNING, logger="zodb_swiftblobs"):
        assert read(cache.get(OID, TID, writer(b"fetched"))) == b"fetched"
        assert read(cache.get(ident(8), TID, writer(b"also fetched"))) == b"also fetched"
    assert [record.levelname for record in caplog.records] == ["WARNING"], caplog.text
    assert lock_path in caplog.text
    assert stat.S_ISREG(os.lstat(lock_path).st_mode)
    assert not os.path.lexists(os.path.join(cache.directory, "nowhere"))


def test_fetch_removes_temporary_files_of_fetchers_that_died(make_cache):
    cache = make_cache()
    directory = os.path.dirname(cache.path(OID, TID))
    os.mkdir(directory, 0o700)
    dead = f"{directory}/.{TID.hex()}.blob.0123456789abcdef.tmp"
    dead_fetch_functions = f"{directory}/..{TID.hex()}.blob.0123456789abcdef.tmp.x1y2z3.part"
    other_revision = f"{directory}/.{ident(2).hex()}.blob.0123456789abcdef.tmp"
    for path in (dead, dead_fetch_functions, other_revision):
        with open(path, "wb") as f:
            f.write(b"partial")
    cache.get(OID, TID, writer(b"complete"))
    assert sorted(os.listdir(directory)) == sorted([os.path.basename(cache.path(OID, TID)),
                                                    os.path.basename(other_revision)])


def test_revisions_of_one_oid_are_fetched_concurrently_and_never_mix(make_cache):
    cache = make_cache()
    both_fetching = threading.Barrier(2)
    revisions = {ident(1): b"first revision" * 1000, ident(2): b"second revision" * 1000}

    def fetcher(tid):
        def fetch(temporary_path):
            both_fetching.wait(WAIT)  # fails unless both revisions are fetched at once
            writer(revisions[tid])(temporary_path)
        return fetch

    with ThreadPoolExecutor(2) as pool:
        futures = {tid: pool.submit(cache.get, OID, tid, fetcher(tid)) for tid in revisions}
        paths = {tid: future.result(WAIT) for tid, future in futures.items()}
    for tid, data in revisions.items():
        assert paths[tid] == cache.path(OID, tid)
        assert read(paths[tid]) == data


def test_failing_fetch_publishes_nothing_and_reraises(make_cache):
    cache = make_cache()
    error = FetchFailed("Swift is down")

    def failing_fetch(temporary_path):
        with open(temporary_path, "wb") as f:
            f.write(b"partial")
        raise error

    with pytest.raises(FetchFailed) as raised:
        cache.get(OID, TID, failing_fetch)
    assert raised.value is error
    assert not os.path.exists(cache.path(OID, TID))
    assert os.listdir(cache.directory) == ["tmp"]  # no temporary or lock file, no directory
    assert cache.stats() == dict(hits=0, misses=0, bytes_downloaded=0, evictions=0,
                                 evicted_bytes=0, corrupt=0, size=0, entries=0)
    calls = []
    assert read(cache.get(OID, TID, writer(b"complete", calls))) == b"complete"
    assert len(calls) == 1


def test_reader_waiting_for_a_failed_fetch_fetches_itself(make_cache):
    cache = make_cache()
    fetching, fail = threading.Event(), threading.Event()

    def failing_fetch(temporary_path):
        fetching.set()
        assert fail.wait(WAIT)
        raise FetchFailed()

    calls = []
    with ThreadPoolExecutor(2) as pool:
        failing = pool.submit(cache.get, OID, TID, failing_fetch)
        assert fetching.wait(WAIT)
        waiting = pool.submit(cache.get, OID, TID, writer(b"complete", calls))
        wait_for(lambda: awaited_locks(os.path.dirname(cache.path(OID, TID))),
                 "the second reader to wait for the revision's lock")
        fail.set()
        with pytest.raises(FetchFailed):
            failing.result(WAIT)
        assert read(waiting.result(WAIT)) == b"complete"
    assert len(calls) == 1


def evict_in_process(directory, size=1):
    """Evict as another process would, down to *size*: the (files, bytes) it removed."""
    script = ("import sys; from zodb_swiftblobs.cache import BlobCache; "
              "cache = BlobCache(sys.argv[1], int(sys.argv[2])); print(*cache.prune(0))")
    evicted = subprocess.run([sys.executable, "-c", script, directory, str(size)],
                             capture_output=True, text=True, env=child_environment(),
                             timeout=WAIT * 3)
    assert evicted.returncode == 0, evicted.stderr[-3000:]
    return tuple(int(number) for number in evicted.stdout.split())


@pytest.mark.parametrize("via", ["fetched", "hit"])
def test_a_returned_path_survives_an_eviction_from_another_process(make_cache, via):
    cache = make_cache()
    calls = []
    path = cache.get(OID, TID, writer(b"data", calls))
    if via == "hit":
        cache.close()  # the fetch's pin goes: the hit's pin is the one that keeps the file
        assert cache.get(OID, TID, _never) == path
    assert evict_in_process(cache.directory) == (0, 0)
    assert read(path) == b"data"
    cache.close()  # released: now an eviction removes it, and the next get fetches it again
    assert evict_in_process(cache.directory) == (1, 4)
    with pytest.raises(FileNotFoundError):
        open(path, "rb")
    assert cache.get(OID, TID, writer(b"data", calls)) == path
    assert read(path) == b"data"
    assert len(calls) == 2


def test_returned_paths_stay_pinned_until_their_caller_opens_them(make_cache):
    """However many paths a process hands out before its callers open them,
    however big (a ZEO server opens each when its turn to be sent comes)."""
    cache = make_cache(size=MIB)
    contents = [bytes([n]) * (400 * KIB) for n in range(4)]  # 1.6 MiB in a 1 MiB cache
    paths = [cache.get(OID, ident(n), writer(data)) for n, data in enumerate(contents)]
    assert evict_in_process(cache.directory) == (0, 0)
    assert [read(path) for path in paths] == contents
    other = cache.get(ident(8), TID, writer(b"other"))  # this thread opened them: they go
    assert evict_in_process(cache.directory) == (4, 4 * 400 * KIB)
    assert read(other) == b"other"


def test_the_path_zodb_gets_for_a_loaded_blob_goes_once_the_blob_is_read(make_cache):
    """ZODB asks for the path when it loads a blob object, then reads through
    openCommittedBlobFile, which asks again and opens the file at once."""
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"loaded"))
    assert cache.get(OID, ident(1), _never, handed_out=False) == path
    assert read(path) == b"loaded"
    cache.get(OID, ident(2), writer(b"next"))
    assert evict_in_process(cache.directory) == (1, 6)


def test_in_a_zodb_process_a_path_not_opened_goes_at_its_threads_next(make_cache):
    """ZODB asks for a path each time it loads a blob object, and seldom opens
    it: such a path stays only until its thread asks for another one."""
    cache = make_cache()
    cache.pins_wait_for_open = False
    first = cache.get(OID, ident(1), writer(b"first"))
    other_threads = threading.Thread(target=cache.get, args=(OID, ident(2), writer(b"other")))
    other_threads.start()
    other_threads.join()
    assert evict_in_process(cache.directory) == (0, 0)
    cache.get(OID, ident(3), writer(b"third"))
    assert evict_in_process(cache.directory) == (1, 5)
    assert not os.path.exists(first)


def test_a_path_handed_out_twice_stays_until_opened_twice(make_cache):
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"twice"))
    assert cache.get(OID, ident(1), _never) == path
    assert read(path) == b"twice"
    cache.get(OID, ident(2), writer(b"second"))
    assert evict_in_process(cache.directory) == (0, 0)  # one caller has not opened it yet
    assert read(path) == b"twice"
    cache.get(OID, ident(3), writer(b"third"))
    assert evict_in_process(cache.directory) == (1, 5)


def test_a_path_opened_in_another_thread_goes_a_while_after(make_cache, monkeypatch):
    monkeypatch.setattr(pins, "RELEASE_AFTER_OPEN", 3600.0)  # however slow the machine
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"first"))
    opener = threading.Thread(target=read, args=(path,))
    opener.start()
    opener.join()
    cache.get(OID, ident(2), writer(b"second"))
    assert evict_in_process(cache.directory) == (0, 0)  # its opener may not be done yet
    monkeypatch.setattr(pins, "RELEASE_AFTER_OPEN", 0.0)
    cache.get(OID, ident(3), writer(b"third"))
    assert evict_in_process(cache.directory) == (1, 5)  # the two never opened stay
    assert not os.path.exists(path)


def test_pins_of_a_process_that_goes_idle_go_once_due(make_cache, monkeypatch):
    monkeypatch.setattr(pins, "RELEASE_AFTER_OPEN", 0.0)  # the reaper: every second
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"idle"))
    opener = threading.Thread(target=read, args=(path,))
    opener.start()
    opener.join()
    deadline = time.monotonic() + WAIT * 3
    while evict_in_process(cache.directory) != (1, 4):  # nothing more is handed out
        assert time.monotonic() < deadline, "the pin of an opened file stayed"


def test_a_path_never_opened_stays_pinned_for_a_limited_time(make_cache, monkeypatch):
    monkeypatch.setattr(pins, "RELEASE_AFTER_OPEN", 0.0)  # the reaper: every second
    monkeypatch.setattr(pins, "PIN_LIMIT", 0.0)
    cache = make_cache()
    cache.get(OID, ident(1), writer(b"first"))  # nothing more is handed out
    deadline = time.monotonic() + WAIT * 3
    while evict_in_process(cache.directory) != (1, 5):
        assert time.monotonic() < deadline, "a pin outlived its limit"


@pytest.mark.parametrize("wait_for_open", [True, False])
def test_another_threads_read_leaves_a_callers_pin(make_cache, wait_for_open):
    """A handout awaits its own caller's open: another thread handed the same
    path, or reading it through openCommittedBlobFile, then moving on does
    not release it, whether paths wait for their open (a ZEO server) or only
    until their thread asks for another (a ZODB database)."""
    cache = make_cache()
    cache.pins_wait_for_open = wait_for_open
    path = cache.get(OID, ident(1), writer(b"awaited"))

    def read_and_move_on():
        assert cache.get(OID, ident(1), _never, handed_out=not wait_for_open) == path
        assert read(path) == b"awaited"
        cache.get(OID, ident(2), writer(b"next"))
    reader = threading.Thread(target=read_and_move_on)
    reader.start()
    reader.join()
    assert evict_in_process(cache.directory) == (0, 0)
    assert read(path) == b"awaited"


def test_a_file_fetched_again_while_pinned_is_pinned(make_cache):
    """The pin follows the file now at the path, not one removed since."""
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"first"))
    os.unlink(path)  # as an operator's clean-up, or a corrupt file removed
    assert cache.get(OID, ident(1), writer(b"again")) == path
    assert evict_in_process(cache.directory) == (0, 0)
    assert read(path) == b"again"


def test_a_forked_child_holds_none_of_its_parents_pins(make_cache):
    cache = make_cache()
    path = cache.get(OID, ident(1), writer(b"parent's"))
    assert read(path) == b"parent's"
    release, released = os.pipe()
    child = os.fork()
    if child == 0:  # the child only waits to be told to exit
        os.read(release, 1)
        os._exit(0)
    try:
        cache.close()  # the parent's pins go...
        assert evict_in_process(cache.directory) == (1, 8)  # ...while the child lives
    finally:
        os.write(released, b"x")
        os.waitpid(child, 0)


def test_a_process_holds_a_limited_number_of_pins(make_cache, monkeypatch):
    monkeypatch.setattr(pins, "PINS_PER_PROCESS", 3)
    cache = make_cache()
    paths = [cache.get(OID, ident(n), writer(b"%d" % n)) for n in range(5)]
    assert evict_in_process(cache.directory) == (2, 2)  # the oldest two went
    assert [os.path.exists(path) for path in paths] == [False] * 2 + [True] * 3


def test_discard_removes_only_that_revision(make_cache):
    cache = make_cache()
    for oid, tid in [(OID, ident(1)), (OID, ident(2)), (ident(8), ident(1))]:
        cache.get(oid, tid, writer(oid + tid))
    assert cache.discard(OID, ident(1))
    assert not os.path.exists(cache.path(OID, ident(1)))
    assert read(cache.path(OID, ident(2))) == OID + ident(2)
    assert read(cache.path(ident(8), ident(1))) == ident(8) + ident(1)
    assert not cache.discard(OID, ident(1))
    assert not cache.discard(ident(9), ident(1))
    assert cache.stats()["entries"] == 2


# Integrity

def test_committed_files_carry_their_size_and_checksum(make_cache):
    cache = make_cache()
    fetched = cache.get(OID, ident(1), writer(b"fetched"))
    published = cache.publish(stage(cache, b"published!"), OID, ident(2))
    assert os.getxattr(fetched, "user.zodb-swiftblobs") == \
        b"v2 %s %s 7 %08x" % (OID.hex().encode(), ident(1).hex().encode(), zlib.crc32(b"fetched"))
    assert os.getxattr(published, "user.zodb-swiftblobs") == \
        b"v2 %s %s 10 %08x" % (OID.hex().encode(), ident(2).hex().encode(),
                               zlib.crc32(b"published!"))


def only_warning(caplog):
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    return warning.getMessage()


@pytest.mark.parametrize("damage", ["truncated", "rewritten", "no record", "malformed record",
                                    "record of another revision"])
def test_a_damaged_file_is_fetched_again_at_the_next_hit(make_cache, caplog, damage):
    """A truncation changes the size, a rewrite the modification time, and
    the record is read at each hit: the next hit sees it, whoever verified
    the file before."""
    cache = make_cache()
    data = b"intact" * 1000
    path = cache.get(OID, TID, writer(data))
    if damage == "truncated":
        os.chmod(path, 0o600)
        os.truncate(path, 1000)
    elif damage == "rewritten":
        corrupt_cached_file(path)
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns + 10**9))
    elif damage == "no record":
        os.removexattr(path, "user.zodb-swiftblobs")
    else:
        record = os.getxattr(path, "user.zodb-swiftblobs")
        os.setxattr(path, "user.zodb-swiftblobs", b"v2 12 not-a-checksum"
                    if damage == "malformed record" else record.replace(b"07 ", b"08 ", 1))
    calls = []
    assert cache.get(OID, TID, writer(data, calls)) == path
    assert len(calls) == 1 and read(path) == data
    assert f"{path} is corrupt" in only_warning(caplog)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["corrupt"]) == (0, 2, 1)
    assert cache.get(OID, TID, _never) == path
    assert cache.stats()["hits"] == 1


def test_a_file_cached_by_an_earlier_version_is_fetched_again_quietly(make_cache, caplog):
    cache = make_cache()
    path = cache.get(OID, TID, writer(b"cached"))
    os.setxattr(path, "user.zodb-swiftblobs", b"v1 6 %08x" % zlib.crc32(b"cached"))
    calls = []
    assert cache.get(OID, TID, writer(b"cached", calls)) == path
    assert len(calls) == 1
    assert os.getxattr(path, "user.zodb-swiftblobs").startswith(b"v2 ")
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert cache.stats()["corrupt"] == 0


def test_damage_keeping_size_and_mtime_is_found_by_the_next_process(make_cache):
    cache = make_cache()
    path = cache.get(OID, TID, writer(PROCESS_DATA))
    corrupt_cached_file(path)
    # This process checked the file when it wrote it and does not read it again.
    assert cache.get(OID, TID, _never) == path
    outcomes, fetches = get_in_processes(cache.directory, 1)
    assert fetches == 1
    assert outcomes == [(path, PROCESS_DATA, 1, 0, 1)]
    assert read(path) == PROCESS_DATA


def test_processes_finding_one_corrupt_file_fetch_it_once(make_cache):
    """Each checks again under the revision's lock: none removes the file
    another one has just fetched again."""
    cache = make_cache()
    path = cache.get(OID, TID, writer(PROCESS_DATA))
    corrupt_cached_file(path)
    outcomes, fetches = get_in_processes(cache.directory, 4)
    assert fetches == 1
    assert {outcome[:2] for outcome in outcomes} == {(path, PROCESS_DATA)}
    assert sorted(outcome[2:] for outcome in outcomes) == [(0, 1, 0)] * 3 + [(1, 0, 1)]


def test_a_file_found_corrupt_is_checked_again_under_the_lock(tmp_path):
    """Between finding a file corrupt and locking its revision, another
    process fetched it again: that good file stays."""

    class RacedCache(BlobCache):
        def _pin_if_intact(self, oid, tid, path, handed_out, *, under_lock):
            intact = super()._pin_if_intact(oid, tid, path, handed_out, under_lock=under_lock)
            if races and not under_lock:
                races.pop()()
            return intact

    races, children = [], []
    cache = RacedCache(str(tmp_path / "cache"), MIB)
    cache.close()
    path = cache.get(OID, TID, writer(PROCESS_DATA))
    corrupt_cached_file(path)
    os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns + 10**9))  # checked again
    races.append(lambda: children.append(get_in_processes(cache.directory, 1)))
    assert cache.get(OID, TID, _never) == path
    assert children == [([(path, PROCESS_DATA, 1, 0, 1)], 1)]
    assert read(path) == PROCESS_DATA
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["corrupt"]) == (1, 1, 0)


def test_without_extended_attributes_files_are_served_unverified(tmp_path, caplog):
    with mounted(tmp_path / "ramfs", "ramfs"):  # ramfs has no user extended attributes
        cache = BlobCache(str(tmp_path / "ramfs" / "cache"), MIB)
        try:
            assert "cached files cannot be verified" in only_warning(caplog)
            path = cache.get(OID, TID, writer(b"fetched"))
            cache.publish(stage(cache, b"published"), OID, ident(2))
            os.truncate(path, 2)
            assert cache.get(OID, TID, _never) == path
            assert read(path) == b"fe"
            assert len(caplog.records) == 1
            assert cache.stats()["corrupt"] == 0
        finally:
            cache.close()


def test_on_a_platform_without_extended_attributes_files_are_served_unverified(
        tmp_path, caplog, monkeypatch):
    """As on macOS, whose os module has no setxattr nor getxattr."""
    for name in ("setxattr", "getxattr"):
        monkeypatch.delattr(os, name)
    cache = BlobCache(str(tmp_path / "cache"), MIB)
    try:
        assert "cached files cannot be verified" in only_warning(caplog)
        path = cache.get(OID, TID, writer(b"fetched"))
        published = cache.publish(stage(cache, b"published"), OID, ident(2))
        assert cache.get(OID, TID, _never) == path
        assert (read(path), read(published)) == (b"fetched", b"published")
        assert cache.stats()["entries"] == 2
    finally:
        cache.close()


# Full and read-only cache directories

def test_a_full_cache_directory_is_a_clear_error_and_keeps_nothing(tmp_path):
    with mounted(tmp_path / "small", size="2m"):
        cache = BlobCache(str(tmp_path / "small" / "cache"), MIB)
        try:
            with pytest.raises(CacheDirectoryError) as raised:
                cache.get(OID, TID, writer(b"x" * (3 * MIB)))
            message = str(raised.value)
            for part in (cache.directory, OID.hex(), TID.hex(), "No space left on device",
                         "free space on its file system, or lower cache-size"):
                assert part in message
            assert os.listdir(cache.directory) == ["tmp"]
            (tmp_path / "uncommitted").write_bytes(b"x" * (3 * MIB))
            staged = os.path.join(cache.temporary_directory, "staged")
            with pytest.raises(CacheDirectoryError, match="cannot stage .*No space left"):
                cache.stage(str(tmp_path / "uncommitted"), staged)
            assert os.listdir(cache.temporary_directory) == []
            assert read(cache.get(OID, TID, writer(b"small"))) == b"small"
            stats = cache.stats()
            assert (stats["misses"], stats["bytes_downloaded"], stats["entries"]) == (1, 5, 1)
        finally:
            cache.close()


def test_a_read_only_cache_directory_serves_hits_and_refuses_the_rest(tmp_path):
    with mounted(tmp_path / "mount", size="4m") as remount:
        cache = BlobCache(str(tmp_path / "mount" / "cache"), MIB)
        try:
            path = cache.get(OID, TID, writer(b"cached"))
            remount("ro")
            assert read(cache.get(OID, TID, _never)) == b"cached"
            for oid, tid in [(OID, ident(2)), (ident(8), TID)]:  # oid directory there or not
                with pytest.raises(CacheDirectoryError, match=re.escape(
                        f"blob cache {cache.directory}: cannot store revision {tid.hex()} of "
                        f"blob {oid.hex()}: Read-only file system (check its permissions and "
                        "how its file system is mounted)")):
                    cache.get(oid, tid, writer(b"not stored"))
            (tmp_path / "uncommitted").write_bytes(b"uncommitted")
            with pytest.raises(CacheDirectoryError, match="cannot stage .*Read-only"):
                cache.stage(str(tmp_path / "uncommitted"),
                            os.path.join(cache.temporary_directory, "staged"))
            assert (tmp_path / "uncommitted").exists()
            remount("rw")
            assert committed_paths(cache) == [path]
            assert sorted(os.listdir(cache.directory)) == [".evict.lock", OID.hex(), "tmp"]
            assert os.listdir(cache.temporary_directory) == []
        finally:
            cache.close()


# Eviction

def fill(directory, count, data=b"x" * (100 * KIB), oid=lambda n: OID, seconds_ago=None):
    """Publish *count* files into the cache *directory* (through a cache large
    enough to hold them all); return their paths."""
    cache = BlobCache(str(directory), 1 << 40)
    try:
        paths = [cache.publish(stage(cache, data(n) if callable(data) else data), oid(n),
                               ident(n)) for n in range(count)]
    finally:
        cache.close()
    if seconds_ago is not None:
        for n, path in enumerate(paths):
            backdate(path, seconds_ago(n))
    return paths


def test_evict_removes_least_recently_used_down_to_90_percent(make_cache, tmp_path):
    paths = fill(tmp_path / "cache", 50, data=lambda n: bytes([n]) * (100 * KIB),
                 oid=lambda n: ident(n // 5), seconds_ago=lambda n: 1050 - n)
    cache = make_cache(size=MIB)
    staged = stage(cache, b"uncommitted")
    for n in range(5):  # the oldest files, used again now
        assert cache.get(ident(n // 5), ident(n), writer(b"not fetched")) == paths[n]

    assert cache.evict() == 41  # 9 files of 100 KiB fit in 90 % of 1 MiB, 10 do not
    survivors = paths[:5] + paths[-4:]
    assert committed_paths(cache) == sorted(survivors)
    assert all(read(path) == bytes([n]) * (100 * KIB)
               for n, path in enumerate(paths) if path in survivors)
    assert read(staged) == b"uncommitted"
    # Emptied oid directories go; the evict lock and the temporary directory stay.
    assert sorted(os.listdir(cache.directory)) == [".evict.lock", ident(0).hex(),
                                                  ident(9).hex(), "tmp"]
    stats = cache.stats()
    assert stats["size"] == 9 * 100 * KIB <= 0.9 * cache.size
    assert (stats["entries"], stats["evictions"], stats["evicted_bytes"]) == \
        (9, 41, 41 * 100 * KIB)
    assert cache.evict() == 0  # within bounds already


def test_evict_spares_fetches_in_progress(make_cache, tmp_path):
    fill(tmp_path / "cache", 20, seconds_ago=lambda n: 100)
    cache = make_cache(size=MIB)
    fetching, finish = threading.Event(), threading.Event()
    in_progress = []

    def slow_fetch(temporary_path):
        in_progress.append(temporary_path)
        writer(b"in progress")(temporary_path)
        fetching.set()
        assert finish.wait(WAIT)

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(cache.get, OID, ident(100), slow_fetch)
        assert fetching.wait(WAIT)
        lock_path = f"{cache.directory}/{OID.hex()}/.{ident(100).hex()}.lock"
        assert os.path.exists(lock_path)
        assert cache.evict() == 11  # without waiting for the fetch's lock
        assert os.path.exists(lock_path)
        assert read(in_progress[0]) == b"in progress"
        finish.set()
        assert read(future.result(WAIT)) == b"in progress"


def test_evict_tolerates_files_removed_or_used_after_listing(tmp_path):
    """Between listing and removing, another process removes one file, a reader uses another."""

    class RacedCache(BlobCache):
        def _committed_files(self):
            files = super()._committed_files()
            if races:
                races.pop()()
            return files

    paths = fill(tmp_path / "cache", 5, data=b"x" * 300, seconds_ago=lambda n: 200 - n)
    races = []
    cache = RacedCache(str(tmp_path / "cache"), 1000)

    def race():
        os.unlink(paths[0])
        assert cache.get(OID, ident(1), writer(b"not fetched")) == paths[1]

    races.append(race)
    try:
        assert cache.evict() == 1  # 1500 bytes, less 300 gone, less 300 evicted: 900 <= 90 %
    finally:
        cache.close()
    assert committed_paths(cache) == sorted([paths[1], paths[3], paths[4]])


def test_only_one_process_evicts_at_a_time(make_cache, tmp_path):
    """An evictor holds up files entering the cache, never readers of cached ones."""
    paths = fill(tmp_path / "cache", 12, seconds_ago=lambda n: 100 - n)
    cache = make_cache(size=MIB)
    other_evictor = os.open(f"{cache.directory}/.evict.lock", os.O_RDONLY | os.O_CREAT)
    with ThreadPoolExecutor(1) as pool:
        try:
            fcntl.flock(other_evictor, fcntl.LOCK_EX)
            started = time.monotonic()
            assert cache.evict() == 0
            assert time.monotonic() - started < WAIT
            assert cache.stats()["entries"] == 12
            assert cache.get(OID, ident(5), _never) == paths[5]
            missing = pool.submit(cache.get, OID, ident(100), writer(b"fetched"))
            wait_until_blocked_on(f"{cache.directory}/.evict.lock")
            assert not missing.done()
        finally:
            os.close(other_evictor)
        assert read(missing.result(WAIT)) == b"fetched"
    stats = cache.stats()
    assert (stats["entries"], stats["evictions"]) == (10, 3)  # 9 of 100 KiB and the new one
    assert not any(os.path.exists(path) for path in paths[:3])


@pytest.mark.parametrize("via", ["publish", "get"])
def test_files_entering_a_full_cache_make_room(make_cache, caplog, via):
    """First if fetched; right after, in a thread of its own, if published."""
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.cache")
    cache = make_cache(size=MIB)
    for n in range(50):
        data = b"x" * (100 * KIB)
        if via == "publish":
            cache.publish(stage(cache, data), ident(n), TID)
            cache._background_pass.join()
        else:
            read(cache.get(ident(n), TID, writer(data)))
        assert cache.stats()["size"] <= cache.size
    stats = cache.stats()
    assert stats["evictions"] == 50 - stats["entries"] > 0
    passes = [record for record in caplog.records if " files (" in record.getMessage()]
    assert passes and {record.levelno for record in passes} == {logging.DEBUG}, \
        "a pass is counted and shown by the cache command, not logged at INFO"
    assert {record.threadName == threading.current_thread().name for record in passes} == \
        {via == "get"}


def test_publishing_never_waits_for_the_eviction_lock(make_cache, tmp_path):
    """It is called in tpc_finish, holding the base's commit lock: the file
    enters at once, and a pass corrects the account once the lock is free."""
    fill(tmp_path / "cache", 10, seconds_ago=lambda n: 100 - n)
    cache = make_cache(size=MIB)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; "
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.readline()",
         f"{cache.directory}/.evict.lock"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with ThreadPoolExecutor(1) as pool:
        try:
            assert holder.stdout.readline() == "held\n"
            published = pool.submit(cache.publish, stage(cache, b"y" * (100 * KIB)), OID, TID)
            assert read(published.result(WAIT)) == b"y" * (100 * KIB)
            assert holder.poll() is None, "published while the other process held the lock"
        finally:
            holder.communicate("release\n", timeout=WAIT)
    cache._background_pass.join()
    stats = cache.stats()
    assert stats["size"] <= cache.size and stats["evictions"] == 2
    assert (tmp_path / "cache" / ".evict.lock").read_bytes() == \
        b"%d %d" % (stats["size"], stats["entries"])


@pytest.mark.parametrize("account", [b"99999999 9", b"garbage", None])
def test_the_account_of_cached_bytes_is_corrected_by_the_next_pass(make_cache, tmp_path,
                                                                   account):
    """Files removed behind the cache's back (or a process that died between
    counting a file and bringing it in) make it overstate the bytes, which the
    next pass corrects without removing anything; it is rebuilt if unreadable."""
    fill(tmp_path / "cache", 9, seconds_ago=lambda n: 100 - n)
    account_path = tmp_path / "cache" / ".evict.lock"
    if account is None:
        account_path.unlink()
    else:
        account_path.write_bytes(account)
    cache = make_cache(size=MIB)
    cache.publish(stage(cache, b"y" * (10 * KIB)), OID, ident(100))
    cache._background_pass.join()
    assert account_path.read_bytes() == b"%d 10" % (910 * KIB)
    assert cache.stats()["size"] == 910 * KIB
    assert cache.stats()["evictions"] == 0


def test_a_pass_over_many_files_runs_in_a_child_process(make_cache, tmp_path, monkeypatch):
    """It walks the whole cache: in this process it would hold readers up on the GIL."""
    fill(tmp_path / "cache", 15, oid=ident)
    cache = make_cache(size=MIB)
    assert cache.evict() == 6  # in this process: it does not know how many files there are
    fill(tmp_path / "cache", 15, oid=lambda n: ident(100 + n))
    monkeypatch.setattr(zodb_swiftblobs.cache.lookup, "IN_PROCESS_FILES", 3)

    def not_here(*args, **options):
        raise AssertionError("the pass ran in this process")
    monkeypatch.setattr(zodb_swiftblobs.cache.lookup, "evict_least_recently_used", not_here)
    assert cache.prune(5 * 100 * KIB) == (19, 19 * 100 * KIB)
    assert cache.stats()["evictions"] == 25, "the child's pass is counted here"
    cache.publish(stage(cache, b"y" * (600 * KIB)), OID, TID)  # and it makes room
    cache._background_pass.join()
    assert cache.stats()["size"] == 600 * KIB + 3 * 100 * KIB <= cache.size
    assert cache.stats()["evictions"] == 27


def test_eviction_falls_back_to_this_process_without_a_child(make_cache, tmp_path,
                                                             monkeypatch, caplog):
    fill(tmp_path / "cache", 15, oid=ident)
    cache = make_cache(size=MIB)
    monkeypatch.setattr(zodb_swiftblobs.cache.lookup, "IN_PROCESS_FILES", 5)
    (tmp_path / "cache" / ".evict.lock").write_bytes(b"%d 15" % (15 * 100 * KIB))
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    assert cache.evict() == 6
    assert "the eviction process failed" in caplog.text


def test_stats_count_what_happened(make_cache):
    cache = make_cache(size=1000)  # its readers open what it returns
    first = cache.get(OID, ident(1), writer(b"a" * 400))
    read(first)
    second = cache.get(OID, ident(2), writer(b"b" * 400))
    read(second)
    for _ in range(2):
        read(cache.get(OID, ident(1), writer(b"not fetched")))
    read(cache.get(OID, ident(2), writer(b"not fetched")))
    assert cache.stats() == dict(hits=3, misses=2, bytes_downloaded=800, evictions=0,
                                 evicted_bytes=0, corrupt=0, size=800, entries=2)
    cache.publish(stage(cache, b"c" * 400), OID, ident(3))  # the least recently used goes
    cache._background_pass.join()
    assert not os.path.exists(first) and os.path.exists(second)
    assert cache.stats() == dict(hits=3, misses=2, bytes_downloaded=800, evictions=1,
                                 evicted_bytes=400, corrupt=0, size=800, entries=2)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can create files for another user")
def test_shared_files_root_creates_belong_to_the_cache_owner(make_cache, tmp_path):
    directory = tmp_path / "cache"
    os.makedirs(directory / "tmp", mode=0o700)
    os.chown(directory, 65534, 65534)
    os.chown(directory / "tmp", 65534, 65534)
    cache = make_cache(directory)
    cache.publish(_staged(tmp_path, b"z" * 10), b"\0" * 8, b"\3" * 8)
    cache.prune(0)  # an operator's `zodb-swiftblobs cache prune`, run as root
    cache.counters.flush()
    for name in (".evict.lock", ".counters.json"):
        assert os.stat(directory / name).st_uid == 65534, name


def _staged(tmp_path, data):
    path = tempfile.mktemp(dir=tmp_path / "cache" / "tmp")
    _write(path, data)
    return path


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _never(path):
    raise AssertionError("fetched a cached file")

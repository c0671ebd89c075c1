"""The counters of a blob cache: what each process counts, and their totals in
the file ``.counters.json`` that every process using the cache directory shares.

A process counts in memory; a daemon thread adds what it counted to the file
every :data:`FLUSH_INTERVAL` seconds (so counts reach the file even when the
process goes idle, or is killed later), and so does closing the cache or
leaving the interpreter.  Counting never touches the file, so it never fails a
read.  The file holds a JSON object of non-negative integers; anything else
found at its path (malformed or foreign content, a directory, a link) is
replaced, with a warning, and the totals start over.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

COUNTERS = ("hits", "misses", "bytes_downloaded", "evictions", "evicted_bytes", "corrupt")
FILE_NAME = ".counters.json"
FLUSH_INTERVAL = 30.0  # seconds between the merges of a process's counts into the file
MAX_FILE_SIZE = 4096  # bytes read of the file: its valid content is far smaller

# Every CacheCounters, flushed when the interpreter exits.
_all_counters: weakref.WeakSet[CacheCounters] = weakref.WeakSet()


class MalformedCounters(ValueError):
    """The content of a counters file is not a JSON object of counts."""


def parse_counters(data: bytes) -> dict[str, int]:
    """The counts in the content *data* of a counters file (an empty file holds
    none yet); :class:`MalformedCounters` if it is not a JSON object whose
    counters, where present, are non-negative integers."""
    if not data.strip():
        return dict.fromkeys(COUNTERS, 0)
    try:
        saved = json.loads(data.decode("ascii"))
    except (ValueError, RecursionError) as exc:
        raise MalformedCounters(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(saved, dict):
        raise MalformedCounters(f"a JSON {type(saved).__name__}, not an object")
    counts = {}
    for name in COUNTERS:
        count = saved.get(name, 0)
        if type(count) is not int or count < 0:
            raise MalformedCounters(f"{name} is not a count")
        counts[name] = count
    return counts


class CacheCounters:
    """This process's counters of the cache in *directory*, and their totals.

    *open_shared_file(path, flags)* opens (creating it if need be) a file
    that every process of the cache uses, and returns its descriptor; it
    replaces, with a warning, anything but a regular file at its path.
    """

    def __init__(self, directory: str, open_shared_file: Callable[[str, int], int]) -> None:
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.flush_interval = FLUSH_INTERVAL
        self._open_shared_file = open_shared_file
        self._lock = threading.Lock()  # guards the fields below
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._pending = dict.fromkeys(COUNTERS, 0)  # counted, not yet in the file
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._failing = False  # the last flush failed (and said so)
        self._flush_lock = threading.Lock()  # one flush at a time in this process
        _all_counters.add(self)

    def count(self, **increments: int) -> None:
        """Add *increments* (counter name -> number) to this process's counts."""
        with self._lock:
            for name, increment in increments.items():
                self._counts[name] += increment
                self._pending[name] += increment
            start = self._thread is None and not self._closed.is_set()
            if start:
                self._thread = threading.Thread(target=self._flush_periodically,
                                                name="zodb-swiftblobs-counters", daemon=True)
        if start:
            try:
                self._thread.start()
            except RuntimeError as exc:  # no more threads: saved at close and exit only
                log.warning("blob cache %s: cannot start saving its counters: %s",
                            self.directory, exc)

    def snapshot(self) -> dict[str, int]:
        """This process's counts since the cache was opened."""
        with self._lock:
            return dict(self._counts)

    def totals(self) -> dict[str, int]:
        """The counts of every process that used the cache directory since the
        file was (re)made, this one's included (its pending counts are added
        to the file first)."""
        totals = self.flush(always=True)
        if totals is None:  # the file cannot be written: read it as it is
            with self._lock:
                pending = dict(self._pending)
            totals = {name: count + pending[name] for name, count in self._read().items()}
        return totals

    def flush(self, *, always: bool = False) -> dict[str, int] | None:
        """Add the counts not yet in the file to it; return the file's totals
        then, or None if there was nothing to add (unless *always*) or the
        file could not be written (said in a warning; the counts are kept for
        the next flush)."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, dict.fromkeys(COUNTERS, 0)
            if not (always or any(pending.values())):
                return None
            try:
                totals = self._merge(pending)
            except OSError as exc:
                with self._lock:
                    for name, count in pending.items():
                        self._pending[name] += count
                if not self._failing:
                    log.warning("blob cache %s: could not save its counters: %s",
                                self.directory, exc)
                self._failing = True
                return None
            self._failing = False
            return totals

    def close(self) -> None:
        """Stop the flushing thread and flush.  Idempotent."""
        self._closed.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("blob cache %s: saving its counters failed", self.directory)

    def _merge(self, pending: dict[str, int]) -> dict[str, int]:
        """Under the file's lock, add *pending* to the totals in the file
        (replacing a malformed one); return the new totals."""
        descriptor = self._open_shared_file(self.path, os.O_RDWR)
        with os.fdopen(descriptor, "r+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            data = f.read(MAX_FILE_SIZE + 1)
            try:
                if len(data) > MAX_FILE_SIZE:
                    raise MalformedCounters(f"over {MAX_FILE_SIZE} bytes")
                saved = parse_counters(data)
            except MalformedCounters as exc:
                log.warning("blob cache %s: its counters file %s was malformed (%s); "
                            "counting starts over", self.directory, self.path, exc)
                saved = dict.fromkeys(COUNTERS, 0)
                data = b""
            totals = {name: saved[name] + pending[name] for name in COUNTERS}
            if any(pending.values()) or not data:
                f.seek(0)
                f.truncate()
                f.write(json.dumps(totals).encode("ascii"))
        return totals

    def _read(self) -> dict[str, int]:
        """The totals in the file, without changing it (none if it cannot be read)."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return dict.fromkeys(COUNTERS, 0)
        with os.fdopen(descriptor, "rb") as f:
            try:
                if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                    return dict.fromkeys(COUNTERS, 0)
                fcntl.flock(f, fcntl.LOCK_SH)
                return parse_counters(f.read(MAX_FILE_SIZE))
            except (OSError, MalformedCounters):
                return dict.fromkeys(COUNTERS, 0)


@atexit.register
def _flush_at_exit() -> None:
    """Save what caches counted and did not save yet when the interpreter exits."""
    for counters in list(_all_counters):
        with contextlib.suppress(Exception):
            counters.flush()

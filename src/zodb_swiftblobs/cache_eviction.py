"""Keeping the blob cache within its size: the shared account of its bytes,
pins on the files just handed out, and least-recently-used eviction.

The account is the content of the cache's ``.evict.lock``: the bytes its
committed files total, as far as the processes sharing it know.  A file
enters the cache only under that file's lock (``flock``), after room was
made for it, and the account grows by its size at once; an eviction pass,
under the same lock, lists the files and writes down the exact total.  So
whatever the number of processes, the committed files never total more than
the cache's size, unless the files pinned leave no room.

A pin is a shared ``flock`` on a committed file, held by the process that
has just handed out its path (:meth:`Pins.keep`) so that its caller can open
it: eviction takes an exclusive ``flock`` (without waiting) on each file
before it removes it, and spares the pinned ones.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import re
import shutil
import stat
import threading
import time

from .cache_integrity import non_file_kind

log = logging.getLogger("zodb_swiftblobs.cache")

OID_DIRECTORY_NAME = re.compile(r"[0-9a-f]+")
COMMITTED_FILE_NAME = re.compile(r"[0-9a-f]+\.blob")
PIN_SECONDS = 10.0  # a file handed out stays pinned that long...
PINNED_SHARE = 0.05  # ...while the pins of a process total at most this share of the cache
PINS_PER_PROCESS = 64  # ...and are no more than this many; its newest one always stays
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Pins:
    """The committed files this process has just handed out, pinned.

    Each stays pinned for :data:`PIN_SECONDS`, or until the process has
    handed out more than :data:`PINNED_SHARE` of *cache_size* (or
    :data:`PINS_PER_PROCESS` files) since; the newest stays until the next
    one, or :meth:`release_all`.
    """

    def __init__(self, cache_size: int) -> None:
        self.budget = PINNED_SHARE * cache_size
        self._held: collections.OrderedDict[str, tuple[float, int, int]] = \
            collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, path: str, descriptor: int, size: int) -> None:
        """Keep the pin *descriptor* (holding a shared flock on the file at
        *path*, of *size* bytes) and release those that are due."""
        now = time.monotonic()
        with self._lock:
            self._release(path)
            self._held[path] = (now, descriptor, size)
            self._bytes += size
            while len(self._held) > 1:
                pinned_at, _, _ = next(iter(self._held.values()))
                if (now - pinned_at < PIN_SECONDS and self._bytes <= self.budget
                        and len(self._held) <= PINS_PER_PROCESS):
                    break
                self._release(next(iter(self._held)))

    def release_all(self) -> None:
        with self._lock:
            while self._held:
                self._release(next(iter(self._held)))

    def _release(self, path: str) -> None:
        held = self._held.pop(path, None)
        if held is not None:
            os.close(held[1])
            self._bytes -= held[2]


def open_pinned(path: str) -> tuple[int | None, str | None]:
    """Open the regular file at *path* with a shared flock on it (a pin):
    ``(descriptor, None)``; ``(None, None)`` if nothing is there (or it was
    removed or replaced meanwhile); ``(None, what is there instead)``."""
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, _opening_problem(path, exc)
    try:
        status = os.fstat(descriptor)
        kind = non_file_kind(status.st_mode)
        if kind is None:
            fcntl.flock(descriptor, fcntl.LOCK_SH)
            if is_at(status, path):
                return descriptor, None
    except BaseException:
        os.close(descriptor)
        raise
    os.close(descriptor)
    return None, kind


def _opening_problem(path: str, error: OSError) -> str:
    """What is at *path*, which could not be opened (with *error*), if not a regular file."""
    try:
        kind = non_file_kind(os.lstat(path).st_mode)
    except OSError:
        kind = None
    return kind or f"unreadable: {error.strerror}"


def is_at(status: os.stat_result, path: str) -> bool:
    """Whether the file of *status* is (still) the one at *path*."""
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return False
    return (current.st_dev, current.st_ino) == (status.st_dev, status.st_ino)


def remove_entry(path: str) -> bool:
    """Remove whatever is at *path* (a directory with its content, without
    following links); False if nothing was there."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def remove_committed_file(path: str) -> bool:
    """Remove *path* and its oid directory if that is now empty; False if *path* was missing.

    Removing a directory races with readers about to create files in it;
    they create it again.
    """
    if not remove_entry(path):
        return False
    with contextlib.suppress(OSError):  # not empty, or removed meanwhile
        os.rmdir(os.path.dirname(path))
    return True


def read_account(descriptor: int) -> int | None:
    """The bytes recorded in the account open as *descriptor*; None if unknown."""
    text = os.pread(descriptor, 32, 0)
    return int(text) if text.isdigit() else None


def write_account(descriptor: int, total: int) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, b"%d" % max(total, 0), 0)


def committed_files(directory: str) -> list[tuple[int, int, str]]:
    """(access time in ns, size, path) of every committed file in the cache *directory*."""
    with os.scandir(directory) as entries:
        oid_directories = [entry.path for entry in entries
                           if OID_DIRECTORY_NAME.fullmatch(entry.name)]
    files = []
    for oid_directory in oid_directories:
        try:
            with os.scandir(oid_directory) as entries:
                candidates = [entry for entry in entries
                              if COMMITTED_FILE_NAME.fullmatch(entry.name)]
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed meanwhile, or not one of ours
        for entry in candidates:
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # evicted meanwhile by another process
            files.append((status.st_atime_ns, status.st_size, entry.path))
    return files


def evict_least_recently_used(files: list[tuple[int, int, str]], limit: float,
                              target: float, *,
                              spare_recently_used: bool) -> tuple[int, int, int]:
    """If the committed *files* (listed by :func:`committed_files`) total more
    than *limit* bytes, remove the least recently used until they total at
    most *target*, sparing pinned files (and, with *spare_recently_used*,
    files used since they were listed); return (files, bytes) removed and the
    bytes that remain."""
    total = sum(size for _, size, _ in files)
    if total <= limit:
        return 0, 0, total
    removed = removed_bytes = 0
    for accessed, size, path in sorted(files):
        if total <= target:
            break
        outcome = _evict(path, accessed if spare_recently_used else None)
        if outcome == "spared":
            continue
        if outcome == "removed":
            log.debug("evicted %s (%d bytes)", path, size)
            removed += 1
            removed_bytes += size
        total -= size  # removed, by this pass or meanwhile by another process
    return removed, removed_bytes, total


def _evict(path: str, accessed: int | None) -> str:
    """Remove the committed file *path* unless it is pinned or (if *accessed*
    is given) was used since; "removed", "spared" or "gone"."""
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        return "gone"
    except OSError:
        return "removed" if remove_committed_file(path) else "gone"  # not a file of ours
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "spared"  # pinned
        status = os.fstat(descriptor)
        if accessed is not None and status.st_atime_ns != accessed:
            return "spared"
        if not is_at(status, path):
            return "gone"
        return "removed" if remove_committed_file(path) else "gone"
    finally:
        os.close(descriptor)

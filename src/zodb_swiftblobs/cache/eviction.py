"""Keeping the blob cache within its size: the shared account of its bytes
and least-recently-used eviction.

The account is the content of the cache's ``.evict.lock``: the bytes its
committed files total and their number, as far as the processes sharing it
know.  A file enters the cache only under that file's lock (``flock``),
after room was made for it, and the account grows by its size before it
appears (a crash can only make it overstate); an eviction pass, under the
same lock, lists the files and writes down the exact total.  So whatever the number of processes,
the committed files never total more than the cache's size, unless the
files pinned leave no room.

Eviction takes an exclusive ``flock`` (without waiting) on each file before
it removes it, and spares those pinned (a shared ``flock`` held by the
process that handed out the path, until its caller opened it: see
:mod:`.pins`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable

from .entries import OPEN_FLAGS, is_at, remove_committed_file

log = logging.getLogger("zodb_swiftblobs.cache")

OID_DIRECTORY_NAME = re.compile(r"[0-9a-f]+")
COMMITTED_FILE_NAME = re.compile(r"[0-9a-f]+\.blob")
ACCOUNT = re.compile(rb"([0-9]+) ([0-9]+)")  # bytes, files
IN_PROCESS_FILES = 2000  # a pass over more files runs in a child process


class BackgroundPass:
    """Eviction passes run, on request, in a thread of their own: *run* makes
    one.  A request during a pass makes another one after it."""

    def __init__(self, run: Callable[[], object], name: str) -> None:
        self._run = run
        self._name = name
        self._lock = threading.Lock()  # guards the fields below
        self._requested = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._requested = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run_requested, name=self._name,
                                                daemon=True)
                self._thread.start()

    def join(self) -> None:
        """Wait for the passes requested so far."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run_requested(self) -> None:
        while True:
            with self._lock:
                if not self._requested:
                    self._thread = None
                    return
                self._requested = False
            try:
                self._run()
            except Exception:
                log.exception("blob cache: an eviction pass failed")


def read_account(descriptor: int) -> tuple[int, int] | None:
    """The bytes and files recorded in the account open as *descriptor*; None if unknown."""
    account = ACCOUNT.fullmatch(os.pread(descriptor, 64, 0))
    return (int(account[1]), int(account[2])) if account else None


def write_account(descriptor: int, total: int, files: int) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, b"%d %d" % (max(total, 0), max(files, 0)), 0)


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
                              spare_recently_used: bool) -> tuple[int, int, int, int]:
    """If the committed *files* (listed by :func:`committed_files`) total more
    than *limit* bytes, remove the least recently used until they total at
    most *target*, sparing pinned files (and, with *spare_recently_used*,
    files used since they were listed); return (files, bytes) removed and
    the bytes and files that remain."""
    total = sum(size for _, size, _ in files)
    if total <= limit:
        return 0, 0, total, len(files)
    removed = removed_bytes = 0
    remaining = len(files)
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
        remaining -= 1
    return removed, removed_bytes, total, remaining


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


def evict_in_child(directory: str, limit: float, target: float, *,
                   spare_recently_used: bool) -> tuple[int, int, int, int] | str:
    """:func:`evict_least_recently_used` over the cache *directory*, in a child
    Python process at a lower CPU priority: a pass over many files would hold
    up the other threads of this one on the GIL.  The caller holds the
    eviction lock, and the child respects the pins of every process.  Returns
    what the pass returns, or why no child could run it."""
    if not sys.executable:
        return "no Python executable"
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from zodb_swiftblobs.cache.eviction import _child; _child(*sys.argv[2:])")
    command = [sys.executable, "-I", "-S", "-c", script, package_parent, directory,
               repr(limit), repr(target), str(int(spare_recently_used))]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode:
            return completed.stderr.strip()[-300:]
        return tuple(json.loads(completed.stdout))
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _child(directory: str, limit: str, target: str, spare_recently_used: str) -> None:
    """The child process of :func:`evict_in_child`: prints the pass's result."""
    with contextlib.suppress(OSError):
        os.nice(10)
    print(json.dumps(evict_least_recently_used(
        committed_files(directory), float(limit), float(target),
        spare_recently_used=spare_recently_used == "1")))

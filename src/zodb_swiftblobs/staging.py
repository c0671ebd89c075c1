"""Staging: where the blob files of commits in progress wait, and the sweep of
those left behind by processes that died.

Between ``storeBlob`` and ``tpc_finish`` a blob file is kept in the cache's
``tmp`` directory under a name that starts with its process's *staging
token*.  Each process holds an exclusive lock on ``.staging-<token>.lock`` in
the cache directory for as long as it has the storage open.  A process that is killed (SIGKILL,
a crash, a power cut) between the vote and the end of a commit leaves its
staged files behind, and its lock dies with it; the next process to open the
cache finds lock files nobody holds and removes them with their files.
Several processes may share the directory: a live process's files are never
touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import uuid

log = logging.getLogger(__name__)

LOCK_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"
FILE_MODE = 0o600


class StagingArea:
    """This process's staged blob files in *directory* (created 0o700 by the
    cache), and its lock file in *lock_directory*."""

    def __init__(self, directory: str, lock_directory: str) -> None:
        self.directory = directory
        self.lock_directory = lock_directory
        self.token = uuid.uuid4().hex[:16]
        self._lock = self._hold_lock()
        self.sweep()

    def _hold_lock(self) -> int:
        """Create this process's lock file, locked before it appears under its name
        (so a sweep in another process never sees it unlocked)."""
        final = self._lock_path(self.token)
        temporary = f"{final}.{uuid.uuid4().hex}.tmp"
        # Read-only: a file held open for writing would keep its file system
        # from being remounted read-only.
        descriptor = os.open(temporary, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.replace(temporary, final)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return descriptor

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.lock_directory, f"{LOCK_PREFIX}{token}{LOCK_SUFFIX}")

    def commit_prefix(self) -> str:
        """The start of the staged files' paths of one new commit."""
        return os.path.join(self.directory, f"commit-{self.token}-{uuid.uuid4().hex[:12]}-")

    def new_file(self) -> tuple[int, str]:
        """A new file of this process in the staging directory: (descriptor,
        path), as :func:`tempfile.mkstemp` (swept like the staged blobs if
        the process dies)."""
        return tempfile.mkstemp(prefix=f"commit-{self.token}-", suffix=".blob",
                                dir=self.directory)

    def sweep(self) -> int:
        """Remove the staged files of processes that died; return how many."""
        with os.scandir(self.lock_directory) as entries:
            tokens = [entry.name[len(LOCK_PREFIX):-len(LOCK_SUFFIX)] for entry in entries
                      if entry.name.startswith(LOCK_PREFIX)
                      and entry.name.endswith(LOCK_SUFFIX)]
        removed = 0
        for token in tokens:
            if token != self.token:
                removed += self._sweep_dead(token)
        if removed:
            log.info("removed %d staged blob files left in %s by processes that died",
                     removed, self.directory)
        return removed

    def _sweep_dead(self, token: str) -> int:
        lock_path = self._lock_path(token)
        try:
            descriptor = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process is alive
            prefix = f"commit-{token}-"
            with os.scandir(self.directory) as entries:
                leftovers = [entry.path for entry in entries if entry.name.startswith(prefix)]
            for path in leftovers:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            return len(leftovers)
        finally:
            os.close(descriptor)

    def close(self) -> None:
        """Give up the lock (this process's staged files must be gone already)."""
        if self._lock is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._lock_path(self.token))
        os.close(self._lock)
        self._lock = None

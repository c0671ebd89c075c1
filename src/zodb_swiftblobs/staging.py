"""The temporary files of each open storage, and the sweep of those left behind
by processes that died.

ZODB writes uncommitted blob files (``BUC*``) and savepoint directories
(``savepoints*``) into the storage's :meth:`temporaryDirectory`, and a ZEO
server its incoming blobs; between ``storeBlob`` and ``tpc_finish`` the
storage keeps each staged blob file there too, under a name that starts with
``commit-<token>-`` (*token* names the open storage).  Nothing of that is
needed once its process is gone.

Each open storage holds an exclusive lock on ``.staging-<token>.lock`` in the
cache directory.  A storage that opens while no other holds
``.temporary-directory.lock`` takes that lock too, and uses the cache's
``tmp`` directory itself, as ZODB's own blob storage does; any other uses a
directory of its own, ``tmp/process-<token>``.  A storage that opens
removes what dead storages left:

- when it takes ``.temporary-directory.lock``, everything in ``tmp`` but
  hidden files and the ``process-*`` directories: the previous holder died
  or closed its storage.  But a storage of an earlier release (which holds
  its ``.staging-<token>.lock`` but has no directory of its own) may still
  write there: the staged files ``commit-<token>-*`` of a storage whose lock
  file is held stay, and while such a storage is alive, so does anything
  else modified in the last hour (:data:`SAFE_AGE`);
- the ``process-<token>`` directory of every lock file nobody holds.

So a process killed (SIGKILL, a crash, a power cut) leaves its files until
the next storage opens the cache directory, and a live storage's files are
never touched.  A storage that closes leaves its lock file (unlocked) if its
directory is not empty, for the next sweep.

Lock files and directories that root creates (an operator's command) are
given the cache directory's owner, so that a site running as that user can
use and sweep them; a lock file the sweep may not open is skipped (said in
one warning).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
import uuid

from .cache.entries import give_to_owner_of, remove_entry

log = logging.getLogger(__name__)

LOCK_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"
SHARED_DIRECTORY_LOCK = ".temporary-directory.lock"
PROCESS_DIRECTORY_PREFIX = "process-"
STAGED_FILE_NAME = re.compile(r"commit-([0-9a-f]+)-")  # the token of its storage
SAFE_AGE = 3600.0  # seconds: files of storages of an earlier release stay that long
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


class StagingArea:
    """The temporary files of one open storage: in :attr:`directory`, which is
    *temporary_root* (the cache's ``tmp``, created 0o700 by the cache) or a
    directory of its own in it; its lock files are in *lock_directory*."""

    def __init__(self, temporary_root: str, lock_directory: str) -> None:
        self.temporary_root = temporary_root
        self.lock_directory = lock_directory
        self.token = uuid.uuid4().hex[:16]
        self._lock = self._hold_lock()
        self._shared_lock = self._lock_shared_directory()
        removed = 0
        if self._shared_lock is not None:
            self.directory = temporary_root
            removed += self._sweep_shared_directory()
        else:
            self.directory = self._process_directory(self.token)
            os.mkdir(self.directory, DIRECTORY_MODE)
            directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                give_to_owner_of(directory, self.lock_directory)
            finally:
                os.close(directory)
        removed += self._sweep_process_directories()
        if removed:
            log.info("removed %d temporary files and directories left in %s by processes "
                     "that died", removed, temporary_root)

    def _hold_lock(self) -> int:
        """Create this process's lock file, locked before it appears under its name
        (so a sweep in another process never sees it unlocked)."""
        final = self._lock_path(self.token)
        temporary = f"{final}.{uuid.uuid4().hex}.tmp"
        # Read-only: a file held open for writing would keep its file system
        # from being remounted read-only.
        descriptor = os.open(temporary, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            give_to_owner_of(descriptor, self.lock_directory)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.replace(temporary, final)
        except BaseException:
            os.close(descriptor)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return descriptor

    def _lock_shared_directory(self) -> int | None:
        """The descriptor holding the lock on the use of *temporary_root* itself,
        or None if another open storage holds it (or it cannot be taken)."""
        path = os.path.join(self.lock_directory, SHARED_DIRECTORY_LOCK)
        try:
            # Readable by all (it is empty): one that root creates (an operator's
            # command) can still be locked by a site running as another user.
            descriptor = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            log.debug("cannot open %s (%s): using a temporary directory of its own", path, exc)
            return None
        try:
            give_to_owner_of(descriptor, self.lock_directory)
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return None
        return descriptor

    def _sweep_shared_directory(self) -> int:
        """Remove what earlier users of *temporary_root* left there; return how
        many files and directories went.

        Hidden files and the directories of other storages stay, and so do the
        staged files (``commit-<token>-*``) of live storages.  While a live
        storage may write into *temporary_root* itself (one of an earlier
        release, which has no directory of its own, or one opening just now),
        other files stay too until they are :data:`SAFE_AGE` seconds old: they
        may be its uncommitted blobs and savepoints.
        """
        live = self._live_tokens()
        writing_here = any(not os.path.lexists(self._process_directory(token))
                           for token in live)
        oldest_kept = time.time() - SAFE_AGE
        leftovers = []
        with os.scandir(self.temporary_root) as entries:
            for entry in entries:
                if entry.name.startswith((".", PROCESS_DIRECTORY_PREFIX)):
                    continue
                staged = STAGED_FILE_NAME.match(entry.name)
                if staged is not None:
                    if staged[1] in live:
                        continue
                elif writing_here and _modified(entry) > oldest_kept:
                    continue
                leftovers.append(entry.path)
        return sum(_remove(path) for path in leftovers)

    def _live_tokens(self) -> set[str]:
        """The tokens of the other storages whose lock files are held (or
        cannot be opened, so may be)."""
        live = set()
        for token in self._other_tokens():
            try:
                descriptor = os.open(self._lock_path(token),
                                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except FileNotFoundError:
                continue
            except OSError:
                live.add(token)
                continue
            try:
                if _is_held(descriptor):
                    live.add(token)
            finally:
                os.close(descriptor)
        return live

    def _other_tokens(self) -> list[str]:
        """The tokens of the lock files of other storages in *lock_directory*."""
        with os.scandir(self.lock_directory) as entries:
            return [entry.name[len(LOCK_PREFIX):-len(LOCK_SUFFIX)] for entry in entries
                    if entry.name.startswith(LOCK_PREFIX) and entry.name.endswith(LOCK_SUFFIX)
                    and entry.name != f"{LOCK_PREFIX}{self.token}{LOCK_SUFFIX}"]

    def _lock_path(self, token: str) -> str:
        return os.path.join(self.lock_directory, f"{LOCK_PREFIX}{token}{LOCK_SUFFIX}")

    def _process_directory(self, token: str) -> str:
        return os.path.join(self.temporary_root, f"{PROCESS_DIRECTORY_PREFIX}{token}")

    def commit_prefix(self) -> str:
        """The start of the staged files' paths of one new commit."""
        return os.path.join(self.directory, f"commit-{self.token}-{uuid.uuid4().hex[:12]}-")

    def new_file(self) -> tuple[int, str]:
        """A new file of this process in the staging directory: (descriptor,
        path), as :func:`tempfile.mkstemp` (swept like the staged blobs if
        the process dies)."""
        return tempfile.mkstemp(prefix=f"commit-{self.token}-", suffix=".blob",
                                dir=self.directory)

    def _sweep_process_directories(self) -> int:
        """Remove the directories of storages that died or closed; return how
        many files and directories were in them.  A lock file this process may
        not open (one of another user) is skipped, said in one warning."""
        removed, unopened = 0, []
        for token in self._other_tokens():
            try:
                removed += self._sweep_dead(token)
            except OSError as exc:
                unopened.append(exc)
        if unopened:
            log.warning("cannot open %d lock file(s) of other storages in %s (%s: %s); their "
                        "temporary files stay", len(unopened), self.lock_directory,
                        unopened[0].filename, unopened[0].strerror)
        return removed

    def _sweep_dead(self, token: str) -> int:
        """Remove the directory of the storage *token* if it died or closed;
        return how many files and directories were in it.  An OSError opening
        its lock file (but its absence) is raised."""
        lock_path = self._lock_path(token)
        try:
            descriptor = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return 0
        try:
            if not _is_held(descriptor):
                return self._remove_dead(token, lock_path)
            return 0
        finally:
            os.close(descriptor)

    def _remove_dead(self, token: str, lock_path: str) -> int:
        directory = self._process_directory(token)
        try:
            removed = len(os.listdir(directory))
        except FileNotFoundError:
            removed = 0
        else:
            if not _remove(directory):
                return 0  # tried again by the next sweep
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        return removed

    def close(self) -> None:
        """Give up the locks.  Temporary files still there (uncommitted blobs of
        transactions never ended) stay until the next storage opens."""
        if self._lock is None:
            return
        if self._shared_lock is not None:
            os.close(self._shared_lock)
            self._shared_lock = None
        else:
            with contextlib.suppress(OSError):  # not empty: the next sweep removes it
                os.rmdir(self.directory)
        if not os.path.lexists(self._process_directory(self.token)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._lock_path(self.token))
        os.close(self._lock)
        self._lock = None


def _modified(entry: os.DirEntry) -> float:
    """When the file or directory *entry* was last modified (now if it is gone)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return time.time()


def _is_held(descriptor: int) -> bool:
    """Whether another open file holds a lock on the file open as *descriptor*
    (taking, if not, an exclusive lock that ends with *descriptor*)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def _remove(path: str) -> bool:
    """Remove the file or directory tree *path*; return whether it is gone.
    A failure is logged, never raised: a sweep must not keep a storage from
    opening."""
    try:
        remove_entry(path)
    except OSError as exc:
        log.warning("cannot remove %s, left by a process that died: %s", path, exc)
        return False
    return True

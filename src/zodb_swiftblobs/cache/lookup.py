"""The local blob cache: committed blob files on disk, bounded in size.

Layout under the cache directory::

    tmp/                      uncommitted blobs (ZODB) and staged commits
                              (see :mod:`zodb_swiftblobs.staging`)
    .evict.lock               the bytes cached; locked to admit or evict files
    .counters.json            hits, misses... of every process (see :mod:`.counters`)
    <oid hex>/<tid hex>.blob  the committed file of one blob revision
    <oid hex>/.<tid hex>.lock held while that revision is fetched
    <oid hex>/.<tid hex>.blob.<random>.tmp   a fetch in progress

Several threads and processes may share one cache directory.  A committed
file only ever appears complete (it is written under a temporary name and
renamed), is read-only, and is fetched once however many readers miss it at
the same time.  It enters the cache only once room was made for it: the
process bringing it in evicts the least recently used files first, so the
cache stays within its size (see :mod:`.eviction`).  A path returned by
:meth:`BlobCache.get` stays pinned until its caller has opened it (see
:mod:`.pins`); once open, the file stays readable whatever eviction
does.

Every committed file carries its revision, size and checksum
(:mod:`.integrity`); anything else at its path, or a file found
corrupt, is removed and fetched again.  On a file system without user
extended attributes files are not verified.  A cache directory that cannot
take a file (full, read-only, not permitted) raises
:class:`CacheDirectoryError` and leaves nothing behind.

This module knows nothing of Swift: fetching is the caller's function.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import uuid
from collections.abc import Callable

from ZODB.blob import rename_or_copy_blob

from . import integrity
from .entries import (NOT_PERMITTED, OPEN_FLAGS, lock_revision, make_private_directory,
                            mark_used, open_pinned, open_shared_file, release_revision,
                            remove_abandoned_downloads, remove_committed_file, remove_entry)
from .eviction import (IN_PROCESS_FILES, BackgroundPass, committed_files,
                             evict_in_child, evict_least_recently_used, read_account,
                             write_account)
from .pins import Pins
from .counters import CacheCounters

log = logging.getLogger("zodb_swiftblobs.cache")

FILE_MODE = 0o400  # read-only, readable by the owner alone, like its directory
STAGED_FILE_MODE = 0o600
EVICTION_TARGET = 0.9  # an eviction pass shrinks the cache to 90 % of its size
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CacheDirectoryError(Exception):
    """The cache directory could not take a file: its file system is full or
    read-only, or permissions forbid it.  Nothing was left behind."""

    def __init__(self, directory: str, action: str, error: OSError) -> None:
        if error.errno in NO_SPACE:
            hint = "free space on its file system, or lower cache-size"
        elif error.errno in NOT_PERMITTED:
            hint = "check its permissions and how its file system is mounted"
        else:
            hint = "check the directory and its file system"
        reason = error.strerror or str(error)
        super().__init__(f"blob cache {directory}: cannot {action}: {reason} ({hint})")
        self.directory = directory
        self.error = error


class BlobCache:
    """Committed blob files in *directory*, at most *size* bytes of them (but
    for the files handed out to readers that have not opened them yet, see
    :mod:`.pins`)."""

    def __init__(self, directory: str, size: int) -> None:
        if size <= 0:
            raise ValueError(f"blob cache size must be positive, not {size!r}")
        self.directory = os.path.abspath(directory)
        self.size = size
        self.temporary_directory = os.path.join(self.directory, "tmp")
        os.makedirs(os.path.dirname(self.directory), exist_ok=True)
        for path in (self.directory, self.temporary_directory):
            make_private_directory(path)
            _check_usable(path)
        self.verifies = integrity.supports_integrity_records(self.temporary_directory)
        if not self.verifies:
            log.warning("blob cache %s: its file system (or this platform) does not support "
                        "user extended attributes; cached files cannot be verified",
                        self.directory)
        self._evict_lock_path = os.path.join(self.directory, ".evict.lock")
        self.counters = CacheCounters(self.directory, self._open_shared_file)
        self._pins = Pins()
        self._background_pass = BackgroundPass(
            lambda: self._under_eviction_lock(self.size, self.size * EVICTION_TARGET, wait=True),
            f"blob cache eviction {self.directory}")

    def path(self, oid: bytes, tid: bytes) -> str:
        """The path of the committed file of blob revision (*oid*, *tid*)."""
        return f"{self.directory}/{oid.hex()}/{tid.hex()}.blob"

    def get(self, oid: bytes, tid: bytes, fetch: Callable[[str], object], *,
            handed_out: bool = True) -> str:
        """Return the path of the cached file of (*oid*, *tid*), fetching it on a miss.

        On a miss, ``fetch(temporary_path)`` must write the complete file at
        that new path (in the same directory; temporary files of its own
        beside it must be named ``<temporary_path>.*``); the cache then
        publishes it.  However many threads and processes miss the same
        revision at once, only one of them fetches it; the others wait and
        share the result.  A cached file found corrupt, or anything else at
        its path, is removed and fetched again.  The file returned is pinned:
        no eviction removes it until it is opened (see :mod:`.pins`),
        by the caller it is *handed_out* to, else by this thread right away.

        An OSError, from *fetch* too (it writes into the cache directory),
        raises :class:`CacheDirectoryError`; any other exception from *fetch*
        propagates unchanged.  Either way nothing is cached.
        """
        path = self.path(oid, tid)
        while True:
            if self._pin_if_intact(oid, tid, path, handed_out, under_lock=False):
                self._count(hits=1)
                return path
            try:
                size = self._fetch_under_lock(oid, tid, path, fetch, handed_out)
            except OSError as exc:
                raise CacheDirectoryError(
                    self.directory, f"store revision {tid.hex()} of blob {oid.hex()}",
                    exc) from exc
            if size is None:
                continue  # the lock file was just created or replaced: look again
            if size < 0:
                self._count(hits=1)  # published while this reader waited for the lock
                return path
            self._count(misses=1, bytes_downloaded=size)
            return path

    def _fetch_under_lock(self, oid: bytes, tid: bytes, path: str,
                          fetch: Callable[[str], object], handed_out: bool) -> int | None:
        """Under the revision's lock, fetch (*oid*, *tid*) unless an intact file
        is there now; return the bytes fetched, -1 if none were needed, None if
        the lock could not be taken yet."""
        directory = os.path.dirname(path)
        lock_path = f"{directory}/.{tid.hex()}.lock"
        lock = lock_revision(lock_path)
        if lock is None:
            return None
        try:
            intact = self._pin_if_intact(oid, tid, path, handed_out, under_lock=True)
            size = -1 if intact else self._download(oid, tid, path, fetch, handed_out)
        except BaseException:
            release_revision(lock_path, lock)
            with contextlib.suppress(OSError):  # used by other readers, or removed meanwhile
                os.rmdir(directory)
            raise
        release_revision(lock_path, lock)
        return size

    def _pin_if_intact(self, oid: bytes, tid: bytes, path: str, handed_out: bool, *,
                       under_lock: bool) -> bool:
        """Whether an intact committed file of (*oid*, *tid*) is at *path*; if so
        it is marked used and pinned.

        Holding the revision's lock, whatever else is there is removed (with a
        warning and a count): the caller fetches the file again.
        """
        pinned, problem = open_pinned(path)
        if pinned is not None:
            descriptor, status = pinned
            if self.verifies:
                problem = integrity.problem(descriptor, status, path, oid, tid)
            if problem is None:
                mark_used(descriptor, status)
                self._pins.keep(path, descriptor, status, handed_out=handed_out)
                return True
            os.close(descriptor)
        if problem is None or not under_lock or not remove_entry(path):
            return False
        if problem == integrity.EARLIER_RECORD:
            log.debug("%s was cached by an earlier version; fetching it again", path)
        else:
            log.warning("blob cache %s: %s is corrupt (%s); fetching it again",
                        self.directory, path, problem)
            self._count(corrupt=1)
        return False

    def publish(self, source: str, oid: bytes, tid: bytes, checksum: int | None = None) -> str:
        """Move the staged file *source* into the cache as (*oid*, *tid*); return its path.
        *checksum* is what :meth:`checksum` said of *source* (computed now if not
        given: that reads the whole file).

        *source* must be on the cache's file system (in :attr:`temporary_directory`);
        the file appears at its final path complete, in one rename.  This
        never waits for a lock nor runs an eviction pass (it is called in
        ``tpc_finish``): room is made afterwards, by a pass in a thread of
        its own.  An OSError raises :class:`CacheDirectoryError`.
        """
        path = self.path(oid, tid)

        def rename() -> None:
            while True:
                try:
                    os.replace(source, path)
                    return
                except FileNotFoundError:
                    if not os.path.exists(source):
                        raise
                    make_private_directory(os.path.dirname(path))
        try:
            descriptor, status = self._seal(source, oid, tid, checksum)
            try:
                self._admit(status.st_size, rename, wait=False)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise CacheDirectoryError(self.directory, f"publish revision {tid.hex()} of "
                                      f"blob {oid.hex()}", exc) from exc
        if self.verifies:
            integrity.remember_intact(path, status)
        log.debug("published %s (%d bytes)", path, status.st_size)
        return path

    def stage(self, source: str, path: str) -> None:
        """Move the uncommitted blob file *source* to *path* in
        :attr:`temporary_directory` as ZODB does (copying it if it is on
        another file system), readable and writable by the owner alone.  An
        OSError raises :class:`CacheDirectoryError`, leaving no part of *path*."""
        try:
            rename_or_copy_blob(source, path, chmod=False)
            os.chmod(path, STAGED_FILE_MODE)
        except OSError as exc:
            _remove_partial(path)
            raise CacheDirectoryError(self.directory, f"stage {path}", exc) from exc

    def discard(self, oid: bytes, tid: bytes) -> bool:
        """Remove the cached file of (*oid*, *tid*); return whether there was one."""
        path = self.path(oid, tid)
        removed = remove_committed_file(path)
        if removed:
            log.debug("discarded %s", path)
        return removed

    def stats(self) -> dict[str, int]:
        """This process's counters, and the cache's current ``size`` and ``entries`` on disk.

        The counters are ``hits``, ``misses``, ``bytes_downloaded`` (fetched on
        misses), ``evictions`` and ``evicted_bytes`` (removed by eviction passes)
        and ``corrupt`` (files found corrupt, removed and fetched again).
        """
        files = self._committed_files()
        stats = self.counters.snapshot()
        stats["size"] = sum(size for _, size, _ in files)
        stats["entries"] = len(files)
        return stats

    def totals(self) -> dict[str, int]:
        """The counters of every process that used this cache directory since it
        was created (this one's included), and its ``size`` and ``entries``."""
        totals = self.counters.totals()
        files = self._committed_files()
        totals["size"] = sum(size for _, size, _ in files)
        totals["entries"] = len(files)
        return totals

    def prune(self, size: int) -> tuple[int, int]:
        """Evict least recently used files until the cache holds at most *size*
        bytes, waiting for an eviction in progress; return (files, bytes) removed."""
        return self._under_eviction_lock(size, size, wait=True) or (0, 0)

    def clear(self) -> tuple[int, int]:
        """Remove every committed file but those pinned by readers (readers
        fetch them again); return (files, bytes) removed.  Fetches in progress
        and uncommitted blobs stay."""
        return self._under_eviction_lock(0, 0, wait=True,
                                         spare_recently_used=False) or (0, 0)

    def evict(self) -> int:
        """Run one eviction pass now; return the number of files removed.

        If the committed files total more than :attr:`size` bytes, remove the
        least recently used ones (oldest access time first) until they total
        at most 90 % of it.  Files used since the pass listed them, and pinned
        ones, are spared.  Only one process evicts at a time: if another one
        is evicting (or admitting a file), return 0 at once.  Fetches in
        progress, their lock files and :attr:`temporary_directory` are never
        touched.  Files entering the cache run such passes as needed.
        """
        removed = self._under_eviction_lock(self.size, self.size * EVICTION_TARGET,
                                            wait=False)
        return removed[0] if removed else 0

    def _under_eviction_lock(self, limit: float, target: float, *, wait: bool,
                             spare_recently_used: bool = True) -> tuple[int, int] | None:
        """Run a pass (see :meth:`_evict_least_recently_used`) holding the lock
        that lets one process evict at a time, and write down the bytes and
        files that remain; return (files, bytes) removed, or None if another
        process holds the lock and *wait* is false."""
        with self._account(wait=wait) as account:
            if account is None:
                log.debug("blob cache %s: another process is evicting", self.directory)
                return None
            _, files = read_account(account) or (None, 0)
            removed, removed_bytes, remaining, files = self._evict_least_recently_used(
                limit, target, spare_recently_used=spare_recently_used, files=files)
            write_account(account, remaining, files)
            return removed, removed_bytes

    @contextlib.contextmanager
    def _account(self, *, wait: bool = True):
        """Hold the eviction lock; yield the descriptor of the account (see
        :mod:`.eviction`), or None if another process holds it and
        *wait* is false."""
        account = self._open_shared_file(self._evict_lock_path, os.O_RDWR)
        try:
            try:
                fcntl.flock(account, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield None
                return
            yield account
        finally:
            os.close(account)

    def _admit(self, size: int, place: Callable[[], None], *, wait: bool = True) -> None:
        """Make room for a file of *size* bytes, then *place* it in the cache,
        under the eviction lock.

        Unless *wait*, neither wait for that lock nor evict: *place* it at once
        and leave the room to make, or the account to correct (if another
        process holds the lock), to a pass in a thread of its own.
        """
        with self._account(wait=wait) as account:
            known = None if account is None else read_account(account)
            if known is None and not wait:
                place()
                self._background_pass.request()
                return
            total, files = known or (None, 0)
            if total is None or total + size > self.size:
                if wait:
                    total, files = self._evict_least_recently_used(
                        self.size - size, self.size * EVICTION_TARGET - size, files=files)[2:]
                else:
                    self._background_pass.request()
            write_account(account, total + size, files + 1)  # first: a crash may only overstate
            try:
                place()
            except BaseException:
                write_account(account, total, files)
                raise

    @property
    def pins_wait_for_open(self) -> bool:
        """Whether a path handed out stays pinned until its caller opens it,
        however many other paths its thread asks for meanwhile (as a ZEO
        server needs); else (as a ZODB database needs, which asks for the path
        of every blob object it loads and seldom opens it) only until its
        thread asks for another.  True unless set (see :mod:`.pins`)."""
        return self._pins.wait_for_open

    @pins_wait_for_open.setter
    def pins_wait_for_open(self, wait: bool) -> None:
        self._pins.wait_for_open = wait

    def close(self) -> None:
        """Release the pins of this process and save the counters; the cached
        files stay.  Idempotent."""
        self._background_pass.join()
        self._pins.release_all()
        self.counters.close()

    def _download(self, oid: bytes, tid: bytes, path: str,
                  fetch: Callable[[str], object], handed_out: bool) -> int:
        """Fetch into a new temporary file beside *path*, then publish it there, pinned.

        The caller holds the revision's lock, so no other fetch of it is in
        progress: temporary files of it are left by fetchers that died, and go.
        """
        directory, name = os.path.split(path)
        remove_abandoned_downloads(directory, name)
        temporary_path = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            fetch(temporary_path)
            descriptor, status = self._seal(temporary_path, oid, tid)
            try:
                self._admit(status.st_size, lambda: os.replace(temporary_path, path))
            except BaseException:
                os.close(descriptor)
                raise
        except BaseException:
            _remove_partial(temporary_path)
            raise
        if self.verifies:
            integrity.remember_intact(path, status)
        self._pins.keep(path, descriptor, status, handed_out=handed_out)
        log.debug("fetched %s (%d bytes)", path, status.st_size)
        return status.st_size

    def checksum(self, path: str) -> int | None:
        """The checksum :meth:`publish` records of the staged file *path*
        (None when this cache records none), computed now, so that
        publishing it later need not read it."""
        return integrity.file_checksum(path) if self.verifies else None

    def _seal(self, path: str, oid: bytes, tid: bytes,
              checksum: int | None = None) -> tuple[int, os.stat_result]:
        """Record the revision, size and checksum of the complete file *path*
        as (*oid*, *tid*) (unless this file system cannot), make it read-only;
        return a descriptor pinning it and its status."""
        descriptor = os.open(path, OPEN_FLAGS)
        try:
            if self.verifies:
                integrity.seal(descriptor, oid, tid, checksum)
            os.fchmod(descriptor, FILE_MODE)  # after the record: a user may not set one then
            fcntl.flock(descriptor, fcntl.LOCK_SH)
            return descriptor, os.fstat(descriptor)
        except BaseException:
            os.close(descriptor)
            raise

    def _evict_least_recently_used(self, limit: float, target: float, *,
                                   spare_recently_used: bool = True,
                                   files: int = 0) -> tuple[int, int, int, int]:
        """If the committed files total more than *limit* bytes, remove the least
        recently used until they total at most *target*; return (files, bytes)
        removed and the bytes and files that remain.  The caller holds the
        eviction lock.  A cache of more than :data:`.eviction.IN_PROCESS_FILES`
        *files* (as last counted) is walked in a child process."""
        result = None
        if files > IN_PROCESS_FILES:
            result = evict_in_child(self.directory, limit, target,
                                    spare_recently_used=spare_recently_used)
            if isinstance(result, str):
                log.warning("blob cache %s: the eviction process failed (%s); evicting in "
                            "this process", self.directory, result)
                result = None
        if result is None:
            result = evict_least_recently_used(self._committed_files(), limit, target,
                                               spare_recently_used=spare_recently_used)
        removed, removed_bytes, remaining, _ = result
        self._count(evictions=removed, evicted_bytes=removed_bytes)
        if removed:
            log.debug("blob cache %s: evicted %d files (%d bytes); %d bytes remain",
                     self.directory, removed, removed_bytes, remaining)
        return result

    def _committed_files(self) -> list[tuple[int, int, str]]:
        """(access time in ns, size, path) of every committed file on disk."""
        return committed_files(self.directory)

    def _open_shared_file(self, path: str, flags: int) -> int:
        """Open (creating it if need be) a file every process of the cache uses
        (see :func:`.entries.open_shared_file`)."""
        return open_shared_file(path, flags, self.directory)

    def _count(self, **increments: int) -> None:
        self.counters.count(**increments)



def _check_usable(path: str) -> None:
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "blob cache directory is not a directory", path)
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "blob cache directory needs read, write and search"
                                            " permission", path)


def _remove_partial(path: str) -> None:
    """Remove the file *path* if it exists and can be (a read-only file system
    holds none)."""
    with contextlib.suppress(OSError):
        os.unlink(path)



"""The local blob cache: committed blob files on disk, bounded in size.

Layout under the cache directory::

    tmp/                      uncommitted blobs (ZODB) and staged commits
                              (see :mod:`.staging`)
    .evict.lock               held by the one process evicting
    .counters.json            hits, misses... of every process (see :mod:`.counters`)
    <oid hex>/<tid hex>.blob  the committed file of one blob revision
    <oid hex>/.<tid hex>.lock held while that revision is fetched
    <oid hex>/.<tid hex>.blob.<random>.tmp   a fetch in progress

Several threads and processes may share one cache directory.  A committed
file only ever appears complete (it is written under a temporary name and
renamed), is read-only, and is fetched once however many readers miss it at
the same time.  A background thread evicts the least recently used files when
the cache outgrows its budget; readers never wait for it.  A path returned by
:meth:`BlobCache.get` may be evicted before the caller opens it: the caller
then calls :meth:`BlobCache.get` again, which fetches the file again.

Every committed file carries its size and CRC-32 in the extended attribute
``user.zodb-swiftblobs`` (``v1 <size> <crc32 hex>``), set before the file
appears.  Each hit compares the file's size with it; the checksum is checked
the first time a process uses the file, and again whenever the file's inode,
modification time or size changes.  A corrupt file is removed and fetched
again.  On a file system without user extended attributes files are not
verified.  A cache directory that cannot take a file (full, read-only, not
permitted) raises :class:`CacheDirectoryError` and leaves nothing behind.

This module knows nothing of Swift: fetching is the caller's function.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable

if __package__:
    from .counters import CacheCounters
else:  # the eviction child runs this file as a script (see _main), beside counters.py
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from counters import CacheCounters

log = logging.getLogger(__name__)

FILE_MODE = 0o400  # read-only, readable by the owner alone, like its directory
STAGED_FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
LOCK_FILE_MODE = 0o600
EVICTION_TARGET = 0.9  # an eviction pass shrinks the cache to 90 % of its size
OID_DIRECTORY_NAME = re.compile(r"[0-9a-f]+")
COMMITTED_FILE_NAME = re.compile(r"[0-9a-f]+\.blob")
INTEGRITY_ATTRIBUTE = "user.zodb-swiftblobs"
INTEGRITY_RECORD = re.compile(rb"v1 ([0-9]+) ([0-9a-f]{8})")
CHECKSUM_BLOCK = 1 << 20
VERIFIED_FILES_REMEMBERED = 32768  # per process; beyond, the oldest are verified again
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_PERMITTED = (errno.EROFS, errno.EACCES, errno.EPERM)

# The committed files this process verified or wrote: path -> (inode, mtime, size).
_verified: dict[str, tuple[int, int, int]] = {}
_verified_lock = threading.Lock()


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
    """Committed blob files in *directory*, at most about *size* bytes of them.

    Eviction runs in a background thread once the bytes added since the last
    pass exceed *check_fraction* of *size*, so the cache may briefly exceed
    its size by that much.
    """

    def __init__(self, directory: str, size: int, *, check_fraction: float = 0.1) -> None:
        if size <= 0:
            raise ValueError(f"blob cache size must be positive, not {size!r}")
        if not 0 < check_fraction <= 1:
            raise ValueError(f"check_fraction must be in (0, 1], not {check_fraction!r}")
        self.directory = os.path.abspath(directory)
        self.size = size
        self.check_fraction = check_fraction
        self.temporary_directory = os.path.join(self.directory, "tmp")
        os.makedirs(os.path.dirname(self.directory), exist_ok=True)
        for path in (self.directory, self.temporary_directory):
            _make_private_directory(path)
            _check_usable(path)
        self.verifies = _supports_integrity_records(self.temporary_directory)
        if not self.verifies:
            log.warning("blob cache %s: its file system does not support user extended "
                        "attributes; cached files cannot be verified", self.directory)
        self._evict_lock_path = os.path.join(self.directory, ".evict.lock")
        self.counters = CacheCounters(self.directory, self._open_shared_file)
        self._state_lock = threading.Lock()  # guards the fields below
        self._bytes_since_eviction = 0
        self._eviction_thread: threading.Thread | None = None
        self._eviction_wanted = threading.Event()
        self._closed = False

    def path(self, oid: bytes, tid: bytes) -> str:
        """The path of the committed file of blob revision (*oid*, *tid*)."""
        return f"{self.directory}/{oid.hex()}/{tid.hex()}.blob"

    def get(self, oid: bytes, tid: bytes, fetch: Callable[[str], object]) -> str:
        """Return the path of the cached file of (*oid*, *tid*), fetching it on a miss.

        On a miss, ``fetch(temporary_path)`` must write the complete file at
        that new path (in the same directory; temporary files of its own
        beside it must be named ``<temporary_path>.*``); the cache then
        publishes it.  However many threads and processes miss the same
        revision at once, only one of them fetches it; the others wait and
        share the result.  A cached file found corrupt is fetched again.

        An OSError, from *fetch* too (it writes into the cache directory),
        raises :class:`CacheDirectoryError`; any other exception from *fetch*
        propagates unchanged.  Either way nothing is cached.
        """
        path = self.path(oid, tid)
        while True:
            status = _mark_used(path)
            if status is not None and self._is_intact(path, status, under_lock=False):
                self._count(hits=1)
                return path
            try:
                size = self._fetch_under_lock(oid, tid, path, fetch)
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
            self._added(size)
            return path

    def _fetch_under_lock(self, oid: bytes, tid: bytes, path: str,
                          fetch: Callable[[str], object]) -> int | None:
        """Under the revision's lock, fetch (*oid*, *tid*) unless an intact file
        is there now; return the bytes fetched, -1 if none were needed, None if
        the lock could not be taken yet."""
        directory = os.path.dirname(path)
        lock_path = f"{directory}/.{tid.hex()}.lock"
        lock = _lock_revision(lock_path)
        if lock is None:
            return None
        try:
            status = _mark_used(path)
            intact = status is not None and self._is_intact(path, status, under_lock=True)
            size = -1 if intact else self._download(path, fetch)
        except BaseException:
            _release_revision(lock_path, lock)
            with contextlib.suppress(OSError):  # used by other readers, or removed meanwhile
                os.rmdir(directory)
            raise
        _release_revision(lock_path, lock)
        return size

    def _is_intact(self, path: str, status: os.stat_result, *, under_lock: bool) -> bool:
        """Whether the committed file at *path* (whose status is *status*) is intact.

        Holding the revision's lock, a corrupt file is removed (with a warning
        and a count): the caller fetches it again.  A file that disappears
        meanwhile is not intact.
        """
        if not self.verifies or _verified.get(path) == _identity(status):
            return True
        try:
            problem = _verify(path)
        except FileNotFoundError:
            return False
        if problem is None or not under_lock:
            return problem is None
        if _remove_committed_file(path):
            log.warning("blob cache %s: %s is corrupt (%s); fetching it again",
                        self.directory, path, problem)
            self._count(corrupt=1)
        return False

    def publish(self, source: str, oid: bytes, tid: bytes) -> str:
        """Move the staged file *source* into the cache as (*oid*, *tid*); return its path.

        *source* must be on the cache's file system (in :attr:`temporary_directory`);
        the file appears at its final path complete, in one rename.  An
        OSError raises :class:`CacheDirectoryError`.
        """
        path = self.path(oid, tid)
        try:
            status = self._seal(source)
            while True:
                try:
                    os.replace(source, path)
                    break
                except FileNotFoundError:
                    if not os.path.exists(source):
                        raise
                    _make_private_directory(os.path.dirname(path))
        except OSError as exc:
            raise CacheDirectoryError(self.directory, f"publish revision {tid.hex()} of "
                                      f"blob {oid.hex()}", exc) from exc
        if self.verifies:
            _remember_intact(path, status)
        size = status.st_size
        log.debug("published %s (%d bytes)", path, size)
        self._added(size)
        return path

    def stage(self, source: str, path: str) -> None:
        """Move the uncommitted blob file *source* to *path* in
        :attr:`temporary_directory` as ZODB does (copying it if it is on
        another file system), readable and writable by the owner alone.  An
        OSError raises :class:`CacheDirectoryError`, leaving no part of *path*."""
        # Imported here: the eviction child runs this module without ZODB.
        from ZODB.blob import rename_or_copy_blob

        try:
            rename_or_copy_blob(source, path, chmod=False)
            os.chmod(path, STAGED_FILE_MODE)
        except OSError as exc:
            _remove_partial(path)
            raise CacheDirectoryError(self.directory, f"stage {path}", exc) from exc

    def discard(self, oid: bytes, tid: bytes) -> bool:
        """Remove the cached file of (*oid*, *tid*); return whether there was one."""
        path = self.path(oid, tid)
        removed = _remove_committed_file(path)
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
        return self._under_eviction_lock(lambda: self._evict_least_recently_used(
            size, size), wait=True) or (0, 0)

    def clear(self) -> tuple[int, int]:
        """Remove every committed file (readers fetch them again); return (files,
        bytes) removed.  Fetches in progress and uncommitted blobs stay."""
        return self._under_eviction_lock(lambda: self._evict_least_recently_used(
            0, 0, spare_recently_used=False), wait=True) or (0, 0)

    def evict(self, *, in_child: bool = False) -> int:
        """Run one eviction pass now; return the number of files removed.

        If the committed files total more than :attr:`size` bytes, remove the
        least recently used ones (oldest access time first) until they total
        at most 90 % of it.  Files used since the pass listed them are spared.
        Only one process evicts at a time: if another one is evicting, return
        0 at once.  Fetches in progress, their lock files and
        :attr:`temporary_directory` are never touched.

        With *in_child* (what the background eviction does), the pass runs in
        a child Python process: it walks the whole cache, and in a thread of
        this process it would compete with readers for the GIL.  When no child
        can be started it runs here.
        """
        if in_child:
            removed = self._evict_in_child()
            if removed is not None:
                return removed
        removed = self._under_eviction_lock(lambda: self._evict_least_recently_used(
            self.size, self.size * EVICTION_TARGET), wait=False)
        return removed[0] if removed else 0

    def _evict_in_child(self) -> int | None:
        """One eviction pass in a child process (see :func:`_main`); None if
        none could be run."""
        if not sys.executable:
            return None
        command = [sys.executable, "-I", "-S", os.path.abspath(__file__), self.directory,
                   str(self.size)]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            result = json.loads(completed.stdout) if completed.returncode == 0 else "failed"
        except (OSError, ValueError) as exc:
            completed, result = None, f"{type(exc).__name__}: {exc}"
        if isinstance(result, str):
            reason = completed.stderr.strip()[-300:] if completed is not None else result
            log.warning("blob cache %s: the eviction process failed (%s); evicting in this "
                        "process", self.directory, reason)
            return None
        if result is None:
            return 0  # another process is evicting
        self._record_eviction(*result)
        return result[0]

    def _under_eviction_lock(self, evict: Callable[[], tuple[int, int]], *,
                             wait: bool) -> tuple[int, int] | None:
        """Run *evict* holding the lock that lets one process evict at a time;
        None if another process holds it and *wait* is false."""
        lock = self._open_shared_file(self._evict_lock_path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                log.debug("blob cache %s: another process is evicting", self.directory)
                return None
            return evict()
        finally:
            os.close(lock)

    def close(self) -> None:
        """Stop the background eviction and save the counters; the cached files
        stay.  Idempotent."""
        with self._state_lock:
            self._closed = True
            thread = self._eviction_thread
        self._eviction_wanted.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.counters.close()

    def _download(self, path: str, fetch: Callable[[str], object]) -> int:
        """Fetch into a new temporary file beside *path*, then publish it there.

        The caller holds the revision's lock, so no other fetch of it is in
        progress: temporary files of it are left by fetchers that died, and go.
        """
        directory, name = os.path.split(path)
        _remove_abandoned_downloads(directory, name)
        temporary_path = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            fetch(temporary_path)
            status = self._seal(temporary_path)
            os.replace(temporary_path, path)
        except BaseException:
            _remove_partial(temporary_path)
            raise
        if self.verifies:
            _remember_intact(path, status)
        log.debug("fetched %s (%d bytes)", path, status.st_size)
        return status.st_size

    def _seal(self, path: str) -> os.stat_result:
        """Record the size and checksum of the complete file *path* (unless
        this file system cannot), make it read-only; return its status."""
        if self.verifies:
            with open(path, "rb", buffering=0) as f:
                checksum = _checksum(f)
                size = os.fstat(f.fileno()).st_size
                os.setxattr(f.fileno(), INTEGRITY_ATTRIBUTE,
                            b"v1 %d %08x" % (size, checksum))
        os.chmod(path, FILE_MODE)  # after the attribute: a user may not set one on it then
        return os.stat(path)

    def _evict_least_recently_used(self, limit: float, target: float, *,
                                   spare_recently_used: bool = True) -> tuple[int, int]:
        """If the committed files total more than *limit* bytes, remove the least
        recently used until they total at most *target*; return (files, bytes)."""
        removed, removed_bytes, total = self._remove_least_recently_used(
            limit, target, spare_recently_used)
        self._record_eviction(removed, removed_bytes, total)
        return removed, removed_bytes

    def _record_eviction(self, removed: int, removed_bytes: int, remaining: int) -> None:
        self._count(evictions=removed, evicted_bytes=removed_bytes)
        if removed:
            log.info("blob cache %s: evicted %d files (%d bytes); %d bytes remain",
                     self.directory, removed, removed_bytes, remaining)

    def _remove_least_recently_used(self, limit: float, target: float,
                                    spare_recently_used: bool) -> tuple[int, int, int]:
        """The pass itself: (files, bytes) removed and the bytes that remain."""
        files = self._committed_files()
        total = sum(size for _, size, _ in files)
        if total <= limit:
            return 0, 0, total
        removed = removed_bytes = 0
        for accessed, size, path in sorted(files):
            if total <= target:
                break
            try:
                if spare_recently_used and os.stat(path).st_atime_ns != accessed:
                    continue  # used since it was listed
            except FileNotFoundError:
                total -= size  # removed meanwhile, by discard() for instance
                continue
            if _remove_committed_file(path):
                log.debug("evicted %s (%d bytes)", path, size)
                removed += 1
                removed_bytes += size
            total -= size
        return removed, removed_bytes, total

    def _committed_files(self) -> list[tuple[int, int, str]]:
        """(access time in ns, size, path) of every committed file on disk."""
        with os.scandir(self.directory) as entries:
            oid_directories = [entry.path for entry in entries
                               if OID_DIRECTORY_NAME.fullmatch(entry.name)]
        files = []
        for directory in oid_directories:
            try:
                with os.scandir(directory) as entries:
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

    def _open_shared_file(self, path: str, flags: int) -> int:
        """Open (creating it if need be) a file every process of the cache uses.

        One that root creates (an operator's ``zodb-swiftblobs cache`` beside
        a site running as another user) is given the cache directory's owner,
        or the site could no longer open it.
        """
        descriptor = os.open(path, flags | os.O_CREAT, LOCK_FILE_MODE)
        if os.geteuid() == 0:
            owner = os.stat(self.directory)
            if os.fstat(descriptor).st_uid != owner.st_uid:
                os.fchown(descriptor, owner.st_uid, owner.st_gid)
        return descriptor

    def _count(self, **increments: int) -> None:
        self.counters.count(**increments)

    def _added(self, size: int) -> None:
        """Account for *size* new bytes; wake the eviction thread when enough were added."""
        with self._state_lock:
            self._bytes_since_eviction += size
            if self._closed or self._bytes_since_eviction <= self.check_fraction * self.size:
                return
            if self._eviction_thread is None:
                self._eviction_thread = threading.Thread(
                    target=self._run_evictions, name="zodb-swiftblobs-eviction", daemon=True)
                self._eviction_thread.start()
        self._eviction_wanted.set()

    def _run_evictions(self) -> None:
        """The background thread: one eviction pass per wake-up, until closed."""
        while True:
            self._eviction_wanted.wait()
            self._eviction_wanted.clear()
            with self._state_lock:
                if self._closed:
                    return
                self._bytes_since_eviction = 0
            try:
                self.evict(in_child=True)
            except Exception:
                log.exception("blob cache %s: eviction failed", self.directory)


def _make_private_directory(path: str) -> None:
    """Create *path* with mode 0o700 unless it exists (an existing one keeps its mode)."""
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIRECTORY_MODE)  # mkdir's mode is filtered by the umask


def _check_usable(path: str) -> None:
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "blob cache directory is not a directory", path)
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "blob cache directory needs read, write and search"
                                            " permission", path)


def _mark_used(path: str) -> os.stat_result | None:
    """Set the access time of *path* to now (its modification time stays);
    return its status, or None if it is missing.

    Eviction goes by access times, which this sets explicitly, so it works on
    file systems mounted with ``noatime`` or ``relatime`` too.  On a file
    system that became read-only the file is still used: only its access
    time stays.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        os.utime(path, ns=(time.time_ns(), status.st_mtime_ns))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in NOT_PERMITTED:
            raise
    return status


def _identity(status: os.stat_result) -> tuple[int, int, int]:
    """What changes when a committed file is replaced, rewritten or truncated
    (not its ctime: marking a file used changes that)."""
    return status.st_ino, status.st_mtime_ns, status.st_size


def _checksum(f) -> int:
    """The CRC-32 of the rest of the unbuffered binary file *f*."""
    checksum = 0
    block = bytearray(CHECKSUM_BLOCK)
    view = memoryview(block)
    while count := f.readinto(block):
        checksum = zlib.crc32(view[:count], checksum)
    return checksum


def _verify(path: str) -> str | None:
    """What is wrong with the committed file *path*, or None if it is intact
    (and then remembered as such).  FileNotFoundError if it is gone."""
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise  # gone, which is not corruption: the caller fetches it
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    with f:
        status = os.fstat(f.fileno())
        try:
            record = INTEGRITY_RECORD.fullmatch(os.getxattr(f.fileno(), INTEGRITY_ATTRIBUTE))
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return "no size and checksum recorded"
            return f"unreadable record: {exc.strerror}"
        if record is None:
            return "malformed record"
        size, checksum = int(record[1]), int(record[2], 16)
        if status.st_size != size:
            return f"{status.st_size} bytes, {size} recorded"
        try:
            if _checksum(f) != checksum:
                return "checksum mismatch"
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
    _remember_intact(path, status)
    return None


def _remember_intact(path: str, status: os.stat_result) -> None:
    """Note that the committed file at *path*, with *status*, is intact."""
    with _verified_lock:
        _verified.pop(path, None)
        if len(_verified) >= VERIFIED_FILES_REMEMBERED:
            del _verified[next(iter(_verified))]
        _verified[path] = _identity(status)


def _supports_integrity_records(directory: str) -> bool:
    """Whether files in *directory* can carry user extended attributes (a
    probe file tells; any other failure is taken as support)."""
    probe = f"{directory}/.xattr-probe-{uuid.uuid4().hex}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, LOCK_FILE_MODE)
    except OSError:
        return True
    try:
        os.setxattr(descriptor, INTEGRITY_ATTRIBUTE, b"probe")
    except OSError as exc:
        return exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)
    finally:
        os.close(descriptor)
        os.unlink(probe)
    return True


def _remove_partial(path: str) -> None:
    """Remove the file *path* if it exists and can be (a read-only file system
    holds none)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _lock_revision(lock_path: str) -> int | None:
    """Lock the revision's lock file; return the descriptor holding the lock,
    or None when the caller must look again (the file was just created or replaced).

    A lock file exists only while a reader holds or awaits it: its holder
    removes it before unlocking (:func:`_release_revision`).  A waiter that
    then gets the lock of the removed file sees that the file at *lock_path*
    is no longer the one it holds, and gives up; so two holders never hold
    different files at the same path.  Lock files left by a crashed process
    are harmless: the lock died with the process, and the next reader
    removes the file.
    """
    try:
        lock = os.open(lock_path, os.O_RDONLY | os.O_CREAT, LOCK_FILE_MODE)
    except FileNotFoundError:
        _make_private_directory(os.path.dirname(lock_path))  # new oid, or just evicted
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_file_at(lock, lock_path):
            return lock
    except BaseException:
        os.close(lock)
        raise
    os.close(lock)
    return None


def _release_revision(lock_path: str, lock: int) -> None:
    """Remove the lock file, still locked, then unlock it (a lock file that
    cannot be removed is harmless: see :func:`_lock_revision`)."""
    try:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
    finally:
        os.close(lock)


def _is_file_at(descriptor: int, path: str) -> bool:
    held = os.fstat(descriptor)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino)


def _remove_abandoned_downloads(directory: str, name: str) -> None:
    """Remove the temporary files in *directory* of fetches of *name* whose
    fetchers died: ``.<name>.<random>.tmp``, and what a fetch function made
    beside it (hidden files named after it, such as ``..<name>.<random>.tmp.<random>.part``
    of :meth:`SwiftContainer.download <zodb_swiftblobs.swiftaccess.SwiftContainer.download>`)."""
    with os.scandir(directory) as entries:
        abandoned = [entry.path for entry in entries if entry.name.startswith(".")
                     and entry.name.lstrip(".").startswith(f"{name}.")]
    for path in abandoned:
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        log.debug("removed %s, left by a fetch that died", path)


def _remove_committed_file(path: str) -> bool:
    """Remove *path* and its oid directory if that is now empty; False if *path* was missing.

    Removing a directory races with readers about to create files in it;
    they create it again (see :func:`_lock_revision` and :meth:`BlobCache.publish`).
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):  # not empty, or removed meanwhile
        os.rmdir(os.path.dirname(path))
    return True


def _main(directory: str, size: str) -> None:
    """The child process of :meth:`BlobCache.evict`: one pass, at a lower CPU
    priority; prints [files, bytes, remaining bytes], or null when another
    process is evicting.  It counts nothing itself: its parent does."""
    with contextlib.suppress(OSError):
        os.nice(10)
    cache = BlobCache(directory, int(size))
    result = cache._under_eviction_lock(lambda: cache._remove_least_recently_used(
        cache.size, cache.size * EVICTION_TARGET, True), wait=False)
    print(json.dumps(result))


if __name__ == "__main__":
    _main(*sys.argv[1:])

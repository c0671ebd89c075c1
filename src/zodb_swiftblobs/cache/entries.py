"""The entries of the blob cache's directory: committed files (pinned while
handed out), the lock files of revisions being fetched, and what fetches leave.

Anything at an entry's path that is not what the cache put there (a
directory, a FIFO, a symbolic link...) is removed rather than followed or
opened for good: none of these functions ever blocks on such a thing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import time

from .integrity import non_file_kind
from ..partial_files import is_partial_file

log = logging.getLogger("zodb_swiftblobs.cache")

OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIRECTORY_MODE = 0o700
LOCK_FILE_MODE = 0o600
NOT_PERMITTED = (errno.EROFS, errno.EACCES, errno.EPERM)


def make_private_directory(path: str) -> None:
    """Create *path* with mode 0o700 unless it exists (an existing one keeps its mode)."""
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, DIRECTORY_MODE)  # mkdir's mode is filtered by the umask


def mark_used(descriptor: int, status: os.stat_result) -> None:
    """Set the access time of the file open as *descriptor* (of *status*) to
    now (its modification time stays).

    Eviction goes by access times, which this sets explicitly, so it works on
    file systems mounted with ``noatime`` or ``relatime`` too.  On a file
    system that became read-only the file is still used: only its access
    time stays.
    """
    try:
        os.utime(descriptor, ns=(time.time_ns(), status.st_mtime_ns))
    except OSError as exc:
        if exc.errno not in NOT_PERMITTED:
            raise


def open_pinned(path: str) -> tuple[tuple[int, os.stat_result] | None, str | None]:
    """Open the regular file at *path* with a shared flock on it (a pin):
    ``((descriptor, its status), None)``; ``(None, None)`` if nothing is there
    (or it was removed or replaced meanwhile); ``(None, what is there instead)``."""
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
                return (descriptor, status), None
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


def lock_revision(lock_path: str) -> int | None:
    """Lock the revision's lock file; return the descriptor holding the lock,
    or None when the caller must look again (the file was just created or
    replaced, or something that is not a lock file was removed from its path).

    A lock file exists only while a reader holds or awaits it: its holder
    removes it before unlocking (:func:`release_revision`).  A waiter that
    then gets the lock of the removed file sees that the file at *lock_path*
    is no longer the one it holds, and gives up; so two holders never hold
    different files at the same path.  Lock files left by a crashed process
    are harmless: the lock died with the process, and the next reader
    removes the file.
    """
    try:
        lock = os.open(lock_path, OPEN_FLAGS | os.O_CREAT, LOCK_FILE_MODE)
    except FileNotFoundError:
        make_private_directory(os.path.dirname(lock_path))  # new oid, or just evicted
        return None
    except OSError:
        if not remove_non_file(lock_path):
            raise
        return None
    try:
        status = os.fstat(lock)
        if non_file_kind(status.st_mode) is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if is_at(status, lock_path):
                return lock
    except BaseException:
        os.close(lock)
        raise
    os.close(lock)
    remove_non_file(lock_path)
    return None


def remove_non_file(path: str) -> bool:
    """Remove what is at *path* if it is not a regular file (a directory, a
    FIFO, a socket, a symbolic link, a device), with a warning naming it;
    return whether something was removed."""
    try:
        kind = non_file_kind(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False
    if kind is None or not remove_entry(path):
        return False
    log.warning("blob cache: removed %s at %s, where the cache keeps a file", kind, path)
    return True


def open_shared_file(path: str, flags: int, owner_of: str) -> int:
    """Open the regular file at *path* with *flags* (creating it if need be),
    whatever is there instead being removed first (see :func:`remove_non_file`).

    One that root creates (an operator's command beside a site running as
    another user) is given the owner of the directory *owner_of*, or the
    site could no longer open it.
    """
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no waiting on a FIFO
    while True:
        try:
            descriptor = os.open(path, flags, LOCK_FILE_MODE)
        except OSError:
            if not remove_non_file(path):
                raise
            continue
        try:
            if stat.S_ISREG(os.fstat(descriptor).st_mode):
                os.set_blocking(descriptor, True)
                give_to_owner_of(descriptor, owner_of)
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)
        remove_non_file(path)


def give_to_owner_of(descriptor: int, directory: str) -> None:
    """Give the file or directory open as *descriptor* the owner of *directory*
    if this process runs as root (else it already has that owner, or cannot change it)."""
    if os.geteuid() == 0:
        owner = os.stat(directory)
        if os.fstat(descriptor).st_uid != owner.st_uid:
            os.fchown(descriptor, owner.st_uid, owner.st_gid)


def release_revision(lock_path: str, lock: int) -> None:
    """Remove the lock file, still locked, then unlock it (a lock file that
    cannot be removed is harmless: see :func:`lock_revision`)."""
    try:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
    finally:
        os.close(lock)


def remove_abandoned_downloads(directory: str, name: str) -> None:
    """Remove the temporary files in *directory* of fetches of *name* whose
    fetchers died: ``.<name>.<random>.tmp``, and the partial file (see
    :mod:`.partial_files`) of a download into one of those."""
    own = f".{name}."
    with os.scandir(directory) as entries:
        abandoned = [entry.path for entry in entries if entry.name.startswith(own)
                     or is_partial_file(entry.name, own)]
    for path in abandoned:
        if remove_entry(path):
            log.debug("removed %s, left by a fetch that died", path)

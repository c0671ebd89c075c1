"""The integrity record of a committed file in the blob cache.

Every committed file carries, in the extended attribute
``user.zodb-swiftblobs``, the blob revision it holds and its size and CRC-32:
``v2 <oid hex> <tid hex> <size> <crc32 hex>``, set before the file appears.
A file is served only if it is a regular file (not a link to one) whose
record names the revision asked for and its current size; its checksum is
verified the first time a process uses it, and again whenever its inode,
modification time or size changes.  So a copy, hard link or symbolic link of
another revision's file, a truncated or rewritten file, or anything but a
regular file at its path is found out.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import uuid
import zlib

INTEGRITY_ATTRIBUTE = "user.zodb-swiftblobs"
INTEGRITY_RECORD = re.compile(rb"v2 ([0-9a-f]{16}) ([0-9a-f]{16}) ([0-9]+) ([0-9a-f]{8})")
EARLIER_RECORD_FORMAT = re.compile(rb"v1 [0-9]+ [0-9a-f]{8}")  # before it named the revision
CHECKSUM_BLOCK = 1 << 20
EARLIER_RECORD = "a record of an earlier version, without the revision"
VERIFIED_FILES_REMEMBERED = 32768  # per process; beyond, the oldest are verified again
PROBE_MODE = 0o600

# The committed files this process verified or wrote: path -> (device, inode, mtime, size).
_verified: dict[str, tuple[int, int, int, int]] = {}
_verified_lock = threading.Lock()


def seal(descriptor: int, oid: bytes, tid: bytes, checksum: int | None = None) -> None:
    """Record the revision, size and checksum of the complete file open as
    *descriptor* in its extended attribute (the *checksum* of
    :func:`file_checksum`, computed now when not given)."""
    if checksum is None:
        checksum = _checksum(descriptor)
    record = b"v2 %s %s %d %08x" % (oid.hex().encode(), tid.hex().encode(),
                                     os.fstat(descriptor).st_size, checksum)
    os.setxattr(descriptor, INTEGRITY_ATTRIBUTE, record)


def problem(descriptor: int, status: os.stat_result, path: str, oid: bytes,
            tid: bytes) -> str | None:
    """What is wrong with the file open as *descriptor* (a regular file found
    at *path*) as the committed file of (*oid*, *tid*), or None if nothing is
    (and then it is remembered as intact).  A file cached by an earlier
    version is :data:`EARLIER_RECORD`: not corrupt, but not to be trusted."""
    try:
        text = os.getxattr(descriptor, INTEGRITY_ATTRIBUTE)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return "no revision, size and checksum recorded"
        return f"unreadable record: {exc.strerror}"
    record = INTEGRITY_RECORD.fullmatch(text)
    if record is None:
        return EARLIER_RECORD if EARLIER_RECORD_FORMAT.fullmatch(text) else "malformed record"
    recorded_oid, recorded_tid = bytes.fromhex(record[1].decode()), bytes.fromhex(
        record[2].decode())
    if (recorded_oid, recorded_tid) != (oid, tid):
        return f"it holds revision {recorded_tid.hex()} of blob {recorded_oid.hex()}"
    size, checksum = int(record[3]), int(record[4], 16)
    if status.st_size != size:
        return f"{status.st_size} bytes, {size} recorded"
    if _verified.get(path) == _identity(status):
        return None
    try:
        if _checksum(descriptor) != checksum:
            return "checksum mismatch"
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    remember_intact(path, status)
    return None


def remember_intact(path: str, status: os.stat_result) -> None:
    """Note that the committed file at *path*, with *status*, is intact."""
    with _verified_lock:
        _verified.pop(path, None)
        if len(_verified) >= VERIFIED_FILES_REMEMBERED:
            del _verified[next(iter(_verified))]
        _verified[path] = _identity(status)


def non_file_kind(mode: int) -> str | None:
    """What a directory entry of *mode* is when it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link",
             stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
    return kinds.get(stat.S_IFMT(mode), "a device")


def supports_integrity_records(directory: str) -> bool:
    """Whether files in *directory* can carry user extended attributes: not
    on a platform without them (macOS, BSD), else a probe file tells (any
    other failure is taken as support)."""
    if not hasattr(os, "setxattr"):
        return False
    probe = f"{directory}/.xattr-probe-{uuid.uuid4().hex}"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PROBE_MODE)
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


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a committed file is replaced, rewritten or truncated
    (not its ctime: marking a file used changes that)."""
    return status.st_dev, status.st_ino, status.st_mtime_ns, status.st_size


def file_checksum(path: str) -> int:
    """The checksum :func:`seal` records for the file at *path*."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return _checksum(descriptor)
    finally:
        os.close(descriptor)


def _checksum(descriptor: int) -> int:
    """The CRC-32 of the whole file open as *descriptor*."""
    checksum = offset = 0
    while block := os.pread(descriptor, CHECKSUM_BLOCK, offset):
        checksum = zlib.crc32(block, checksum)
        offset += len(block)
    return checksum

"""The blob files one commit has staged, from ``storeBlob`` until they move
into the cache (committed) or are removed (aborted): each moved, when
stored, to a name in the staging area (see :mod:`zodb_swiftblobs.staging`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from .cache import BlobCache

log = logging.getLogger(__name__)


class StagedBlobs:
    """The staged files of one commit, by oid, with the revision each is of
    (None: of the commit's own transaction), named from *prefix* (see
    :meth:`.StagingArea.commit_prefix`)."""

    def __init__(self, cache: BlobCache, prefix: str) -> None:
        self.cache = cache
        self.prefix = prefix
        self._files: dict[bytes, tuple[str, bytes | None]] = {}
        self._checksums: dict[bytes, int | None] = {}

    def __contains__(self, oid: bytes) -> bool:
        return oid in self._files

    def __bool__(self) -> bool:
        return bool(self._files)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._files))

    def take(self, oid: bytes, serial: bytes | None, blobfilename: str) -> str:
        """Stage *blobfilename* as revision *serial* of blob *oid* (instead of
        any file staged for it before); its staged path."""
        self.discard(oid)
        path = f"{self.prefix}{oid.hex()}.blob"
        self.cache.stage(blobfilename, path)
        self._files[oid] = (path, serial)
        return path

    def file(self, oid: bytes) -> tuple[str, bytes | None]:
        """(path, serial) of the file staged for blob *oid*."""
        return self._files[oid]

    def path(self, oid: bytes, serial: bytes, tid: bytes | None) -> str | None:
        """The staged file of revision *serial* of blob *oid* (*tid*: the
        commit's own transaction id, if known), if there is one."""
        entry = self._files.get(oid)
        if entry is None:
            return None
        path, own_serial = entry
        return path if (own_serial or tid) == serial else None

    def read_checksums(self) -> None:
        """Read the staged files' checksums for the cache (not while a commit
        lock is held: moving them into the cache then reads nothing)."""
        for oid, (path, _) in self._files.items():
            with contextlib.suppress(OSError):  # then the move reads it
                self._checksums[oid] = self.cache.checksum(path)

    def move_into_cache(self, tid: bytes) -> None:
        """Move the files of a committed transaction *tid* into the cache
        (local renames only; a failure costs a download later, never the
        commit)."""
        for oid, (path, serial) in self._files.items():
            try:
                self.cache.publish(path, oid, serial or tid, self._checksums.get(oid))
            except Exception as exc:
                log.warning("could not move committed blob %s into the cache (%s); it will "
                            "be downloaded when read", oid.hex(), exc)

    def discard(self, oid: bytes) -> None:
        """Remove the file staged for blob *oid* (its upload must have ended),
        unless it moved into the cache."""
        path, _ = self._files.pop(oid, (None, None))
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def discard_all(self) -> None:
        """Remove every staged file not moved into the cache."""
        for oid in self:
            self.discard(oid)

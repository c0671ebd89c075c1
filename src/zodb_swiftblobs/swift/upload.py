"""Uploads of single objects: streamed from files, MD5-checked as they are sent,
and sent again when Swift stored other bytes."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import BinaryIO

from swiftclient import client as swift

from ..encryption import ObjectCipher
from .checksums import CHECKSUM_METADATA, file_checksum
from .cluster import Cluster
from .errors import ChecksumMismatchError, LocalFileFailure, NotFoundError, SendTimeUp, SwiftError
from .objects import metadata_headers
from .transport import CHUNK_SIZE, TimeBudget, Transport

log = logging.getLogger(__name__)

UPLOAD_ATTEMPTS = 3  # uploads whose stored bytes differ from those sent are sent again


class Uploader:
    """PUTs into the containers of *cluster*, creating a container found missing."""

    def __init__(self, transport: Transport, cluster: Cluster) -> None:
        self.transport = transport
        self.cluster = cluster

    def put_file(self, container: str, name: str, source: UploadSource, offset: int,
                 length: int, headers: dict[str, str], budget: TimeBudget) -> str:
        """PUT *length* bytes of *source* from *offset*; return their MD5.

        The MD5 is computed from the bytes as they are sent (one read of the
        file) and compared with the ETag Swift computed from the bytes it
        stored.  On a mismatch (bytes damaged on the way) the object is
        deleted and sent again, UPLOAD_ATTEMPTS times at most; then
        ChecksumMismatchError is raised.
        """
        def put(url, token, http):
            with source.open() as f:
                body = _UploadBody(f, offset, length, budget)
                etag = swift.put_object(url, token, container, name, body,
                                        content_length=length, headers=headers,
                                        chunk_size=CHUNK_SIZE, http_conn=http)
            return etag, body.md5() or source.md5(offset, length)
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            etag, md5 = self.put_creating_container(container, name, put, budget)
            if etag == md5:
                return md5
            log.warning("Swift stored other bytes than those sent for %r (MD5 %s, sent %s); "
                        "%s", name, etag, md5,
                        "sending it again" if attempt < UPLOAD_ATTEMPTS else "giving up")
            with contextlib.suppress(SwiftError):
                self.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                    u, t, container, name, http_conn=h))
        raise ChecksumMismatchError(
            f"Swift stored bytes with MD5 {etag}, the file's are {md5} "
            f"({UPLOAD_ATTEMPTS} attempts)", operation="upload", name=name)

    def put_creating_container(self, container: str, name: str,
                               put: Callable[[str, str, tuple], object], budget: TimeBudget,
                               operation: str = "upload") -> object:
        """Run the request *put*; when *container* is missing, create it and run
        *put* again."""
        try:
            return self.transport.call(operation, name, put, budget=budget)
        except NotFoundError:
            self.cluster.forget_container(container)
        self.cluster.ensure_container(container)
        return self.transport.call(operation, name, put, budget=budget)


class _UploadBody:
    """A seekable, readable window of an open file, sent as an upload body.

    Local read errors and the end of its time are raised as private exceptions,
    so the HTTP stack cannot mistake them for network failures.
    """

    def __init__(self, f, offset: int, length: int, budget: TimeBudget) -> None:
        self._f, self._offset, self._length, self._pos = f, offset, length, 0
        self._budget = budget
        self._md5, self._hashed = hashlib.md5(usedforsecurity=False), 0
        f.seek(offset)

    def read(self, size: int = -1) -> bytes:
        if self._budget.remaining() <= 0:
            raise SendTimeUp()
        left = self._length - self._pos
        size = left if size is None or size < 0 else min(size, left)
        try:
            data = self._f.read(size)
        except OSError as exc:
            raise LocalFileFailure(exc) from None
        if self._hashed == self._pos:
            self._md5.update(data)
            self._hashed += len(data)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        self._f.seek(self._offset + self._pos)
        if self._pos == 0:
            self._md5, self._hashed = hashlib.md5(usedforsecurity=False), 0
        return self._pos

    def md5(self) -> str | None:
        """Hex MD5 of the window, when it was read through in order (else None)."""
        return self._md5.hexdigest() if self._hashed == self._length else None

    def tell(self) -> int:
        return self._pos


class UploadSource:
    """The bytes an upload sends from the file at *path*: the file itself, or
    its ciphertext under *cipher*."""

    def __init__(self, path: str, plaintext_size: int, cipher: ObjectCipher | None) -> None:
        self.path, self.plaintext_size, self.cipher = path, plaintext_size, cipher
        self.size = cipher.ciphertext_size(plaintext_size) if cipher else plaintext_size
        self._checksum: str | None = None

    def open(self) -> BinaryIO:
        """A readable, seekable file of the bytes to send (close it after use)."""
        f = open(self.path, "rb")
        return self.cipher.reader(f, self.plaintext_size) if self.cipher else f

    def md5(self, offset: int, length: int) -> str:
        """Hex MD5 of *length* bytes from *offset*."""
        with self.open() as f:
            return md5_of(f, offset, length)

    def with_checksum(self, headers: dict[str, str]) -> dict[str, str]:
        """*headers* with the checksum of the file's content to record (see
        :mod:`.checksums`), computed on the first call."""
        if self._checksum is None:
            self._checksum = file_checksum(self.path, self.cipher)
        return {**headers, **metadata_headers({CHECKSUM_METADATA: self._checksum})}


def file_md5(path: str, offset: int = 0, length: int | None = None) -> str:
    """Hex MD5 of a file, or of *length* bytes of it from *offset*."""
    with open(path, "rb") as f:
        return md5_of(f, offset, length)


def md5_of(f: BinaryIO, offset: int, length: int | None) -> str:
    """Hex MD5 of *length* bytes (all the rest: None) of the open file *f* from *offset*."""
    digest = hashlib.md5(usedforsecurity=False)
    f.seek(offset)
    left = length
    while left is None or left > 0:
        chunk = f.read(CHUNK_SIZE if left is None else min(CHUNK_SIZE, left))
        if not chunk:
            break
        digest.update(chunk)
        if left is not None:
            left -= len(chunk)
    return digest.hexdigest()

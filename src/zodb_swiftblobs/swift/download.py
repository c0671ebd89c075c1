"""Streamed downloads, verified: a plain object checked against its MD5 as
it arrives, a large object's segments fetched in parallel (see
:mod:`.segment_download`); resumed with a Range request after a broken
connection, decrypted as they arrive."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from ..encryption import Keyring
from ..partial_files import make_partial_file
from .checksums import ContentCheck
from .decryption import cipher_of, decrypting
from .errors import ChecksumMismatchError, DownloadRestart, SwiftUnavailableError
from .objects import StoredObject, is_large, stored_object
from .segment_download import SegmentDownload
from .transport import CHUNK_SIZE, MIB, Transport

log = logging.getLogger(__name__)


def download_file(transport: Transport, container: str, name: str, path: str,
                  deadline: float | None, keyring: Keyring | None,
                  executor: Callable[[], Executor]) -> StoredObject:
    """Stream object *name* into the file *path*, through a partial file beside
    it renamed to *path* once verified."""
    descriptor, partial = make_partial_file(path)
    try:
        with os.fdopen(descriptor, "wb") as out:
            stored = Download(transport, container, name, out, deadline, keyring,
                              executor).run()
        os.replace(partial, path)
        return stored
    except BaseException:
        _remove(partial)
        raise


class Download:
    """One download of object *name* into *out* (a file, or :class:`Discard`),
    verified, within *deadline* seconds (by default the transport's, plus one
    second per MiB of the object).

    The first request asks for a large object's manifest
    (``multipart-manifest=get`` is ignored by plain objects, so no HEAD is
    needed to tell them apart).  A plain object is checked against its ETag
    and the checksum recorded at upload, if any (see :mod:`.checksums`); a
    large object's segments are fetched in the threads of *executor* (called
    for it), each checked against the MD5 in its manifest entry, and with
    *check_content* its whole content against its recorded checksum too.
    """

    def __init__(self, transport: Transport, container: str, name: str, out,
                 deadline: float | None, keyring: Keyring | None,
                 executor: Callable[[], Executor], *, check_content: bool = False) -> None:
        self.transport, self.container, self.name = transport, container, name
        self.out, self.keyring, self.executor = out, keyring, executor
        self.check_content = check_content
        self.budget = transport.budget(deadline)
        self._extend_budget = deadline is None  # once, by the size of the body
        self.manifest: tuple[Mapping[str, str], list[dict]] | None = None
        self._start()

    def run(self) -> StoredObject:
        """Download and verify the object; what its first response said of it."""
        self.transport.call("download", self.name, self._get, budget=self.budget)
        if self.manifest is not None:
            headers, entries = self.manifest
            return SegmentDownload(
                self.transport, self.name, headers, entries, self._writer_at(),
                budget=self.budget, extend_budget=self._extend_budget, keyring=self.keyring,
                executor=self.executor(), check_content=self.check_content).run()
        stored = stored_object(self.name, self.first)
        if self.written != stored.size:
            raise self._mismatch(f"received {self.written} bytes, expected {stored.size}")
        received = self.md5.hexdigest()
        if stored.md5 is not None and received != stored.md5:
            raise self._mismatch(f"received bytes have MD5 {received}, expected {stored.md5}")
        problem = self.sink.finish()
        if problem is not None:
            raise self._mismatch(problem)
        return stored

    def _writer_at(self) -> Callable[[bytes, int], None]:
        """How a large object's bytes are written at their offsets into *out*."""
        if isinstance(self.out, Discard):
            return self.out.write_at
        descriptor = self.out.fileno()
        return lambda data, offset: _write_at(descriptor, data, offset)

    def _restart(self) -> None:
        """Start over at byte 0."""
        self.out.seek(0)
        self.out.truncate()
        self._start()

    def _start(self) -> None:
        """Expect the object's bytes from byte 0 (*out* is empty)."""
        self.written = 0
        self.first: Mapping[str, str] | None = None  # the headers of the body being received
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sink = None

    def _get(self, url: str, token: str, http: tuple) -> None:
        """One attempt: request the object (from where the last one stopped)
        and receive its bytes (or a large object's manifest)."""
        if self.first and self.written >= stored_object(self.name, self.first).size:
            return
        headers = {"Range": f"bytes={self.written}-"} if self.written else {}
        try:
            response_headers, body = swift.get_object(
                url, token, self.container, self.name, http_conn=http,
                query_string="multipart-manifest=get", resp_chunk_size=CHUNK_SIZE,
                headers=headers)
        except ClientException as exc:
            if exc.http_status != 416 or not self.written:
                raise
            self._restart()  # the object shrank under us
            raise DownloadRestart() from None
        try:
            if is_large(response_headers):
                if self.written:
                    self._restart()
                self.manifest = (response_headers, json.loads(b"".join(body)))
                return
            self._accept(response_headers)
            self._receive(response_headers, body)
        finally:
            body.close()

    def _accept(self, headers: Mapping[str, str]) -> None:
        """Accept a (resumed) response, or restart when it is not what was asked for."""
        if self.first is None:
            self.first = headers
            return
        if headers.get("etag") != self.first.get("etag"):
            self._restart()
            raise DownloadRestart()
        content_range = headers.get("content-range")
        if content_range is None:
            self._restart()  # the Range was ignored: this body starts at byte 0
            self.first = headers
        elif not content_range.startswith(f"bytes {self.written}-"):
            self._restart()
            raise DownloadRestart()

    def _receive(self, headers: Mapping[str, str], body) -> None:
        """Write and check the bytes of an accepted response."""
        if self.sink is None:
            self.sink = _ContentSink(self.name, stored_object(self.name, headers).metadata,
                                     self.keyring, self.out)
        if self._extend_budget:
            self.budget.extend(int(headers.get("content-length", 0)) / MIB)
            self._extend_budget = False
        if self.written:
            log.debug("resuming download of %r at byte %d", self.name, self.written)
        for chunk in body:
            self.sink.write(chunk)
            self.md5.update(chunk)
            self.written += len(chunk)
            if self.budget.remaining() <= 0:
                raise SwiftUnavailableError(
                    f"deadline of {self.budget.seconds:.0f}s exceeded after "
                    f"{self.written} bytes", operation="download", name=self.name)

    def _mismatch(self, message: str) -> ChecksumMismatchError:
        return ChecksumMismatchError(message, operation="download", name=self.name,
                                     transaction_id=self.first.get("x-trans-id"))


class Discard:
    """A file that keeps nothing (for :meth:`.SwiftContainer.check`)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, position: int) -> int:
        return position

    def truncate(self) -> int:
        return 0

    def write_at(self, data: bytes, offset: int) -> None:
        """Keep nothing of *data*, wherever it goes."""


class _ContentSink:
    """A download's sink: writes the content of object *name*, decrypted
    when its *metadata* says it is encrypted, into *out*, hashing it for the
    checksum the metadata records."""

    def __init__(self, name: str, metadata: Mapping[str, str], keyring: Keyring | None,
                 out) -> None:
        self._name = name
        cipher = cipher_of(name, metadata, keyring)
        self._check = ContentCheck(metadata, cipher)
        self._content = _HashingWriter(out, self._check)
        self._decryptor = cipher.writer(self._content) if cipher is not None else None

    def write(self, data: bytes) -> int:
        """Take the next bytes of the object as Swift holds them."""
        if self._decryptor is None:
            return self._content.write(data)
        return decrypting(self._name, lambda: self._decryptor.write(data))

    def finish(self) -> str | None:
        """Decrypt the last chunk (a download is complete only then); what
        is wrong with the content (None: it matches its recorded checksum, or
        none is recorded)."""
        if self._decryptor is not None:
            decrypting(self._name, self._decryptor.finish)
        return self._check.problem()


class _HashingWriter:
    """Writes content into *out*, hashing it for *check* on the way."""

    def __init__(self, out, check: ContentCheck) -> None:
        self._out, self._check = out, check

    def write(self, content: bytes) -> int:
        self._check.update(content)
        return self._out.write(content)


def _write_at(descriptor: int, data: bytes, offset: int) -> None:
    """Write all of *data* at *offset* of the open file *descriptor*."""
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view, offset = view[written:], offset + written


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

"""Streamed downloads: resumed with a Range request after a broken connection,
checked against the object's MD5 (or each segment's), decrypted as they arrive."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping

from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from ..encryption import DecryptionFailed, Keyring, KeyNotConfigured, ObjectCipher
from ..partial_files import make_partial_file
from .errors import (ChecksumMismatchError, DecryptionError, DownloadRestart, MissingKeyError,
                     SwiftUnavailableError)
from .objects import StoredObject, encryption_header, is_large, stored_object
from .transport import CHUNK_SIZE, MIB, Transport

log = logging.getLogger(__name__)


def download_file(transport: Transport, container: str, name: str, path: str,
                  deadline: float | None, keyring: Keyring | None) -> StoredObject:
    """Stream object *name* into the file *path*, through a partial file beside
    it renamed to *path* once verified."""
    descriptor, partial = make_partial_file(path)
    try:
        with os.fdopen(descriptor, "wb") as out:
            stored = Download(transport, container, name, out, deadline, keyring).run()
        os.replace(partial, path)
        return stored
    except BaseException:
        _remove(partial)
        raise


def cipher_of(name: str, metadata: Mapping[str, str],
              keyring: Keyring | None) -> ObjectCipher | None:
    """The cipher of object *name* from its *metadata* (None for a plain
    object).  MissingKeyError when its key is not in *keyring*,
    DecryptionError when its encryption metadata is malformed."""
    header = encryption_header(metadata)
    if header is None:
        return None
    if keyring is None:
        key = header.split()[1] if len(header.split()) > 1 else "?"
        raise MissingKeyError(f"it is encrypted (key id {key}) and no encryption key is "
                              "configured", operation="decryption", name=name)
    return _decrypting(name, lambda: keyring.cipher_for(header))


class Download:
    """One download of object *name* into *out* (write, seek and truncate),
    verified, within *deadline* seconds (by default the transport's, plus one
    second per MiB of the object).

    A plain object is checked against its ETag.  For a large object the
    first request returns its manifest instead (``multipart-manifest=get``
    is ignored by plain objects, so no HEAD is needed to tell them apart),
    and each segment's bytes are checked against the MD5 in the manifest.
    """

    def __init__(self, transport: Transport, container: str, name: str, out,
                 deadline: float | None, keyring: Keyring | None) -> None:
        self.transport, self.container, self.name = transport, container, name
        self.out, self.keyring = out, keyring
        self.budget = transport.budget(deadline)
        self._extend_budget = deadline is None  # once, by the size of the body
        self.spans: list[tuple[int, str | None]] | None = None  # of a large object
        self._restart()

    def run(self) -> StoredObject:
        """Download and verify the object; what its first response said of it."""
        self.transport.call("download", self.name, self._get, budget=self.budget)
        stored = stored_object(self.name, self.first)
        if self.written != stored.size:
            raise ChecksumMismatchError(
                f"received {self.written} bytes, expected {stored.size}",
                operation="download", name=self.name,
                transaction_id=self.first.get("x-trans-id"))
        self.checker.finish()
        if self.sink is not self.out:
            self.sink.finish()
        return stored

    def _restart(self, same_object: bool = False) -> None:
        """Start over at byte 0 (the manifest is kept for *same_object*)."""
        self.out.seek(0)
        self.out.truncate()
        self.written = 0
        self.first: Mapping[str, str] | None = None  # the headers of the body being received
        self.spans = self.spans if same_object else None
        self.checker: _SpanChecker | None = None
        self.sink = None

    def _get(self, url: str, token: str, http: tuple) -> None:
        """One attempt: request the object (from where the last one stopped)
        and receive its bytes."""
        if self.first and self.written >= stored_object(self.name, self.first).size:
            return
        headers = {"Range": f"bytes={self.written}-"} if self.written else {}
        query = None if self.spans is not None else "multipart-manifest=get"
        try:
            response_headers, body = swift.get_object(
                url, token, self.container, self.name, http_conn=http, query_string=query,
                resp_chunk_size=CHUNK_SIZE, headers=headers)
        except ClientException as exc:
            if exc.http_status != 416 or not self.written:
                raise
            self._restart()  # the object shrank under us
            raise DownloadRestart() from None
        try:
            if self.spans is None and is_large(response_headers):
                self.spans = manifest_spans(json.loads(b"".join(body)))
                raise DownloadRestart()  # now its content
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
            self._restart(same_object=True)  # the Range was ignored: this body starts at byte 0
            self.first = headers
        elif not content_range.startswith(f"bytes {self.written}-"):
            self._restart()
            raise DownloadRestart()

    def _receive(self, headers: Mapping[str, str], body) -> None:
        """Write and check the bytes of an accepted response."""
        if self.checker is None:
            stored = stored_object(self.name, headers)
            self.checker = _SpanChecker(self.spans or [(stored.size, stored.md5)], self.name,
                                        headers)
            cipher = cipher_of(self.name, stored.metadata, self.keyring)
            self.sink = self.out if cipher is None else _DecryptingSink(self.name, cipher,
                                                                        self.out)
        if self._extend_budget:
            self.budget.extend(int(headers.get("content-length", 0)) / MIB)
            self._extend_budget = False
        if self.written:
            log.debug("resuming download of %r at byte %d", self.name, self.written)
        for chunk in body:
            self.sink.write(chunk)
            self.checker.update(chunk)
            self.written += len(chunk)
            if self.budget.remaining() <= 0:
                raise SwiftUnavailableError(
                    f"deadline of {self.budget.seconds:.0f}s exceeded after "
                    f"{self.written} bytes", operation="download", name=self.name)


class Discard:
    """A file that keeps nothing (for :meth:`.SwiftContainer.check`)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, position: int) -> int:
        return position

    def truncate(self) -> int:
        return 0


class _DecryptingSink:
    """A download's sink that decrypts object *name* into *out*."""

    def __init__(self, name: str, cipher: ObjectCipher, out) -> None:
        self._name, self._writer = name, cipher.writer(out)

    def write(self, data: bytes) -> int:
        return _decrypting(self._name, lambda: self._writer.write(data))

    def finish(self) -> None:
        """Decrypt the last chunk: a download is complete only then."""
        _decrypting(self._name, self._writer.finish)


def _decrypting(name: str, step):
    """Run *step*; a decryption failure becomes a DecryptionError (or a
    MissingKeyError) naming object *name*."""
    failure = None
    try:
        return step()
    except KeyNotConfigured as exc:
        failure = MissingKeyError(str(exc), operation="decryption", name=name)
    except DecryptionFailed as exc:
        failure = DecryptionError(str(exc), operation="decryption", name=name)
    raise failure


def manifest_spans(manifest: list[dict]) -> list[tuple[int, str | None]]:
    """(length, MD5) of each segment of a large object's manifest; the MD5 is
    None where the manifest's hash is not that of the bytes served (a range
    of a segment, or a nested large object)."""
    return [(int(segment["bytes"]) if "range" not in segment else _range_length(segment),
             None if segment.get("sub_slo") or "range" in segment else segment["hash"])
            for segment in manifest]


def _range_length(segment: dict) -> int:
    first, _, last = segment["range"].partition("-")
    return int(last) - int(first) + 1


class _SpanChecker:
    """Checks the MD5 of each span of a byte stream as the bytes arrive: the
    whole object, or each segment of a large object."""

    def __init__(self, spans: list[tuple[int, str | None]], name: str,
                 headers: Mapping[str, str]) -> None:
        self._spans, self._name, self._headers = spans, name, headers
        self._index, self._filled = 0, 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._index >= len(self._spans):
                raise self._mismatch("more bytes than the object has")
            length = self._spans[self._index][0]
            taken = min(len(view), length - self._filled)
            self._md5.update(view[:taken])
            self._filled += taken
            view = view[taken:]
            if self._filled == length:
                self._end_span()

    def finish(self) -> None:
        """Check the spans not ended yet (empty ones); all must have been received."""
        while self._index < len(self._spans) and self._spans[self._index][0] == self._filled:
            self._end_span()
        if self._index < len(self._spans):
            raise self._mismatch("fewer bytes than the object has")

    def _end_span(self) -> None:
        expected = self._spans[self._index][1]
        received = self._md5.hexdigest()
        if expected is not None and received != expected:
            where = f"segment {self._index + 1} of {len(self._spans)}: " \
                if len(self._spans) > 1 else ""
            raise self._mismatch(f"{where}received bytes have MD5 {received}, "
                                 f"expected {expected}")
        self._index, self._filled = self._index + 1, 0
        self._md5 = hashlib.md5(usedforsecurity=False)

    def _mismatch(self, message: str) -> ChecksumMismatchError:
        return ChecksumMismatchError(message, operation="download", name=self._name,
                                     transaction_id=self._headers.get("x-trans-id"))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

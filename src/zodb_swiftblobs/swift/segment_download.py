"""The download of a large object: its leaf segments fetched in parallel, each
straight from its container, checked against the MD5 of its manifest entry,
written (decrypted where encrypted) at its offset, resumed with a Range
request after a broken connection."""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, wait
from dataclasses import replace

from swiftclient import client as swift

from ..encryption import Keyring
from .checksums import ContentCheck
from .decryption import cipher_of, decrypting
from .errors import (ChecksumMismatchError, NotFoundError, PermanentSwiftError,
                     SwiftUnavailableError)
from .manifests import expand, segment_bounds, segment_length, segment_md5, split_path
from .objects import StoredObject, stored_object
from .transport import CHUNK_SIZE, MIB, TimeBudget, Transport

log = logging.getLogger(__name__)

# write_at(data, offset): put bytes of the content at their offset
WriteAt = Callable[[bytes, int], None]


class _Stopped(Exception):
    """Another segment failed: this one stops."""


class SegmentDownload:
    """The download of large object *name* whose manifest GET answered
    *headers* and *entries*, written with *write_at*, segments fetched in the
    threads of *executor*, within *budget* (extended by a second per MiB of
    the object when *extend_budget*).  With *check_content*, the whole
    content is also checked against the checksum recorded at upload, if
    any: its segments are then fetched one after the other, to be hashed
    in order."""

    def __init__(self, transport: Transport, name: str, headers: Mapping[str, str],
                 entries: list[dict], write_at: WriteAt, *, budget: TimeBudget,
                 extend_budget: bool, keyring: Keyring | None, executor: Executor,
                 check_content: bool = False) -> None:
        self.transport, self.name, self.headers, self.entries = \
            transport, name, headers, entries
        self.write_at, self.budget, self.extend_budget = write_at, budget, extend_budget
        self.keyring, self.executor = keyring, executor
        self.check_content = check_content
        self.stopped = threading.Event()

    def run(self) -> StoredObject:
        """Fetch, verify and write every segment; what the manifest says of the object."""
        manifest = expand(self.transport, self.entries, name=self.name, operation="download",
                          budget=self.budget)
        if manifest.missing:
            raise self.mismatch(f"its segment {manifest.missing[0]} is missing")
        segments = manifest.segments
        lengths = [segment_length(segment) for segment in segments]
        offsets = list(itertools.accumulate(lengths, initial=0))
        size = offsets[-1]
        if self.extend_budget:
            self.budget.extend(size / MIB)
        stored = replace(stored_object(self.name, self.headers), size=size, content_type=None)
        cipher = cipher_of(self.name, stored.metadata, self.keyring)
        check = ContentCheck(stored.metadata, cipher) if self.check_content else None
        in_order = check is not None and check.recorded is not None
        content_at = _InOrder(check, self.write_at).write_at if in_order else self.write_at
        decryptor = None if cipher is None else cipher.scattered_writer(size, content_at)
        write_at = content_at if decryptor is None else (
            lambda data, offset: decrypting(self.name, lambda: decryptor.write_at(data, offset)))
        if in_order:
            for index, segment in enumerate(segments):
                self._fetch(index, len(segments), segment, offsets[index], write_at)
        else:
            self._wait([self.executor.submit(self._fetch, index, len(segments), segment,
                                             offsets[index], write_at)
                        for index, segment in enumerate(segments)])
        if decryptor is not None:
            decrypting(self.name, decryptor.finish)
        problem = check.problem() if in_order else None
        if problem is not None:
            raise self.mismatch(problem)
        return stored

    def _wait(self, futures: list[Future]) -> None:
        """Wait for every segment; on the first failure (or an interruption)
        stop the others, wait until none is running, and raise it."""
        try:
            done, running = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            self._stop(futures)
            raise
        if running or any(future.exception() for future in done):
            self._stop(futures)
            raise next(future.exception() for future in futures
                       if not future.cancelled() and future.exception() is not None
                       and not isinstance(future.exception(), _Stopped))

    def _stop(self, futures: list[Future]) -> None:
        self.stopped.set()
        for future in futures:
            future.cancel()
        wait(futures)

    def _fetch(self, index: int, count: int, segment: dict, offset: int,
               write_at: WriteAt) -> None:
        """Fetch segment *index* (of *count*), written from *offset* of the content."""
        container, object_name = split_path(segment["name"])
        fetch = _SegmentFetch(self, container, object_name, segment, offset, write_at)
        try:
            self.transport.call("download", self.name, fetch.attempt, budget=self.budget)
        except NotFoundError:
            raise self.mismatch(f"its segment {segment['name']} is missing") from None
        except PermanentSwiftError as exc:
            if exc.status != 416:
                raise
            raise self.mismatch(f"its segment {segment['name']} is shorter than its "
                                 "manifest says") from None
        where = f"segment {index + 1} of {count}"
        if fetch.received != fetch.length:
            raise self.mismatch(f"{where}: received {fetch.received} bytes, "
                                 f"expected {fetch.length}")
        expected, received = segment_md5(segment), fetch.md5.hexdigest()
        if expected is not None and received != expected:
            raise self.mismatch(f"{where}: received bytes have MD5 {received}, "
                                 f"expected {expected}")

    def mismatch(self, message: str,
                  headers: Mapping[str, str] | None = None) -> ChecksumMismatchError:
        """The error for content that is not what the manifest says."""
        return ChecksumMismatchError(message, operation="download", name=self.name,
                                     transaction_id=(headers or self.headers).get("x-trans-id"))


class _InOrder:
    """Writes content that arrives in order with *write_at*, hashing it for *check*."""

    def __init__(self, check: ContentCheck, write_at: WriteAt) -> None:
        self._check, self._write_at, self._position = check, write_at, 0

    def write_at(self, data: bytes, offset: int) -> None:
        """Write *data*, the content from *offset* (where the last write ended)."""
        if offset != self._position:
            raise AssertionError(f"content at {offset}, expected at {self._position}")
        self._check.update(data)
        self._write_at(data, offset)
        self._position += len(data)


class _SegmentFetch:
    """What one segment's attempts have received so far."""

    def __init__(self, download: SegmentDownload, container: str, object_name: str,
                 segment: dict, offset: int, write_at: WriteAt) -> None:
        self.download, self.container, self.object_name = download, container, object_name
        self.first, last = segment_bounds(segment)
        self.length = last - self.first + 1
        self.whole = "range" not in segment
        self.offset, self.write_at = offset, write_at
        self.received = 0
        self.etag: str | None = None
        self.md5 = hashlib.md5(usedforsecurity=False)

    def attempt(self, url: str, token: str, http: tuple) -> None:
        """Request the segment's bytes from where the last attempt stopped, and take them."""
        if self.download.stopped.is_set():
            raise _Stopped()
        if self.received == self.length:
            return
        start = self.first + self.received
        ranged = start or not self.whole
        headers = {"Range": f"bytes={start}-{self.first + self.length - 1}"} if ranged else {}
        if self.received:
            log.debug("resuming download of %r at byte %d", self.download.name,
                      self.offset + self.received)
        response_headers, body = swift.get_object(
            url, token, self.container, self.object_name, http_conn=http,
            resp_chunk_size=CHUNK_SIZE, headers=headers)
        try:
            skip = self._accept(response_headers, start if ranged else 0)
            self._receive(body, skip, response_headers)
        finally:
            body.close()

    def _accept(self, headers: Mapping[str, str], start: int) -> int:
        """How many bytes of this response to skip (a Range ignored: all
        those before *start*); ChecksumMismatchError when the segment changed."""
        etag = headers.get("etag", "").strip('"')
        if self.etag is not None and etag != self.etag:
            raise self.download.mismatch("a segment changed during the download", headers)
        self.etag = etag
        content_range = headers.get("content-range")
        if content_range is None:
            return start
        if not content_range.startswith(f"bytes {start}-"):
            raise self.download.mismatch(f"asked for bytes from {start}, received "
                                          f"{content_range}", headers)
        return 0

    def _receive(self, body, skip: int, headers: Mapping[str, str]) -> None:
        budget = self.download.budget
        for chunk in body:
            if skip:
                chunk, skip = chunk[skip:], max(0, skip - len(chunk))
            chunk = chunk[:self.length - self.received]
            self.md5.update(chunk)
            self.write_at(chunk, self.offset + self.received)
            self.received += len(chunk)
            if self.download.stopped.is_set():
                raise _Stopped()
            if budget.remaining() <= 0:
                raise SwiftUnavailableError(
                    f"deadline of {budget.seconds:.0f}s exceeded in segment {self.object_name}",
                    operation="download", name=self.download.name,
                    transaction_id=headers.get("x-trans-id"))

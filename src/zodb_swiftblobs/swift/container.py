"""SwiftContainer: reading and writing the objects of one Swift container."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import itertools
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from urllib.parse import quote, unquote, urlencode, urlparse, urlunparse

from swiftclient import client as swift
from swiftclient.exceptions import ClientException
from swiftclient.utils import generate_temp_url

from ..encryption import DecryptionFailed, Keyring, KeyNotConfigured, ObjectCipher, keyring_from
from ..names import SEGMENT_CONTAINER_SUFFIX, check_container
from .auth import Credentials
from .errors import (ChecksumMismatchError, DecryptionError, DownloadRestart, LocalFileFailure,
                     MissingKeyError, NotFoundError, NotLargeObject, PermanentSwiftError,
                     SendTimeUp, SwiftError, SwiftUnavailableError)
from .transport import CHUNK_SIZE, MIB, TimeBudget, Transport, raise_for_bulk_result

log = logging.getLogger(__name__)

GIB = 1 << 30
BULK_TIMEOUT = 60.0  # above the bulk middleware's 10 s keep-alive interval
UPLOAD_ATTEMPTS = 3  # uploads whose stored bytes differ from those sent are sent again
TEMP_URL_METHODS = ("GET", "HEAD")  # blob revisions are immutable: no signed writes
TEMP_URL_KEY_HEADERS = ("x-container-meta-temp-url-key", "x-container-meta-temp-url-key-2")
ACCOUNT_TEMP_URL_KEY_HEADERS = ("x-account-meta-temp-url-key", "x-account-meta-temp-url-key-2")
METADATA_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
ENCRYPTION_METADATA = "Swiftblobs-Encryption"  # the parameters of an encrypted object
# The content-type parameter marking an object scheduled for deletion (its
# value: when), so that container listings show the schedule.
DELETION_MARK = "zodb-swiftblobs-delete-at"
# Headers an object POST replaces besides X-Object-Meta-*: sent again with it.
POST_REPLACED_HEADERS = ("content-disposition", "content-encoding", "content-language",
                         "cache-control", "expires", "x-robots-tag")



@dataclass(frozen=True)
class StoredObject:
    """An object in Swift, as listed, uploaded or downloaded.  ``size`` and
    ``md5`` are those of the bytes in Swift (for an encrypted object, of its
    ciphertext)."""

    name: str
    size: int
    md5: str | None = None
    large: bool = False
    last_modified: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delete_at: int | None = None  # when Swift deletes it (X-Delete-At), if scheduled

    @property
    def marked_for_deletion(self) -> int | None:
        """When its content type (as a listing shows it) says it is scheduled
        for deletion (see :meth:`SwiftContainer.schedule_deletion`)."""
        return deletion_mark(self.content_type)


# -- the access layer --------------------------------------------------------

class SwiftContainer:
    """Read and write the objects of one Swift container.

    *deadline* bounds every operation, retries included (seconds); transfers
    get one more second per MiB of body.  *timeout* bounds each socket
    operation.  Files larger than *large_object_threshold* (by default 1 GiB,
    and never more than the cluster's ``max_file_size``) are uploaded as Static
    Large Objects in *segment_size* pieces, *segment_concurrency* at a time,
    to the container ``<container>_segments``.  Object names are never reused
    by this package; uploading over an existing large object leaves its old
    segments behind.

    With an *encryption* keyring, uploads are encrypted with its first key
    (see :mod:`zodb_swiftblobs.encryption`; the parameters go in the object's
    metadata) and encrypted objects are decrypted as they are downloaded;
    objects without that metadata are read as they are.
    """

    def __init__(self, credentials: Credentials, container: str, *,
                 storage_policy: str | None = None,
                 deadline: float = 60.0, timeout: float = 10.0,
                 initial_backoff: float = 0.25, max_backoff: float = 8.0,
                 large_object_threshold: int | None = None,
                 segment_size: int = 256 * MIB, segment_concurrency: int = 4,
                 cacert: str | None = None, insecure: bool = False,
                 encryption: Keyring | None = None) -> None:
        check_settings(container, deadline=deadline, timeout=timeout,
                       initial_backoff=initial_backoff, max_backoff=max_backoff,
                       large_object_threshold=large_object_threshold,
                       segment_size=segment_size, segment_concurrency=segment_concurrency,
                       cacert=cacert, insecure=insecure)
        self.credentials = credentials
        self.container = container
        self.segment_container = f"{container}{SEGMENT_CONTAINER_SUFFIX}"
        self.storage_policy = storage_policy
        self._large_object_threshold = large_object_threshold
        self.segment_size = segment_size
        self.segment_concurrency = segment_concurrency
        self.encryption = encryption
        if insecure:
            log.warning("TLS certificate verification is disabled for Swift (insecure=True)")
        self.transport = Transport(credentials, deadline=deadline, timeout=timeout,
                                   initial_backoff=initial_backoff, max_backoff=max_backoff,
                                   cacert=cacert, insecure=insecure)
        self._lock = threading.Lock()
        self._info: dict | None = None
        self._containers_ready: set[str] = set()
        self._segment_pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        encrypted = f", encrypted ({self.encryption!r})" if self.encryption else ""
        return f"<SwiftContainer {self.container!r} via {self.credentials.describe()}{encrypted}>"

    @property
    def deadline(self) -> float:
        """Seconds an operation may take, retries included (transfers: more)."""
        return self.transport.deadline

    @property
    def timeout(self) -> float:
        """Seconds each socket operation may take."""
        return self.transport.timeout

    def close(self) -> None:
        """Close every thread's connection and the segment upload pool."""
        with self._lock:
            pool, self._segment_pool = self._segment_pool, None
        self.transport.close()
        if pool:
            pool.shutdown(wait=True)

    # -- cluster and container ----------------------------------------------------

    def info(self) -> dict:
        """The cluster's capabilities (``GET /info``), fetched once; empty when the
        cluster does not publish them (Swift's defaults are assumed then)."""
        if self._info is None:
            def get(url, token, http):
                parsed = urlparse(url)
                root = re.sub(r"/v1(/.*)?$", "", parsed.path)
                info_url = urlunparse((parsed.scheme, parsed.netloc, f"{root}/info", "", "", ""))
                return swift.get_capabilities((urlparse(info_url), http[1]))
            try:
                self._info = self.transport.call("info", "", get)
            except PermanentSwiftError as exc:
                if exc.status not in (403, 404):
                    raise
                log.warning("the Swift cluster does not publish /info; assuming its defaults")
                self._info = {}
            except NotFoundError:
                log.warning("the Swift cluster does not publish /info; assuming its defaults")
                self._info = {}
        return self._info

    @property
    def max_file_size(self) -> int:
        return int(self.info().get("swift", {}).get("max_file_size", 5 * GIB + 2))

    @property
    def large_object_threshold(self) -> int:
        """Files larger than this are uploaded as Static Large Objects."""
        info, limit = self.info(), self.max_file_size
        if info and "slo" not in info:
            return limit
        return min(self._large_object_threshold or GIB, limit)

    def ensure_container(self, container: str | None = None, *, create: bool = True) -> None:
        """Create the container (with the storage policy) unless it exists;
        with *create* false, raise NotFoundError if it does not."""
        container = container or self.container
        if container in self._containers_ready:
            return
        try:
            headers = self.transport.call("container check", container,
                                 lambda u, t, h: swift.head_container(u, t, container,
                                                                      http_conn=h))
            policy = headers.get("x-storage-policy")
            if self.storage_policy and policy and policy != self.storage_policy:
                log.warning("container %r uses storage policy %r, not the configured %r",
                            container, policy, self.storage_policy)
        except NotFoundError:
            if not create:
                raise
            headers = {"X-Storage-Policy": self.storage_policy} if self.storage_policy else {}
            self.transport.call("container create", container,
                       lambda u, t, h: swift.put_container(u, t, container, headers=headers,
                                                           http_conn=h))
            log.info("created Swift container %r", container)
        self._containers_ready.add(container)

    # -- single objects ---------------------------------------------------------

    def put_bytes(self, name: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store *data* as object *name* as it is (never encrypted: for small
        control objects).  With *if_absent*, an existing object is left alone
        and PermanentSwiftError with status 412 raised."""
        headers = {"If-None-Match": "*"} if if_absent else {}
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        etag = self._put_creating_container(self.container, name, lambda u, t, h: (
            swift.put_object(u, t, self.container, name, data, content_length=len(data),
                             headers=headers, http_conn=h)), self.transport.budget())
        if etag != md5:
            raise ChecksumMismatchError(f"Swift stored bytes with MD5 {etag}, sent {md5}",
                                        operation="upload", name=name)

    def get_bytes(self, name: str) -> bytes:
        """The content of small object *name* as stored (NotFoundError if absent)."""
        _, body = self.transport.call("download", name, lambda u, t, h: swift.get_object(
            u, t, self.container, name, http_conn=h))
        return body

    def head(self, name: str, *, deadline: float | None = None) -> StoredObject:
        """Size, checksum and metadata of an object; NotFoundError if absent."""
        headers = self.transport.call("head", name, lambda u, t, h: swift.head_object(
            u, t, self.container, name, http_conn=h), deadline=deadline)
        return _stored_object(name, headers)

    def upload(self, name: str, path: str, *, metadata: Mapping[str, str] | None = None,
               deadline: float | None = None) -> StoredObject:
        """Upload the file at *path* as object *name*, streamed and MD5-checked.

        Metadata keys are letters, digits and dashes (case-insensitive); values
        are ASCII.
        """
        headers = _metadata_headers(metadata)
        cipher = self.encryption.new_cipher() if self.encryption else None
        if cipher is not None:
            headers.update(_metadata_headers({ENCRYPTION_METADATA: cipher.header}))
        source = _Source(path, os.path.getsize(path), cipher)
        size = source.size
        limit = self.transport.budget(deadline, size)
        if size > self.large_object_threshold:
            return self._upload_large(name, source, size, headers, limit)
        md5 = self._put_file(self.container, name, source, 0, size, headers, limit)
        return StoredObject(name, size, md5, False, None, _metadata_of(headers))

    def _put_file(self, container: str, name: str, source: _Source, offset: int,
                  length: int, headers: dict[str, str], limit: TimeBudget) -> str:
        """PUT *length* bytes of *source* from *offset*; return their MD5.

        The MD5 is computed from the bytes as they are sent (one read of the
        file) and compared with the ETag Swift computed from the bytes it
        stored.  On a mismatch (bytes damaged on the way) the object is
        deleted and sent again, UPLOAD_ATTEMPTS times at most; then
        ChecksumMismatchError is raised.
        """
        def put(url, token, http):
            with source.open() as f:
                body = _UploadBody(f, offset, length, limit)
                etag = swift.put_object(url, token, container, name, body,
                                        content_length=length, headers=headers,
                                        chunk_size=CHUNK_SIZE, http_conn=http)
            return etag, body.md5() or source.md5(offset, length)
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            etag, md5 = self._put_creating_container(container, name, put, limit)
            if etag == md5:
                return md5
            log.warning("Swift stored other bytes than those sent for %r (MD5 %s, sent %s); "
                        "%s", name, etag, md5,
                        "sending it again" if attempt < UPLOAD_ATTEMPTS else "giving up")
            with contextlib.suppress(SwiftError):
                self._delete_one(container, name, None)
        raise ChecksumMismatchError(
            f"Swift stored bytes with MD5 {etag}, the file's are {md5} "
            f"({UPLOAD_ATTEMPTS} attempts)", operation="upload", name=name)

    def _put_creating_container(self, container: str, name: str, put, limit: TimeBudget):
        try:
            return self.transport.call("upload", name, put, deadline=limit)
        except NotFoundError:
            self._containers_ready.discard(container)
        self.ensure_container(container)
        return self.transport.call("upload", name, put, deadline=limit)

    def download(self, name: str, path: str, *, deadline: float | None = None) -> StoredObject:
        """Stream object *name* into the file *path*; verify length and checksum.

        The bytes go to a temporary file beside *path*, renamed to *path* once
        verified.  A broken connection resumes with a Range request.
        """
        directory, base = os.path.split(os.path.abspath(path))
        descriptor, partial = tempfile.mkstemp(dir=directory, prefix=f".{base}.",
                                               suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as out:
                stored = self._stream(name, out, deadline)
            os.replace(partial, path)
            return stored
        except BaseException:
            _remove(partial)
            raise

    def check(self, name: str, *, deadline: float | None = None) -> StoredObject:
        """Read object *name* through, keeping nothing; verify length and checksum
        (ChecksumMismatchError when they do not match)."""
        return self._stream(name, _Discard(), deadline)

    def _stream(self, name: str, out, deadline: float | None) -> StoredObject:
        """Stream object *name* into *out* (write, seek and truncate); verify it.

        A plain object is checked against its ETag.  For a large object the
        first request returns its manifest instead (``multipart-manifest=get``
        is ignored by plain objects, so no HEAD is needed to tell them apart),
        and each segment's bytes are checked against the MD5 in the manifest.
        """
        state: dict = {}
        limit = self.transport.budget(deadline)

        def restart(same_object: bool = False):
            """Start over at byte 0 (the manifest is kept for *same_object*)."""
            out.seek(0)
            out.truncate()
            spans = state.get("spans") if same_object else None
            state.update(written=0, first=None, spans=spans, checker=None, sink=None)

        restart()
        extended = False

        def get(url, token, http):
            nonlocal extended
            if state["first"] and state["written"] >= _stored_object(name, state["first"]).size:
                return
            headers = {"Range": f"bytes={state['written']}-"} if state["written"] else {}
            query = None if state["spans"] is not None else "multipart-manifest=get"
            try:
                response_headers, body = swift.get_object(
                    url, token, self.container, name, http_conn=http, query_string=query,
                    resp_chunk_size=CHUNK_SIZE, headers=headers)
            except ClientException as exc:
                if exc.http_status != 416 or not state["written"]:
                    raise
                restart()  # the object shrank under us
                raise DownloadRestart() from None
            try:
                if state["spans"] is None and _is_large(response_headers):
                    state["spans"] = _manifest_spans(json.loads(b"".join(body)))
                    raise DownloadRestart()  # now its content
                self._check_resumed(response_headers, state, restart)
                if state["checker"] is None:
                    stored = _stored_object(name, response_headers)
                    spans = state["spans"] or [(stored.size, stored.md5)]
                    state["checker"] = _SpanChecker(spans, name, response_headers)
                    state["sink"] = self._sink(name, stored.metadata, out)
                if not extended and deadline is None:
                    limit.extend(int(response_headers.get("content-length", 0)) / MIB)
                    extended = True
                if state["written"]:
                    log.debug("resuming download of %r at byte %d", name, state["written"])
                checker, sink = state["checker"], state["sink"]
                for chunk in body:
                    sink.write(chunk)
                    checker.update(chunk)
                    state["written"] += len(chunk)
                    if limit.remaining() <= 0:
                        raise SwiftUnavailableError(
                            f"deadline of {limit.seconds:.0f}s exceeded after "
                            f"{state['written']} bytes", operation="download", name=name)
            finally:
                body.close()

        self.transport.call("download", name, get, deadline=limit)
        stored = _stored_object(name, state["first"])
        if state["written"] != stored.size:
            raise ChecksumMismatchError(
                f"received {state['written']} bytes, expected {stored.size}",
                operation="download", name=name,
                transaction_id=state["first"].get("x-trans-id"))
        state["checker"].finish()
        if state["sink"] is not out:
            state["sink"].finish()
        return stored

    def cipher_of(self, name: str, metadata: Mapping[str, str]) -> ObjectCipher | None:
        """The cipher of object *name* from its *metadata* (None for a plain
        object).  MissingKeyError when its key is not configured,
        DecryptionError when its encryption metadata is malformed."""
        header = _encryption_header(metadata)
        if header is None:
            return None
        if self.encryption is None:
            key = header.split()[1] if len(header.split()) > 1 else "?"
            raise MissingKeyError(f"it is encrypted (key id {key}) and no encryption key is "
                                  "configured", operation="decryption", name=name)
        return _decrypting(name, lambda: self.encryption.cipher_for(header))

    def _sink(self, name: str, metadata: Mapping[str, str], out):
        """Where a download's bytes go: *out*, or a decrypting writer into it."""
        cipher = self.cipher_of(name, metadata)
        return out if cipher is None else _DecryptingSink(name, cipher, out)

    @staticmethod
    def _check_resumed(headers: Mapping[str, str], state: dict, restart) -> None:
        """Accept a (resumed) response, or restart when it is not what was asked for."""
        if state["first"] is None:
            state["first"] = headers
            return
        if headers.get("etag") != state["first"].get("etag"):
            restart()
            raise DownloadRestart()
        content_range = headers.get("content-range")
        if content_range is None:
            restart(same_object=True)  # the Range was ignored: this body starts at byte 0
            state["first"] = headers
        elif not content_range.startswith(f"bytes {state['written']}-"):
            restart()
            raise DownloadRestart()

    def copy(self, source: str, destination: str, *,
             deadline: float | None = None) -> StoredObject:
        """Copy object *source* to *destination* inside Swift (no bytes travel here).

        A large object gets copies of its segments, so that deleting either
        object never breaks the other.  A copy of an object scheduled for
        deletion is not (Swift would copy the schedule).
        """
        stored = self.head(source, deadline=deadline)
        limit = self.transport.budget(deadline, stored.size)
        if not stored.large:
            self.transport.call("copy", source, lambda u, t, h: swift.copy_object(
                u, t, self.container, source, destination=f"/{self.container}/{destination}",
                http_conn=h), deadline=limit)
            self._unschedule_copy(stored, destination)
            return replace(stored, name=destination)
        _, body = self.transport.call("copy", source, lambda u, t, h: swift.get_object(
            u, t, self.container, source, query_string="multipart-manifest=get",
            http_conn=h), deadline=limit)
        segments = json.loads(body)
        prefix = f"{destination}/{uuid.uuid4().hex}/"
        pool = self._segment_executor()
        futures = [pool.submit(self._copy_segment, segment["name"], f"{prefix}{index:08d}",
                               limit)
                   for index, segment in enumerate(segments)]
        try:
            for future in futures:
                future.result()
            manifest = [{"path": f"/{self.segment_container}/{prefix}{index:08d}",
                         "etag": segment["hash"], "size_bytes": segment["bytes"]}
                        for index, segment in enumerate(segments)]
            manifest_body = json.dumps(manifest).encode()
            headers = _metadata_headers(stored.metadata)
            self.transport.call("copy", destination, lambda u, t, h: swift.put_object(
                u, t, self.container, destination, manifest_body,
                content_length=len(manifest_body), headers=headers,
                query_string="multipart-manifest=put", http_conn=h), deadline=limit)
        except BaseException:
            for future in futures:
                future.cancel()
            self._remove_segments(destination, [f"{prefix}{i:08d}" for i, f in
                                                enumerate(futures) if not f.cancelled()])
            raise
        self._unschedule_copy(stored, destination)
        return replace(stored, name=destination)

    def _copy_segment(self, source_path: str, segment: str, limit: TimeBudget) -> None:
        container, _, name = source_path.lstrip("/").partition("/")
        self.transport.call("segment copy", segment, lambda u, t, h: swift.copy_object(
            u, t, container, name, destination=f"/{self.segment_container}/{segment}",
            http_conn=h), deadline=limit)

    def delete(self, name: str, *, large: bool | None = None,
               deadline: float | None = None) -> bool:
        """Delete an object, and its segments if it is a large object.

        *large* says whether it is one; when unknown (None) a large-object
        delete is tried first.  Returns False if the object was absent.
        """
        try:
            if large is not False:
                try:
                    self.transport.call("delete", name, lambda u, t, h: self._delete_large(name, t, h),
                               deadline=deadline, timeout=max(self.timeout, BULK_TIMEOUT))
                    return True
                except NotLargeObject:
                    pass
            self.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                u, t, self.container, name, http_conn=h), deadline=deadline)
        except NotFoundError:
            return False
        return True

    def _delete_large(self, name: str, token: str, http) -> None:
        path = f"{http[0].path}/{quote(self.container)}/{quote(name)}"
        http[1].request("DELETE", f"{path}?multipart-manifest=delete",
                        headers={"X-Auth-Token": token, "Accept": "application/json"})
        result = raise_for_bulk_result(http[1].getresponse())
        if result.get("Number Not Found") and not result.get("Number Deleted"):
            raise ClientException("not found", http_status=404)

    # -- large objects ------------------------------------------------------------

    def _segment_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._segment_pool is None:
                self._segment_pool = ThreadPoolExecutor(
                    self.segment_concurrency, thread_name_prefix="swift-segment")
            return self._segment_pool

    def _upload_large(self, name: str, source: _Source, size: int, headers: dict[str, str],
                      limit: TimeBudget) -> StoredObject:
        slo = self.info().get("slo", {})
        max_segments = int(slo.get("max_manifest_segments", 1000))
        segment_size = min(max(self.segment_size, math.ceil(size / max_segments),
                               int(slo.get("min_segment_size", 1))), self.max_file_size)
        self.ensure_container(self.segment_container)
        prefix = f"{name}/{uuid.uuid4().hex}/"
        ranges = [(offset, min(segment_size, size - offset))
                  for offset in range(0, size, segment_size)]
        pool = self._segment_executor()
        futures = [pool.submit(self._upload_segment, f"{prefix}{index:08d}", source,
                               offset, length, limit)
                   for index, (offset, length) in enumerate(ranges)]
        manifest_sent = False
        try:
            manifest = [future.result() for future in futures]
            body = json.dumps(manifest).encode()
            manifest_sent = True
            self._put_creating_container(self.container, name, lambda u, t, h: swift.put_object(
                u, t, self.container, name, body, content_length=len(body),
                headers=headers, query_string="multipart-manifest=put", http_conn=h),
                limit)
        except BaseException as exc:
            for future in futures:
                future.cancel()
            written = [f"{prefix}{i:08d}" for i, f in enumerate(futures) if not f.cancelled()]
            for future in futures:
                if not future.cancelled():
                    future.exception()
            if manifest_sent and isinstance(exc, SwiftUnavailableError):
                stored = self._manifest_stored(name, prefix, limit)
                if stored:
                    return StoredObject(name, size, None, True, None, _metadata_of(headers))
                if stored is None:
                    raise  # unknown: keep the segments rather than break a stored manifest
            self._remove_segments(name, written)
            raise
        log.debug("uploaded %r as a large object of %d segments", name, len(ranges))
        return StoredObject(name, size, None, True, None, _metadata_of(headers))

    def examine_large_object(self, name: str) -> tuple[str | None, int | None]:
        """What is wrong with large object *name* (a segment missing, or of
        another size than its manifest says; None when all is in place), and
        when Swift deletes the first of its segments scheduled for deletion
        (None: none is), which its manifest need not show."""
        problem, deletions = None, []
        for segment in self._manifest(name):
            segment_problem, delete_at = self._segment_state(segment)
            problem = problem or segment_problem
            if delete_at is not None:
                deletions.append(delete_at)
        return problem, min(deletions, default=None)

    def holds_file(self, name: str, path: str, stored: StoredObject | None = None) -> bool:
        """Whether object *name* holds exactly the content of the file at *path*,
        told without downloading it: by the MD5 of a plain object, or of each
        segment of a large object (every segment must be in place).

        *stored* is what a listing or a HEAD says of the object (a HEAD is
        made when it is not given, or when encryption is configured and it
        came from a listing).  An encrypted object is compared by encrypting
        the file again with its key and salt, which gives the same bytes when
        the content is the same; one whose key is not configured never holds
        the file.
        """
        if stored is None or (self.encryption is not None and not stored.metadata):
            try:
                stored = self.head(name)
            except NotFoundError:
                return False
        try:
            cipher = self.cipher_of(name, stored.metadata)
        except DecryptionError:
            return False
        source = _Source(path, os.path.getsize(path), cipher)
        if stored.size != source.size:
            return False
        if not stored.large:
            return stored.md5 is not None and stored.md5 == source.md5(0, source.size)
        segments = self._manifest(name)
        offsets = list(itertools.accumulate((int(s["bytes"]) for s in segments), initial=0))
        if offsets[-1] != source.size:
            return False

        def matches(index: int) -> bool:
            segment = segments[index]
            return self._segment_problem(segment) is None and \
                source.md5(offsets[index], int(segment["bytes"])) == segment["hash"]
        return all(self._segment_executor().map(matches, range(len(segments))))

    def segment_groups(self, name: str) -> set[str]:
        """The segment name prefixes (``<name>/<upload id>/``, in the segment
        container) that the manifest of large object *name* refers to; empty
        when there is no such object."""
        try:
            segments = self._manifest(name)
        except NotFoundError:
            return set()
        container_path = f"/{self.segment_container}/"
        return {segment["name"][len(container_path):].rsplit("/", 1)[0] + "/"
                for segment in segments if segment["name"].startswith(container_path)}

    def _manifest(self, name: str) -> list[dict]:
        _, body = self.transport.call("manifest", name, lambda u, t, h: swift.get_object(
            u, t, self.container, name, query_string="multipart-manifest=get", http_conn=h))
        return json.loads(body)

    def _segment_problem(self, segment: dict) -> str | None:
        return self._segment_state(segment)[0]

    def _segment_state(self, segment: dict) -> tuple[str | None, int | None]:
        """What is wrong with a manifest's *segment* (None: nothing), and when
        Swift deletes it (None: not scheduled)."""
        container, _, segment_name = segment["name"].lstrip("/").partition("/")
        try:
            headers = self._head_in(container, segment_name)
        except NotFoundError:
            return f"its segment {segment['name']} is missing", None
        delete_at = int(headers["x-delete-at"]) if headers.get("x-delete-at") else None
        size = int(headers.get("content-length", -1))
        if size != int(segment["bytes"]):
            return (f"its segment {segment['name']} has {size} bytes, its manifest "
                    f"says {segment['bytes']}"), delete_at
        return None, delete_at

    def _manifest_stored(self, name: str, prefix: str, limit: TimeBudget) -> bool | None:
        """Whether the manifest of this upload (segment *prefix*) is in Swift;
        None when that cannot be told within what is left of *limit* (one
        attempt when nothing is)."""
        try:
            _, body = self.transport.call("manifest check", name, lambda u, t, h: swift.get_object(
                u, t, self.container, name, query_string="multipart-manifest=get",
                http_conn=h), deadline=max(0.0, limit.remaining()))
            segments = json.loads(body)
        except NotFoundError:
            return False
        except (SwiftError, ValueError):
            return None
        first = segments[0].get("name", "") if segments else ""
        return first.startswith(f"/{self.segment_container}/{prefix}")

    def _remove_segments(self, name: str, segments: list[str]) -> None:
        try:
            self.delete_many(segments, container=self.segment_container)
        except Exception as exc:
            log.warning("could not remove the segments of failed upload %r: %s", name, exc)

    def _upload_segment(self, segment: str, source: _Source, offset: int, length: int,
                        limit: TimeBudget) -> dict:
        md5 = self._put_file(self.segment_container, segment, source, offset, length, {},
                             limit)
        return {"path": f"/{self.segment_container}/{segment}", "etag": md5,
                "size_bytes": length}

    # -- scheduled deletion ----------------------------------------------------------

    def schedule_deletion(self, name: str, after: float, *,
                          container: str | None = None) -> int | None:
        """Have Swift delete object *name* of *container* (by default this
        one; a large object with its segments) *after* seconds from now
        (X-Delete-At), unless it is scheduled already: then return when (None:
        scheduled now).  The object keeps its metadata
        (a POST replaces it: it is sent again) and its content type gets the
        DELETION_MARK parameter, which listings show.  A large object is
        marked first, its segments after: a schedule cut short (a failure, a
        process killed) always shows on the object, and cancelling it cancels
        whatever part of it was done."""
        container = container or self.container
        at = math.ceil(time.time() + after)
        headers = self._head_in(container, name)
        if headers.get("x-delete-at"):
            return int(headers["x-delete-at"])
        self._post_deletion(container, name, headers, at)
        if _is_large(headers):
            for segment_container, segment in self._segment_paths(name):
                segment_headers = self._head_in(segment_container, segment)
                if not segment_headers.get("x-delete-at"):
                    self._post_deletion(segment_container, segment, segment_headers, at)
        return None

    def cancel_deletion(self, name: str) -> bool:
        """Cancel the scheduled deletion of object *name* and of its segments
        (first: its mark stays until all are safe); whether any was scheduled.
        NotFoundError when it is gone."""
        headers = self._head_in(self.container, name)
        cancelled = False
        if _is_large(headers):
            for container, segment in self._segment_paths(name):
                segment_headers = self._head_in(container, segment)
                if segment_headers.get("x-delete-at"):
                    self._post_deletion(container, segment, segment_headers, None)
                    cancelled = True
        if headers.get("x-delete-at") or deletion_mark(headers.get("content-type")):
            self._post_deletion(self.container, name, headers, None)
            cancelled = True
        return cancelled

    def deletion_scheduled(self, name: str) -> int | None:
        """When Swift deletes object *name* or (the earliest) one of its
        segments; None when none is scheduled.  NotFoundError when it is gone."""
        headers = self._head_in(self.container, name)
        times = [int(headers["x-delete-at"])] if headers.get("x-delete-at") else []
        if _is_large(headers):
            for container, segment in self._segment_paths(name):
                segment_headers = self._head_in(container, segment)
                if segment_headers.get("x-delete-at"):
                    times.append(int(segment_headers["x-delete-at"]))
        return min(times, default=None)

    def _unschedule_copy(self, source: StoredObject, copy: str) -> None:
        """Cancel the deletion schedule that object *copy* got from *source*."""
        if source.delete_at is not None or source.marked_for_deletion is not None:
            self.cancel_deletion(copy)

    def _head_in(self, container: str, name: str) -> Mapping[str, str]:
        return self.transport.call("head", name, lambda u, t, h: swift.head_object(
            u, t, container, name, http_conn=h))

    def _segment_paths(self, name: str) -> list[tuple[str, str]]:
        """(container, name) of each segment of large object *name*."""
        return [tuple(segment["name"].lstrip("/").split("/", 1))
                for segment in self._manifest(name)]

    def _post_deletion(self, container: str, name: str, headers: Mapping[str, str],
                       at: int | None) -> None:
        """Schedule the deletion of an object at *at* (None: cancel it) with a
        POST that keeps what its *headers* (of a HEAD) say."""
        content_type = _without_deletion_mark(headers.get("content-type")
                                              or "application/octet-stream")
        post = {key: value for key, value in headers.items()
                if key.lower().startswith("x-object-meta-")
                or key.lower() in POST_REPLACED_HEADERS}
        if at is None:
            post.update({"X-Remove-Delete-At": "1", "Content-Type": content_type})
        else:
            post.update({"X-Delete-At": str(at),
                         "Content-Type": f"{content_type};{DELETION_MARK}={at}"})
        self.transport.call("deletion schedule", name, lambda u, t, h: swift.post_object(
            u, t, container, name, headers=post, http_conn=h))

    # -- temporary URLs ---------------------------------------------------------------

    def temp_url_key(self) -> str | None:
        """The container's TempURL key, else the account's; None when neither is set.

        Set one with ``swift post -m Temp-URL-Key:<key> <container>`` (container)
        or ``swift post -m Temp-URL-Key:<key>`` (account).
        """
        headers = self.transport.call("container check", self.container, lambda u, t, h:
                             swift.head_container(u, t, self.container, http_conn=h))
        for header in TEMP_URL_KEY_HEADERS:
            if headers.get(header):
                return headers[header]
        headers = self.transport.call("account check", "", lambda u, t, h:
                             swift.head_account(u, t, http_conn=h))
        for header in ACCOUNT_TEMP_URL_KEY_HEADERS:
            if headers.get(header):
                return headers[header]
        return None

    def temp_url(self, name: str, *, key: str, method: str = "GET", seconds: int = 3600,
                 filename: str | None = None) -> str:
        """An absolute TempURL giving *method* access to object *name* for *seconds*.

        With *filename*, Swift answers with ``Content-Disposition: attachment``
        under that name.  Only GET and HEAD are signed.
        """
        method = method.upper()
        if method not in TEMP_URL_METHODS:
            raise ValueError(f"temporary URLs are for {' and '.join(TEMP_URL_METHODS)} "
                             f"only, not {method}: stored blob revisions never change")
        if self.encryption is not None and _encryption_header(self.head(name).metadata):
            raise PermanentSwiftError("it is encrypted, and a temporary URL would serve its "
                                      "ciphertext", operation="temporary URL", name=name)
        if not isinstance(seconds, int) or seconds <= 0:
            raise ValueError(f"a temporary URL needs a positive number of seconds, "
                             f"not {seconds!r}")
        url, _ = self.transport.call("authentication", "", lambda u, t, h: (u, t))
        parsed = urlparse(url)
        # Swift signs the path as it reads it, unquoted; the URL carries it quoted.
        path = f"{unquote(parsed.path).rstrip('/')}/{self.container}/{name}"
        query = generate_temp_url(path, seconds, key, method, digest="sha256")[len(path):]
        if filename:
            query += "&" + urlencode({"filename": filename})
        return urlunparse((parsed.scheme, parsed.netloc, "", "", "", "")) + quote(path) + query

    # -- many objects ---------------------------------------------------------------

    def list(self, prefix: str = "", *, marker: str = "", page_size: int | None = None,
             container: str | None = None) -> Iterator[StoredObject]:
        """Objects whose names start with *prefix*, in name order, page by page.

        ``md5`` is None for large objects (their listed hash is not the content's).
        """
        container = container or self.container
        limit = page_size or int(self.info().get("swift", {}).get(
            "container_listing_limit", 10000))
        while True:
            _, page = self.transport.call("list", prefix or container, lambda u, t, h: swift.get_container(
                u, t, container, marker=marker, limit=limit, prefix=prefix or None,
                http_conn=h))
            if not page:
                return
            for entry in page:
                large = "slo_etag" in entry
                yield StoredObject(entry["name"], int(entry["bytes"]),
                                   None if large else entry.get("hash"), large,
                                   entry.get("last_modified"),
                                   content_type=entry.get("content_type"))
            marker = page[-1]["name"]

    def delete_many(self, objects: Iterable[str | StoredObject], *,
                    container: str | None = None, deadline: float | None = None) -> int:
        """Delete many objects (bulk requests where the cluster allows).

        Pass the StoredObjects of :meth:`list` so that large objects lose their
        segments too; plain names are deleted as plain objects.  Returns how
        many names were processed; absent objects count as deleted.
        *deadline* bounds each request (by default the container's deadline).
        """
        container = container or self.container
        bulk = self.info().get("bulk_delete")
        batch_size = min(int(bulk.get("max_deletes_per_request", 10000)), 1000) if bulk else 0
        done, batch = 0, []
        for item in objects:
            name = item if isinstance(item, str) else item.name
            if isinstance(item, StoredObject) and item.large and container == self.container:
                self.delete(name, large=True, deadline=deadline)
                done += 1
            elif not batch_size:
                self._delete_one(container, name, deadline)
                done += 1
            else:
                batch.append(name)
                if len(batch) >= batch_size:
                    done += self._bulk_delete(container, batch, deadline)
                    batch = []
        if batch:
            done += self._bulk_delete(container, batch, deadline)
        return done

    def _delete_one(self, container: str, name: str, deadline: float | None) -> None:
        try:
            self.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                u, t, container, name, http_conn=h), deadline=deadline)
        except NotFoundError:
            pass

    def _bulk_delete(self, container: str, names: list[str],
                     deadline: float | None = None) -> int:
        body = "\n".join(f"/{quote(container)}/{quote(n)}" for n in names).encode()

        def post(url, token, http):
            http[1].request("POST", f"{http[0].path}?bulk-delete", data=body, headers={
                "X-Auth-Token": token, "Content-Type": "text/plain",
                "Accept": "application/json"})
            raise_for_bulk_result(http[1].getresponse())
        self.transport.call("bulk delete", f"{len(names)} objects", post,
                   deadline=deadline or self.deadline + len(names) * 0.05,
                   timeout=max(self.timeout, BULK_TIMEOUT))
        return len(names)


def require_positive(name: str, value, *, number: bool = False) -> None:
    """ValueError unless *value* is a positive integer (or, with *number*, a
    positive finite number)."""
    kinds = (int, float) if number else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < math.inf:
        what = "a positive finite number" if number else "a positive whole number"
        raise ValueError(f"{name} must be {what}, not {value!r}")


def check_settings(container: str, *, deadline: float, timeout: float,
                   initial_backoff: float, max_backoff: float,
                   large_object_threshold: int | None, segment_size: int,
                   segment_concurrency: int, cacert: str | None, insecure: bool) -> None:
    """ValueError unless a :class:`SwiftContainer` can be made with these
    settings (they are the keyword arguments of the same names)."""
    check_container(container)
    for name, value in (("deadline", deadline), ("timeout", timeout),
                        ("initial_backoff", initial_backoff),
                        ("max_backoff", max_backoff)):
        require_positive(name, value, number=True)
    if max_backoff < initial_backoff:
        raise ValueError("need initial_backoff <= max_backoff")
    for name, value in (("segment_size", segment_size),
                        ("segment_concurrency", segment_concurrency)):
        require_positive(name, value)
    if large_object_threshold is not None:
        require_positive("large_object_threshold", large_object_threshold)
    if not isinstance(insecure, bool):
        raise ValueError(f"insecure must be true or false, not {insecure!r}")
    if cacert and not os.path.isfile(cacert):
        raise ValueError(f"cacert {cacert!r} is not a readable file")


_SETTINGS = {name: parameter.default for name, parameter in
             inspect.signature(SwiftContainer.__init__).parameters.items()
             if parameter.kind is parameter.KEYWORD_ONLY}


def open_container(container: str, **options) -> SwiftContainer:
    """A :class:`SwiftContainer` from flat keyword *options*: the fields of
    :class:`Credentials` (the environment's credentials when none are given),
    ``encryption_keys`` (key texts; by default those of the
    ``ZODB_SWIFTBLOBS_ENCRYPTION_KEYS`` environment variable, if set) and the
    keyword arguments of :class:`SwiftContainer`."""
    credentials, settings = container_arguments(container, **options)
    return SwiftContainer(credentials.or_environ(), container, **settings)


def container_arguments(container: str, **options) -> tuple[Credentials, dict]:
    """The credentials and keyword arguments of :class:`SwiftContainer` that
    :func:`open_container` makes of *options*, checked: ValueError for any
    setting it would refuse.  Nothing is opened or contacted."""
    credential_fields = {item.name for item in fields(Credentials)}
    credentials = Credentials(**{name: options.pop(name) for name in list(options)
                                 if name in credential_fields})
    keys = options.pop("encryption_keys", None)
    if options.get("encryption") is None:
        options["encryption"] = keyring_from(keys)
    settings = {**_SETTINGS, **options}
    check_settings(container, **{name: settings[name] for name in _SETTINGS
                                 if name not in ("storage_policy", "encryption")})
    return credentials, options


class _Discard:
    """A file that keeps nothing (for :meth:`SwiftContainer.check`)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, position: int) -> int:
        return position

    def truncate(self) -> int:
        return 0


class _UploadBody:
    """A seekable, readable window of an open file, sent as an upload body.

    Local read errors and a passed deadline are raised as private exceptions,
    so the HTTP stack cannot mistake them for network failures.
    """

    def __init__(self, f, offset: int, length: int, deadline: TimeBudget) -> None:
        self._f, self._offset, self._length, self._pos = f, offset, length, 0
        self._deadline = deadline
        self._md5, self._hashed = hashlib.md5(usedforsecurity=False), 0
        f.seek(offset)

    def read(self, size: int = -1) -> bytes:
        if self._deadline.remaining() <= 0:
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


class _Source:
    """The bytes an upload sends from the file at *path*: the file itself, or
    its ciphertext under *cipher*."""

    def __init__(self, path: str, plaintext_size: int, cipher: ObjectCipher | None) -> None:
        self.path, self.plaintext_size, self.cipher = path, plaintext_size, cipher
        self.size = cipher.ciphertext_size(plaintext_size) if cipher else plaintext_size

    def open(self):
        """A readable, seekable file of the bytes to send (close it after use)."""
        f = open(self.path, "rb")
        return self.cipher.reader(f, self.plaintext_size) if self.cipher else f

    def md5(self, offset: int, length: int) -> str:
        """Hex MD5 of *length* bytes from *offset*."""
        with self.open() as f:
            return _md5_of(f, offset, length)


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


def _encryption_header(metadata: Mapping[str, str]) -> str | None:
    """The encryption parameters in an object's metadata (None: a plain object)."""
    wanted = ENCRYPTION_METADATA.lower()
    return next((value for key, value in metadata.items() if key.lower() == wanted), None)


def file_md5(path: str, offset: int = 0, length: int | None = None) -> str:
    """Hex MD5 of a file, or of *length* bytes of it from *offset*."""
    with open(path, "rb") as f:
        return _md5_of(f, offset, length)


def _md5_of(f, offset: int, length: int | None) -> str:
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


def _metadata_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    headers = {}
    for key, value in (metadata or {}).items():
        value = str(value)
        if not METADATA_KEY.match(key):
            raise ValueError(f"metadata key {key!r}: use letters, digits and dashes")
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"metadata value for {key!r} must be printable ASCII")
        headers[f"X-Object-Meta-{key}"] = value
    return headers


def _metadata_of(headers: Mapping[str, str]) -> dict[str, str]:
    return {k[len("X-Object-Meta-"):].lower(): v for k, v in headers.items()
            if k.startswith("X-Object-Meta-")}


def _is_large(headers: Mapping[str, str]) -> bool:
    return str(headers.get("x-static-large-object", "")).lower() == "true"


def _stored_object(name: str, headers: Mapping[str, str]) -> StoredObject:
    """The object a response describes; ``md5`` is None for a large object
    (its ETag is not the MD5 of its content)."""
    large = _is_large(headers)
    size = int(headers.get("content-length", 0))
    if "content-range" in headers:
        size = int(headers["content-range"].rsplit("/", 1)[1])
    md5 = None if large else headers.get("etag", "").strip('"') or None
    metadata = {k[len("x-object-meta-"):]: v for k, v in headers.items()
                if k.startswith("x-object-meta-")}
    delete_at = headers.get("x-delete-at")
    return StoredObject(name, size, md5, large, headers.get("last-modified"), metadata,
                        headers.get("content-type"), int(delete_at) if delete_at else None)


def deletion_mark(content_type: str | None) -> int | None:
    """The time of deletion a content type marks (None: not marked)."""
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == DELETION_MARK:
            try:
                return int(value.strip().strip('"'))
            except ValueError:
                return None
    return None


def _without_deletion_mark(content_type: str) -> str:
    return ";".join(part for part in content_type.split(";")
                    if part.partition("=")[0].strip().lower() != DELETION_MARK)


def _manifest_spans(manifest: list[dict]) -> list[tuple[int, str | None]]:
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

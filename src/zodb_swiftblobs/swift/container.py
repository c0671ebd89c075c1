"""SwiftContainer: the objects of one Swift container, the face of the
pieces of this package that do the work."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields, replace

from swiftclient import client as swift

from ..encryption import Keyring, ObjectCipher, keyring_from
from ..names import check_container
from .auth import Credentials
from .cluster import Cluster
from .deletion import DeletionSchedule
from .decryption import cipher_of
from .download import Discard, Download, download_file
from .errors import (ChecksumMismatchError, DecryptionError, NotFoundError, NotLargeObject,
                     PermanentSwiftError)
from .large_objects import LargeObjects
from .listing import BULK_TIMEOUT, BulkDeleter, list_objects
from .objects import (ENCRYPTION_METADATA, SmallObject, StoredObject, encryption_header,
                      metadata_headers, metadata_of, small_object, stored_object)
from .pending import PendingObject, PendingObjects
from .tempurl import temp_url, temp_url_key, temp_url_method
from .transport import MIB, Transport
from .upload import Uploader, UploadSource

log = logging.getLogger(__name__)


class SwiftContainer:
    """Read and write the objects of one Swift container.

    *deadline* bounds every operation, retries included (seconds); transfers
    get one more second per MiB of body.  *timeout* bounds each socket
    operation.  Files larger than *large_object_threshold* (by default 1 GiB,
    and never more than the cluster's ``max_file_size``) are uploaded as Static
    Large Objects in *segment_size* pieces, *segment_concurrency* at a time,
    to the container ``<container>_segments``; large objects (nested ones
    too) are downloaded that many segments at a time.  Object names are never reused
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
                 segment_size: int = 32 * MIB, segment_concurrency: int = 4,
                 cacert: str | None = None, insecure: bool = False,
                 encryption: Keyring | None = None) -> None:
        check_settings(container, deadline=deadline, timeout=timeout,
                       initial_backoff=initial_backoff, max_backoff=max_backoff,
                       large_object_threshold=large_object_threshold,
                       segment_size=segment_size, segment_concurrency=segment_concurrency,
                       cacert=cacert, insecure=insecure)
        self.credentials = credentials
        self.container = container
        self.encryption = encryption
        if insecure:
            log.warning("TLS certificate verification is disabled for Swift (insecure=True)")
        self.transport = Transport(credentials, deadline=deadline, timeout=timeout,
                                   initial_backoff=initial_backoff, max_backoff=max_backoff,
                                   cacert=cacert, insecure=insecure)
        self.cluster = Cluster(self.transport, storage_policy=storage_policy,
                               large_object_threshold=large_object_threshold)
        self.uploader = Uploader(self.transport, self.cluster)
        self.bulk = BulkDeleter(self.transport, self.cluster)
        self.large_objects = LargeObjects(self.transport, self.cluster, self.uploader,
                                          self.bulk, container, segment_size=segment_size,
                                          segment_concurrency=segment_concurrency)
        self.deletions = DeletionSchedule(self.transport, self.large_objects, container)
        self.pending = PendingObjects(self.large_objects)
        self.segment_container = self.large_objects.segment_container

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
        self.transport.close()
        self.large_objects.close()

    # -- cluster and container ----------------------------------------------------

    def info(self) -> dict:
        """The cluster's capabilities (``GET /info``), fetched once; empty when the
        cluster does not publish them (Swift's defaults are assumed then)."""
        return self.cluster.info()

    @property
    def max_file_size(self) -> int:
        """The largest object the cluster stores in one piece."""
        return self.cluster.max_file_size

    @property
    def large_object_threshold(self) -> int:
        """Files larger than this are uploaded as Static Large Objects."""
        return self.cluster.large_object_threshold

    def ensure_container(self, container: str | None = None, *, create: bool = True) -> None:
        """Create the container (with the storage policy) unless it exists;
        with *create* false, raise NotFoundError if it does not."""
        self.cluster.ensure_container(container or self.container, create=create)

    # -- single objects ---------------------------------------------------------

    def put_bytes(self, name: str, data: bytes, *, if_absent: bool = False,
                  container: str | None = None) -> None:
        """Store *data* as object *name* of *container* (by default this one;
        created if missing) as it is (never encrypted: for small control
        objects).  With *if_absent*, an existing object is left alone and
        PermanentSwiftError with status 412 raised."""
        container = container or self.container
        headers = {"If-None-Match": "*"} if if_absent else {}
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        etag = self.uploader.put_creating_container(container, name, lambda u, t, h: (
            swift.put_object(u, t, container, name, data, content_length=len(data),
                             headers=headers, http_conn=h)), self.transport.budget())
        if etag != md5:
            raise ChecksumMismatchError(f"Swift stored bytes with MD5 {etag}, sent {md5}",
                                        operation="upload", name=name)

    def get_bytes(self, name: str, *, newest: bool = False) -> bytes:
        """The content of small object *name* as stored (NotFoundError if
        absent); with *newest*, Swift asks every replica and answers the newest."""
        return self.read_small(name, newest=newest).data

    def read_small(self, name: str, *, container: str | None = None,
                   newest: bool = False) -> SmallObject:
        """The content of small object *name* of *container* (by default this
        one) as stored, and its age by Swift's clock (NotFoundError if absent)."""
        container = container or self.container
        wanted = {"X-Newest": "true"} if newest else {}
        headers, body = self.transport.call("download", name, lambda u, t, h: (
            swift.get_object(u, t, container, name, headers=wanted, http_conn=h)))
        return small_object(body, headers)

    def head(self, name: str, *, deadline: float | None = None) -> StoredObject:
        """Size, checksum and metadata of an object; NotFoundError if absent."""
        headers = self.transport.call("head", name, lambda u, t, h: swift.head_object(
            u, t, self.container, name, http_conn=h), deadline=deadline)
        return stored_object(name, headers)

    def upload(self, name: str, path: str, *, metadata: Mapping[str, str] | None = None,
               deadline: float | None = None) -> StoredObject:
        """Upload the file at *path* as object *name*, streamed and MD5-checked,
        with the checksum of its content in its metadata (see :mod:`.checksums`).

        Metadata keys are letters, digits and dashes (case-insensitive); values
        are ASCII.
        """
        source, headers = self._upload_source(path, metadata)
        budget = self.transport.budget(deadline, source.size)
        if source.size > self.large_object_threshold:
            return self.large_objects.upload(name, source, headers, budget)
        headers = source.with_checksum(headers)
        md5 = self.uploader.put_file(self.container, name, source, 0, source.size, headers,
                                     budget)
        return StoredObject(name, source.size, md5, False, None, metadata_of(headers))

    def _upload_source(self, path: str, metadata: Mapping[str, str] | None
                       ) -> tuple[UploadSource, dict[str, str]]:
        """What an upload of the file at *path* sends (encrypted with a new
        cipher when the container encrypts), and the headers of the object
        but its checksum (:meth:`.UploadSource.with_checksum`)."""
        headers = metadata_headers(metadata)
        cipher = self.encryption.new_cipher() if self.encryption else None
        if cipher is not None:
            headers.update(metadata_headers({ENCRYPTION_METADATA: cipher.header}))
        return UploadSource(path, os.path.getsize(path), cipher), headers

    def download(self, name: str, path: str, *, deadline: float | None = None) -> StoredObject:
        """Stream object *name* into the file *path*; verify length and checksum.

        The bytes go to a temporary file beside *path*, renamed to *path* once
        verified.  A plain object is checked against its ETag and recorded
        checksum, a large object's segments (fetched in parallel) against its
        manifest.  A broken connection resumes with a Range request.
        """
        return download_file(self.transport, self.container, name, path, deadline,
                             self.encryption, self.large_objects.executor)

    def check(self, name: str, *, deadline: float | None = None) -> StoredObject:
        """Read object *name* through, keeping nothing; verify as :meth:`download`
        does, and a large object's whole content against its recorded checksum
        (ChecksumMismatchError when they do not match)."""
        return Download(self.transport, self.container, name, Discard(), deadline,
                        self.encryption, self.large_objects.executor,
                        check_content=True).run()

    def cipher_of(self, name: str, metadata: Mapping[str, str]) -> ObjectCipher | None:
        """The cipher of object *name* from its *metadata* (None for a plain
        object).  MissingKeyError when its key is not configured,
        DecryptionError when its encryption metadata is malformed."""
        return cipher_of(name, metadata, self.encryption)

    def copy(self, source: str, destination: str, *,
             deadline: float | None = None) -> StoredObject:
        """Copy object *source* to *destination* inside Swift (no bytes travel here).

        A large object gets copies of its segments, so that deleting either
        object never breaks the other.  A copy of an object scheduled for
        deletion is not (Swift would copy the schedule).
        """
        stored = self.head(source, deadline=deadline)
        budget = self.transport.budget(deadline, stored.size)
        if stored.large:
            self.large_objects.copy(stored, destination, metadata_headers(stored.metadata),
                                    budget)
        else:
            self.transport.call("copy", source, lambda u, t, h: swift.copy_object(
                u, t, self.container, source, destination=f"/{self.container}/{destination}",
                http_conn=h), budget=budget)
        self.deletions.unschedule_copy(stored, destination)
        return replace(stored, name=destination)

    def delete(self, name: str, *, large: bool | None = None, deadline: float | None = None,
               container: str | None = None) -> bool:
        """Delete an object of *container* (by default this one), and its
        segments if it is a large object (and those of the large objects its
        manifest nests).

        *large* says whether it is one; when unknown (None) a large-object
        delete is tried first.  Returns False if the object was absent.
        """
        container = container or self.container
        try:
            if large is not False:
                try:
                    self.transport.call("delete", name, lambda u, t, h: (
                        self.large_objects.delete(name, t, h, container=container)),
                        deadline=deadline, timeout=max(self.timeout, BULK_TIMEOUT))
                    return True
                except NotLargeObject:
                    pass
            self.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                u, t, container, name, http_conn=h), deadline=deadline)
        except NotFoundError:
            return False
        return True

    # -- large objects ------------------------------------------------------------

    def examine_large_object(self, name: str) -> tuple[str | None, int | None]:
        """What is wrong with large object *name* (a segment or nested
        manifest missing, or a segment of another size than its manifest
        says; None when all is in place), and when Swift deletes the first
        of its segments or nested manifests scheduled for deletion (None:
        none is), which its manifest need not show."""
        return self.large_objects.examine(name)

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
        source = UploadSource(path, os.path.getsize(path), cipher)
        if stored.size != source.size:
            return False
        if not stored.large:
            return stored.md5 is not None and stored.md5 == source.md5(0, source.size)
        return self.large_objects.holds(name, source)

    def segment_groups(self, name: str) -> set[str]:
        """The segment name prefixes (``<name>/<upload id>/``, in the segment
        container) that the manifest of large object *name* refers to; empty
        when there is no such object."""
        return self.large_objects.segment_groups(name)

    def segment_paths(self, name: str) -> list[tuple[str, str]]:
        """(container, name) of each segment of large object *name*;
        NotFoundError when there is no such object."""
        return self.large_objects.segment_paths(name)

    # -- pending objects ------------------------------------------------------------

    @property
    def supports_pending(self) -> bool:
        """Whether the cluster stores pending objects: whether it has Static
        Large Objects (assumed when it does not publish its capabilities)."""
        return self.cluster.supports_slo

    def upload_pending(self, name: str, path: str, *, metadata: Mapping[str, str] | None = None,
                       deadline: float | None = None, plain: bool = False) -> PendingObject:
        """Upload the file at *path* as pending object *name* of the segment
        container: a plain object when it fits in one segment (or is to be
        published as a copy: *plain*), else a Static Large Object in
        *segment_size* segments; MD5-checked, encrypted as :meth:`upload`
        does.  The *metadata* goes on the object it is published as (see
        :meth:`publish`).  PermanentSwiftError unless :attr:`supports_pending`."""
        source, headers = self._upload_source(path, metadata)
        return self.pending.upload(name, source, headers,
                                   self.transport.budget(deadline, source.size), plain=plain)

    def publish(self, name: str, pending: PendingObject, *,
                deadline: float | None = None) -> StoredObject:
        """Store object *name*, the content of *pending*, with one request (a
        manifest nesting the pending object's).  Swift refuses it
        (PermanentSwiftError) unless *pending* is in place as uploaded.
        Deleting it deletes the pending object too."""
        return self.pending.publish(name, pending, self.transport.budget(deadline))

    def publish_copy(self, name: str, pending: PendingObject, *,
                     deadline: float | None = None) -> StoredObject:
        """Store object *name* as a copy, made inside Swift, of plain pending
        object *pending*, which is then no longer needed (ChecksumMismatchError
        unless the copy has its etag)."""
        return self.pending.publish_copy(name, pending,
                                         self.transport.budget(deadline, pending.size))

    def delete_pending(self, name: str, *, deadline: float | None = None) -> bool:
        """Delete pending object *name* with its segments; False if it was absent."""
        return self.delete(name, deadline=deadline, container=self.segment_container)

    # -- scheduled deletion ----------------------------------------------------------

    def schedule_deletion(self, name: str, after: float, *,
                          container: str | None = None) -> int | None:
        """Have Swift delete object *name* of *container* (by default this
        one; a large object with its segments) *after* seconds from now
        (X-Delete-At), unless it is scheduled already: then return when (None:
        scheduled now); a large object's nested manifests go with it.  The object keeps its metadata
        (a POST replaces it: it is sent again) and its content type gets the
        DELETION_MARK parameter, which listings show.  A large object is
        marked first, its segments after: a schedule cut short (a failure, a
        process killed) always shows on the object, and cancelling it cancels
        whatever part of it was done."""
        return self.deletions.schedule(name, after, container=container)

    def cancel_deletion(self, name: str) -> bool:
        """Cancel the scheduled deletion of object *name* and of its segments
        (first: its mark stays until all are safe); whether any was scheduled.
        NotFoundError when it is gone."""
        return self.deletions.cancel(name)

    def deletion_scheduled(self, name: str) -> int | None:
        """When Swift deletes object *name* or (the earliest) one of its
        segments; None when none is scheduled.  NotFoundError when it is gone."""
        return self.deletions.scheduled(name)

    # -- temporary URLs ---------------------------------------------------------------

    def temp_url_key(self) -> str | None:
        """The account's TempURL key, else the container's; None when neither is set.

        Set one with ``swift post -m Temp-URL-Key:<key> <container>`` (container)
        or ``swift post -m Temp-URL-Key:<key>`` (account).
        """
        return temp_url_key(self.transport, self.container)

    def temp_url(self, name: str, *, key: str, method: str = "GET", seconds: int = 3600,
                 filename: str | None = None) -> str:
        """An absolute TempURL giving *method* access to object *name* for *seconds*.

        With *filename*, Swift answers with ``Content-Disposition: attachment``
        under that name.  Only GET and HEAD are signed.
        """
        method = temp_url_method(method)
        if self.encryption is not None and encryption_header(self.head(name).metadata):
            raise PermanentSwiftError("it is encrypted, and a temporary URL would serve its "
                                      "ciphertext", operation="temporary URL", name=name)
        return temp_url(self.transport, self.container, name, key=key, method=method,
                        seconds=seconds, filename=filename)

    # -- many objects ---------------------------------------------------------------

    def list(self, prefix: str = "", *, marker: str = "", page_size: int | None = None,
             container: str | None = None) -> Iterator[StoredObject]:
        """Objects whose names start with *prefix*, in name order, page by page.

        ``md5`` is None for large objects (their listed hash is not the content's).
        """
        return list_objects(self.transport, self.cluster, container or self.container, prefix,
                            marker, page_size)

    def delete_many(self, objects: Iterable[str | StoredObject], *,
                    container: str | None = None, deadline: float | None = None) -> int:
        """Delete many objects (bulk requests where the cluster allows).

        Pass the StoredObjects of :meth:`list` so that large objects lose their
        segments too; plain names are deleted as plain objects.  Returns how
        many names were processed; absent objects count as deleted.
        *deadline* bounds each request (by default the container's deadline).
        """
        container = container or self.container
        large_deleted = 0

        def plain_names() -> Iterator[str]:
            nonlocal large_deleted
            for item in objects:
                name = item if isinstance(item, str) else item.name
                if isinstance(item, StoredObject) and item.large and container == self.container:
                    self.delete(name, large=True, deadline=deadline)
                    large_deleted += 1
                else:
                    yield name
        plain_deleted = self.bulk.delete(container, plain_names(), deadline)
        return plain_deleted + large_deleted


def require_positive(name: str, value: object, *, number: bool = False) -> None:
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

"""Pending objects: uploaded before their final name is known, published
under it with one request.

A pending object is an object of the segment container: a plain one when it
fits in one segment, else a Static Large Object (its manifest there, under
the pending object's name).  Publishing it stores, under its final name in
the main container, a manifest with one entry: the pending object, which
Swift checks with one HEAD and reads through (as a segment, or as a nested
large object).  Deleting the published object (``multipart-manifest=delete``)
deletes the pending object and its segments too.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import swiftclient.client as swift

from .errors import ChecksumMismatchError, PermanentSwiftError, SwiftUnavailableError
from .large_objects import LargeObjects, slo_etag
from .objects import StoredObject, metadata_of
from .transport import TimeBudget
from .upload import UploadSource


@dataclass(frozen=True)
class PendingObject:
    """A pending object, ready to be published.  ``name`` is its name in the
    segment container, ``size`` that of its bytes in Swift (for an encrypted
    object, of its ciphertext), ``etag`` the etag Swift gives its manifest,
    ``headers`` the metadata headers the published object carries."""

    name: str
    size: int
    etag: str
    headers: dict[str, str]


class PendingObjects:
    """The pending objects of the container of *large_objects*, in its
    segment container.  A cluster without Static Large Objects has none: it
    would store manifests as plain objects."""

    def __init__(self, large_objects: LargeObjects) -> None:
        self.large_objects = large_objects

    def upload(self, name: str, source: UploadSource, headers: dict[str, str],
               budget: TimeBudget, *, plain: bool = False) -> PendingObject:
        """Upload *source* as pending object *name*, to be published with
        *headers* and the checksum of its content; a plain object if *plain*
        (to be published as a copy)."""
        self._require_slo("pending upload", name)
        large_objects = self.large_objects
        if plain or 0 < source.size <= large_objects.segment_size:  # one segment: itself
            md5 = large_objects.uploader.put_file(large_objects.segment_container, name, source,
                                                  0, source.size, {}, budget)
            return PendingObject(name, source.size, md5, source.with_checksum(headers))
        entries = large_objects.upload_manifest(
            name, source, {}, budget, container=large_objects.segment_container)
        return PendingObject(name, source.size, slo_etag(entries),
                             source.with_checksum(headers))

    def publish(self, name: str, pending: PendingObject, budget: TimeBudget) -> StoredObject:
        """Store object *name* of the container: the content of *pending*.
        Swift refuses it (a permanent error) unless *pending* is in place
        with its etag and size."""
        self._require_slo("publish", name)
        large_objects = self.large_objects
        entry = {"path": f"/{large_objects.segment_container}/{pending.name}",
                 "etag": pending.etag, "size_bytes": pending.size}
        try:
            large_objects.put_manifest(name, [entry], pending.headers, budget, "publish",
                                       container=large_objects.container)
        except SwiftUnavailableError:
            if not large_objects.manifest_stored(name, pending.name, budget,
                                                 container=large_objects.container):
                raise
        return StoredObject(name, pending.size, None, True, None, metadata_of(pending.headers))

    def publish_copy(self, name: str, pending: PendingObject,
                     budget: TimeBudget) -> StoredObject:
        """Store object *name* of the container as a copy, made inside Swift,
        of plain pending object *pending* (with its headers only);
        ChecksumMismatchError (the copy deleted) unless it has *pending*'s
        etag, NotFoundError when *pending* is gone."""
        large_objects = self.large_objects
        headers = {**pending.headers, "X-Copy-From":
                   f"/{large_objects.segment_container}/{quote(pending.name)}",
                   "X-Fresh-Metadata": "true"}
        container = large_objects.container
        etag = large_objects.transport.call("publish", name, lambda u, t, h: swift.put_object(
            u, t, container, name, b"", content_length=0, headers=headers, http_conn=h),
            budget=budget)
        if etag != pending.etag:
            large_objects.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                u, t, container, name, http_conn=h), budget=budget)
            raise ChecksumMismatchError(
                f"the copy of pending object {pending.name!r} has etag {etag}, not "
                f"{pending.etag}", operation="publish", name=name)
        return StoredObject(name, pending.size, etag, False, None, metadata_of(pending.headers))

    def _require_slo(self, operation: str, name: str) -> None:
        if not self.large_objects.cluster.supports_slo:
            raise PermanentSwiftError("the cluster has no Static Large Objects (no slo "
                                      "middleware in /info)", operation=operation, name=name)

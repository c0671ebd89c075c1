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

from .errors import PermanentSwiftError, SwiftUnavailableError
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
               budget: TimeBudget) -> PendingObject:
        """Upload *source* as pending object *name*, to be published with
        *headers*."""
        self._require_slo("pending upload", name)
        large_objects = self.large_objects
        if 0 < source.size <= large_objects.segment_size:  # one segment: itself
            md5 = large_objects.uploader.put_file(large_objects.segment_container, name, source,
                                                  0, source.size, {}, budget)
            return PendingObject(name, source.size, md5, dict(headers))
        entries = large_objects.upload_manifest(
            name, source, {}, budget, container=large_objects.segment_container)
        return PendingObject(name, source.size, slo_etag(entries), dict(headers))

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

    def _require_slo(self, operation: str, name: str) -> None:
        if not self.large_objects.cluster.supports_slo:
            raise PermanentSwiftError("the cluster has no Static Large Objects (no slo "
                                      "middleware in /info)", operation=operation, name=name)

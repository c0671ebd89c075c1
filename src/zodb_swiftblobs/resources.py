"""What all instances of one wrapped database share (an MVCC base's instances):
the container, the object names, the cache, the ownership marker, the
staging area, the upload pool and the commits' leases."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import swift
from .cache import BlobCache
from .errors import SwiftStorageError, raises_storage_errors
from .layout import ObjectLayout
from .leases import CommitLeases
from .options import container_settings
from .bases import is_zeo_client, latest_committed_tid
from .ownership import PrefixOwnership, database_identity
from .staging import StagingArea
from .swift import NotFoundError, SwiftContainer

TEMP_URL_KEY_TTL = 300.0  # seconds a TempURL key read from Swift is used


class SharedResources:
    """The resources of one wrapped database, opened once for all its instances."""

    def __init__(self, container: SwiftContainer, layout: ObjectLayout, cache: BlobCache,
                 ownership: PrefixOwnership, upload_concurrency: int,
                 early_upload_threshold: int, commit_lease: float,
                 temp_url_key: str | None, gc_grace_period: float) -> None:
        self.container = container
        self.gc_grace_period = gc_grace_period
        self.layout = layout
        self.cache = cache
        self.ownership = ownership
        self.staging = StagingArea(cache.temporary_directory, cache.directory)
        self.configured_temp_url_key = temp_url_key
        self._swift_temp_url_key: tuple[float, str | None] = (float("-inf"), None)
        self.pool = ThreadPoolExecutor(upload_concurrency, thread_name_prefix="swift-upload")
        # Big blobs' uploads before the commit lock: never ahead of those under it.
        self.early_pool = ThreadPoolExecutor(upload_concurrency,
                                             thread_name_prefix="swift-early-upload")
        self.in_flight: set[str] = set()  # names uploaded by commits not yet ended
        self.early_upload_threshold = early_upload_threshold
        self.leases = CommitLeases(container, layout, commit_lease)

    @classmethod
    def open(cls, base: Any, settings: Mapping[str, Any]) -> SharedResources:
        """Open the resources of the database of *base* (*settings*: every
        option, checked): the container is created if need be, and the prefix
        claimed, unless *base* is read-only; for a ZEO client, whose server's
        database owns them, they must exist."""
        layout = object_layout(settings)  # local settings first: no network for their errors
        cache = open_cache(settings)
        container = open_container(settings)
        try:
            ownership = PrefixOwnership(container, layout, database_identity(base),
                                        encrypts=container.encryption is not None,
                                        last_committed=lambda: latest_committed_tid(base))
            if is_zeo_client(base):
                _join(container, ownership, read_only=base.isReadOnly())
            else:
                _prepare(container, ownership, create=settings["create_container"],
                         read_only=base.isReadOnly())
            return cls(container, layout, cache, ownership, settings["upload_concurrency"],
                       settings["early_upload_threshold"], settings["commit_lease"],
                       settings["temp_url_key"], settings["gc_grace_period"])
        except BaseException:
            container.close()
            raise

    def swift_temp_url_key(self) -> str | None:
        """The TempURL key set in Swift, read again after TEMP_URL_KEY_TTL seconds
        (so that a key rotated in Swift is picked up)."""
        read_at, key = self._swift_temp_url_key
        if time.monotonic() - read_at > TEMP_URL_KEY_TTL:
            key = self.container.temp_url_key()
            self._swift_temp_url_key = (time.monotonic(), key)
        return key

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.early_pool.shutdown(wait=True)
        self.leases.close()
        self.staging.close()
        self.cache.close()
        self.container.close()


def object_layout(settings: Mapping[str, Any]) -> ObjectLayout:
    """The object names of the database *settings* configure."""
    return ObjectLayout(settings["prefix"])


def open_cache(settings: Mapping[str, Any]) -> BlobCache:
    """The local blob cache *settings* configure."""
    return BlobCache(settings["cache_dir"], settings["cache_size"])


def open_container(settings: Mapping[str, Any]) -> SwiftContainer:
    """The Swift container *settings* configure (not contacted yet)."""
    return swift.open_container(settings["container"], **container_settings(settings))


@raises_storage_errors
def _prepare(container: SwiftContainer, ownership: PrefixOwnership, *, create: bool,
             read_only: bool) -> None:
    """Create the container if missing (unless *read_only* or not *create*),
    and check (for a writer: claim) the prefix's ownership.  A writer's
    segment container is made now too (its first big blobs' uploads, all at
    once, need not each find it missing)."""
    try:
        container.ensure_container(create=create and not read_only)
        ownership.check(claim=not read_only)
        if create and not read_only and container.supports_pending:
            container.ensure_container(container.segment_container)
        return
    except NotFoundError:
        why = "a storage opened read-only does not create it" if read_only \
            else "create-container is off"
    raise SwiftStorageError(f"Swift container {container.container!r} does not exist ({why})")


@raises_storage_errors
def _join(container: SwiftContainer, ownership: PrefixOwnership, *, read_only: bool) -> None:
    """Check that the container exists and that a database (the ZEO
    server's) owns the prefix, for a ZEO client."""
    try:
        container.ensure_container(create=False)
    except NotFoundError:
        raise SwiftStorageError(
            f"Swift container {container.container!r} does not exist: a ZEO client uses its "
            "server's, which the server's swiftblobstorage creates") from None
    ownership.check_served(writes=not read_only)

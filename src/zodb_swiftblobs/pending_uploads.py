"""The pending uploads of one commit, under its lease, and an aborted
commit's clean-up.

A commit that uploads blobs before its transaction id is known (a big blob
before the base's commit lock; every blob of a wrapped ZEO client) uploads
each as a *pending object* (see :mod:`zodb_swiftblobs.swift.pending`), in the
database's early-upload pool, once its lease's marker is written (see
:mod:`zodb_swiftblobs.leases`): garbage collection in any process leaves
them alone while the lease holds.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

from .errors import storage_error
from .leases import CommitLease
from .resources import SharedResources
from .swift import PendingObject, StoredObject, SwiftError
from .waiting import results, wait_for

log = logging.getLogger(__name__)

ABORT_DEADLINE = 10.0  # at most this (or the deadline) to delete an abort's uploads; else GC


class PendingUploads:
    """The pending uploads of one commit of the database of *resources*, by
    oid, and the commit's lease (taken with the first upload)."""

    def __init__(self, resources: SharedResources) -> None:
        self._resources = resources
        self._uploads: dict[bytes, Future] = {}
        self.lease: CommitLease | None = None
        self._lease_taken: Future | None = None  # its marker written, before any upload

    def __contains__(self, oid: bytes) -> bool:
        return oid in self._uploads

    def __bool__(self) -> bool:
        return bool(self._uploads)

    def start(self, oid: bytes, path: str, *, plain: bool = False) -> None:
        """Start uploading the file at *path* as the pending object of blob
        *oid* (a plain object if *plain*), under the lease (taken now if need be)."""
        resources = self._resources
        if self.lease is None:
            self.lease = resources.leases.start(take=False)
            self._lease_taken = resources.early_pool.submit(self.lease.take)
        name, taken = self.lease.pending_name(oid), self._lease_taken

        def upload() -> PendingObject:
            taken.result()  # its marker first (submitted first, so it runs first)
            return resources.container.upload_pending(name, path, plain=plain)
        self._uploads[oid] = resources.early_pool.submit(upload)

    def discard(self, oid: bytes) -> None:
        """Wait for the pending upload of *oid*, if any, and remove what it stored."""
        future = self._uploads.pop(oid, None)
        if future is None:
            return
        for stored in results([future]):
            try:
                self._resources.container.delete_pending(stored.name)
            except SwiftError as exc:
                log.warning("could not delete pending object %r (%s); garbage "
                            "collection will", stored.name, exc)

    def wait(self) -> None:
        """Wait for every upload; raise the first failure as a storage error."""
        wait_for(self._uploads.values())

    def objects(self) -> dict[bytes, PendingObject]:
        """The pending objects uploaded, by oid (once :meth:`wait` succeeded)."""
        return {oid: future.result() for oid, future in self._uploads.items()}

    def check_lease(self) -> None:
        """A transient storage error unless the lease has been continuous."""
        try:
            self.lease.check()
        except SwiftError as exc:
            raise storage_error(exc) from None

    def abort(self, uploaded: list[StoredObject | str], records: list[str] = ()) -> None:
        """Delete what an aborted commit stored in Swift: the objects it
        *uploaded* (for a name, a large object's manifest alone), the
        *records* of ZEO clients' commits it wrote, its pending objects (once
        those under way have ended), then its lease's marker.  A failure is
        logged: garbage collection removes them."""
        pending = results(self._uploads.values())
        results(filter(None, [self._lease_taken]))
        container = self._resources.container
        deadline = min(ABORT_DEADLINE, container.deadline)
        removed = True
        try:
            if uploaded:
                container.delete_many(uploaded, deadline=deadline)
            if records:
                container.delete_many(records, deadline=deadline,
                                      container=container.segment_container)
            for stored in pending:
                container.delete_pending(stored.name, deadline=deadline)
        except SwiftError as exc:
            removed = False
            log.warning("could not delete %d objects of an aborted transaction (%s); "
                        "the next pack's garbage collection will",
                        len(uploaded) + len(pending), exc)
        if self.lease is not None:
            self.lease.release(delete_marker=removed)

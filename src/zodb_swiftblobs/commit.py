"""The blob work of one transaction, from ``tpc_begin`` to its end.

``storeBlob`` and ``restoreBlob`` *stage* each blob file: it moves to a
staging name in the storage's temporary directory (in the cache's ``tmp``:
see :mod:`zodb_swiftblobs.staging`).  A blob of at least the
``early_upload_threshold`` starts uploading at once, before the transaction
id is known and outside the base's commit lock, as a *pending object* (see
:mod:`zodb_swiftblobs.swift.pending`) kept safe from garbage collection by
the commit's lease (:mod:`zodb_swiftblobs.leases`); the vote waits for those
uploads before the base takes its lock (see
:mod:`zodb_swiftblobs.deferred_begin`), then *publishes* each under its
final name with one small request.  Smaller blobs are uploaded once the
transaction id is known (at the vote; at ``tpc_begin`` for a restore), in a
bounded pool; an undo copies, inside Swift, each blob revision it brings
back.  The vote waits for all of it and fails if anything failed, so the
transaction aborts cleanly.  *Finishing* only renames staged files into the
cache; *aborting* deletes what the transaction uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from base64 import decodebytes
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError

from .deferred_begin import DeferredBegin
from .errors import SwiftStorageError, raises_storage_errors, storage_error
from .leases import CommitLease
from .resources import SharedResources
from .swift import PendingObject, SwiftError

log = logging.getLogger(__name__)

ABORT_DEADLINE = 10.0  # at most this (or the deadline) to delete an abort's uploads; else GC


class BlobCommit:
    """The blob work of *transaction*: staging, pending uploads and their
    lease, uploads and copies, the vote's wait and publishing, publishing
    into the cache, and an abort's clean-up.

    *tid* is the transaction's id when known at ``tpc_begin``; else the vote
    learns it.  *begin* is the base's delayed ``tpc_begin`` (None when the
    base began at once).  :meth:`end` must follow, whether the transaction
    committed or aborted.
    """

    def __init__(self, transaction: Any, resources: SharedResources, tid: bytes | None,
                 begin: DeferredBegin | None = None) -> None:
        self.transaction = transaction
        self.tid = tid
        self.begin = begin
        self._resources = resources
        self._staging_prefix = resources.staging.commit_prefix()
        self._staged: dict[bytes, tuple[str, bytes | None]] = {}  # oid -> (path, serial)
        self._copies: dict[bytes, str] = {}                        # oid -> source name
        self._pending: dict[bytes, Future] = {}                    # oid -> pending upload
        self._work: dict[bytes, Future] = {}                       # oid -> upload, copy, publish
        self._names: set[str] = set()                              # objects it writes
        self._lease: CommitLease | None = None
        self._lease_taken: Future | None = None  # its marker written, before any upload
        self._recorded: Future | None = None     # the final names written into it
        self._checksums: dict[bytes, int | None] = {}  # oid -> of its staged file, for the cache

    def staged_path(self, oid: bytes, serial: bytes) -> str | None:
        """The staged file of revision *serial* of blob *oid*, if this
        transaction stores it."""
        entry = self._staged.get(oid)
        if entry is None:
            return None
        path, own_serial = entry
        return path if (own_serial or self.tid) == serial else None

    @raises_storage_errors
    def stage(self, oid: bytes, serial: bytes | None, blobfilename: str) -> None:
        """Take the blob file of *oid* (of revision *serial* for a restore, else
        of this transaction): upload it now if it is big (pending), else once
        the transaction id is known."""
        staged = f"{self._staging_prefix}{oid.hex()}.blob"
        self._settle(oid)  # an earlier upload of this oid may still read the file
        self._discard_pending(oid)
        self._resources.cache.stage(blobfilename, staged)
        self._staged[oid] = (staged, serial)
        self._copies.pop(oid, None)
        if self.tid is not None:
            self._start(oid)
        elif serial is None and self._uploads_early(staged):
            self._start_pending(oid, staged)

    def copy_undone(self, oid: bytes, serial: bytes) -> None:
        """Bring back revision *serial* of blob *oid* (an undo): copied inside
        Swift to this transaction's id."""
        self._copies[oid] = self._resources.layout.object_name(oid, serial)
        self._settle(oid)
        self._discard_pending(oid)
        self._unstage(oid)
        if self.tid is not None:
            self._start(oid)

    def begin_base(self, learn_tid: Callable[[], bytes]) -> None:
        """Begin the base if its ``tpc_begin`` waits (see :attr:`begin`);
        *learn_tid* then gives the transaction id the base chose."""
        if self.begin is None or self.begin.begun:
            return
        self.begin.begin()
        self.tid = learn_tid()
        self._start_known()

    def prepare(self) -> None:
        """Before the base's commit lock: wait for the pending uploads (raise
        the first failure), check that the commit's lease held, and read the
        staged files for the cache's checksums (not while the lock is held)."""
        _wait_for(self._pending.values())
        cache = self._resources.cache
        for oid, (path, _) in self._staged.items():
            with contextlib.suppress(OSError):  # then publishing reads it
                self._checksums[oid] = cache.checksum(path)
        if self._lease is not None:
            self._check_lease()

    def vote(self, learn_tid: Callable[[], bytes]) -> None:
        """Start what waits for the transaction id (*learn_tid* gives it):
        uploads of small blobs, copies, and one publishing request per
        pending object; then wait for all of it and raise the first failure.
        After a failure, uploads not started yet are cancelled: the vote fails
        within about one deadline however many blobs wait in the queue."""
        if self.tid is None and (self._staged or self._copies):
            self.tid = learn_tid()
            self._start_known()
        _wait_for([*self._work.values(), *filter(None, [self._recorded])])
        if self._lease is not None:
            self._check_lease()

    def finish(self, tid: bytes) -> None:
        """Move the committed blobs into the cache (local renames only; a
        failure here costs a download later, never the commit)."""
        cache = self._resources.cache
        for oid, (path, serial) in self._staged.items():
            try:
                cache.publish(path, oid, serial or tid, self._checksums.get(oid))
            except Exception as exc:
                log.warning("could not move committed blob %s into the cache (%s); it will "
                            "be downloaded when read", oid.hex(), exc)

    def abort(self) -> None:
        """Remove what the aborted transaction put into Swift: its objects,
        its pending objects, then its lease's marker."""
        uploaded = _results(self._work.values())
        pending = _results(self._pending.values())
        _results(filter(None, [self._lease_taken, self._recorded]))
        container = self._resources.container
        deadline = min(ABORT_DEADLINE, container.deadline)
        removed = True
        try:
            if uploaded:
                container.delete_many(uploaded, deadline=deadline)
            for stored in pending:
                container.delete_pending(stored.name, deadline=deadline)
        except SwiftError as exc:
            removed = False
            log.warning("could not delete %d objects of an aborted transaction (%s); "
                        "the next pack's garbage collection will",
                        len(uploaded) + len(pending), exc)
        if self._lease is not None:
            self._lease.release(delete_marker=removed)

    def end(self) -> None:
        """Remove the staged files not moved into the cache; the objects this
        transaction wrote are no longer in flight, and its lease ends (its
        marker stays: it names the objects published, for garbage collection)."""
        for oid in list(self._staged):
            self._unstage(oid)
        self._resources.in_flight.difference_update(self._names)
        if self._lease is not None:
            self._lease.release(delete_marker=False)

    def _start_known(self) -> None:
        """Now that the transaction id is known: start the uploads of small
        blobs, the copies, and publishing the pending objects."""
        for oid in list(self._staged) + list(self._copies):
            if oid not in self._pending:
                self._start(oid)
        if self._pending:
            self._publish_pending()

    def _uploads_early(self, path: str) -> bool:
        """Whether the staged blob file at *path* is uploaded before the lock."""
        resources = self._resources
        return (os.path.getsize(path) >= resources.early_upload_threshold
                and resources.container.supports_pending)

    def _start_pending(self, oid: bytes, path: str) -> None:
        """Start the pending upload of blob *oid*, under this commit's lease
        (taken now if need be)."""
        resources = self._resources
        if self._lease is None:
            self._lease = resources.leases.start(take=False)
            self._lease_taken = resources.early_pool.submit(self._lease.take)
        name, taken = self._lease.pending_name(oid), self._lease_taken

        def upload() -> PendingObject:
            taken.result()  # its marker first (submitted first, so it runs first)
            return resources.container.upload_pending(name, path)
        self._pending[oid] = resources.early_pool.submit(upload)

    def _discard_pending(self, oid: bytes) -> None:
        """Wait for the pending upload of *oid*, if any, and remove what it stored
        (the blob was stored again, or an undo brings back an old revision)."""
        future = self._pending.pop(oid, None)
        if future is None:
            return
        for stored in _results([future]):
            try:
                self._resources.container.delete_pending(stored.name)
            except SwiftError as exc:
                log.warning("could not delete pending object %r (%s); garbage "
                            "collection will", stored.name, exc)

    def _publish_pending(self) -> None:
        """Start recording the final names in the lease's marker (for garbage
        collection, once the lease lapses), and publishing each pending object
        under its name: one request each, all at once."""
        _wait_for(self._pending.values())  # done, unless an undo began the base early
        resources = self._resources
        names = {oid: resources.layout.object_name(oid, self.tid) for oid in self._pending}
        self._recorded = resources.pool.submit(self._lease.record, names)
        for oid, name in names.items():
            self._settle(oid)
            self._track(oid, name, resources.pool.submit(
                resources.container.publish, name, self._pending[oid].result()))

    def _check_lease(self) -> None:
        try:
            self._lease.check()
        except SwiftError as exc:
            raise storage_error(exc) from None

    def _unstage(self, oid: bytes) -> None:
        """Forget the staged file of *oid* (its upload must be settled), and remove it."""
        path, _ = self._staged.pop(oid, (None, None))
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _settle(self, oid: bytes) -> None:
        """Wait for the earlier upload or copy of *oid* in this transaction, if any:
        two requests for one object name must not race."""
        previous = self._work.pop(oid, None)
        if previous is not None:
            wait([previous])

    def _start(self, oid: bytes) -> None:
        """Start the upload (or server-side copy) of one blob."""
        resources = self._resources
        self._settle(oid)
        if oid in self._staged:
            path, serial = self._staged[oid]
            name = resources.layout.object_name(oid, serial or self.tid)
            work = resources.pool.submit(resources.container.upload, name, path)
        else:
            name = resources.layout.object_name(oid, self.tid)
            work = resources.pool.submit(resources.container.copy, self._copies[oid], name)
        self._track(oid, name, work)

    def _track(self, oid: bytes, name: str, work: Future) -> None:
        """Wait for *work* (which writes object *name*) at the vote; protect
        *name* from this process's garbage collection until the end."""
        self._work[oid] = work
        self._names.add(name)
        self._resources.in_flight.add(name)


def _wait_for(futures: Collection[Future]) -> None:
    """Wait for *futures* (uploads, copies); on the first failure cancel those
    not started, wait for the others, and raise it as a storage error."""
    wait(futures, return_when=FIRST_EXCEPTION)
    for future in futures:
        future.cancel()  # does nothing to the finished and the running
    wait(futures)
    failures = [future.exception() for future in futures
                if not future.cancelled() and future.exception() is not None]
    if not failures:
        return
    cancelled = sum(future.cancelled() for future in futures)
    log.warning("%d of %d blob uploads failed (%d cancelled before they started); "
                "the transaction aborts", len(failures), len(futures), cancelled)
    error = failures[0]
    if isinstance(error, SwiftError):
        raise storage_error(error)
    raise SwiftStorageError(f"blob upload failed: {type(error).__name__}: {error}")


def _results(futures: Collection[Future]) -> list:
    """Cancel what has not started, wait for the rest: the results of those
    that succeeded."""
    futures = list(futures)
    for future in futures:
        future.cancel()
    wait(futures)
    return [future.result() for future in futures
            if not future.cancelled() and future.exception() is None]


def revisions_undo_restores(
        base: Any, transaction_id: bytes,
        untransform: Callable[[bytes], bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(oid, serial) of each blob revision that undoing *transaction_id* in
    *base* brings back.  *untransform* reads records as the base keeps them
    (wrappers above may transform them)."""
    undone = decodebytes(transaction_id + b"\n") if len(transaction_id) != 8 \
        else transaction_id

    def is_blob(data: bytes | None) -> bool:
        return bool(data) and is_blob_record(untransform(data))

    for undone_transaction in base.iterator(undone, undone):
        for record in undone_transaction:
            if record.data and not is_blob(record.data):
                continue
            try:
                before = base.loadBefore(record.oid, undone)
            except POSKeyError:
                before = None  # the revision before was itself an undone creation
            if before is None or not is_blob(before[0]):
                continue  # undoing a creation brings no blob back
            yield record.oid, before[1]

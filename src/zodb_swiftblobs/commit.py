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
back.  On a ZEO server, a blob a wrapped ZEO client uploaded itself arrives
as a reference to its pending object (see
:mod:`zodb_swiftblobs.blob_references`): it is *adopted*, and published at
the vote while the client's lease holds.  The vote waits for all of it and
fails if anything failed, so the transaction aborts cleanly.  *Finishing*
only renames staged files into the cache; *aborting* deletes what the
transaction stored.
"""

from __future__ import annotations

import logging
import os
import time
from base64 import decodebytes
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError

from .blob_references import BlobReference
from .deferred_begin import DeferredBegin
from .errors import raises_storage_errors, storage_error
from .leases import LeaseBroken, lease_time_left, write_record
from .ownership import checksums_from
from .pending_uploads import PendingUploads
from .staged_blobs import StagedBlobs
from .resources import SharedResources
from .swift.adoption import copy_with_record
from .waiting import results, wait_for

log = logging.getLogger(__name__)


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
        self._staged = StagedBlobs(resources.cache, resources.staging.commit_prefix())
        self._copies: dict[bytes, str] = {}                        # oid -> source name
        self._pending = PendingUploads(resources)                  # big blobs, before the lock
        self._adopted: dict[bytes, BlobReference] = {}             # oid -> a ZEO client's upload
        self._work: dict[bytes, Future] = {}                       # oid -> upload, copy, publish
        self._names: set[str] = set()                              # objects it writes
        self._recorded: Future | None = None  # the record of its own pending objects' names
        self._records: list[str] = []         # the names of the clients' records written
        self._leases_end: dict[str, float] = {}  # a ZEO client's token -> its lease's end
        self._clients_objects: set[str] = set()  # final names of ZEO clients' uploads

    def staged_path(self, oid: bytes, serial: bytes) -> str | None:
        """The staged file of revision *serial* of blob *oid*, if this
        transaction stores it."""
        return self._staged.path(oid, serial, self.tid)

    @raises_storage_errors
    def stage(self, oid: bytes, serial: bytes | None, blobfilename: str) -> None:
        """Take the blob file of *oid* (of revision *serial* for a restore, else
        of this transaction): upload it now if it is big (pending), else once
        the transaction id is known."""
        self._forget(oid)
        staged = self._staged.take(oid, serial, blobfilename)
        if self.tid is not None:
            self._start(oid)
        elif serial is None and self._uploads_early(staged):
            self._pending.start(oid, staged)

    def adopt(self, oid: bytes, reference: BlobReference) -> None:
        """Take blob *oid* as the pending object a wrapped ZEO client uploaded
        (see :mod:`zodb_swiftblobs.blob_references`): published at the vote,
        if the client's lease still holds."""
        self._forget(oid)
        self._adopted[oid] = reference

    def copy_undone(self, oid: bytes, serial: bytes) -> None:
        """Bring back revision *serial* of blob *oid* (an undo): copied inside
        Swift to this transaction's id."""
        self._forget(oid)
        self._copies[oid] = self._resources.layout.object_name(oid, serial)
        if self.tid is not None:
            self._start(oid)

    def _forget(self, oid: bytes) -> None:
        """Forget what this transaction stored of blob *oid* so far (it is
        stored again), once its requests have ended."""
        self._settle(oid)  # an earlier upload of this oid may still read the file
        self._pending.discard(oid)
        self._staged.discard(oid)
        self._copies.pop(oid, None)
        self._adopted.pop(oid, None)

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
        self._pending.wait()
        self._staged.read_checksums()
        if self._pending:
            self._pending.check_lease()

    def vote(self, learn_tid: Callable[[], bytes]) -> None:
        """Start what waits for the transaction id (*learn_tid* gives it):
        uploads of small blobs, copies, one publishing request per pending
        object, and the records of wrapped ZEO clients' blobs; then wait for
        all of it and raise the first failure.
        After a failure, uploads not started yet are cancelled: the vote fails
        within about one deadline however many blobs wait in the queue."""
        if self.tid is None and (self._staged or self._copies or self._adopted):
            self.tid = learn_tid()
            self._start_known()
        if self._adopted:
            self._publish_adopted()
        wait_for([*self._work.values(), *filter(None, [self._recorded])])
        if self._pending:
            self._pending.check_lease()
        for token, end in self._leases_end.items():
            if time.monotonic() >= end:
                raise storage_error(LeaseBroken(
                    "publishing took longer than the ZEO client's lease allows",
                    operation="commit lease", name=self._resources.layout.commit_marker(token)))

    def finish(self, tid: bytes) -> None:
        """Move the committed blobs into the cache."""
        self._staged.move_into_cache(tid)

    def abort(self) -> None:
        """Remove what the aborted transaction put into Swift: its objects,
        the ZEO clients' records it wrote, its pending objects, then its
        lease's marker.  A ZEO client's pending object stays (its manifest
        goes alone): the client deletes it, or garbage collection once its
        lease lapsed, unless a committed manifest names it."""
        uploaded = [stored.name if stored.name in self._clients_objects else stored
                    for stored in results(self._work.values())]
        results(filter(None, [self._recorded]))
        self._pending.abort(uploaded, self._records)

    def end(self) -> None:
        """Remove the staged files not moved into the cache; the objects this
        transaction wrote are no longer in flight, and its lease ends (its
        marker and record stay: the record names the objects published, for
        garbage collection)."""
        self._staged.discard_all()
        self._resources.in_flight.difference_update(self._names)
        if self._pending.lease is not None:
            self._pending.lease.release(delete_marker=False)

    def _start_known(self) -> None:
        """Now that the transaction id is known: start the uploads of small
        blobs, the copies, and publishing the pending objects."""
        for oid in [*self._staged, *self._copies]:
            if oid not in self._pending:
                self._start(oid)
        if self._pending:
            self._publish_pending()

    def _uploads_early(self, path: str) -> bool:
        """Whether the staged blob file at *path* is uploaded before the lock."""
        resources = self._resources
        return (os.path.getsize(path) >= resources.early_upload_threshold
                and resources.container.supports_pending)

    def _publish_pending(self) -> None:
        """Start writing the record of the final names (for garbage
        collection, once the lease lapses), and publishing each pending object
        under its name: one request each, all at once."""
        self._pending.wait()  # done, unless an undo began the base early
        resources = self._resources
        objects = self._pending.objects()
        names = {oid: resources.layout.object_name(oid, self.tid) for oid in objects}
        self._recorded = resources.pool.submit(self._pending.lease.record, names)
        for oid, name in names.items():
            self._settle(oid)
            self._track(oid, name, resources.pool.submit(
                resources.container.publish, name, objects[oid]))

    @raises_storage_errors
    def _publish_adopted(self) -> None:
        """Publish the pending objects of wrapped ZEO clients: for each
        client's commit, once its lease is known to hold long enough, record
        the final names of its blobs (which keeps those published by manifest
        from garbage collection, tells the client they were published, and
        fails if its uploads were published before), then start a copy or a
        manifest per blob."""
        resources = self._resources
        container, layout = resources.container, resources.layout
        by_token: dict[str, dict[bytes, BlobReference]] = {}
        for oid, reference in self._adopted.items():
            by_token.setdefault(reference.token, {})[oid] = reference
        for token, references in by_token.items():
            self._leases_end[token] = time.monotonic() + lease_time_left(
                container, layout, token)
            names = {oid: layout.object_name(oid, self.tid) for oid in references}
            write_record(container, layout, token, names)
            self._records.append(layout.commit_record(token))  # deleted if the vote fails
            for oid, reference in references.items():
                publish = container.publish_copy if reference.publish == "copy" \
                    else container.publish
                self._settle(oid)
                self._track(oid, names[oid], resources.pool.submit(
                    publish, names[oid], reference.pending))
                self._clients_objects.add(names[oid])
        self._adopted.clear()

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
            path, serial = self._staged.file(oid)
            name = resources.layout.object_name(oid, serial or self.tid)
            work = resources.pool.submit(resources.container.upload, name, path)
        else:
            name, source = resources.layout.object_name(oid, self.tid), self._copies[oid]
            work = resources.pool.submit(
                copy_with_record, resources.container, source, name,
                source_predates_records=lambda: written_before_records(resources, source))
        self._track(oid, name, work)

    def _track(self, oid: bytes, name: str, work: Future) -> None:
        """Wait for *work* (which writes object *name*) at the vote; protect
        *name* from this process's garbage collection until the end."""
        self._work[oid] = work
        self._names.add(name)
        self._clients_objects.discard(name)  # until _publish_adopted adds it again
        self._resources.in_flight.add(name)


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


def written_before_records(resources: SharedResources, name: str) -> bool:
    """Whether object *name* is of a revision at or before the checksum
    watermark of the prefix's ownership marker: written by an earlier
    release, it may lack a recorded checksum."""
    watermark = checksums_from(resources.ownership.owner())
    revision = resources.layout.parse(name)
    return watermark is not None and revision is not None and revision[1] <= watermark

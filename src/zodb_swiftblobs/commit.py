"""The blob work of one transaction, from ``tpc_begin`` to its end.

``storeBlob`` and ``restoreBlob`` *stage* each blob file: it moves to a
staging name in the storage's temporary directory (in the cache's ``tmp``:
see :mod:`zodb_swiftblobs.staging`).  Each blob is uploaded as soon as the
transaction id is known (at ``tpc_begin`` for FileStorage, MappingStorage
and DemoStorage; during the vote for RelStorage), in a bounded pool and
concurrently with the rest of the commit; an undo copies, inside Swift, each
blob revision it brings back.  The *vote* waits for the uploads and copies
and fails if one failed, so the transaction aborts cleanly.  *Finishing*
only renames staged files into the cache; *aborting* deletes what the
transaction uploaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from base64 import decodebytes
from collections.abc import Callable, Iterator
from typing import Any
from concurrent.futures import FIRST_EXCEPTION, Future, wait

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError

from .errors import SwiftStorageError, raises_storage_errors, storage_error
from .resources import SharedResources
from .swift import SwiftError

log = logging.getLogger(__name__)

ABORT_DEADLINE = 10.0  # at most this (or the deadline) to delete an abort's uploads; else GC


class BlobCommit:
    """The blob work of *transaction*: staging, uploads and copies, the vote's
    wait, publishing into the cache, and an abort's clean-up.

    *tid* is the transaction's id when known at ``tpc_begin``; else the vote
    learns it.  :meth:`end` must follow, whether the transaction committed
    or aborted.
    """

    def __init__(self, transaction: Any, resources: SharedResources, tid: bytes | None) -> None:
        self.transaction = transaction
        self.tid = tid
        self._resources = resources
        self._staging_prefix = resources.staging.commit_prefix()
        self._staged: dict[bytes, tuple[str, bytes | None]] = {}  # oid -> (path, serial)
        self._copies: dict[bytes, str] = {}                        # oid -> source name
        self._work: dict[bytes, Future] = {}                       # oid -> upload or copy
        self._names: set[str] = set()                              # objects it writes

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
        of this transaction), and upload it once the transaction id is known."""
        staged = f"{self._staging_prefix}{oid.hex()}.blob"
        self._settle(oid)  # an earlier upload of this oid may still read the file
        self._resources.cache.stage(blobfilename, staged)
        self._staged[oid] = (staged, serial)
        self._copies.pop(oid, None)
        if self.tid is not None:
            self._start(oid)

    def copy_undone(self, oid: bytes, serial: bytes) -> None:
        """Bring back revision *serial* of blob *oid* (an undo): copied inside
        Swift to this transaction's id."""
        self._copies[oid] = self._resources.layout.object_name(oid, serial)
        self._settle(oid)
        self._unstage(oid)
        if self.tid is not None:
            self._start(oid)

    def vote(self, learn_tid: Callable[[], bytes]) -> None:
        """Start what waits for the transaction id (*learn_tid* gives it), then
        wait for every upload and copy; raise the first failure.  After a
        failure, uploads not started yet are cancelled: the vote fails within
        about one deadline however many blobs wait in the queue."""
        if self.tid is None and (self._staged or self._copies):
            self.tid = learn_tid()
            for oid in list(self._staged) + list(self._copies):
                self._start(oid)
        work = self._work.values()
        wait(work, return_when=FIRST_EXCEPTION)
        for future in work:
            future.cancel()  # does nothing to the finished and the running
        wait(work)
        failures = [future.exception() for future in work
                    if not future.cancelled() and future.exception() is not None]
        if failures:
            cancelled = sum(future.cancelled() for future in work)
            log.warning("%d of %d blob uploads failed (%d cancelled before they started); "
                        "the transaction aborts", len(failures), len(work), cancelled)
            error = failures[0]
            if isinstance(error, SwiftError):
                raise storage_error(error)
            raise SwiftStorageError(f"blob upload failed: {type(error).__name__}: {error}")

    def finish(self, tid: bytes) -> None:
        """Move the committed blobs into the cache (local renames only; a
        failure here costs a download later, never the commit)."""
        cache = self._resources.cache
        for oid, (path, serial) in self._staged.items():
            try:
                cache.publish(path, oid, serial or tid)
            except Exception as exc:
                log.warning("could not move committed blob %s into the cache (%s); it will "
                            "be downloaded when read", oid.hex(), exc)

    def abort(self) -> None:
        """Remove what the aborted transaction put into Swift."""
        for future in self._work.values():
            future.cancel()
        wait(self._work.values())
        uploaded = [future.result() for future in self._work.values()
                    if not future.cancelled() and future.exception() is None]
        if not uploaded:
            return
        try:
            container = self._resources.container
            container.delete_many(uploaded, deadline=min(ABORT_DEADLINE, container.deadline))
        except SwiftError as exc:
            log.warning("could not delete %d objects of an aborted transaction (%s); "
                        "the next pack's garbage collection will", len(uploaded), exc)

    def end(self) -> None:
        """Remove the staged files not moved into the cache; the objects this
        transaction wrote are no longer in flight."""
        for oid in list(self._staged):
            self._unstage(oid)
        self._resources.in_flight.difference_update(self._names)

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
        self._work[oid] = work
        self._names.add(name)
        resources.in_flight.add(name)


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

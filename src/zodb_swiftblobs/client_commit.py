"""The blob work of one transaction of a wrapped ZEO client.

A ZEO client wrapped in a SwiftBlobStorage writes its blobs into Swift
itself, so that no blob byte passes through the ZEO server (whose server
wraps its storage in a SwiftBlobStorage too, with the same container and
prefix).  The client never knows the transaction id before ``tpc_finish``,
so each blob is uploaded, as soon as it is stored, as a *pending object*
under the commit's lease (see :mod:`zodb_swiftblobs.pending_uploads`): a
plain object when it is smaller than ``early_upload_threshold`` and fits in
one object of the cluster (the server will copy it inside Swift), else as big
blobs are (the server will publish a manifest naming it).  Before the client
votes, it waits for the uploads, checks that the lease held, and sends the
server, through ZEO's ordinary blob messages, a small reference per blob
instead of its bytes (see :mod:`zodb_swiftblobs.blob_references`); the
server publishes them at its vote (:meth:`.BlobCommit.adopt`), and the
client stops refreshing the lease once the vote has returned.

After ``tpc_finish`` the staged files move into the client's cache, and the
pending objects the server copied are deleted in the background (with the
server's record of them and the lease's marker, when no blob was published
by manifest).  An abort deletes
the pending objects, then the marker.  On a cluster without Static Large
Objects there are no pending objects: blob files go to the server as a plain
ZEO client sends them.  A restore (``copyTransactionsFrom``) knows its
transaction id: its blobs upload under their final names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import Future
from typing import Any

from .bases import send_blob_file
from .blob_references import BlobReference, write_reference
from .errors import SwiftStorageError, raises_storage_errors
from .leases import read_record
from .pending_uploads import PendingUploads
from .staged_blobs import StagedBlobs
from .resources import SharedResources
from .swift import PendingObject, SwiftError
from .waiting import results, wait_for

log = logging.getLogger(__name__)

RECORD_READS = 3          # reads of the server's record before the vote fails
RECORD_READ_PAUSE = 0.5   # seconds between them


class ClientBlobCommit:
    """The blob work of *transaction*, committed through ZEO client *client*:
    staging, pending uploads and their lease, references sent to the server,
    publishing into the cache, an abort's clean-up.  *tid* is known for a
    restore only.  :meth:`end` must follow, whether it committed or aborted.
    """

    begin = None  # the ZEO server begins its storage's transaction itself

    def __init__(self, transaction: Any, resources: SharedResources, client: Any,
                 tid: bytes | None) -> None:
        self.transaction = transaction
        self.tid = tid
        self._client = client
        self._resources = resources
        self._staged = StagedBlobs(resources.cache, resources.staging.commit_prefix())
        self._records: dict[bytes, tuple[bytes, bytes]] = {}     # oid -> (old serial, data)
        self._pending = PendingUploads(resources)
        self._restores: dict[bytes, Future] = {}                 # oid -> upload, final name
        self._names: set[str] = set()                            # final names it uploads
        self._references: list[str] = []                        # reference files written
        self._small: set[bytes] = set()                          # oids the server copies
        self._copied: list[PendingObject] = []                   # their pending objects
        self._committed = False

    def staged_path(self, oid: bytes, serial: bytes) -> str | None:
        """The staged file of revision *serial* of blob *oid*, if this
        transaction stores it."""
        return self._staged.path(oid, serial, self.tid)

    @raises_storage_errors
    def store_blob(self, oid: bytes, oldserial: bytes, data: bytes, blobfilename: str) -> None:
        """Take blob *oid*'s file (its record *data*, stored over *oldserial*,
        has gone to the server): upload it now as a pending object."""
        staged = self._take(oid, None, blobfilename)
        self._records[oid] = (oldserial, data)
        resources = self._resources
        if resources.container.supports_pending:
            size = os.path.getsize(staged)
            small = size == 0 or (size < resources.early_upload_threshold
                                  and size <= resources.container.large_object_threshold)
            if small:
                self._small.add(oid)
            self._pending.start(oid, staged, plain=small)

    @raises_storage_errors
    def stage(self, oid: bytes, serial: bytes, blobfilename: str) -> None:
        """Take the file of revision *serial* of blob *oid* (a restore): upload
        it now under its final name."""
        staged = self._take(oid, serial, blobfilename)
        resources = self._resources
        name = resources.layout.object_name(oid, serial)
        self._restores[oid] = resources.pool.submit(resources.container.upload, name, staged)
        self._names.add(name)
        resources.in_flight.add(name)

    def _take(self, oid: bytes, serial: bytes | None, blobfilename: str) -> str:
        """Stage blob *oid*'s file, forgetting what was stored of it before."""
        previous = self._restores.pop(oid, None)
        if previous is not None:
            wait_for([previous])
        self._pending.discard(oid)
        self._records.pop(oid, None)
        self._small.discard(oid)
        return self._staged.take(oid, serial, blobfilename)

    def prepare(self) -> None:
        """Before the vote: wait for the uploads (raise the first failure),
        read the staged files' checksums for the cache, check that the lease
        held, and send the server each blob's reference (its file, on a
        cluster without pending objects).  The lease is kept while the vote
        waits for the server's commit lock, however long that takes."""
        self._pending.wait()
        wait_for(self._restores.values())
        self._staged.read_checksums()
        objects = {}
        if self._pending:
            self._pending.check_lease()
            objects = self._pending.objects()
        for oid, (serial, data) in self._records.items():
            path = self._staged.file(oid)[0]
            if oid in objects:
                path = self._reference(oid, objects[oid])
            send_blob_file(self._client, oid, serial, data, path, self.transaction)

    def _reference(self, oid: bytes, pending: PendingObject) -> str:
        """Write the reference to *pending*, blob *oid*'s pending object; its path."""
        resources = self._resources
        copy = oid in self._small
        if copy:
            self._copied.append(pending)
        path = f"{self._staged.prefix}{oid.hex()}.reference"
        write_reference(path, BlobReference(
            resources.container.container, resources.layout.prefix,
            self._pending.lease.token, oid, pending, "copy" if copy else "manifest"))
        self._references.append(path)
        return path

    def begin_base(self, learn_tid: Any) -> None:
        """Nothing: the ZEO server begins its storage's transaction."""

    @raises_storage_errors
    def vote(self, learn_tid: Any) -> None:
        """The server published the blobs while the base voted: stop
        refreshing the lease (the record the server wrote keeps the
        manifests' pending objects), and check that record names every blob:
        a server whose storage is no SwiftBlobStorage would have stored the
        references themselves as the blobs."""
        if not self._pending:
            return
        lease = self._pending.lease
        lease.stop_refreshing()
        resources = self._resources
        for attempt in range(RECORD_READS):  # just written: another node may lag behind
            if attempt:
                time.sleep(RECORD_READ_PAUSE)
            record = read_record(resources.container, resources.layout, lease.token) or {}
            missing = [oid.hex() for oid in self._records if oid.hex() not in record]
            if not missing:
                return
        raise SwiftStorageError(
            f"the ZEO server did not publish blob(s) {', '.join(missing)}: its storage "
            "must be a swiftblobstorage (possibly inside other wrappers) with this "
            f"client's container {resources.container.container!r} and prefix "
            f"{resources.layout.prefix!r}")

    def finish(self, tid: bytes) -> None:
        """Move the committed blobs into the cache."""
        self._committed = True
        self._staged.move_into_cache(tid)

    def abort(self) -> None:
        """Remove what the aborted transaction put into Swift: the blobs it
        restored, its pending objects, then its lease's marker."""
        self._pending.abort(results(self._restores.values()))

    def end(self) -> None:
        """Remove the staged files and references; after a commit, delete in
        the background the pending objects the server copied."""
        self._staged.discard_all()
        for path in self._references:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._resources.in_flight.difference_update(self._names)
        lease = self._pending.lease
        if lease is None:
            return
        if not self._committed:
            lease.release(delete_marker=False)
            return
        self._resources.pool.submit(self._clean_up, self._copied,
                                    len(self._copied) == len(self._records))

    def _clean_up(self, copied: list[PendingObject], all_copied: bool) -> None:
        """Delete the pending objects the server copied and, if nothing of
        the commit is left, the server's record of them (one bulk request),
        then the lease's marker (else garbage collection removes them once
        its manifests are gone)."""
        container = self._resources.container
        lease = self._pending.lease
        names = [pending.name for pending in copied]  # plain objects: no segments
        if all_copied:
            names.append(self._resources.layout.commit_record(lease.token))
        try:
            container.delete_many(names, container=container.segment_container)
        except SwiftError as exc:
            log.info("could not delete the pending objects of a commit after publishing "
                     "(%s); garbage collection will", exc)
            all_copied = False
        lease.release(delete_marker=all_copied)

"""SwiftBlobStorage: a ZODB storage wrapper that keeps blobs in OpenStack Swift.

Records go to the wrapped (base) storage; blob files go to a Swift container,
one object per blob revision (see :mod:`zodb_swiftblobs.layout`), with a local
cache for reads (:mod:`zodb_swiftblobs.cache`).  Each transaction's blob work
(staging, uploads during the commit, the vote's wait, publishing into the
cache, an abort's clean-up) is a :class:`zodb_swiftblobs.commit.BlobCommit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import IO, Any

import ZODB.blob
import ZODB.DemoStorage
import ZODB.interfaces
import ZODB.serialize
from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError, ReadOnlyError, StorageError, StorageTransactionError
from zope.interface import directlyProvides, implementer, providedBy

from . import options
from .bases import (TidKnown, TidProbe, current_view, is_zeo_client, last_committed_tid,
                    latest_committed_tid, revision_exists, served_by_zeo_server)
from .blob_references import take_reference
from .cache import BlobCache
from .client_commit import ClientBlobCommit
from .commit import BlobCommit, revisions_undo_restores
from .copying import copy_transactions_with_blobs
from .deferred_begin import LOGGED_CALLS, DeferredBegin, through_deferred_begin
from .errors import SwiftStorageError, SwiftTransientError, raises_storage_errors
from .gc import GarbageReport, collect_garbage
from .layout import ObjectLayout
from .ownership import PrefixOwnership
from .progress import Progress
from .resources import SharedResources
from .swift import NotFoundError, SwiftContainer


@implementer(ZODB.interfaces.IStorageWrapper, ZODB.interfaces.IBlobStorage)
class SwiftBlobStorage:
    """Wrap *base* (any ZODB storage without blobs of its own) and keep blobs in Swift.

    The container is created if missing (unless *base* is read-only);
    *prefix* (empty or ending in ``/``)
    lets several databases share it.  *cache_dir* holds the read cache (kept
    near *cache_size* bytes) and, in ``cache_dir/tmp``, uncommitted blobs.
    With *create_container* false a missing container is an error at open.
    Credentials are those of :class:`zodb_swiftblobs.swift.Credentials`
    (from the ``ST_*``/``OS_*`` environment when none are given).
    *encryption_keys* (key texts; by default the ``ZODB_SWIFTBLOBS_ENCRYPTION_KEYS``
    environment variable) turn on encryption at rest (see
    :mod:`zodb_swiftblobs.encryption`).  Garbage collection schedules the
    deletion of orphans *gc_grace_period* seconds later (0: deletes them at
    once), so that a database restored from a backup finds its blobs.
    Every setting is declared in :mod:`zodb_swiftblobs.options`.
    """

    copied_methods = (
        "getName", "getSize", "history", "isReadOnly", "lastTransaction", "load",
        "loadBefore", "loadSerial", "new_oid", "sortKey", "supportsUndo", "undoLog",
        "undoInfo", "iterator", "record_iternext", "prefetch", "poll_invalidations", "sync",
    )

    # options-signature: python -m zodb_swiftblobs.options --signature writes it
    def __init__(self, base: Any, container: str = "zodb-blobs", cache_dir: str | None = None,
                 cache_size: int = 10737418240, prefix: str = "", *, auth_url: str | None = None,
                 user: str | None = None, key: str | None = None, auth_version: str | None = None,
                 project_name: str | None = None, project_id: str | None = None,
                 project_domain_name: str | None = None, project_domain_id: str | None = None,
                 user_domain_name: str | None = None, user_domain_id: str | None = None,
                 region_name: str | None = None, interface: str | None = None,
                 application_credential_id: str | None = None,
                 application_credential_secret: str | None = None, preauth_url: str | None = None,
                 preauth_token: str | None = None, cacert: str | None = None,
                 insecure: bool = False, storage_policy: str | None = None, deadline: float = 60.0,
                 timeout: float = 10.0, initial_backoff: float = 0.25, max_backoff: float = 8.0,
                 upload_concurrency: int = 8, early_upload_threshold: int = 4194304,
                 commit_lease: float = 600.0, large_object_threshold: int | None = None,
                 segment_size: int = 33554432, segment_concurrency: int = 4,
                 temp_url_key: str | None = None, create_container: bool = True,
                 gc_grace_period: float = 604800.0,
                 encryption_keys: str | Sequence[str] | None = None) -> None:
        settings = options.from_arguments(locals())
        self._wrap(base)
        options.check(settings)
        self._attach(SharedResources.open(base, settings), root=True)

    __init__.__doc__ = options.docstring()

    @classmethod
    def _sharing(cls, base, resources: SharedResources) -> SwiftBlobStorage:
        """Another instance of the database of *resources*, around *base*."""
        instance = cls.__new__(cls)
        instance._wrap(base)
        instance._attach(resources, root=False)
        return instance

    def _wrap(self, base) -> None:
        # A ZEO client says it stores blobs when its server does; wrapped, it
        # writes and reads them in Swift itself.
        if ZODB.interfaces.IBlobStorage.providedBy(base) and not is_zeo_client(base):
            raise ValueError(f"{type(base).__name__} keeps blobs itself; configure it "
                             "without a blob directory to wrap it in SwiftBlobStorage")
        self.base = base
        self._probe = TidProbe(base)

    def _attach(self, resources: SharedResources, *, root: bool) -> None:
        base = self.base
        self._resources = resources
        if root:  # a ZODB database asks for paths it does not open (a ZEO server: see registerDB)
            resources.cache.pins_wait_for_open = False
        self._root = root
        # by transaction: several at once, as FileStorage's begin waits
        self._commits: dict[Any, BlobCommit | ClientBlobCommit] = {}
        self._db = None
        self._served_by_zeo = False
        for name in self.copied_methods:
            method = getattr(base, name, None)
            if method is not None:
                setattr(self, name, method)
        for name in LOGGED_CALLS:  # they wait for a delayed tpc_begin
            if hasattr(base, name):
                setattr(self, name, through_deferred_begin(base, name, self._commits))
        provided = [providedBy(base), ZODB.interfaces.IStorageWrapper,
                    ZODB.interfaces.IBlobStorage]
        if ZODB.interfaces.IStorageRestoreable.providedBy(base):
            provided.append(ZODB.interfaces.IBlobStorageRestoreable)
        directlyProvides(self, *provided)
        if hasattr(base, "registerDB"):
            base.registerDB(self)
            # RelStorage puts its own copyTransactionsFrom on the wrappers it is
            # registered with (for zc.zlibstorage); it would copy no blobs here.
            vars(self).pop("copyTransactionsFrom", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return (f"<SwiftBlobStorage {self._resources.container.container!r} "
                f"prefix={self._resources.layout.prefix!r} around {self.base!r}>")

    @property
    def swift_container(self) -> SwiftContainer:
        """The Swift container holding the blobs."""
        return self._resources.container

    @property
    def object_layout(self) -> ObjectLayout:
        """The names of the blob revisions' objects in the container."""
        return self._resources.layout

    @property
    def prefix_ownership(self) -> PrefixOwnership:
        """The ownership marker of the blobs' prefix."""
        return self._resources.ownership

    @property
    def cache(self) -> BlobCache:
        """The local cache of blob files (shared by all instances of the database)."""
        return self._resources.cache

    # -- IStorageWrapper ------------------------------------------------------------

    def registerDB(self, db: Any) -> None:
        self._db = db
        if served_by_zeo_server(db):  # it opens each path it asks for, maybe much later
            self._resources.cache.pins_wait_for_open = True
            self._served_by_zeo = True

    def invalidateCache(self) -> None:
        if self._db is not None:
            self._db.invalidateCache()

    def invalidate(self, transaction_id: bytes, oids: Any, version: str = "") -> None:
        if self._db is not None:
            self._db.invalidate(transaction_id, oids)

    def references(self, record: bytes, oids: list[bytes] | None = None) -> list[bytes]:
        if self._db is not None:
            return self._db.references(record, oids)
        return ZODB.serialize.referencesf(record, oids)

    def transform_record_data(self, data: bytes) -> bytes:
        return self._db.transform_record_data(data) if self._db is not None else data

    def untransform_record_data(self, data: bytes) -> bytes:
        return self._db.untransform_record_data(data) if self._db is not None else data

    # -- MVCC bases (RelStorage) -------------------------------------------------------

    def new_instance(self) -> SwiftBlobStorage:
        return self._sharing(self.base.new_instance(), self._resources)

    def before_instance(self, before: bytes) -> SwiftBlobStorage:
        return self._sharing(self.base.before_instance(before), self._resources)

    def release(self) -> None:
        release = getattr(self.base, "release", None)  # only MVCC bases have it
        if release is not None:
            release()

    def close(self) -> None:
        """Close the base; the root instance also closes Swift connections and
        threads (the cache stays, and cached blobs can still be read)."""
        try:
            self.base.close()
        finally:
            if self._root:
                self._resources.close()

    # -- reading blobs ---------------------------------------------------------------

    def temporaryDirectory(self) -> str:
        """Where ZODB puts uncommitted blobs (see :mod:`zodb_swiftblobs.staging`)."""
        return self._resources.staging.directory

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        """The path of a local copy of revision *serial* of blob *oid*.  An
        object scheduled for deletion is served only while the base has its
        revision (a database restored from a backup); else POSKeyError."""
        return self._local_copy(oid, serial, handed_out=True)

    def _local_copy(self, oid: bytes, serial: bytes, *, handed_out: bool) -> str:
        """loadBlob's path, for a caller that opens it later (*handed_out*)
        or this thread right away."""
        for commit in list(self._commits.values()):
            staged = commit.staged_path(oid, serial)
            if staged is not None:
                return staged
        path = self._cached(oid, serial, handed_out)
        if path is not None:
            return path
        if not revision_exists(self.base, oid, serial):
            raise POSKeyError(oid, serial)
        raise SwiftTransientError(
            f"the database has revision {serial.hex()} of blob {oid.hex()}, but Swift "
            f"has no object {self._resources.layout.object_name(oid, serial)!r} (not visible yet, "
            "or lost)")

    @raises_storage_errors
    def _cached(self, oid: bytes, serial: bytes, handed_out: bool) -> str | None:
        """The cached copy of a blob revision, downloaded if need be; None when
        Swift has no object for it (or only one scheduled for deletion whose
        revision the base no longer has)."""
        resources = self._resources
        name = resources.layout.object_name(oid, serial)

        def fetch(path: str) -> None:
            stored = resources.container.download(name, path)
            if stored.delete_at is not None and not revision_exists(self.base, oid, serial):
                raise NotFoundError("scheduled for deletion by garbage collection",
                                    operation="download", name=name)
        try:
            return resources.cache.get(oid, serial, fetch, handed_out=handed_out)
        except NotFoundError:
            return None

    def openCommittedBlobFile(self, oid: bytes, serial: bytes,
                              blob: ZODB.blob.Blob | None = None) -> IO[bytes]:
        """Open a committed blob revision for reading (fetched again if evicted)."""
        for attempt in (1, 2):
            path = self._local_copy(oid, serial, handed_out=False)
            try:
                if blob is None:
                    return open(path, "rb")
                return ZODB.blob.BlobFile(path, "r", blob)
            except FileNotFoundError:
                if attempt == 2:
                    raise

    @raises_storage_errors
    def blob_url(self, oid: bytes, serial: bytes | None = None, *, method: str = "GET",
                 expires: int = 3600, filename: str | None = None) -> str:
        """A Swift TempURL for revision *serial* (by default the current one) of
        blob *oid*, valid for *expires* seconds, for serving it straight from Swift.

        The key is the configured ``temp_url_key``, else the container's or the
        account's ``Temp-URL-Key``.  *filename* makes Swift send the blob as an
        attachment of that name.  POSKeyError if there is no such blob revision.
        """
        if serial is None:
            data, serial = self.base.load(oid)
        else:
            data = self.base.loadSerial(oid, serial)
        if not is_blob_record(self.untransform_record_data(data)):
            raise POSKeyError(oid, serial)
        resources = self._resources
        key = resources.configured_temp_url_key or resources.swift_temp_url_key()
        if key is None:
            raise SwiftStorageError(
                f"no TempURL key: configure temp-url-key, or set Temp-URL-Key on "
                f"container {resources.container.container!r} or on its account")
        return resources.container.temp_url(resources.layout.object_name(oid, serial), key=key,
                                            method=method, seconds=expires,
                                            filename=filename)

    def cache_stats(self) -> dict[str, int]:
        """Counters of the local cache: hits, misses, bytes downloaded, evictions..."""
        return self._resources.cache.stats()

    # -- two-phase commit --------------------------------------------------------------

    def tpc_begin(self, transaction: Any, tid: bytes | None = None,
                  status: str = " ") -> None:
        """Begin *transaction*.  A base that takes its commit lock here
        (FileStorage, MappingStorage, DemoStorage) begins only at the vote,
        after the big blobs' uploads (see :mod:`.deferred_begin`), unless a
        ZEO server serves it: the server begins it at its own vote, under its
        own lock, and needs each store's ConflictError from the store."""
        if transaction in self._commits:
            raise StorageTransactionError("Duplicate tpc_begin calls for same transaction")
        if (tid is None and status == " " and self._probe.known is TidKnown.AT_BEGIN
                and not self._served_by_zeo):
            if self.base.isReadOnly():
                raise ReadOnlyError()
            begin = DeferredBegin(self.base, transaction)
            self._commits[transaction] = BlobCommit(transaction, self._resources, None, begin)
            return
        if tid is None and status == " ":
            self.base.tpc_begin(transaction)
        else:
            self.base.tpc_begin(transaction, tid, status)
        if self._probe.known is TidKnown.AT_FINISH:
            self._commits[transaction] = ClientBlobCommit(transaction, self._resources,
                                                          self.base, tid)
            return
        if tid is None and self._probe.known is TidKnown.AT_BEGIN:
            tid = self._probe.tid()
        self._commits[transaction] = BlobCommit(transaction, self._resources, tid)

    def _current(self, transaction: Any) -> BlobCommit | ClientBlobCommit:
        commit = self._commits.get(transaction)
        if commit is None:
            raise StorageError("blob stored outside of the storage's current transaction")
        return commit

    def _committing(self, transaction: Any) -> BlobCommit | ClientBlobCommit | None:
        return self._commits.get(transaction)

    def storeBlob(self, oid: bytes, oldserial: bytes, data: bytes, blobfilename: str,
                  version: str, transaction: Any) -> None:
        assert not version, "versions are not supported"
        self.store(oid, oldserial, data, "", transaction)
        commit = self._current(transaction)
        if isinstance(commit, ClientBlobCommit):
            commit.store_blob(oid, oldserial, data, blobfilename)
            return
        resources = self._resources
        reference = take_reference(blobfilename, oid, resources.container, resources.layout)
        if reference is None:
            commit.stage(oid, None, blobfilename)
        else:
            commit.adopt(oid, reference)

    def restoreBlob(self, oid: bytes, serial: bytes, data: bytes, blobfilename: str,
                    prev_txn: bytes | None, transaction: Any) -> None:
        self.restore(oid, serial, data, "", prev_txn, transaction)
        self._current(transaction).stage(oid, serial, blobfilename)

    def undo(self, transaction_id: bytes, transaction: Any) -> Any:
        """Undo through the base; each blob revision the undo brings back is
        copied inside Swift to the undoing transaction's id (by the ZEO
        server's wrapper, for a ZEO client)."""
        if self._probe.known is TidKnown.AT_FINISH:
            return self.base.undo(transaction_id, transaction)
        commit = self._committing(transaction)
        if commit is not None:
            commit.begin_base(self._probe.tid)  # the base's undo needs its transaction
        result = self.base.undo(transaction_id, transaction)
        commit = self._current(transaction)
        for oid, serial in revisions_undo_restores(self.base, transaction_id,
                                                   self.untransform_record_data):
            commit.copy_undone(oid, serial)
        return result

    def tpc_vote(self, transaction: Any) -> Any:
        """Vote: wait for the big blobs' uploads, begin the base if it waits
        (taking its lock), vote in the base, then upload the small blobs and
        publish the big ones under the transaction's id."""
        commit = self._committing(transaction)
        if commit is not None:
            commit.prepare()
            commit.begin_base(self._probe.tid)
        result = self.base.tpc_vote(transaction)
        if commit is not None:
            commit.vote(self._probe.tid)
        return result

    def tpc_finish(self, transaction: Any,
                   func: Callable[[bytes], None] = lambda tid: None) -> bytes:
        commit = self._committing(transaction)

        def finished(tid: bytes) -> None:
            # Called while the base still holds its commit lock: the blobs are
            # in the cache, and the commit's state gone, before any other
            # thread learns of the new transaction.
            if commit is not None:
                commit.finish(tid)
                self._end(commit)
            func(tid)

        try:
            return self.base.tpc_finish(transaction, finished)
        finally:
            if commit is not None:
                self._end(commit)

    def tpc_abort(self, transaction: Any) -> None:
        """Abort; what the transaction put into Swift is deleted before the base
        releases its commit lock (the next transaction may reuse the tid)."""
        commit = self._committing(transaction)
        if commit is None:
            self.base.tpc_abort(transaction)
            return
        try:
            commit.abort()
        finally:
            try:
                if commit.begin is None or commit.begin.begun:
                    self.base.tpc_abort(transaction)
            finally:
                self._end(commit)

    def _end(self, commit: BlobCommit | ClientBlobCommit) -> None:
        """End *commit*, once (``tpc_finish`` ends it in the base's callback,
        or after the base failed)."""
        if self._commits.get(commit.transaction) is commit:
            del self._commits[commit.transaction]
            commit.end()

    # -- pack and copy -----------------------------------------------------------------

    def pack(self, pack_time: float, referencesf: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        """Pack the base, then delete the Swift objects of revisions it dropped.

        Extra arguments go to the base's pack (``gc`` for FileStorage,
        ``prepack_only``/``check_refs`` for RelStorage, which skip collection).
        A ZEO client's server packs, and its wrapper collects.
        """
        if kwargs.get("gc", 0) is None:
            del kwargs["gc"]
        if self._probe.known is TidKnown.AT_FINISH:
            return self.base.pack(pack_time, referencesf, *args, **kwargs)
        last = latest_committed_tid(self.base)
        result = self.base.pack(pack_time, referencesf, *args, **kwargs)
        if not (kwargs.get("prepack_only") or kwargs.get("check_refs")):
            self.collect_garbage(last)
        return result

    @raises_storage_errors
    def collect_garbage(self, last_tid: bytes | None = None, *, dry_run: bool = False,
                        min_age: float = 0.0, grace_period: float | None = None,
                        progress: Progress | None = None) -> GarbageReport:
        """Delete objects of blob revisions the base no longer has, sparing
        those modified less than *min_age* seconds ago (see :mod:`.gc`), or
        schedule their deletion *grace_period* seconds later (by default the
        storage's ``gc_grace_period``).

        Runs only in a prefix this database owns (claimed now if unclaimed),
        checked again before each batch of deletions.
        """
        if isinstance(self.base, ZODB.DemoStorage.DemoStorage):
            raise SwiftStorageError("no blob garbage collection over a DemoStorage: its "
                                    "blobs may be those of the storage it is layered on")
        if self._probe.known is TidKnown.AT_FINISH:
            raise SwiftStorageError("no blob garbage collection through a ZEO client: pack "
                                    "the database, or run gc with the ZEO server's "
                                    "configuration")
        resources = self._resources
        resources.ownership.check(claim=not dry_run)
        with current_view(self.base) as view:
            return collect_garbage(
                resources.container, resources.layout, view, resources.cache,
                last_tid or last_committed_tid(view), dry_run=dry_run,
                protected=resources.in_flight, min_age=min_age,
                grace_period=resources.gc_grace_period if grace_period is None
                else grace_period, progress=progress,
                before_deleting=lambda: resources.ownership.check(claim=False))

    def copyTransactionsFrom(self, other: Any) -> None:
        """Copy every transaction of *other*, its blobs going to Swift under
        their original transaction ids (what zodbconvert does)."""
        copy_transactions_with_blobs(self, other, self._resources.staging)

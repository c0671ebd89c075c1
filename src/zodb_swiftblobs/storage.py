"""SwiftBlobStorage: a ZODB storage wrapper that keeps blobs in OpenStack Swift.

Records go to the wrapped (base) storage; blob files go to a Swift container,
one object per blob revision (see :mod:`zodb_swiftblobs.keys`), with a local
cache for reads (:mod:`zodb_swiftblobs.cache`).

Two-phase commit: ``storeBlob`` stores the record in the base and moves the
blob file to a staging name in its temporary directory (in the cache's
``tmp``: see :mod:`zodb_swiftblobs.staging`).  Each blob is
uploaded as soon as the transaction id is known (at ``tpc_begin`` for
FileStorage, MappingStorage and DemoStorage; after the base has voted for
RelStorage), in a bounded pool and concurrently with the rest of the commit.
``tpc_vote`` waits for the uploads and fails if one failed, so the
transaction aborts cleanly.  ``tpc_finish`` only renames staged files into
the cache.  ``tpc_abort`` deletes what the transaction uploaded.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from base64 import decodebytes
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

import ZODB.blob
import ZODB.DemoStorage
import ZODB.interfaces
import ZODB.serialize
from ZODB.blob import is_blob_record
import transaction.interfaces
from ZODB.POSException import POSKeyError, StorageError
from ZODB.utils import cp
from zope.interface import directlyProvides, implementer, providedBy

from .bases import TidKnown, TidProbe, last_committed_tid
from .cache import BlobCache, CacheDirectoryError
from .gc import GarbageReport, collect_garbage, require_grace_period, revision_exists
from .keys import KeyLayout
from .ownership import (EncryptionRequiredError, ForeignPrefixError, PrefixOwnership,
                        database_identity)
from .progress import Progress
from .staging import StagingArea
from .swift import (NotFoundError, SwiftContainer, SwiftError, SwiftUnavailableError,
                          container_arguments, open_container, require_positive)

log = logging.getLogger(__name__)

GIB = 1 << 30
ABORT_DEADLINE = 10.0  # at most this (or the deadline) to delete an abort's uploads; else GC
TEMP_URL_KEY_TTL = 300.0  # seconds a TempURL key read from Swift is used
GC_GRACE_PERIOD = 7 * 24 * 3600.0  # a week: a nightly backup restored days after a mistake
# The keyword arguments of SwiftBlobStorage that configure the Swift access layer.
SWIFT_OPTIONS = (
    "auth_url", "user", "key", "auth_version", "project_name", "project_id",
    "project_domain_name", "project_domain_id", "user_domain_name", "user_domain_id",
    "region_name", "interface", "application_credential_id",
    "application_credential_secret", "preauth_url", "preauth_token", "cacert", "insecure",
    "storage_policy", "deadline", "timeout", "large_object_threshold", "segment_size",
    "encryption_keys",
)


class SwiftTransientError(StorageError, transaction.interfaces.TransientError):
    """Swift could not be reached in time; the operation may succeed later
    (``transaction``'s retry loops retry it, as ZEO's ClientDisconnected)."""


class SwiftStorageError(StorageError):
    """Swift refused an operation (authentication, checksum, configuration)."""


class BlobCacheError(StorageError):
    """The local blob cache could not take a file: its disk is full or
    read-only, or permissions forbid it (the message says which, and where)."""


def check_options(*, container: str, cache_dir: str | None, cache_size: int, prefix: str,
                  upload_concurrency: int, temp_url_key: str | None,
                  create_container: bool, gc_grace_period: float, **others) -> None:
    """ValueError for a keyword argument of SwiftBlobStorage that it would
    refuse (all but *base* are given); nothing is opened or contacted."""
    if not cache_dir:
        raise ValueError("SwiftBlobStorage needs a cache_dir")
    require_positive("cache_size", cache_size)
    require_positive("upload_concurrency", upload_concurrency)
    require_grace_period(gc_grace_period)
    if temp_url_key is not None and not (isinstance(temp_url_key, str) and temp_url_key):
        raise ValueError("temp_url_key must be a non-empty text when given")
    if not isinstance(create_container, bool):
        raise ValueError(f"create_container must be true or false, not "
                         f"{create_container!r}")
    KeyLayout(prefix)
    container_arguments(container, **{name: others[name] for name in SWIFT_OPTIONS})


def option_names() -> list[str]:
    """The names of SwiftBlobStorage's settings: its keyword arguments but *base*."""
    return [name for name, parameter in
            inspect.signature(SwiftBlobStorage.__init__).parameters.items()
            if name not in ("self", "base") and not name.startswith("_")]


def _storage_error(error: SwiftError) -> StorageError:
    if isinstance(error, SwiftUnavailableError):
        return SwiftTransientError(str(error))
    return SwiftStorageError(str(error))


class _Commit:
    """The blob work of one transaction."""

    def __init__(self, transaction, staging_prefix: str) -> None:
        self.transaction = transaction
        self.tid: bytes | None = None
        self.staging_prefix = staging_prefix
        self.staged: dict[bytes, tuple[str, bytes | None]] = {}   # oid -> (path, serial)
        self.copies: dict[bytes, str] = {}                         # oid -> source key
        self.work: dict[bytes, Future] = {}                        # oid -> upload or copy
        self.names: set[str] = set()                               # objects it writes

    def staged_path(self, oid: bytes, serial: bytes) -> str | None:
        entry = self.staged.get(oid)
        if entry is None:
            return None
        path, own_serial = entry
        return path if (own_serial or self.tid) == serial else None

    def staging_path(self, oid: bytes) -> str:
        """Where the blob file of *oid* waits for the end of the transaction."""
        return f"{self.staging_prefix}{oid.hex()}.blob"

    def unstage(self, oid: bytes) -> None:
        """Forget the staged file of *oid* (its upload must be settled), and remove it."""
        path, _ = self.staged.pop(oid, (None, None))
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def remove_staging(self) -> None:
        """Remove the staged files not moved into the cache."""
        for oid in list(self.staged):
            self.unstage(oid)


class _Shared:
    """What all instances of one wrapped database share (MVCC instances)."""

    def __init__(self, container: SwiftContainer, keys: KeyLayout, cache: BlobCache,
                 ownership: PrefixOwnership, upload_concurrency: int,
                 temp_url_key: str | None, gc_grace_period: float) -> None:
        self.container = container
        self.gc_grace_period = gc_grace_period
        self.keys = keys
        self.cache = cache
        self.ownership = ownership
        self.staging = StagingArea(cache.temporary_directory, cache.directory)
        self.configured_temp_url_key = temp_url_key
        self._swift_temp_url_key: tuple[float, str | None] = (float("-inf"), None)
        self.pool = ThreadPoolExecutor(upload_concurrency, thread_name_prefix="swift-upload")
        self.in_flight: set[str] = set()  # names uploaded by commits not yet ended

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
        self.staging.close()
        self.cache.close()
        self.container.close()


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
    """

    copied_methods = (
        "getName", "getSize", "history", "isReadOnly", "lastTransaction", "load",
        "loadBefore", "loadSerial", "new_oid", "sortKey", "store", "restore",
        "supportsUndo", "undoLog", "undoInfo", "iterator", "record_iternext",
        "checkCurrentSerialInTransaction", "deleteObject", "prefetch",
        "poll_invalidations", "sync",
    )

    def __init__(self, base, container: str = "zodb-blobs", cache_dir: str | None = None,
                 cache_size: int = 10 * GIB, prefix: str = "", *,
                 auth_url: str | None = None, user: str | None = None,
                 key: str | None = None, auth_version: str | None = None,
                 project_name: str | None = None, project_id: str | None = None,
                 project_domain_name: str | None = None,
                 project_domain_id: str | None = None,
                 user_domain_name: str | None = None, user_domain_id: str | None = None,
                 region_name: str | None = None, interface: str | None = None,
                 application_credential_id: str | None = None,
                 application_credential_secret: str | None = None,
                 preauth_url: str | None = None, preauth_token: str | None = None,
                 cacert: str | None = None, insecure: bool = False,
                 storage_policy: str | None = None, deadline: float = 60.0,
                 timeout: float = 10.0, upload_concurrency: int = 8,
                 large_object_threshold: int | None = None,
                 segment_size: int = 256 << 20, temp_url_key: str | None = None,
                 create_container: bool = True,
                 encryption_keys: str | Sequence[str] | None = None,
                 gc_grace_period: float = GC_GRACE_PERIOD,
                 _shared: _Shared | None = None) -> None:
        if ZODB.interfaces.IBlobStorage.providedBy(base):
            raise ValueError(f"{type(base).__name__} keeps blobs itself; configure it "
                             "without a blob directory to wrap it in SwiftBlobStorage")
        self.base = base
        self._probe = TidProbe(base)
        self._root = _shared is None
        if _shared is None:
            arguments = locals()
            check_options(**{name: arguments[name] for name in option_names()})
            keys = KeyLayout(prefix)  # local settings first: no network for their errors
            cache = BlobCache(cache_dir, cache_size)
            swift_container = open_container(
                container, **{name: arguments[name] for name in SWIFT_OPTIONS})
            read_only = base.isReadOnly()
            ownership = PrefixOwnership(swift_container, keys, database_identity(base),
                                        encrypts=swift_container.encryption is not None)
            failure = None
            try:
                swift_container.ensure_container(create=create_container and not read_only)
                ownership.check(claim=not read_only)
            except NotFoundError:
                why = "a storage opened read-only does not create it" if read_only \
                    else "create-container is off"
                failure = SwiftStorageError(
                    f"Swift container {container!r} does not exist ({why})")
            except SwiftError as exc:
                failure = _storage_error(exc)
            except (ForeignPrefixError, EncryptionRequiredError) as exc:
                failure = exc
            if failure is not None:
                swift_container.close()
                raise failure
            try:
                _shared = _Shared(swift_container, keys, cache, ownership, upload_concurrency,
                                  temp_url_key, gc_grace_period)
            except BaseException:
                swift_container.close()
                raise
        self._shared = _shared
        self._commit: _Commit | None = None
        self._db = None
        for name in self.copied_methods:
            method = getattr(base, name, None)
            if method is not None:
                setattr(self, name, method)
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

    def __getattr__(self, name: str):
        return getattr(self.base, name)

    def __len__(self) -> int:
        return len(self.base)

    def __repr__(self) -> str:
        return (f"<SwiftBlobStorage {self._shared.container.container!r} "
                f"prefix={self._shared.keys.prefix!r} around {self.base!r}>")

    @property
    def swift_container(self) -> SwiftContainer:
        """The Swift container holding the blobs."""
        return self._shared.container

    @property
    def key_layout(self) -> KeyLayout:
        """The names of the blob revisions' objects in the container."""
        return self._shared.keys

    # -- IStorageWrapper ------------------------------------------------------------

    def registerDB(self, db) -> None:
        self._db = db

    def invalidateCache(self) -> None:
        if self._db is not None:
            self._db.invalidateCache()

    def invalidate(self, transaction_id: bytes, oids, version: str = "") -> None:
        if self._db is not None:
            self._db.invalidate(transaction_id, oids)

    def references(self, record: bytes, oids=None):
        if self._db is not None:
            return self._db.references(record, oids)
        return ZODB.serialize.referencesf(record, oids)

    def transform_record_data(self, data: bytes) -> bytes:
        return self._db.transform_record_data(data) if self._db is not None else data

    def untransform_record_data(self, data: bytes) -> bytes:
        return self._db.untransform_record_data(data) if self._db is not None else data

    # -- MVCC bases (RelStorage) -------------------------------------------------------

    def new_instance(self) -> SwiftBlobStorage:
        return SwiftBlobStorage(self.base.new_instance(), _shared=self._shared)

    def before_instance(self, before: bytes) -> SwiftBlobStorage:
        return SwiftBlobStorage(self.base.before_instance(before), _shared=self._shared)

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
                self._shared.close()

    # -- reading blobs ---------------------------------------------------------------

    def temporaryDirectory(self) -> str:
        """Where ZODB puts uncommitted blobs (see :mod:`zodb_swiftblobs.staging`)."""
        return self._shared.staging.directory

    def loadBlob(self, oid: bytes, serial: bytes) -> str:
        """The path of a local copy of revision *serial* of blob *oid*.  An
        object scheduled for deletion is served only while the base has its
        revision (a database restored from a backup); else POSKeyError."""
        commit = self._commit
        if commit is not None:
            staged = commit.staged_path(oid, serial)
            if staged is not None:
                return staged
        shared = self._shared
        name = shared.keys.key(oid, serial)

        def fetch(path: str) -> None:
            stored = shared.container.download(name, path)
            if stored.delete_at is not None and not revision_exists(self.base, oid, serial):
                raise NotFoundError("scheduled for deletion by garbage collection",
                                    operation="download", name=name)
        failure: Exception | None = None
        try:
            return shared.cache.get(oid, serial, fetch)
        except NotFoundError:
            failure = None
        except SwiftError as exc:
            failure = _storage_error(exc)
        except CacheDirectoryError as exc:
            failure = BlobCacheError(str(exc))
        if failure is None:
            if not revision_exists(self.base, oid, serial):
                raise POSKeyError(oid, serial)
            failure = SwiftTransientError(
                f"the database has revision {serial.hex()} of blob {oid.hex()}, but Swift "
                f"has no object {name!r} (not visible yet, or lost)")
        raise failure

    def openCommittedBlobFile(self, oid: bytes, serial: bytes, blob=None):
        """Open a committed blob revision for reading (fetched again if evicted)."""
        for attempt in (1, 2):
            path = self.loadBlob(oid, serial)
            try:
                if blob is None:
                    return open(path, "rb")
                return ZODB.blob.BlobFile(path, "r", blob)
            except FileNotFoundError:
                if attempt == 2:
                    raise

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
        shared = self._shared
        try:
            key = shared.configured_temp_url_key or shared.swift_temp_url_key()
            if key is None:
                raise SwiftStorageError(
                    f"no TempURL key: configure temp-url-key, or set Temp-URL-Key on "
                    f"container {shared.container.container!r} or on its account")
            return shared.container.temp_url(shared.keys.key(oid, serial), key=key,
                                             method=method, seconds=expires,
                                             filename=filename)
        except SwiftError as exc:
            failure = _storage_error(exc)
        raise failure

    def cache_stats(self) -> dict[str, int]:
        """Counters of the local cache: hits, misses, bytes downloaded, evictions..."""
        return self._shared.cache.stats()

    # -- two-phase commit --------------------------------------------------------------

    def tpc_begin(self, transaction, tid: bytes | None = None, status: str = " ") -> None:
        if tid is None and status == " ":
            self.base.tpc_begin(transaction)
        else:
            self.base.tpc_begin(transaction, tid, status)
        commit = _Commit(transaction, self._shared.staging.commit_prefix())
        try:
            if tid is not None or self._probe.known is TidKnown.AT_BEGIN:
                commit.tid = tid or self._probe.tid()
        except BaseException:
            commit.remove_staging()
            raise
        self._commit = commit

    def _current(self, transaction) -> _Commit:
        commit = self._commit
        if commit is None or commit.transaction is not transaction:
            raise StorageError("blob stored outside of the storage's current transaction")
        return commit

    def storeBlob(self, oid: bytes, oldserial: bytes, data: bytes, blobfilename: str,
                  version: str, transaction) -> None:
        assert not version, "versions are not supported"
        self.base.store(oid, oldserial, data, "", transaction)
        self._stage(oid, None, blobfilename, transaction)

    def restoreBlob(self, oid: bytes, serial: bytes, data: bytes, blobfilename: str,
                    prev_txn, transaction) -> None:
        self.base.restore(oid, serial, data, "", prev_txn, transaction)
        self._stage(oid, serial, blobfilename, transaction)

    def _stage(self, oid: bytes, serial: bytes | None, blobfilename: str, transaction) -> None:
        commit = self._current(transaction)
        staged = commit.staging_path(oid)
        self._settle(commit, oid)  # an earlier upload of this oid may still read the file
        try:
            self._shared.cache.stage(blobfilename, staged)
        except CacheDirectoryError as exc:
            raise BlobCacheError(str(exc)) from exc
        commit.staged[oid] = (staged, serial)
        commit.copies.pop(oid, None)
        if commit.tid is not None:
            self._start(commit, oid)

    @staticmethod
    def _settle(commit: _Commit, oid: bytes) -> None:
        """Wait for the earlier upload or copy of *oid* in this transaction, if any:
        two requests for one object name must not race."""
        previous = commit.work.pop(oid, None)
        if previous is not None:
            wait([previous])

    def _start(self, commit: _Commit, oid: bytes) -> None:
        """Start the upload (or server-side copy) of one blob of *commit*."""
        shared = self._shared
        self._settle(commit, oid)
        if oid in commit.staged:
            path, serial = commit.staged[oid]
            name = shared.keys.key(oid, serial or commit.tid)
            work = shared.pool.submit(shared.container.upload, name, path)
        else:
            name = shared.keys.key(oid, commit.tid)
            work = shared.pool.submit(shared.container.copy, commit.copies[oid], name)
        commit.work[oid] = work
        commit.names.add(name)
        shared.in_flight.add(name)

    def undo(self, transaction_id, transaction):
        """Undo through the base; each blob revision the undo brings back is
        copied inside Swift to the undoing transaction's id."""
        result = self.base.undo(transaction_id, transaction)
        commit = self._current(transaction)
        undone = decodebytes(transaction_id + b"\n") if len(transaction_id) != 8 \
            else transaction_id
        def is_blob(data: bytes | None) -> bool:
            # Records as the base keeps them: wrappers above may transform them.
            return bool(data) and is_blob_record(self.untransform_record_data(data))

        for undone_transaction in self.base.iterator(undone, undone):
            for record in undone_transaction:
                if record.data and not is_blob(record.data):
                    continue
                try:
                    before = self.base.loadBefore(record.oid, undone)
                except POSKeyError:
                    before = None  # the revision before was itself an undone creation
                if before is None or not is_blob(before[0]):
                    continue  # undoing a creation brings no blob back
                commit.copies[record.oid] = self._shared.keys.key(record.oid, before[1])
                self._settle(commit, record.oid)
                commit.unstage(record.oid)
                if commit.tid is not None:
                    self._start(commit, record.oid)
        return result

    def tpc_vote(self, transaction):
        result = self.base.tpc_vote(transaction)
        commit = self._commit
        if commit is not None and commit.transaction is transaction:
            if commit.tid is None and (commit.staged or commit.copies):
                commit.tid = self._probe.tid()
                for oid in list(commit.staged) + list(commit.copies):
                    self._start(commit, oid)
            self._wait(commit)
        return result

    def _wait(self, commit: _Commit) -> None:
        """Wait for every upload and copy; raise the first failure.  After a
        failure, uploads not started yet are cancelled: the vote fails within
        about one deadline however many blobs wait in the queue."""
        wait(commit.work.values(), return_when=FIRST_EXCEPTION)
        for future in commit.work.values():
            future.cancel()  # does nothing to the finished and the running
        wait(commit.work.values())
        failures = [future.exception() for future in commit.work.values()
                    if not future.cancelled() and future.exception() is not None]
        if failures:
            cancelled = sum(future.cancelled() for future in commit.work.values())
            log.warning("%d of %d blob uploads failed (%d cancelled before they started); "
                        "the transaction aborts", len(failures), len(commit.work), cancelled)
            error = failures[0]
            if isinstance(error, SwiftError):
                raise _storage_error(error)
            raise SwiftStorageError(f"blob upload failed: {type(error).__name__}: {error}")

    def tpc_finish(self, transaction, func=lambda tid: None):
        commit = self._commit
        if commit is not None and commit.transaction is not transaction:
            commit = None

        def finished(tid: bytes) -> None:
            # Called while the base still holds its commit lock: the blobs are
            # in the cache, and the commit's state gone, before any other
            # thread learns of the new transaction.
            if commit is not None:
                self._publish(commit, tid)
                self._end(commit)
            func(tid)

        try:
            return self.base.tpc_finish(transaction, finished)
        finally:
            if commit is not None:
                self._end(commit)

    def _publish(self, commit: _Commit, tid: bytes) -> None:
        """Move the committed blobs into the cache (local renames only; a
        failure here costs a download later, never the commit)."""
        cache = self._shared.cache
        for oid, (path, serial) in commit.staged.items():
            try:
                cache.publish(path, oid, serial or tid)
            except Exception as exc:
                log.warning("could not move committed blob %s into the cache (%s); it will "
                            "be downloaded when read", oid.hex(), exc)

    def tpc_abort(self, transaction) -> None:
        """Abort; what the transaction put into Swift is deleted before the base
        releases its commit lock (the next transaction may reuse the tid)."""
        commit = self._commit
        if commit is None or commit.transaction is not transaction:
            self.base.tpc_abort(transaction)
            return
        try:
            self._discard(commit)
        finally:
            try:
                self.base.tpc_abort(transaction)
            finally:
                self._end(commit)

    def _discard(self, commit: _Commit) -> None:
        """Remove what an aborted transaction put into Swift."""
        for future in commit.work.values():
            future.cancel()
        wait(commit.work.values())
        uploaded = [future.result() for future in commit.work.values()
                    if not future.cancelled() and future.exception() is None]
        if not uploaded:
            return
        try:
            container = self._shared.container
            container.delete_many(uploaded, deadline=min(ABORT_DEADLINE, container.deadline))
        except SwiftError as exc:
            log.warning("could not delete %d objects of an aborted transaction (%s); "
                        "the next pack's garbage collection will", len(uploaded), exc)

    def _end(self, commit: _Commit) -> None:
        commit.remove_staging()
        self._shared.in_flight.difference_update(commit.names)
        commit.staged.clear()
        if self._commit is commit:
            self._commit = None

    # -- pack and copy -----------------------------------------------------------------

    def pack(self, pack_time, referencesf, *args, **kwargs):
        """Pack the base, then delete the Swift objects of revisions it dropped.

        Extra arguments go to the base's pack (``gc`` for FileStorage,
        ``prepack_only``/``check_refs`` for RelStorage, which skip collection).
        """
        if kwargs.get("gc", 0) is None:
            del kwargs["gc"]
        with self._current_view() as view:
            last = last_committed_tid(view)
        result = self.base.pack(pack_time, referencesf, *args, **kwargs)
        if not (kwargs.get("prepack_only") or kwargs.get("check_refs")):
            self.collect_garbage(last)
        return result

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
        shared = self._shared
        try:
            shared.ownership.check(claim=not dry_run)
            with self._current_view() as view:
                return collect_garbage(
                    shared.container, shared.keys, view, shared.cache,
                    last_tid or last_committed_tid(view), dry_run=dry_run,
                    protected=shared.in_flight, min_age=min_age,
                    grace_period=shared.gc_grace_period if grace_period is None
                    else grace_period, progress=progress,
                    before_deleting=lambda: shared.ownership.check(claim=False))
        except SwiftError as exc:
            failure = _storage_error(exc)
        raise failure

    @contextlib.contextmanager
    def _current_view(self):
        """The base as it is now.  Each instance of an MVCC base (RelStorage)
        sees the snapshot it last polled, which for the instance a DB was
        opened with may be long ago: a new instance, polled, is used (for the
        last transaction and every existence check alike: one snapshot)."""
        new_instance = getattr(self.base, "new_instance", None)
        if new_instance is None:
            yield self.base
            return
        instance = new_instance()
        try:
            instance.poll_invalidations()
            yield instance
        finally:
            instance.release()

    def copyTransactionsFrom(self, other) -> None:
        """Copy every transaction of *other*, its blobs going to Swift under
        their original transaction ids (what zodbconvert does)."""
        for copied in other.iterator():
            self.tpc_begin(copied, copied.tid, copied.status)
            try:
                self._copy_records(other, copied)
                self.tpc_vote(copied)
            except BaseException:
                self.tpc_abort(copied)
                raise
            self.tpc_finish(copied)

    def _copy_records(self, other, copied) -> None:
        for record in copied:
            blobfilename = None
            if is_blob_record(record.data):
                try:
                    blobfilename = other.loadBlob(record.oid, record.tid)
                except POSKeyError:
                    pass
            if blobfilename is None:
                self.restore(record.oid, record.tid, record.data, "",
                             record.data_txn, copied)
                continue
            fd, name = self._shared.staging.new_file()
            with os.fdopen(fd, "wb") as target, open(blobfilename, "rb") as source:
                cp(source, target)
            self.restoreBlob(record.oid, record.tid, record.data, name,
                             record.data_txn, copied)

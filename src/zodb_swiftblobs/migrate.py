"""Migration: moving an existing deployment's blobs into Swift.

Two sources, both keeping oids and transaction ids, so that the wrapped
storage serves every blob the database references:

* a ZODB blob directory (bushy or lawn layout), read file by file without
  loading any object: the FileStorage beside it needs no rewrite;
* any blob storage, copied transaction by transaction into a wrapped storage
  that is empty or holds an earlier, interrupted copy (what zodbconvert does,
  with the blob uploads of the next transactions running ahead in parallel).

Both are idempotent and resumable: an object already in Swift with the right
size and MD5 is not uploaded again (for an encrypted object, those of the
file encrypted again with the object's key and salt).  A third source, a
zodb-s3blobs bucket, is in :mod:`zodb_swiftblobs.s3_source`; all three count
their work in a :class:`MigrationReport` through :class:`Transfers`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ZODB.blob import FilesystemHelper, is_blob_record
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, repr_to_oid, u64, z64

from .copying import commit_copy
from .layout import ObjectLayout
from .pool import BoundedPool
from .progress import Progress
from .swift import NotFoundError, StoredObject, SwiftContainer

log = logging.getLogger(__name__)

HEX_NAME = re.compile(r"0x[0-9a-f]+")
MAX_REPORTED_FAILURES = 20


class MigrationError(Exception):
    """The migration cannot start or continue (nothing half-done is committed);
    ``report`` tells what was done before."""

    def __init__(self, message: str, report: MigrationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class MigrationReport:
    """What a migration found and did."""

    dry_run: bool = False
    blobs: int = 0             # blob revisions found in the source
    uploaded: int = 0          # (or, in a dry run, to upload)
    skipped: int = 0           # already in Swift with the right size and checksum
    failed: int = 0
    missing_in_source: int = 0  # blob records whose file the source lacks
    bytes_uploaded: int = 0
    bytes_skipped: int = 0
    transactions: int = 0      # copied (copying from a storage only)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # the first few, as messages

    @property
    def ok(self) -> bool:
        return not (self.failed or self.missing_in_source)

    def note_failure(self, message: str) -> None:
        if len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(message)


def blob_directory_revisions(blob_dir: str) -> Iterator[tuple[bytes, bytes, str, int]]:
    """``(oid, tid, path, size)`` of every committed file in a ZODB blob directory
    (bushy or lawn layout), in (oid, tid) order, that is, in object name order."""
    if not os.path.isdir(blob_dir):
        raise MigrationError(f"{blob_dir} is not a directory")
    layout = FilesystemHelper(blob_dir).layout  # reads .layout; writes nothing

    def walk(directory: str, relative: str) -> Iterator[tuple[bytes, bytes, str, int]]:
        with os.scandir(directory) as scanned:
            entries = list(scanned)
        files = [entry for entry in entries if entry.name.endswith(".blob")
                 and HEX_NAME.fullmatch(entry.name[:-5]) and entry.is_file()]
        if files and relative:
            try:
                oid = layout.path_to_oid(relative)
            except ValueError:
                oid = None  # not an object's directory
            if oid is not None:
                revisions = sorted((repr_to_oid(entry.name[:-5]), entry) for entry in files)
                for tid, entry in revisions:
                    yield oid, tid, entry.path, entry.stat().st_size
        directories = sorted((int(entry.name, 16), entry.name, entry.path)
                             for entry in entries
                             if HEX_NAME.fullmatch(entry.name) and entry.is_dir())
        for _, name, path in directories:
            yield from walk(path, os.path.join(relative, name) if relative else name)

    return walk(os.path.abspath(blob_dir), "")


def migrate_blob_directory(blob_dir: str, container: SwiftContainer, layout: ObjectLayout, *,
                           jobs: int = 8, dry_run: bool = False,
                           progress: Progress | None = None) -> MigrationReport:
    """Upload every blob revision of *blob_dir* that Swift lacks (or holds wrong).

    The directory is walked in object name order and merged with the
    container's listing, so memory does not grow with the number of blobs.
    """
    report = MigrationReport(dry_run=dry_run)
    started = time.monotonic()
    listing = _parsed_listing(container, layout)
    current = next(listing, None)
    with Transfers(container, report, jobs, dry_run, progress) as transfers:
        for oid, tid, path, size in blob_directory_revisions(blob_dir):
            report.blobs += 1
            name = layout.object_name(oid, tid)
            while current is not None and current.name < name:
                current = next(listing, None)
            existing = current if current is not None and current.name == name else None
            def transfer(name: str = name, path: str = path,
                         existing: StoredObject | None = existing) -> bool:
                return transfers.upload_file(name, path, existing)
            transfers.submit(name, size, transfer)
    report.seconds = time.monotonic() - started
    log_summary("blob directory migration", report)
    return report


def copy_transactions(source: Any, destination: Any, *, jobs: int = 8, dry_run: bool = False,
                      progress: Progress | None = None, container: SwiftContainer | None = None,
                      layout: ObjectLayout | None = None) -> MigrationReport:
    """Copy every transaction of *source* that *destination* (a SwiftBlobStorage)
    lacks, keeping their ids, with their blobs going to Swift.

    *destination* must be empty or hold the start of *source*'s history (an
    earlier copy, interrupted or not): copying resumes after its last
    transaction.  Blob uploads run up to a few transactions ahead of the
    commits; records are committed in order, each transaction once all its
    blobs are in Swift.  A dry run may be given no *destination* (one that
    does not exist yet), and then needs *container* and *layout*.
    """
    report = MigrationReport(dry_run=dry_run)
    started = time.monotonic()
    if destination is not None:
        container = container or destination.swift_container
        layout = layout or destination.object_layout
    start = _resumption(source, destination)
    window: deque[tuple[object, list, list[Future]]] = deque()

    transactions = source.iterator(start)
    try:
        with Transfers(container, report, jobs, dry_run, progress) as transfers:
            for transaction in transactions:
                records = list(transaction)
                uploads = _upload_blobs(source, records, layout, transfers, report)
                window.append((transaction, records, uploads))
                while len(window) > 4 * jobs:
                    _commit(destination, *window.popleft(), report)
            while window:
                _commit(destination, *window.popleft(), report)
    except MigrationError as exc:
        exc.report = report
        raise
    finally:
        _close(transactions)
        report.seconds = time.monotonic() - started
    log_summary("transaction copy", report)
    return report


def _resumption(source, destination) -> bytes | None:
    """The id from which to copy *source* into *destination*: None for all."""
    last = destination.lastTransaction() if destination is not None else z64
    if last == z64:
        return None
    if not _has_transaction(source, last):
        raise MigrationError(
            f"the destination's last transaction {last.hex()} is not in the source: "
            "the destination must be empty, or an earlier copy of this source")
    return p64(u64(last) + 1)


def _upload_blobs(source, records: list, layout: ObjectLayout, transfers: Transfers,
                  report: MigrationReport) -> list[Future]:
    """Submit the uploads of the blobs of one transaction's *records*."""
    uploads = []
    for record in records:
        if not (record.data and is_blob_record(record.data)):
            continue
        name = layout.object_name(record.oid, record.tid)
        try:
            path = source.loadBlob(record.oid, record.tid)
        except POSKeyError:
            report.missing_in_source += 1
            report.note_failure(f"{name}: the source has no file for this blob "
                                "revision (its record is copied without it)")
            log.warning("the source has no file for blob revision %s", name)
            continue
        report.blobs += 1
        def transfer(name: str = name, path: str = path) -> bool:
            return transfers.upload_file(name, path, transfers.stored(name))
        uploads.append(transfers.submit(name, os.path.getsize(path), transfer))
    return uploads


def _has_transaction(storage, tid: bytes) -> bool:
    transactions = storage.iterator(tid, tid)
    try:
        return any(transaction.tid == tid for transaction in transactions)
    finally:
        _close(transactions)


def _close(iterator) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _commit(destination, transaction, records: list, uploads: list[Future],
            report: MigrationReport) -> None:
    for upload in uploads:
        if upload.result() is False:
            raise MigrationError(
                f"transaction {transaction.tid.hex()} was not copied: its blobs could not "
                f"be uploaded ({report.failures[-1] if report.failures else 'see the log'})")
    if report.dry_run:
        report.transactions += 1
        return
    def restore_records() -> None:
        for record in records:
            destination.restore(record.oid, record.tid, record.data, "",
                                record.data_txn, transaction)
    commit_copy(destination, transaction, restore_records)
    report.transactions += 1


class Transfers:
    """Parallel, bounded transfers of blob revisions into Swift, counted in a
    report (and a progress line): what was uploaded, what Swift already held,
    what failed."""

    def __init__(self, container: SwiftContainer, report: MigrationReport, jobs: int,
                 dry_run: bool, progress: Progress | None) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {jobs}")
        self.container = container
        self.report = report
        self.dry_run = dry_run
        self.progress = progress
        self.pool = BoundedPool(jobs, "swift-migrate")
        self.lock = threading.Lock()

    def __enter__(self) -> Transfers:
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown(cancel_futures=exc_info[0] is not None)

    def submit(self, name: str, size: int, transfer: Callable[[], bool]) -> Future:
        """Run ``transfer()``, which brings the *size* bytes of object *name*
        into Swift, on a thread: it returns True when it uploaded them (in a
        dry run: would have), False when Swift already held them.  The
        future's result is False if it failed."""
        return self.pool.submit(self._transfer, name, size, transfer)

    def stored(self, name: str) -> StoredObject | None:
        """What Swift holds as object *name* (None: nothing)."""
        try:
            return self.container.head(name)
        except NotFoundError:
            return None

    def upload_file(self, name: str, path: str, stored: StoredObject | None) -> bool:
        """Upload the file at *path* as object *name* unless *stored* (what
        Swift holds under that name; None: nothing) is that very file; return
        whether it was uploaded (in a dry run: would have been)."""
        if stored is not None and self.container.holds_file(name, path, stored):
            return False
        if not self.dry_run:
            self.container.upload(name, path)
        return True

    def _transfer(self, name: str, size: int, transfer: Callable[[], bool]) -> bool:
        report = self.report
        try:
            uploaded = transfer()
            with self.lock:
                if uploaded:
                    report.uploaded += 1
                    report.bytes_uploaded += size
                else:
                    report.skipped += 1
                    report.bytes_skipped += size
            return True
        except Exception as exc:  # one failed blob must not stop the others
            with self.lock:
                report.failed += 1
                report.note_failure(f"{name}: {type(exc).__name__}: {exc}")
            log.warning("could not migrate %s: %s", name, exc)
            return False
        finally:
            if self.progress is not None:
                self.progress.advance(1, size)


def _parsed_listing(container: SwiftContainer, layout: ObjectLayout) -> Iterator[StoredObject]:
    try:
        for stored in container.list(layout.prefix):
            if layout.parse(stored.name) is not None:
                yield stored
    except NotFoundError:
        return  # no container yet (a dry run creates none): nothing in it


def log_summary(what: str, report: MigrationReport) -> None:
    """Log what a migration (named *what*) did."""
    log.info("%s%s: %d blobs, %d uploaded (%d bytes), %d already in Swift, %d failed, "
             "%d transactions, in %.1fs", what, " (dry run)" if report.dry_run else "",
             report.blobs, report.uploaded, report.bytes_uploaded, report.skipped,
             report.failed, report.transactions, report.seconds)

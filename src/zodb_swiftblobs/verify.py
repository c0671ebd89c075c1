"""Verification: does Swift hold every blob revision the database references?

The database's records are read once (through the storage's iterator) to
collect the blob revisions it references; those are merged, in object name
order, with the container's listing.  A referenced revision the listing lacks
is looked up directly (a listing lags behind objects written while a container
server was down): without an object it is *missing*, with one it counts in
``listing_lag``.  A referenced revision whose object is scheduled for deletion
(by a garbage collection that ran before the database was restored from a
backup) is *scheduled*; with ``repair`` its deletion is cancelled.  Objects
are seen as scheduled by the mark their content type gets (shown in listings),
confirmed by a HEAD; a large object also when one of its segments (each
looked at) is scheduled; a deep verification sees every schedule, marked or
not.
An object no revision references is an *orphan* (the garbage collector's
business; a *young* one when modified less than the minimum age ago that
garbage collection spares, unless garbage collection scheduled its deletion
already); a large object with a segment gone or of the
wrong size, or (with ``deep``) an object whose bytes do not match their
size and MD5 or the checksum recorded at upload (see
:mod:`zodb_swiftblobs.swift.checksums`), or an encrypted object that fails
authentication, is *corrupt*; an encrypted object whose key is not
configured is *unchecked*.  Objects written before checksums were recorded
are read and checked by size and MD5 alone; a deep verification counts them
(``without_checksum``).  An object without a record of a revision later than
the checksum watermark of the prefix's ownership marker (see
:mod:`zodb_swiftblobs.ownership`) is corrupt: its content was replaced (a
plain PUT drops the record), or a process of an earlier release wrote it;
with ``adopt_unrecorded``, the checksum of such an object's content as it is
now is recorded (*adopted*), when its size and MD5 match.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ZODB.blob import is_blob_record

from .bases import last_committed_tid
from .gc import CollectableSpan
from .layout import ObjectLayout
from .ownership import checksums_from
from .pool import BoundedPool
from .progress import Progress
from .swift import (ChecksumMismatchError, DecryptionError, MissingKeyError, NotFoundError,
                    StoredObject, SwiftContainer, SwiftError, recorded_checksum)
from .swift.adoption import adopt_content
from .swift.objects import younger

if TYPE_CHECKING:
    from .storage import SwiftBlobStorage

log = logging.getLogger(__name__)

UNRECORDED = ("no checksum recorded, though written after checksums were; its content "
              "was replaced, or a process of an earlier release wrote it")


@dataclass
class VerificationReport:
    """What a verification found: object names, with reasons for the corrupt."""

    deep: bool = False
    referenced: int = 0        # blob revisions the database references
    present: int = 0           # of those, found in Swift
    bytes: int = 0             # their total size
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # Swift failed to answer
    scheduled: list[str] = field(default_factory=list)  # referenced, yet to be deleted
    repaired: list[str] = field(default_factory=list)   # of those, deletion cancelled
    listing_lag: int = 0       # present objects the container listing lacks
    without_checksum: int = 0  # (deep) of those read, with no checksum recorded at upload
    adopted: list[str] = field(default_factory=list)  # (deep, repair) checksum recorded now
    orphans: list[str] = field(default_factory=list)
    orphan_min_age: float = 0.0  # the age below which garbage collection spares orphans
    young_orphans: list[str] = field(default_factory=list)  # of the orphans, those younger
    young_orphans_collectable: CollectableSpan = field(default_factory=CollectableSpan)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.unchecked
                    or set(self.scheduled) - set(self.repaired))


def referenced_revisions(storage: Any) -> list[bytes]:
    """``oid + tid`` of every blob revision in *storage* (the records its
    iterator gives, that is, those undo and history can reach), sorted, each
    once (a transaction may hold several records of one object: ZEO's
    server stores a blob's record twice)."""
    revisions = []
    transactions = storage.iterator()
    try:
        for transaction in transactions:
            for record in transaction:
                data = record.data
                if data and is_blob_record(storage.untransform_record_data(data)):
                    revisions.append(record.oid + record.tid)
    finally:
        close = getattr(transactions, "close", None)
        if close is not None:
            close()
    return sorted(set(revisions))


def verify(storage: SwiftBlobStorage, *, deep: bool = False, repair: bool = False,
           adopt_unrecorded: bool = False, jobs: int = 8, progress: Progress | None = None,
           orphan_min_age: float = 0.0) -> VerificationReport:
    """Check that *storage*'s container holds every blob revision it references;
    with *repair*, cancel the deletion of those scheduled for deletion; with
    *deep* and *adopt_unrecorded*, adopt the content of objects without a
    record that should have one.
    Orphans modified less than *orphan_min_age* seconds ago (which garbage
    collection with that minimum age spares) are reported as young too."""
    report = VerificationReport(deep=deep, orphan_min_age=orphan_min_age)
    started, now = time.monotonic(), time.time()
    container: SwiftContainer = storage.swift_container
    layout: ObjectLayout = storage.object_layout
    last = last_committed_tid(storage.base)
    revisions = referenced_revisions(storage)
    report.referenced = len(revisions)
    if progress is not None:
        progress.total = len(revisions)
    watermark = checksums_from(storage.prefix_ownership.owner())
    checker = _Checker(container, report, deep, repair, adopt_unrecorded, jobs, progress,
                       lambda name: watermark is not None and layout.parse(name)[1] > watermark)
    expected = (layout.object_name(revision[:8], revision[8:]) for revision in revisions)
    wanted = next(expected, None)
    try:
        for stored in container.list(layout.prefix):
            revision = layout.parse(stored.name)
            if revision is None:
                continue
            while wanted is not None and wanted < stored.name:
                checker.missing(wanted)
                wanted = next(expected, None)
            if wanted == stored.name:
                checker.check(stored)
                wanted = next(expected, None)
            elif revision[1] <= last:
                report.orphans.append(stored.name)
                if stored.marked_for_deletion is None and younger(stored, orphan_min_age, now):
                    report.young_orphans.append(stored.name)
                    report.young_orphans_collectable.add(stored, orphan_min_age)
        while wanted is not None:
            checker.missing(wanted)
            wanted = next(expected, None)
    finally:
        checker.close()
    report.seconds = time.monotonic() - started
    log.info("blob verification%s: %d revisions referenced, %d present (%d not listed "
             "yet), %d missing, %d corrupt, %d unchecked, %d scheduled for deletion (%d "
             "cancelled), %d orphans (%d younger than %gs), %d contents adopted, in %.1fs",
             " (deep)" if deep else "", report.referenced, report.present,
             report.listing_lag, len(report.missing), len(report.corrupt),
             len(report.unchecked), len(report.scheduled), len(report.repaired),
             len(report.orphans), len(report.young_orphans), orphan_min_age,
             len(report.adopted), report.seconds)
    return report


class _Checker:
    """Checks objects in parallel: candidates for missing (looked up), large
    objects' segments, objects marked as scheduled for deletion, and with
    *deep* every object's bytes (read through, and checked against its MD5
    and the checksum recorded at upload, which objects *needs_record* says
    of must have).  With *repair*, cancels the deletion of those scheduled;
    with *adopt*, adopts the content of those lacking a record they need."""

    def __init__(self, container: SwiftContainer, report: VerificationReport, deep: bool,
                 repair: bool, adopt: bool, jobs: int, progress: Progress | None,
                 needs_record: Callable[[str], bool]) -> None:
        self.container = container
        self.needs_record = needs_record
        self.report = report
        self.deep = deep
        self.repair = repair
        self.adopt = adopt
        self.progress = progress
        self.lock = threading.Lock()
        self.pool = BoundedPool(jobs, "swift-verify")

    def missing(self, name: str) -> None:
        """Look up *name*, which the listing lacks."""
        self.pool.submit(self._look_up, name)

    def check(self, stored: StoredObject) -> None:
        self._count_present(stored)
        if not (self.deep or stored.large or stored.marked_for_deletion is not None):
            self._advance(stored.size)
            return
        self.pool.submit(self._check, stored)

    def _count_present(self, stored: StoredObject) -> None:
        with self.lock:
            self.report.present += 1
            self.report.bytes += stored.size

    def _look_up(self, name: str) -> None:
        try:
            stored = self.container.head(name)
        except NotFoundError:
            with self.lock:
                self.report.missing.append(name)
            self._advance(0)
            return
        except Exception as exc:  # neither missing nor present: unchecked
            self._record(name, None, str(exc) if isinstance(exc, SwiftError)
                         else f"{type(exc).__name__}: {exc}")
            self._advance(0)
            return
        with self.lock:
            self.report.listing_lag += 1
        self._count_present(stored)
        self._check(stored)

    def _check(self, stored: StoredObject) -> None:
        problem, unchecked = None, None
        try:
            scheduled = stored.delete_at is not None or stored.marked_for_deletion is not None
            if stored.large:
                problem, segments_delete_at = self.container.examine_large_object(stored.name)
                scheduled = scheduled or segments_delete_at is not None
            if problem is None and self.deep:
                received = self.container.check(stored.name)
                if received.size != stored.size:
                    problem = f"{received.size} bytes, listed as {stored.size}"
                if recorded_checksum(received.metadata) is None:
                    unrecorded = self._unrecorded(stored.name, adoptable=problem is None)
                    problem = problem or unrecorded
                scheduled = scheduled or received.delete_at is not None
            if scheduled:
                self._scheduled(stored.name)
        except MissingKeyError as exc:
            unchecked = str(exc)
        except (ChecksumMismatchError, DecryptionError) as exc:
            problem = str(exc)
        except NotFoundError:  # expired (its deletion was scheduled), or deleted meanwhile
            with self.lock:
                self.report.present -= 1
                self.report.bytes -= stored.size
                self.report.missing.append(stored.name)
        except SwiftError as exc:
            unchecked = str(exc)
        except Exception as exc:  # a local failure: this object stays unchecked
            unchecked = f"{type(exc).__name__}: {exc}"
        self._record(stored.name, problem, unchecked)
        self._advance(stored.size)

    def _unrecorded(self, name: str, *, adoptable: bool) -> str | None:
        """What is wrong with object *name*, read through, which has no
        recorded checksum (None: nothing); with *adopt*, adopt its content
        if it needs a record and is *adoptable* (its size matched)."""
        if not self.needs_record(name):
            with self.lock:
                self.report.without_checksum += 1
            return None
        if not (self.adopt and adoptable):
            return UNRECORDED
        adopt_content(self.container, name)
        with self.lock:
            self.report.adopted.append(name)
        return None

    def _scheduled(self, name: str) -> None:
        """Confirm that *name* (or a segment of it) is scheduled for deletion
        (the mark may be older than a cancellation), and with *repair*
        cancel it."""
        if self.container.deletion_scheduled(name) is None:
            return
        with self.lock:
            self.report.scheduled.append(name)
        if self.repair:
            self.container.cancel_deletion(name)
            with self.lock:
                self.report.repaired.append(name)

    def _record(self, name: str, problem: str | None, unchecked: str | None) -> None:
        with self.lock:
            if problem is not None:
                self.report.corrupt.append(f"{name}: {problem}")
            if unchecked is not None:
                self.report.unchecked.append(f"{name}: {unchecked}")

    def _advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(1, nbytes)

    def close(self) -> None:
        self.pool.shutdown()
        for found in (self.report.missing, self.report.corrupt, self.report.unchecked,
                      self.report.scheduled, self.report.repaired, self.report.adopted):
            found.sort()

"""Garbage collection: delete the Swift objects of blob revisions the database no longer has.

After a pack, the base storage has dropped revisions (packed away, superseded
in a history-free storage, deleted through IExternalGC), and aborted or
crashed commits may have left objects that were never committed (and pending
uploads: see :mod:`zodb_swiftblobs.pending_sweep`).  The sweep
lists the container page by page (memory does not grow with the number of
objects), asks the base whether each revision exists, and deletes the orphans
in bulk, or, with a grace period, schedules their deletion that much later
(Swift's X-Delete-At), so that a database restored from a backup made before
the sweep finds its blobs still there: ``zodb-swiftblobs verify --repair``
cancels the deletion of those it references, and so does the next sweep (it
*rescues* each revision the base has whose object the listing shows marked
for deletion).  An orphan found scheduled
already is left as it is (its deletion is not pushed later).  Revisions newer
than the last transaction committed when the sweep started are never touched:
they may belong to commits still in progress, and neither are orphans younger
than a minimum age, when one is given (commits in other processes that
restore old transaction ids, such as migrations).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .bases import revision_exists
from .cache import BlobCache
from .layout import ObjectLayout
from .options import require_grace_period
from .pending_sweep import sweep_pending
from .progress import Progress
from .swift import NotFoundError, StoredObject, SwiftContainer
from .swift.objects import younger
from .swift.large_objects import segment_group

log = logging.getLogger(__name__)

BATCH = 1000
SCHEDULING_JOBS = 8  # objects whose deletion is scheduled or cancelled at once


@dataclass
class CollectableSpan:
    """When the first and the last of some orphans, spared for being younger
    than a minimum age, become old enough to collect (POSIX times; None
    while there are none, or none of known age)."""

    first: float | None = None
    last: float | None = None

    def add(self, stored: StoredObject, min_age: float) -> None:
        """Count orphan *stored*, spared by *min_age* seconds."""
        moment = stored.modified_at + min_age
        if math.isinf(moment):
            return
        self.first = moment if self.first is None else min(self.first, moment)
        self.last = moment if self.last is None else max(self.last, moment)


@dataclass
class GarbageReport:
    """What one sweep found and did."""

    examined: int = 0
    orphans: int = 0
    too_young: int = 0  # orphans modified less than min_age ago: kept
    too_young_collectable: CollectableSpan = field(default_factory=CollectableSpan)
    deleted: int = 0
    bytes: int = 0
    orphan_segments: int = 0  # large objects' segments no manifest refers to
    deleted_segments: int = 0
    grace_period: float = 0.0  # seconds between an orphan's finding and its deletion
    scheduled: int = 0  # orphans whose deletion this sweep scheduled
    already_scheduled: int = 0  # orphans found scheduled for deletion by an earlier sweep
    scheduled_segments: int = 0
    rescued: int = 0  # revisions the base has, found scheduled: deletion cancelled
    commits_in_progress: int = 0  # commits (any process) whose pending uploads were left alone
    pending_orphans: int = 0  # pending uploads of aborted or killed commits
    pending_too_young: int = 0  # of those, modified less than min_age ago: kept
    deleted_pending: int = 0  # pending uploads, their stray segments and markers deleted
    seconds: float = 0.0


def collect_garbage(container: SwiftContainer, layout: ObjectLayout, base: Any,
                    cache: BlobCache,
                    last_tid: bytes, *, dry_run: bool = False,
                    protected: Collection[str] = (), min_age: float = 0.0,
                    grace_period: float = 0.0, progress: Progress | None = None,
                    before_deleting: Callable[[], None] | None = None) -> GarbageReport:
    """Delete the objects under *layout* whose revision *base* no longer has,
    or with a *grace_period* (seconds), schedule their deletion that much later.

    Objects of revisions newer than *last_tid*, the *protected* names (those of
    commits in progress, which may restore old transaction ids), and orphans
    modified less than *min_age* seconds ago (counted as ``too_young``; not
    those found scheduled already: scheduling modified them) are kept.
    Revisions *base* has whose object is marked for deletion (a database
    restored from a backup older than an earlier sweep) get their
    deletion cancelled (``rescued``).  With *dry_run*, orphans and revisions
    to rescue are counted but nothing is deleted or cancelled.
    *progress* counts the objects examined.  *before_deleting* is called
    before each batch of deletions (and may raise to stop the sweep).
    """
    require_grace_period(grace_period)
    report = GarbageReport(grace_period=grace_period)
    started, now = time.monotonic(), time.time()
    sweep = _ObjectSweep(container, cache, report, dry_run=dry_run, min_age=min_age,
                         before_deleting=before_deleting)
    for stored in container.list(layout.prefix):
        revision = layout.parse(stored.name)
        if revision is None:
            continue
        report.examined += 1
        if progress is not None:
            progress.advance(1, stored.size)
        oid, tid = revision
        if tid <= last_tid and stored.name not in protected:
            sweep.judge(stored, oid, tid, base, young=younger(stored, min_age, now))
    sweep.flush()
    _sweep_segments(container, layout, last_tid, report, dry_run=dry_run,
                    protected=protected, min_age=min_age, now=now,
                    before_deleting=before_deleting)
    pending = sweep_pending(container, layout, dry_run=dry_run, min_age=min_age,
                            before_deleting=before_deleting)
    report.commits_in_progress, report.pending_orphans = pending.in_progress, pending.orphans
    report.pending_too_young, report.deleted_pending = pending.too_young, pending.deleted
    report.seconds = time.monotonic() - started
    _log_summary(report, dry_run=dry_run, min_age=min_age)
    return report


class _ObjectSweep:
    """What a sweep does with each blob object that no commit in progress
    may need: orphans are deleted (or scheduled for deletion) in batches,
    referenced revisions marked for deletion rescued."""

    def __init__(self, container: SwiftContainer, cache: BlobCache, report: GarbageReport, *,
                 dry_run: bool, min_age: float,
                 before_deleting: Callable[[], None] | None) -> None:
        self.container, self.cache, self.report = container, cache, report
        self.dry_run, self.min_age = dry_run, min_age
        self.orphans = _BatchDeleter(self._delete, dry_run=dry_run,
                                     before_deleting=before_deleting)
        self.rescues = _BatchDeleter(self._rescue, dry_run=dry_run, before_deleting=None)

    def judge(self, stored: StoredObject, oid: bytes, tid: bytes, base: Any, *,
              young: bool) -> None:
        report = self.report
        if revision_exists(base, oid, tid):
            if stored.marked_for_deletion is not None:
                self.rescues.add(stored.name)
                if self.dry_run:
                    report.rescued += 1
            return
        # Scheduling an orphan's deletion modifies it: that does not make it young.
        scheduled = bool(report.grace_period) and stored.marked_for_deletion is not None
        if young and not scheduled:
            report.too_young += 1
            report.too_young_collectable.add(stored, self.min_age)
        else:
            report.orphans += 1
            report.bytes += stored.size
            if scheduled:
                report.already_scheduled += 1
            else:
                self.orphans.add((stored, oid, tid))

    def flush(self) -> None:
        self.orphans.flush()
        self.rescues.flush()

    def _delete(self, batch: list[tuple[StoredObject, bytes, bytes]]) -> None:
        report = self.report
        if report.grace_period:
            report.scheduled += _schedule(self.container, [stored.name for stored, _, _ in batch],
                                          report.grace_period)
        else:
            report.deleted += self.container.delete_many(stored for stored, _, _ in batch)
        for _, oid, tid in batch:
            self.cache.discard(oid, tid)

    def _rescue(self, batch: list[str]) -> None:
        self.report.rescued += _each_object(self.container.cancel_deletion, batch)


def _log_summary(report: GarbageReport, *, dry_run: bool, min_age: float) -> None:
    log.info("blob garbage collection%s: %d objects examined, %d orphans (%d bytes), "
             "%d deleted, %d scheduled for deletion in %gs (%d scheduled earlier), "
             "%d younger than %gs kept, %d orphaned large-object segments "
             "(%d deleted, %d scheduled), %d referenced revisions rescued, "
             "%d pending uploads of aborted commits (%d deleted, %d kept as young), "
             "%d commits in progress left alone, in %.1fs",
             " (dry run)" if dry_run else "",
             report.examined, report.orphans, report.bytes, report.deleted,
             report.scheduled, report.grace_period, report.already_scheduled,
             report.too_young, min_age, report.orphan_segments, report.deleted_segments,
             report.scheduled_segments, report.rescued, report.pending_orphans,
             report.deleted_pending, report.pending_too_young, report.commits_in_progress,
             report.seconds)
    if report.rescued:
        log.warning("blob garbage collection%s: %d revisions the database references were "
                    "scheduled for deletion (most likely the database was restored from a "
                    "backup older than an earlier garbage collection): their deletion %s",
                    " (dry run)" if dry_run else "", report.rescued,
                    "is to be cancelled" if dry_run else "was cancelled")


def _schedule(container: SwiftContainer, names: list[str], grace_period: float, *,
              segments: bool = False) -> int:
    """Schedule the deletion of objects *names* (of the segment container, with
    *segments*) *grace_period* seconds from now; how many were scheduled now
    (not earlier).  Absent objects are skipped."""
    where = container.segment_container if segments else None
    return _each_object(lambda name: container.schedule_deletion(
        name, grace_period, container=where) is None, names)


def _each_object(change: Callable[[str], bool], names: list[str]) -> int:
    """Apply *change* to each of objects *names*, several at a time; for how
    many it returned true (absent objects are skipped)."""
    def one(name: str) -> int:
        try:
            return 1 if change(name) else 0
        except NotFoundError:
            return 0
    with ThreadPoolExecutor(SCHEDULING_JOBS, thread_name_prefix="swift-gc") as pool:
        return sum(pool.map(one, names))


def _sweep_segments(container: SwiftContainer, layout: ObjectLayout, last_tid: bytes,
                    report: GarbageReport, *, dry_run: bool,
                    protected: Collection[str], min_age: float, now: float,
                    before_deleting: Callable[[], None] | None) -> None:
    """Delete the segments no large object refers to: those of large uploads
    that failed and could not remove them (Swift unreachable, a token that
    expired, a process killed midway), by group (an upload's segments, see
    :func:`~zodb_swiftblobs.swift.large_objects.segment_group`).  A group is
    an orphan when the manifest of its object (read from Swift, not from a
    listing that may lag behind) does not refer to it, or there is no such
    object.  The rules of
    the main sweep apply (newer than *last_tid*, *protected*, younger than
    *min_age*: kept; with a grace period, scheduled for deletion)."""
    manifests: dict[str, set[str]] = {}
    grace_period = report.grace_period

    def delete(batch: list[str]) -> None:
        if grace_period:
            report.scheduled_segments += _schedule(container, batch, grace_period,
                                                   segments=True)
        else:
            report.deleted_segments += container.delete_many(
                batch, container=container.segment_container)
    orphans = _BatchDeleter(delete, dry_run=dry_run, before_deleting=before_deleting)

    try:
        for stored in container.list(layout.prefix, container=container.segment_container):
            owner = segment_group(stored.name)
            if owner is None:
                continue
            name, group = owner
            revision = layout.parse(name)
            if revision is None or revision[1] > last_tid or name in protected:
                continue
            if younger(stored, min_age, now):
                continue
            if name not in manifests:
                manifests.clear()  # one object's segments at a time (listing order)
                manifests[name] = container.segment_groups(name)
            if group in manifests[name]:
                continue
            report.orphan_segments += 1
            if not (grace_period and stored.marked_for_deletion is not None):
                orphans.add(stored.name)
    except NotFoundError:
        pass  # no segment container: no large object was ever uploaded
    orphans.flush()


class _BatchDeleter:
    """Deletes what it is given BATCH at a time with *delete* (nothing in a
    *dry_run*), calling *before_deleting* (which may raise) before each batch."""

    def __init__(self, delete: Callable[[list], None], *, dry_run: bool,
                 before_deleting: Callable[[], None] | None) -> None:
        self._delete, self._dry_run = delete, dry_run
        self._before_deleting = before_deleting
        self._batch: list = []

    def add(self, item) -> None:
        self._batch.append(item)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._dry_run and self._batch:
            if self._before_deleting is not None:
                self._before_deleting()
            self._delete(self._batch)
        self._batch = []

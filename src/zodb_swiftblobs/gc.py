"""Garbage collection: delete the Swift objects of blob revisions the database no longer has.

After a pack, the base storage has dropped revisions (packed away, superseded
in a history-free storage, deleted through IExternalGC), and aborted or
crashed commits may have left objects that were never committed.  The sweep
lists the container page by page (memory does not grow with the number of
objects), asks the base whether each revision exists, and deletes the orphans
in bulk.  Revisions newer than the last transaction committed when the sweep
started are never touched: they may belong to commits still in progress, and
neither are orphans younger than a minimum age, when one is given (commits in
other processes that restore old transaction ids, such as migrations).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone

from ZODB.POSException import POSKeyError

from .cache import BlobCache
from .keys import KeyLayout
from .progress import Progress
from .swiftaccess import StoredObject, SwiftContainer

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass
class GarbageReport:
    """What one sweep found and did."""

    examined: int = 0
    orphans: int = 0
    too_young: int = 0
    deleted: int = 0
    bytes: int = 0
    seconds: float = 0.0


def revision_exists(base, oid: bytes, tid: bytes) -> bool:
    """Whether the base storage still has revision *tid* of object *oid*."""
    try:
        base.loadSerial(oid, tid)
    except POSKeyError:
        return False
    return True


def collect_garbage(container: SwiftContainer, keys: KeyLayout, base, cache: BlobCache,
                    last_tid: bytes, *, dry_run: bool = False,
                    protected: Collection[str] = (), min_age: float = 0.0,
                    progress: Progress | None = None,
                    before_deleting: Callable[[], None] | None = None) -> GarbageReport:
    """Delete the objects under *keys* whose revision *base* no longer has.

    Objects of revisions newer than *last_tid*, the *protected* names (those of
    commits in progress, which may restore old transaction ids), and orphans
    modified less than *min_age* seconds ago (counted as ``too_young``) are
    kept.  With *dry_run*, orphans are counted but nothing is deleted.
    *progress* counts the objects examined.  *before_deleting* is called
    before each batch of deletions (and may raise to stop the sweep).
    """
    report = GarbageReport()
    started, now = time.monotonic(), time.time()
    batch: list[tuple[StoredObject, bytes, bytes]] = []

    def flush() -> None:
        if not dry_run and batch:
            if before_deleting is not None:
                before_deleting()
            report.deleted += container.delete_many(stored for stored, _, _ in batch)
            for _, oid, tid in batch:
                cache.discard(oid, tid)
        batch.clear()

    for stored in container.list(keys.prefix):
        revision = keys.parse(stored.name)
        if revision is None:
            continue
        report.examined += 1
        if progress is not None:
            progress.advance(1, stored.size)
        oid, tid = revision
        if tid > last_tid or stored.name in protected or revision_exists(base, oid, tid):
            continue
        if min_age > 0 and not now - modified_at(stored.last_modified) >= min_age:
            report.too_young += 1
            continue
        report.orphans += 1
        report.bytes += stored.size
        batch.append((stored, oid, tid))
        if len(batch) >= BATCH:
            flush()
    flush()
    report.seconds = time.monotonic() - started
    log.info("blob garbage collection%s: %d objects examined, %d orphans (%d bytes), "
             "%d deleted, %d younger than %gs kept, in %.1fs", " (dry run)" if dry_run else "",
             report.examined, report.orphans, report.bytes, report.deleted,
             report.too_young, min_age, report.seconds)
    return report


def modified_at(last_modified: str | None) -> float:
    """A container listing's ``last_modified`` (UTC, ISO 8601) as a POSIX time;
    the far future when unknown, so that unknown ages count as young."""
    if not last_modified:
        return float("inf")
    moment = datetime.fromisoformat(last_modified)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()

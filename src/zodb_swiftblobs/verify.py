"""Verification: does Swift hold every blob revision the database references?

The database's records are read once (through the storage's iterator) to
collect the blob revisions it references; those are merged, in object name
order, with the container's listing.  A referenced revision without an
object is *missing*; an object no revision references is an *orphan* (the
garbage collector's business); a large object with a segment gone or of the
wrong size, or (with ``deep``) an object whose bytes do not match their
size and MD5, or an encrypted object that fails authentication, is
*corrupt*; an encrypted object whose key is not configured is *unchecked*.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ZODB.blob import is_blob_record

from .bases import last_committed_tid
from .keys import KeyLayout
from .progress import Progress
from .swiftaccess import (ChecksumMismatchError, DecryptionError, MissingKeyError,
                          NotFoundError, StoredObject, SwiftContainer, SwiftError)

log = logging.getLogger(__name__)


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
    orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.unchecked)


def referenced_revisions(storage) -> list[bytes]:
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


def verify(storage, *, deep: bool = False, jobs: int = 8,
           progress: Progress | None = None) -> VerificationReport:
    """Check that *storage*'s container holds every blob revision it references."""
    report = VerificationReport(deep=deep)
    started = time.monotonic()
    container: SwiftContainer = storage.swift_container
    keys: KeyLayout = storage.key_layout
    last = last_committed_tid(storage.base)
    revisions = referenced_revisions(storage)
    report.referenced = len(revisions)
    if progress is not None:
        progress.total = len(revisions)
    checker = _Checker(container, report, deep, jobs, progress)
    expected = (keys.key(revision[:8], revision[8:]) for revision in revisions)
    wanted = next(expected, None)
    try:
        for stored in container.list(keys.prefix):
            revision = keys.parse(stored.name)
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
        while wanted is not None:
            checker.missing(wanted)
            wanted = next(expected, None)
    finally:
        checker.close()
    report.seconds = time.monotonic() - started
    log.info("blob verification%s: %d revisions referenced, %d present, %d missing, "
             "%d corrupt, %d unchecked, %d orphans, in %.1fs", " (deep)" if deep else "",
             report.referenced, report.present, len(report.missing), len(report.corrupt),
             len(report.unchecked), len(report.orphans), report.seconds)
    return report


class _Checker:
    """Checks present objects in parallel: large objects' segments, and with
    *deep* every object's bytes (read through, and checked against its MD5)."""

    def __init__(self, container: SwiftContainer, report: VerificationReport, deep: bool,
                 jobs: int, progress: Progress | None) -> None:
        self.container = container
        self.report = report
        self.deep = deep
        self.progress = progress
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(jobs, thread_name_prefix="swift-verify")
        self.slots = threading.BoundedSemaphore(4 * jobs)

    def missing(self, name: str) -> None:
        self.report.missing.append(name)
        self._advance(0)

    def check(self, stored: StoredObject) -> None:
        with self.lock:
            self.report.present += 1
            self.report.bytes += stored.size
        if not (self.deep or stored.large):
            self._advance(stored.size)
            return
        self.slots.acquire()
        future: Future = self.pool.submit(self._check, stored)
        future.add_done_callback(lambda _: self.slots.release())

    def _check(self, stored: StoredObject) -> None:
        problem, unchecked = None, None
        try:
            if stored.large:
                problem = self.container.large_object_problem(stored.name)
            if problem is None and self.deep:
                received = self.container.check(stored.name)
                if received.size != stored.size:
                    problem = f"{received.size} bytes, listed as {stored.size}"
        except MissingKeyError as exc:
            unchecked = str(exc)
        except (ChecksumMismatchError, DecryptionError) as exc:
            problem = str(exc)
        except NotFoundError:
            problem = "deleted during the verification"
        except SwiftError as exc:
            unchecked = str(exc)
        except Exception as exc:  # a local failure: this object stays unchecked
            unchecked = f"{type(exc).__name__}: {exc}"
        with self.lock:
            if problem is not None:
                self.report.corrupt.append(f"{stored.name}: {problem}")
            if unchecked is not None:
                self.report.unchecked.append(f"{stored.name}: {unchecked}")
        self._advance(stored.size)

    def _advance(self, nbytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(1, nbytes)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for found in (self.report.missing, self.report.corrupt, self.report.unchecked):
            found.sort()

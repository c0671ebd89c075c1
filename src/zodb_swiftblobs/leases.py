"""Commit leases: a marker each commit with pending uploads keeps fresh, so
that garbage collection in any process leaves its objects alone.

The marker of commit *token* is the small object ``<prefix>commits/<token>``
of the segment container (see :class:`~zodb_swiftblobs.layout.ObjectLayout`);
its body, JSON, says how long it holds: ``{"lease": seconds}``, with
``"broken": true`` once its refreshes have been more than lease/2 apart (its
commit must not be published any more: see :func:`lease_time_left`).  It is
written when the commit starts, then again every lease/4 by the keeper
thread of the database's :class:`CommitLeases`.  Garbage collection takes a
marker at least its lease old by Swift's clock (see :func:`read_marker`) for
abandoned.  A commit publishes only while its lease has been continuous (see
:meth:`CommitLease.check`; a ZEO server publishing a client's uploads, see
:func:`lease_time_left`).

Whoever publishes a commit's pending uploads writes, once, the *record* of
their final names, ``<prefix>commits/<token>/published`` (``{oid hex: final
name}``; see :func:`write_record`): an object of its own, which no refresh of
the marker can overwrite, and which is never written twice (a commit's
uploads are published once).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import NamedTuple

from .layout import ObjectLayout, new_commit_token
from .swift import (NotFoundError, PermanentSwiftError, SwiftContainer, SwiftError,
                    SwiftUnavailableError)

log = logging.getLogger(__name__)

LEASE = 600.0  # seconds


class LeaseBroken(SwiftUnavailableError):
    """A commit's marker went unrefreshed for half its lease or more: garbage
    collection may have taken the commit for abandoned and removed its
    pending uploads.  The transaction should be tried again."""


class PublishedAlready(PermanentSwiftError):
    """A commit's uploads have been published before: its record exists."""


class Marker(NamedTuple):
    """A commit's lease marker as read from Swift: its *lease* (seconds),
    its *age* by Swift's clock, and whether its owner found it *broken*."""

    lease: float
    age: float
    broken: bool


class CommitLeases:
    """The leases of the commits of one database, whose markers are objects of
    *container*'s segment container named by *layout*, each held for *lease*
    seconds.  One daemon thread, started on first use, refreshes every live
    lease every *lease*/4 seconds."""

    def __init__(self, container: SwiftContainer, layout: ObjectLayout,
                 lease: float = LEASE) -> None:
        if not 0 < lease < math.inf:
            raise ValueError(f"a lease is a positive number of seconds, not {lease!r}")
        self.container = container
        self.layout = layout
        self.lease = lease
        self._changed = threading.Condition()
        self._live: set[CommitLease] = set()
        self._keeper: tuple[threading.Thread, threading.Event] | None = None

    def start(self, *, take: bool = True) -> CommitLease:
        """The lease of a new commit, its marker written (SwiftError when it
        could not be) and kept fresh from now on; without *take*, not yet:
        :meth:`CommitLease.take` does that, before any of the commit's
        objects is uploaded."""
        lease = CommitLease(self, new_commit_token())
        if take:
            lease.take()
        return lease

    def keep(self, lease: CommitLease) -> None:
        """Keep *lease*'s marker fresh from now on."""
        with self._changed:
            self._live.add(lease)
            if self._keeper is None:
                stop = threading.Event()
                thread = threading.Thread(target=self._keep, args=(stop,), daemon=True,
                                          name="zodb-swiftblobs-commit-leases")
                self._keeper = thread, stop
                thread.start()
            self._changed.notify()

    def close(self) -> None:
        """Stop refreshing the markers: the live leases are no longer kept
        (until :meth:`start` starts the keeper again)."""
        with self._changed:
            keeper, self._keeper = self._keeper, None
            if keeper is not None:
                keeper[1].set()
            self._changed.notify()
        if keeper is not None:
            keeper[0].join()

    def forget(self, lease: CommitLease) -> None:
        """Refresh *lease* no more."""
        with self._changed:
            self._live.discard(lease)

    def _keep(self, stop: threading.Event) -> None:
        """The keeper thread: refresh each live lease when it is due."""
        while not stop.is_set():
            with self._changed:
                now = time.monotonic()
                due = [lease for lease in self._live if lease.next_refresh <= now]
                if not due:
                    wake = min((lease.next_refresh for lease in self._live), default=None)
                    if not stop.is_set():
                        self._changed.wait(None if wake is None else wake - now)
                    continue
            for lease in due:
                if not stop.is_set():
                    lease.refresh(raising=False)


class CommitLease:
    """The lease of one commit (see :meth:`CommitLeases.start`): ``token``
    and the name of its ``marker``."""

    def __init__(self, leases: CommitLeases, token: str) -> None:
        self.leases = leases
        self.token = token
        self.marker = leases.layout.commit_marker(token)
        self.next_refresh = math.inf
        self._recorded = False
        self._writing = threading.Lock()  # one write of the marker at a time
        self._released = False
        self._last_refresh: float | None = None  # when the last successful one started
        self._longest_gap = 0.0
        self._warned = False

    def __repr__(self) -> str:
        return f"<CommitLease {self.token}>"

    def take(self) -> None:
        """Write the marker (SwiftError when that fails) and keep it fresh
        from now on; nothing once released."""
        self.refresh(raising=True)
        with self._writing:
            if not self._released:
                self.leases.keep(self)

    def pending_name(self, oid: bytes) -> str:
        """The name of this commit's pending upload of blob *oid*."""
        return self.leases.layout.pending_name(self.token, oid)

    def record(self, names: dict[bytes, str]) -> None:
        """Write the record of the final *names* of the commit's blobs (by
        oid; SwiftError when that fails)."""
        write_record(self.leases.container, self.leases.layout, self.token, names)
        self._recorded = True

    def stop_refreshing(self) -> None:
        """Refresh the marker no more, once a refresh under way has ended."""
        with self._writing:
            self._released = True
        self.leases.forget(self)

    def check(self) -> None:
        """LeaseBroken unless the lease has been continuous: successful
        refreshes (the first when it started) all began less than lease/2
        after the one before, and the last less than lease/2 ago."""
        allowed = self.leases.lease / 2
        gap = max(self._longest_gap, time.monotonic() - (self._last_refresh or -math.inf))
        if gap >= allowed:
            raise LeaseBroken(
                f"its marker went {gap:.1f}s without a refresh, while a lease of "
                f"{self.leases.lease:g}s allows less than {allowed:g}s: garbage collection "
                "may have removed the commit's uploads", operation="commit lease",
                name=self.marker)

    def release(self, *, delete_marker: bool) -> None:
        """Stop refreshing the marker; with *delete_marker*, delete it, after
        the record if one was written (a failure is logged: garbage
        collection removes them once stale).
        Without, this makes no request and waits for none: a refresh under
        way (it only renews the marker) ends on its own."""
        if not delete_marker:
            self._released = True
            self.leases.forget(self)
            return
        with self._writing:  # no refresh may write the marker again after its deletion
            self._released = True
        self.leases.forget(self)
        container = self.leases.container
        names = [self.marker]
        if self._recorded:
            names.insert(0, self.leases.layout.commit_record(self.token))
        try:
            for name in names:
                container.delete(name, large=False, container=container.segment_container)
        except SwiftError as exc:
            log.warning("could not delete the marker of commit lease %s (garbage collection "
                        "removes it once stale): %s", self.token, exc)

    def refresh(self, *, raising: bool) -> None:
        """Write the marker again, unless released; a failure is raised, or
        (once per lease) logged."""
        with self._writing:
            if self._released:
                return
            started = time.monotonic()
            self.next_refresh = started + self.leases.lease / 4
            gap = self._longest_gap if self._last_refresh is None else max(
                self._longest_gap, started - self._last_refresh)
            try:
                self._write(broken=gap >= self.leases.lease / 2)
            except Exception as exc:
                if raising:
                    raise
                if not self._warned:
                    self._warned = True
                    log.warning("could not refresh the marker of commit lease %s (tried "
                                "again every %gs): %s", self.token, self.leases.lease / 4, exc)
                return
            if self._last_refresh is not None:
                self._longest_gap = max(self._longest_gap, started - self._last_refresh)
            self._last_refresh = started
        log.debug("refreshed the marker of commit lease %s", self.token)

    def _write(self, *, broken: bool = False) -> None:
        container = self.leases.container
        body = {"lease": self.leases.lease, **({"broken": True} if broken else {})}
        container.put_bytes(self.marker, json.dumps(body).encode(),
                            container=container.segment_container)


def read_marker(container: SwiftContainer, name: str) -> Marker:
    """The commit marker *name* as Swift has it; NotFoundError when it is
    absent.  A body that does not parse counts as a lease of LEASE seconds."""
    small = container.read_small(name, container=container.segment_container)
    try:
        body = json.loads(small.data)
        lease, broken = float(body["lease"]), body.get("broken") is True
    except (ValueError, TypeError, KeyError, AttributeError):
        lease, broken = LEASE, False
    return Marker(lease if 0 < lease < math.inf else LEASE, small.age, broken)


def lease_time_left(container: SwiftContainer, layout: ObjectLayout, token: str) -> float:
    """How long the lease of commit *token*, kept by another process (a ZEO
    client), is certain to keep garbage collection away: less than half its
    lease since the marker was last written, provided its owner has never
    found it broken (a gap between refreshes that garbage collection may
    have taken for the end of the lease marks it so).  LeaseBroken when that
    is no time at all, or the marker is gone."""
    marker = layout.commit_marker(token)
    try:
        lease, age, broken = read_marker(container, marker)
    except NotFoundError:
        raise LeaseBroken("its marker is gone: garbage collection may have removed the "
                          "commit's uploads", operation="commit lease", name=marker) from None
    if broken:
        raise LeaseBroken("its owner went half a lease or more without refreshing it: "
                          "garbage collection may have removed the commit's uploads",
                          operation="commit lease", name=marker)
    left = lease / 2 - age
    if left <= 0:
        raise LeaseBroken(f"its marker was last written {age:.1f}s ago, while a lease of "
                          f"{lease:g}s allows less than {lease / 2:g}s", operation="commit lease",
                          name=marker)
    return left


def write_record(container: SwiftContainer, layout: ObjectLayout, token: str,
                 names: dict[bytes, str]) -> None:
    """Record the final *names* (by oid) commit *token*'s pending uploads
    are published under: PublishedAlready when it has another record (its
    uploads were published before), SwiftError when the write fails."""
    record = {oid.hex(): name for oid, name in names.items()}
    name = layout.commit_record(token)
    try:
        container.put_bytes(name, json.dumps(record).encode(), if_absent=True,
                            container=container.segment_container)
    except PermanentSwiftError as exc:
        if exc.status != 412:
            raise
    else:
        return
    if read_record(container, layout, token) != record:  # not a retry of this very write
        raise PublishedAlready("the commit's uploads were published before",
                               operation="record", name=name)


def read_record(container: SwiftContainer, layout: ObjectLayout,
                token: str) -> dict[str, str] | None:
    """The final names (by oid hex) of commit *token*'s published pending
    uploads: empty when it has no record, None when its record is unreadable."""
    try:
        data = container.read_small(layout.commit_record(token),
                                    container=container.segment_container).data
    except NotFoundError:
        return {}
    try:
        record = json.loads(data)
    except ValueError:
        return None
    if not isinstance(record, dict) or not all(isinstance(name, str)
                                               for name in record.values()):
        return None
    return record

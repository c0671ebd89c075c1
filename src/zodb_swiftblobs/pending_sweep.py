"""Garbage collection of what commits left under ``<prefix>commits/``.

A commit storing big blobs uploads them first as *pending objects* in the
segment container, under a lease whose marker it keeps fresh (see
:mod:`zodb_swiftblobs.leases`), and at its vote publishes each one under its
final name (a manifest referring to it).  This sweep goes through those
names token by token (one token per commit):

- a token whose marker is fresh belongs to a commit in progress, in some
  process: it is left whole (the marker is read from Swift, not from the
  listing, which may lag behind; a commit writes it before any upload);
- otherwise each pending object is kept while the final object the token's
  record names refers to it (both read from Swift, not from a listing), and
  deleted with its segments when nothing does (an aborted or killed commit),
  unless modified less than the sweep's minimum age ago; an unreadable record
  keeps them all;
- segments of the token outside any pending object kept go too, and the
  record and the marker go once nothing else of the token is left.

The commit side publishes only while its lease has been continuous, so a
marker found stale here belongs to a commit that will never publish again.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .layout import ObjectLayout
from .leases import read_marker, read_record
from .swift import NotFoundError, StoredObject, SwiftContainer
from .swift.objects import younger

log = logging.getLogger(__name__)


@dataclass
class PendingReport:
    """What the sweep of pending objects found and did."""

    in_progress: int = 0  # commits whose lease is fresh: left alone
    orphans: int = 0      # pending objects no published object refers to
    too_young: int = 0    # of those, modified less than the minimum age ago: kept
    deleted: int = 0      # pending objects, stray segments and markers deleted


@dataclass
class _Token:
    """Every name under one commit's token, as listed."""

    token: str
    pending: dict[str, tuple[bytes, StoredObject]] = field(default_factory=dict)
    segments: list[StoredObject] = field(default_factory=list)
    record: str | None = None  # the name of its record of final names, if listed


def sweep_pending(container: SwiftContainer, layout: ObjectLayout, *, dry_run: bool,
                  min_age: float, before_deleting: Callable[[], None] | None) -> PendingReport:
    """Delete the pending objects, segments and markers under *layout*'s
    ``commits/`` that no commit in progress and no published object needs
    (with *dry_run*, only count them)."""
    report = PendingReport()
    now = time.time()
    for token in _tokens(container, layout):
        doomed = _judge(container, layout, token, report, min_age=min_age, now=now)
        if doomed and not dry_run:
            if before_deleting is not None:
                before_deleting()
            report.deleted += _delete(container, doomed)
    return report


def _tokens(container: SwiftContainer, layout: ObjectLayout) -> Iterator[_Token]:
    """The listing of ``commits/`` grouped by token (names of one token are
    listed together: the marker first, then its pending objects and segments;
    the marker, read from Swift when judging, is left out)."""
    entries = container.list(layout.commits_prefix, container=container.segment_container)
    try:
        first = next(entries)
    except (StopIteration, NotFoundError):  # no segment container: nothing was ever pending
        return
    for token, group in itertools.groupby(itertools.chain([first], entries),
                                          key=lambda stored: layout.commit_token_of(stored.name)):
        if token is None:
            continue
        found = _Token(token)
        record = layout.commit_record(token)
        for stored in group:
            parsed = layout.parse_commit_name(stored.name)
            if stored.name == record:
                found.record = record
            elif parsed is None:
                found.segments.append(stored)
            elif parsed[1] is not None:
                found.pending[stored.name] = (parsed[1], stored)
        yield found


def _judge(container: SwiftContainer, layout: ObjectLayout, token: _Token,
           report: PendingReport, *, min_age: float, now: float) -> list[tuple[str, bool]]:
    """What of *token* to delete: (name, whether a pending object) pairs;
    nothing while its commit's lease is fresh."""
    marker = layout.commit_marker(token.token)
    try:
        lease, age, _ = read_marker(container, marker)
    except NotFoundError:  # aborted (its marker goes last), or collected
        lease, age = None, None
    if age is not None and age < lease:
        report.in_progress += 1
        return []
    published = read_record(container, layout, token.token) \
        if token.pending or token.record is not None else {}
    if published is None:
        log.warning("the record of commit %s is unreadable: its pending uploads are kept",
                    token.token)
        return []
    kept: list[str] = []
    doomed: list[tuple[str, bool]] = []
    for name, (oid, stored) in token.pending.items():
        final = published.get(oid.hex())
        if final is not None and _refers_to(container, final, name):
            kept.append(name)
            continue
        report.orphans += 1
        if younger(stored, min_age, now):
            report.too_young += 1
            kept.append(name)
        else:
            doomed.append((name, True))
    doomed += [(segment.name, False) for segment in token.segments
               if not any(segment.name.startswith(f"{name}/") for name in kept)]
    if not kept and not token.pending and _still_named(container, layout, token.token,
                                                       published):
        return []  # the listing lags behind a pending object a published one names
    if not kept:
        if token.record is not None:
            doomed.append((token.record, False))
        if age is not None:
            doomed.append((marker, False))
    return doomed


def _still_named(container: SwiftContainer, layout: ObjectLayout, token: str,
                 published: dict[str, str]) -> bool:
    """Whether a published object in *published* (commit *token*'s record)
    still refers to its pending object, which the listing did not show."""
    for oid, final in published.items():
        try:
            pending = layout.pending_name(token, bytes.fromhex(oid))
        except ValueError:  # a record this package did not write: keep what it names
            return True
        if _refers_to(container, final, pending):
            return True
    return False


def _refers_to(container: SwiftContainer, final: str, pending: str) -> bool:
    """Whether object *final* (of the main container) is a large object made
    of pending object *pending* (a segment itself, or a large object)."""
    try:
        segments = container.segment_paths(final)
    except (NotFoundError, ValueError):  # gone, or not a manifest
        return False
    return any(segment == pending or segment.startswith(f"{pending}/")
               for where, segment in segments if where == container.segment_container)


def _delete(container: SwiftContainer, doomed: Iterable[tuple[str, bool]]) -> int:
    """Delete pending objects (with their segments) and plain names; how many."""
    deleted = 0
    plain = []
    for name, pending in doomed:
        if pending:
            container.delete_pending(name)
            deleted += 1
        else:
            plain.append(name)
    if plain:
        deleted += container.delete_many(plain, container=container.segment_container)
    return deleted

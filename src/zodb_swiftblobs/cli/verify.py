"""``zodb-swiftblobs verify`` and ``gc``: what Swift holds against what the
database references."""

from __future__ import annotations

import argparse
import dataclasses
import time

from ..config import ConfigurationError, open_swift_storage
from ..gc import CollectableSpan
from ..progress import Progress
from ..verify import verify
from .arguments import add_storage_command, duration, overrides, positive_integer
from .output import duration_text, listed, mib, moment_text, print_result, progress_shown

GC_MIN_AGE = 3600.0  # gc spares orphans younger than this by default (see --min-age)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``verify`` and ``gc`` commands."""
    check = add_storage_command(
        commands, "verify", run_verify, "check that Swift holds every blob revision",
        "List the blob revisions the database references that Swift lacks (missing), "
        "holds wrong (corrupt: a large object's segment gone, or with --deep a size, "
        "MD5 or recorded checksum mismatch, or no recorded checksum on an object written "
        "after checksums were recorded), is about to delete (scheduled for deletion "
        "by a garbage collection the database, restored from a backup, predates) or holds "
        "without need (orphans). "
        "Exit status 1 when anything is missing, corrupt or scheduled for deletion (and "
        "not repaired). The storage is opened read-only.")
    check.add_argument("--deep", action="store_true",
                       help="read every object and check its size, MD5 and the checksum "
                            "recorded when it was uploaded")
    check.add_argument("--jobs", type=positive_integer, default=8,
                       help="parallel checks (default 8)")
    check.add_argument("--min-age", type=duration, default=GC_MIN_AGE,
                       help="report the orphans modified more recently than this as young: "
                            "gc with the same --min-age spares them (default 1h, gc's)")
    check.add_argument("--repair", action="store_true",
                       help="cancel the deletion of referenced revisions that a garbage "
                            "collection scheduled (after the database was restored from a "
                            "backup older than it)")
    check.add_argument("--adopt-unrecorded", action="store_true",
                       help="with --deep: record the checksum of objects written after "
                            "checksums were recorded but without one, whose size and MD5 "
                            "match.  This adopts whatever content they hold, so use it only "
                            "when they are known to come from processes of an earlier "
                            "release (during a rolling upgrade); each is read into a "
                            "temporary file (TMPDIR)")

    gc = add_storage_command(
        commands, "gc", run_gc, "delete orphaned blob objects without packing",
        "The garbage collection a pack runs, on its own: delete the Swift objects of blob "
        "revisions the database no longer has, or schedule their deletion after the grace "
        "period (with --dry-run, only count them). It changes nothing in the database, "
        "whose records it only reads (so it runs beside a live site), and works only in a "
        "prefix this database owns (claiming one no database has claimed). Orphans modified "
        "less than --min-age ago are spared: a migrate running beside may need them.")
    gc.add_argument("--dry-run", action="store_true", help="count orphans; delete nothing")
    gc.add_argument("--min-age", type=duration, default=GC_MIN_AGE,
                    help="spare orphans modified more recently than this (default 1h; "
                         "say 0, 90, 30m, 6h, 7d)")
    gc.add_argument("--grace-period", "--gc-grace-period", dest="grace_period",
                    type=duration, default=None,
                    help="have Swift delete orphans this long after now, so that a "
                         "database restored from an older backup finds its blobs (default: "
                         "the configuration's gc-grace-period, 7d unless set; 0 deletes at "
                         "once)")


def run_verify(args: argparse.Namespace) -> int:
    """Check the container against the database; print the report."""
    if args.adopt_unrecorded and not args.deep:
        raise ConfigurationError("--adopt-unrecorded reads every object: it needs --deep")
    opened, storage = open_swift_storage(args.config, args.database, read_only=True,
                                         overrides=overrides(args))
    try:
        with Progress("repairing" if args.repair else "verifying", unit="revisions",
                      enabled=progress_shown(args)) as progress:
            report = verify(storage, deep=args.deep, repair=args.repair,
                            adopt_unrecorded=args.adopt_unrecorded, jobs=args.jobs,
                            progress=progress, orphan_min_age=args.min_age)
    finally:
        opened.close()
    lines = [f"{report.referenced} blob revisions referenced by the database; "
             f"{report.present} in Swift ({mib(report.bytes)}), {len(report.missing)} "
             f"missing, {len(report.corrupt)} corrupt"
             f"{' (sizes and checksums read)' if report.deep else ''}, "
             f"{len(report.scheduled)} scheduled for deletion, "
             f"{len(report.orphans)} orphans"
             f"{young_count(len(report.young_orphans), args.min_age)}, "
             f"in {report.seconds:.1f}s"]
    if report.listing_lag:
        lines.append(f"the container listing lags: {report.listing_lag} objects are in "
                     "Swift but not listed yet (written while a container server was "
                     "down; Swift's object updater lists them later)")
    if report.without_checksum:
        lines.append("without a checksum recorded at upload (written by an earlier "
                     f"release; checked by size and MD5 only): {report.without_checksum}")
    lines += listed("without a checksum, though written after checksums were recorded: "
                    "the checksum of their content as it is now recorded (--adopt-unrecorded)",
                    report.adopted)
    lines += listed("missing", report.missing)
    lines += listed("corrupt", report.corrupt)
    lines += listed("not checked (Swift did not answer, or no key to decrypt them)",
                     report.unchecked)
    if args.repair:
        lines += listed("scheduled for deletion, deletion cancelled", report.repaired)
        lines += listed("scheduled for deletion, NOT cancelled",
                         sorted(set(report.scheduled) - set(report.repaired)))
    else:
        lines += listed("scheduled for deletion by a garbage collection older than the "
                         "database (verify --repair cancels their deletion)", report.scheduled)
    young = set(report.young_orphans)
    collectable = [name for name in report.orphans if name not in young]
    lines += listed("orphans old enough for gc to remove", collectable)
    lines += listed(f"orphans younger than {duration_text(args.min_age)}",
                    report.young_orphans)
    lines += young_orphan_lines(len(young), report.young_orphans_collectable, args.min_age)
    lines.append("all is well" if report.ok else "PROBLEMS FOUND")
    print_result(args, dataclasses.asdict(report) | {"ok": report.ok,
                                                     "collectable_orphans": collectable},
                 lines)
    return 0 if report.ok else 1


def run_gc(args: argparse.Namespace) -> int:
    """Collect the container's garbage; print the report."""
    opened, storage = open_swift_storage(args.config, args.database, read_only=True,
                                         overrides=overrides(args))
    try:
        with Progress("examining", unit="objects", enabled=progress_shown(args)) as progress:
            report = storage.collect_garbage(dry_run=args.dry_run, min_age=args.min_age,
                                             grace_period=args.grace_period,
                                             progress=progress)
    finally:
        opened.close()
    if report.grace_period:
        verb = "would schedule" if args.dry_run else "scheduled"
        count = report.orphans - report.already_scheduled if args.dry_run else report.scheduled
        segments = report.scheduled_segments
        when = (f" for deletion in {duration_text(report.grace_period)} "
                f"({report.already_scheduled} scheduled earlier)")
    else:
        verb = "would delete" if args.dry_run else "deleted"
        count = report.orphans if args.dry_run else report.deleted
        segments, when = report.deleted_segments, ""
    lines = [f"{'dry run: ' if args.dry_run else ''}{report.examined} objects examined, "
             f"{report.orphans} orphans ({mib(report.bytes)}), {verb} {count}{when}, "
             f"{report.too_young} younger than {duration_text(args.min_age)} kept, "
             f"in {report.seconds:.1f}s"]
    lines += young_orphan_lines(report.too_young, report.too_young_collectable, args.min_age)
    if report.orphan_segments:
        segments = report.orphan_segments if args.dry_run else segments
        lines.append(f"orphaned large-object segments: {report.orphan_segments}, "
                     f"{verb} {segments}")
    if report.pending_orphans:
        pending = report.pending_orphans - report.pending_too_young if args.dry_run \
            else report.deleted_pending
        lines.append(f"uploads of aborted or killed commits: {report.pending_orphans}, "
                     f"{'would delete' if args.dry_run else 'deleted'} {pending} "
                     f"(with their segments and markers), "
                     f"{report.pending_too_young} younger than "
                     f"{duration_text(args.min_age)} kept")
    if report.commits_in_progress:
        lines.append(f"commits in progress (their uploads left alone): "
                     f"{report.commits_in_progress}")
    if report.rescued:
        lines.append(f"referenced revisions scheduled for deletion (a database restored "
                     f"from a backup?): {report.rescued}, deletion "
                     f"{'to be cancelled' if args.dry_run else 'cancelled'}")
    print_result(args, dataclasses.asdict(report) | {"dry_run": args.dry_run,
                                                     "min_age": args.min_age}, lines)
    return 0


def young_count(count: int, min_age: float) -> str:
    """How many of the orphans are younger than *min_age*, for a summary line."""
    return f" ({count} younger than {duration_text(min_age)})" if count else ""


def young_orphan_lines(count: int, collectable: CollectableSpan, min_age: float) -> list[str]:
    """What to say of *count* orphans that gc spares for being younger than
    *min_age*: when they become old enough, and how to remove them now."""
    if not count:
        return []
    now = time.time()
    if collectable.first is None:
        when = "of unknown age"
    elif collectable.last - collectable.first < 1:
        when = f"old enough to collect at {moment_text(collectable.first, now)}"
    else:
        when = (f"old enough to collect from {moment_text(collectable.first, now)} to "
                f"{moment_text(collectable.last, now)}")
    return [f"{count} orphans younger than {duration_text(min_age)} (gc --min-age) are kept "
            f"by gc: {when}; 'gc --min-age 0' collects them now (unless a migrate or "
            f"another copy into this database is running)"]

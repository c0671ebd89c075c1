"""The ``zodb-swiftblobs`` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence

from ZConfig.datatypes import Registry
from zc.lockfile import LockError
from ZODB.POSException import POSKeyError, StorageError

from .config import ConfigurationError, open_storage, open_swift_storage, swift_section
from .devswift import DevSwift, DevSwiftError
from .migrate import (MigrationError, MigrationReport, blob_directory_revisions,
                      copy_transactions, migrate_blob_directory)
from .ownership import PrefixOwnership, database_identity, owner_of
from .progress import Progress
from .swift import MIB, Credentials, SwiftContainer, SwiftError
from .verify import verify

DEFAULT_DEVSWIFT_DIR = os.path.join("var", "devswift")
LISTED = 20  # names listed per kind of finding in human-readable output
_DATATYPES = Registry()


def byte_size(text: str) -> int:
    """A size as in configuration files: 1048576, 500MB, 10GB (powers of 1024)."""
    try:
        return _DATATYPES.get("byte-size")(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 500MB or 10GB)") \
            from None


def duration(text: str) -> float:
    """A duration as in configuration files: 90 (seconds), 30m, 6h, 7d."""
    try:
        return float(_DATATYPES.get("time-interval")(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 90, 30m, 6h or 7d)") \
            from None


def zodb_id(text: str) -> bytes:
    """An oid or tid: 0x-prefixed hex (as ZODB prints them), 16 hex digits, or decimal."""
    try:
        if text.lower().startswith("0x"):
            number = int(text, 16)
        elif len(text) == 16:
            number = int(text, 16)
        else:
            number = int(text, 10)
        return number.to_bytes(8, "big")
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(
            f"not an oid or tid: {text!r} (say 0x1a2b, 16 hex digits, or a decimal number)") \
            from None


def _output(args: argparse.Namespace, result: dict, lines: Sequence[str]) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


def _listed(title: str, names: Sequence[str]) -> list[str]:
    if not names:
        return []
    lines = [f"{title} ({len(names)}):"] + [f"  {name}" for name in names[:LISTED]]
    if len(names) > LISTED:
        lines.append(f"  ... and {len(names) - LISTED} more (--json lists them all)")
    return lines


def _mib(nbytes: int) -> str:
    return f"{nbytes / MIB:.1f} MiB"


def _duration_text(seconds: float) -> str:
    """*seconds* as the duration options take them: 7d, 6h, 30m or 90s."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length:g}{unit}"
    return f"{seconds:g}s"


def _migrate(args: argparse.Namespace) -> int:
    section = swift_section(args.config, args.database)
    failure = None
    with Progress("migrating", unit="blobs") as progress:
        if args.blob_dir:
            container = section.open_container()
            try:
                if not args.dry_run:
                    container.ensure_container()
                if progress.enabled:
                    progress.total = sum(1 for _ in blob_directory_revisions(args.blob_dir))
                report = migrate_blob_directory(args.blob_dir, container, section.key_layout(),
                                                jobs=args.jobs, dry_run=args.dry_run,
                                                progress=progress)
            finally:
                container.close()
        else:
            try:
                report = _copy(args, section, progress)
            except MigrationError as exc:
                if exc.report is None:
                    raise
                failure, report = exc, exc.report
    result = dataclasses.asdict(report) | {"ok": report.ok and failure is None}
    lines = _migration_lines(report)
    if failure is not None:
        result["error"] = str(failure)
        lines.append(f"stopped: {failure}")
    _output(args, result, lines)
    return 0 if result["ok"] else 1


def _copy(args: argparse.Namespace, section, progress: Progress) -> MigrationReport:
    """Copy the source's transactions into the database (a dry run opens both
    read-only, and takes a destination that does not exist yet for empty)."""
    source = open_storage(args.source, args.source_database, read_only=True)
    try:
        try:
            outer, destination = open_swift_storage(args.config, args.database,
                                                    read_only=args.dry_run)
        except FileNotFoundError:
            if not args.dry_run:
                raise
            outer = destination = None
        if outer is not destination:
            outer.close()
            raise ConfigurationError(
                f"{args.config}: to copy transactions into it, the <swiftblobstorage> must "
                "be the database's storage, with no storage wrapped around it")
        container = section.open_container() if destination is None else None
        try:
            return copy_transactions(
                source, destination, jobs=args.jobs, dry_run=args.dry_run,
                progress=progress, container=container, keys=section.key_layout())
        finally:
            for opened in (destination, container):
                if opened is not None:
                    opened.close()
    finally:
        source.close()


def _migration_lines(report: MigrationReport) -> list[str]:
    verb = "to upload" if report.dry_run else "uploaded"
    lines = [f"{'dry run: ' if report.dry_run else ''}{report.blobs} blob revisions found; "
             f"{report.uploaded} {verb} ({_mib(report.bytes_uploaded)}), {report.skipped} "
             f"already in Swift ({_mib(report.bytes_skipped)}), {report.failed} failed, "
             f"in {report.seconds:.1f}s"]
    if report.transactions:
        lines.append(f"{report.transactions} transactions "
                     f"{'to copy' if report.dry_run else 'copied'}")
    lines += _listed("failures", report.failures)
    if report.missing_in_source:
        lines.append(f"{report.missing_in_source} blob records have no file in the source: "
                     "their records were copied without one")
    if report.failed:
        lines.append("run the same command again to retry what failed")
    return lines


def _verify(args: argparse.Namespace) -> int:
    opened, storage = open_swift_storage(args.config, args.database, read_only=True)
    try:
        with Progress("repairing" if args.repair else "verifying",
                      unit="revisions") as progress:
            report = verify(storage, deep=args.deep, repair=args.repair, jobs=args.jobs,
                            progress=progress)
    finally:
        opened.close()
    lines = [f"{report.referenced} blob revisions referenced by the database; "
             f"{report.present} in Swift ({_mib(report.bytes)}), {len(report.missing)} "
             f"missing, {len(report.corrupt)} corrupt"
             f"{' (sizes and checksums read)' if report.deep else ''}, "
             f"{len(report.scheduled)} scheduled for deletion, "
             f"{len(report.orphans)} orphans, in {report.seconds:.1f}s"]
    if report.listing_lag:
        lines.append(f"the container listing lags: {report.listing_lag} objects are in "
                     "Swift but not listed yet (written while a container server was "
                     "down; Swift's object updater lists them later)")
    lines += _listed("missing", report.missing)
    lines += _listed("corrupt", report.corrupt)
    lines += _listed("not checked (Swift did not answer, or no key to decrypt them)",
                     report.unchecked)
    if args.repair:
        lines += _listed("scheduled for deletion, deletion cancelled", report.repaired)
        lines += _listed("scheduled for deletion, NOT cancelled",
                         sorted(set(report.scheduled) - set(report.repaired)))
    else:
        lines += _listed("scheduled for deletion by a garbage collection older than the "
                         "database (verify --repair cancels their deletion)", report.scheduled)
    lines += _listed("orphans (the gc command removes them)", report.orphans)
    lines.append("all is well" if report.ok else "PROBLEMS FOUND")
    _output(args, dataclasses.asdict(report) | {"ok": report.ok}, lines)
    return 0 if report.ok else 1


def _gc(args: argparse.Namespace) -> int:
    opened, storage = open_swift_storage(args.config, args.database, read_only=True)
    try:
        with Progress("examining", unit="objects") as progress:
            report = storage.collect_garbage(dry_run=args.dry_run, min_age=args.min_age,
                                             grace_period=args.grace_period,
                                             progress=progress)
    finally:
        opened.close()
    if report.grace_period:
        verb = "would schedule" if args.dry_run else "scheduled"
        count = report.orphans - report.already_scheduled if args.dry_run else report.scheduled
        segments = report.scheduled_segments
        when = (f" for deletion in {_duration_text(report.grace_period)} "
                f"({report.already_scheduled} scheduled earlier)")
    else:
        verb = "would delete" if args.dry_run else "deleted"
        count = report.orphans if args.dry_run else report.deleted
        segments, when = report.deleted_segments, ""
    lines = [f"{'dry run: ' if args.dry_run else ''}{report.examined} objects examined, "
             f"{report.orphans} orphans ({_mib(report.bytes)}), {verb} {count}{when}, "
             f"{report.too_young} younger than {args.min_age:g}s kept, "
             f"in {report.seconds:.1f}s"]
    if report.orphan_segments:
        segments = report.orphan_segments if args.dry_run else segments
        lines.append(f"orphaned large-object segments: {report.orphan_segments}, "
                     f"{verb} {segments}")
    if report.rescued:
        lines.append(f"referenced revisions scheduled for deletion (a database restored "
                     f"from a backup?): {report.rescued}, deletion "
                     f"{'to be cancelled' if args.dry_run else 'cancelled'}")
    _output(args, dataclasses.asdict(report) | {"dry_run": args.dry_run,
                                                "min_age": args.min_age}, lines)
    return 0


def _cache(args: argparse.Namespace) -> int:
    cache = swift_section(args.config, args.database).open_cache()
    try:
        result: dict = {"directory": cache.directory, "budget": cache.size}
        lines = []
        if args.action == "prune":
            files, nbytes = cache.prune(args.size if args.size is not None else cache.size)
            result.update(removed=files, removed_bytes=nbytes)
            lines.append(f"removed {files} files ({_mib(nbytes)})")
        elif args.action == "clear":
            files, nbytes = cache.clear()
            result.update(removed=files, removed_bytes=nbytes)
            lines.append(f"removed {files} files ({_mib(nbytes)})")
        totals = cache.totals()
        lookups = totals["hits"] + totals["misses"]
        hit_rate = totals["hits"] / lookups if lookups else None
        result.update(totals, hit_rate=hit_rate)
        lines.append(f"blob cache {cache.directory}: {totals['entries']} files, "
                     f"{_mib(totals['size'])} of {_mib(cache.size)}; "
                     f"{totals['hits']} hits, {totals['misses']} misses"
                     + (f" (hit rate {100 * hit_rate:.1f}%)" if hit_rate is not None else "")
                     + f", {_mib(totals['bytes_downloaded'])} downloaded, "
                     f"{totals['evictions']} evicted, {totals['corrupt']} found corrupt")
    finally:
        cache.close()
    _output(args, result, lines)
    return 0


def _claim(args: argparse.Namespace) -> int:
    section = swift_section(args.config, args.database)
    base = section.open_base()
    try:
        identity = database_identity(base)
    finally:
        base.close()
    container = section.open_container()
    try:
        container.ensure_container()
        ownership = PrefixOwnership(container, section.key_layout(), identity,
                                    encrypts=container.encryption is not None)
        previous = ownership.claim()
    finally:
        container.close()
    previous_owner = owner_of(previous) if previous else None
    lines = [f"{ownership.where} now belongs to {identity}"
             f"{', which encrypts its blobs' if ownership.encrypts else ''}"]
    if previous_owner and previous_owner != identity:
        lines.append(f"(it belonged to {previous_owner})")
    _output(args, {"owner": identity, "previous_owner": previous_owner,
                   "encrypted": ownership.encrypts,
                   "container": container.container, "prefix": section.key_layout().prefix},
            lines)
    return 0


def _url(args: argparse.Namespace) -> int:
    opened, storage = open_swift_storage(args.config, args.database, read_only=True)
    try:
        url = storage.blob_url(args.oid, args.serial, method=args.method,
                               expires=int(args.expires), filename=args.filename)
    finally:
        opened.close()
    _output(args, {"url": url, "method": args.method.upper(), "expires_in": int(args.expires),
                   "expires_at": int(time.time() + int(args.expires))}, [url])
    return 0


def _devswift(args: argparse.Namespace) -> int:
    cluster = DevSwift(args.dir, keystone=args.keystone)
    if args.action == "start":
        settings = cluster.start()
        sys.stdout.write(cluster.keystone_settings().exports() if args.keystone
                         else settings.exports())
    elif args.action == "stop":
        cluster.stop()
        print(f"# embedded Swift in {cluster.directory} stopped", file=sys.stderr)
    else:
        if not cluster.running():
            print(f"no embedded Swift is running in {cluster.directory}; "
                  f"start it with: zodb-swiftblobs devswift start --dir {args.dir}",
                  file=sys.stderr)
            return 1
        sys.stdout.write(cluster.keystone_settings().exports() if args.keystone
                         else cluster.settings().exports())
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Commit, read, undo and pack blobs through SwiftBlobStorage; print what happened."""
    credentials = Credentials.from_environ()
    cluster = None
    if credentials.is_empty:
        cluster = DevSwift(args.dir)
        was_running = cluster.running()
        started = time.monotonic()
        settings = cluster.start()
        print(f"embedded Swift {'already running' if was_running else 'started'} at "
              f"{settings.auth_url} in {time.monotonic() - started:.1f}s "
              f"(directory {cluster.directory})")
        credentials = Credentials(auth_url=settings.auth_url, user=settings.user,
                                  key=settings.key)
    else:
        print(f"using the Swift named by the environment: {credentials.describe()}")
    try:
        with tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-demo-") as work:
            _demo_run(credentials, args.container, work, args.objects)
    finally:
        if cluster is not None and not was_running and not args.keep:
            cluster.stop()
            print("embedded Swift stopped (use --keep to leave it running)")
    return 0


def _demo_run(credentials: Credentials, container_name: str, work: str, count: int) -> None:
    import transaction
    import ZODB
    from ZODB.blob import Blob
    from ZODB.FileStorage import FileStorage

    from .storage import SwiftBlobStorage

    prefix = f"demo-{uuid.uuid4().hex[:8]}/"
    options = {name: value for name, value in dataclasses.asdict(credentials).items()
               if value is not None}
    options.update(container=container_name, prefix=prefix,
                   large_object_threshold=4 * MIB, segment_size=MIB)
    data_fs = os.path.join(work, "Data.fs")

    def open_db(cache: str):
        storage = SwiftBlobStorage(FileStorage(data_fs), cache_dir=os.path.join(work, cache),
                                   **options)
        return ZODB.DB(storage), storage

    payloads = {f"file{i:03d}": os.urandom(4096 * (i + 1)) for i in range(count)}
    payloads["video"] = os.urandom(6 * MIB)
    total = sum(map(len, payloads.values()))
    db, storage = open_db("cache")
    started = time.monotonic()
    with db.transaction() as conn:
        for name, data in payloads.items():
            conn.root()[name] = Blob(data)
    print(f"committed {len(payloads)} blobs ({total / MIB:.1f} MiB, one of them a Static "
          f"Large Object) in one transaction in {time.monotonic() - started:.2f}s "
          f"(container {container_name!r}, prefix {prefix!r})")
    changed = sorted(payloads)[:3]
    with db.transaction() as conn:
        for name in changed:
            with conn.root()[name].open("w") as f:
                f.write(b"changed " + name.encode())
    print(f"committed new revisions of {len(changed)} blobs")
    db.close()

    db, storage = open_db("cold-cache")
    started = time.monotonic()
    with db.transaction() as conn:
        for name, data in payloads.items():
            with conn.root()[name].open() as f:
                expected = b"changed " + name.encode() if name in changed else data
                if f.read() != expected:
                    raise SystemExit(f"blob {name} read back wrong")
    print(f"read and verified {len(payloads)} blobs through an empty cache in "
          f"{time.monotonic() - started:.2f}s")
    with db.transaction() as conn:
        for name in payloads:
            with conn.root()[name].open() as f:
                f.read()
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    with db.transaction() as conn:
        for name in changed:
            with conn.root()[name].open() as f:
                if f.read() != payloads[name]:
                    raise SystemExit(f"undo did not bring back blob {name}")
    print(f"undid the last transaction: {len(changed)} blobs have their first bytes again "
          "(copied inside Swift)")
    listing = SwiftContainer(credentials, container_name)

    def revisions() -> list:
        return [o for o in listing.list(prefix) if storage.key_layout.parse(o.name)]
    before = len(revisions())
    db.pack()
    scheduled = sum(1 for o in revisions() if o.marked_for_deletion is not None)
    print(f"packed: garbage collection scheduled the deletion of {scheduled} of {before} "
          "blob revisions (those the pack dropped) in a week, the gc grace period: a "
          "database restored from an older backup gets them back with verify --repair")
    stats = storage.cache_stats()
    print("cache: " + ", ".join(f"{key} {value}" for key, value in sorted(stats.items())))
    removed = listing.delete_many(listing.list(prefix))
    listing.close()
    db.close()
    print(f"removed the demo's {removed} Swift objects (its blob revisions and the "
          "prefix's ownership marker)")


def _storage_command(commands, name: str, func, help: str, description: str):
    command = commands.add_parser(name, help=help, description=description)
    command.add_argument("config", help="zope.conf, or a ZODB configuration file, whose "
                                        "database storage is (or wraps) a <swiftblobstorage>")
    command.add_argument("-d", "--database", help="the database's section name, when the "
                                                  "file has several (default: main)")
    command.add_argument("--json", action="store_true", help="print the result as JSON")
    command.set_defaults(func=func)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zodb-swiftblobs", description="Keep ZODB blobs in OpenStack Swift. Exit status: "
        "0 when all is well, 1 when something is missing, corrupt or failed, 2 for a usage "
        "or configuration error.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = _storage_command(
        commands, "migrate", _migrate, "move an existing deployment's blobs into Swift",
        "Upload the blobs of a ZODB blob directory (--blob-dir, bushy or lawn layout; "
        "Data.fs is kept as it is), or copy a whole storage with its blobs (--source, for "
        "example RelStorage keeping blobs in the database), keeping oids and transaction "
        "ids. Parallel and idempotent: run it again to resume or to pick up new blobs; "
        "objects already in Swift with the right size and MD5 are skipped.")
    origin = migrate.add_mutually_exclusive_group(required=True)
    origin.add_argument("--blob-dir", help="the blob directory to upload")
    origin.add_argument("--source", help="a configuration file of the storage to copy from "
                                         "into the (empty or partly copied) database")
    migrate.add_argument("--source-database", help="the source's database section name")
    migrate.add_argument("--jobs", type=int, default=8, help="parallel uploads (default 8)")
    migrate.add_argument("--dry-run", action="store_true",
                         help="report what would be uploaded; change nothing")

    check = _storage_command(
        commands, "verify", _verify, "check that Swift holds every blob revision",
        "List the blob revisions the database references that Swift lacks (missing), "
        "holds wrong (corrupt: a large object's segment gone, or with --deep a size or "
        "MD5 mismatch), is about to delete (scheduled for deletion by a garbage collection "
        "the database, restored from a backup, predates) or holds without need (orphans). "
        "Exit status 1 when anything is missing, corrupt or scheduled for deletion (and "
        "not repaired). The storage is opened read-only.")
    check.add_argument("--deep", action="store_true",
                       help="read every object and check its size and MD5")
    check.add_argument("--jobs", type=int, default=8, help="parallel checks (default 8)")
    check.add_argument("--repair", action="store_true",
                       help="cancel the deletion of referenced revisions that a garbage "
                            "collection scheduled (after the database was restored from a "
                            "backup older than it)")

    gc = _storage_command(
        commands, "gc", _gc, "delete orphaned blob objects without packing",
        "The garbage collection a pack runs, on its own: delete the objects of blob "
        "revisions the database no longer has, or schedule their deletion after the grace "
        "period. The storage is opened read-only.")
    gc.add_argument("--dry-run", action="store_true", help="count orphans; delete nothing")
    gc.add_argument("--min-age", type=duration, default=3600.0,
                    help="spare orphans modified more recently than this (default 1h; "
                         "say 0, 90, 30m, 6h, 7d)")
    gc.add_argument("--grace-period", "--gc-grace-period", dest="grace_period",
                    type=duration, default=None,
                    help="have Swift delete orphans this long after now, so that a "
                         "database restored from an older backup finds its blobs (default: "
                         "the configuration's gc-grace-period, 7d unless set; 0 deletes at "
                         "once)")

    cache = _storage_command(
        commands, "cache", _cache, "show, prune or clear the local blob cache",
        "Show the cache's size, entries and hit rate (counted by every process using "
        "it), prune it to a size, or clear it. Running sites fetch what they miss again.")
    cache.add_argument("action", nargs="?", choices=("stats", "prune", "clear"),
                       default="stats")
    cache.add_argument("--size", type=byte_size,
                       help="prune: the size to shrink to (default: the configured "
                            "cache-size), such as 500MB or 2GB")

    _storage_command(
        commands, "claim", _claim, "make the prefix this database's",
        "Write the prefix's ownership marker naming this database (by where its records "
        "live: a FileStorage's host and path, RelStorage's database). Needed after moving "
        "a database elsewhere; never claim a prefix another live database uses: its "
        "garbage collection would delete the blobs this database lacks.")

    url = _storage_command(
        commands, "url", _url, "print a Swift TempURL for a blob revision",
        "A temporary URL serving a blob revision straight from Swift, without a token. "
        "The key is the configured temp-url-key, else the container's or the account's "
        "Temp-URL-Key (set one with: swift post -m Temp-URL-Key:SECRET CONTAINER).")
    url.add_argument("oid", type=zodb_id, help="the blob's oid (0x1a2b, or decimal)")
    url.add_argument("--serial", type=zodb_id,
                     help="the revision's transaction id (default: the current revision)")
    url.add_argument("--method", default="GET", choices=("GET", "HEAD"))
    url.add_argument("--expires", type=duration, default=3600.0,
                     help="validity (default 1h; say 90, 30m, 6h, 7d)")
    url.add_argument("--filename", help="download the blob as an attachment of this name")

    devswift = commands.add_parser(
        "devswift", help="run a real local OpenStack Swift for development and tests",
        description="Start, stop or show a real OpenStack Swift all-in-one on 127.0.0.1. "
                    "'start' and 'env' print ST_AUTH, ST_USER and ST_KEY as shell exports: "
                    "eval \"$(zodb-swiftblobs devswift start)\".")
    devswift.add_argument("action", choices=("start", "stop", "env"))
    devswift.add_argument("--dir", default=DEFAULT_DEVSWIFT_DIR,
                          help="directory for its data, configuration and logs "
                               "(default: %(default)s)")
    devswift.add_argument("--keystone", action="store_true",
                          help="start: also run a real Keystone v3 and a proxy that uses it; "
                               "start and env: print OS_* variables for it")
    devswift.set_defaults(func=_devswift)

    demo = commands.add_parser(
        "demo", help="the main job: commit, read, undo and pack blobs kept in Swift",
        description="Runs a FileStorage wrapped by SwiftBlobStorage against the Swift "
                    "named by ST_AUTH/ST_USER/ST_KEY or OS_* variables, or else against "
                    "the embedded Swift in --dir, and prints what it did.")
    demo.add_argument("--dir", default=DEFAULT_DEVSWIFT_DIR,
                      help="embedded Swift directory (default: %(default)s)")
    demo.add_argument("--container", default="zodb-swiftblobs-demo")
    demo.add_argument("--objects", type=int, default=20, help="small blobs to commit")
    demo.add_argument("--keep", action="store_true",
                      help="leave the embedded Swift running afterwards")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigurationError as exc:
        failure, status = exc, 2
    except (DevSwiftError, SwiftError, StorageError, POSKeyError, MigrationError,
            ValueError, OSError, LockError) as exc:
        failure, status = exc, 1
    if isinstance(failure, POSKeyError):
        message = "no such blob revision"
    elif isinstance(failure, LockError):
        message = f"{failure} (a running process has it open for writing)"
    elif isinstance(failure, OSError) and failure.filename:
        message = f"{failure.strerror}: {failure.filename}"
    else:
        message = str(failure) or type(failure).__name__
    if getattr(args, "json", False):
        json.dump({"ok": False, "error": message}, sys.stdout)
        sys.stdout.write("\n")
    print(f"zodb-swiftblobs {args.command}: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())

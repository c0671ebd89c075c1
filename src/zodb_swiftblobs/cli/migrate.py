"""``zodb-swiftblobs migrate``: move a deployment's blobs into Swift."""

from __future__ import annotations

import argparse
import dataclasses

from ..config import ConfigurationError, open_storage, open_swift_storage, swift_section
from ..migrate import (MigrationError, MigrationReport, blob_directory_revisions,
                       copy_transactions, migrate_blob_directory)
from ..progress import Progress
from ..s3_config import read_s3_settings
from ..s3_source import S3Bucket, S3MigrationReport, migrate_s3_bucket
from .arguments import add_storage_command, overrides, positive_integer
from .output import listed, mib, print_result, progress_shown


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``migrate`` command."""
    migrate = add_storage_command(
        commands, "migrate", run_migrate, "move an existing deployment's blobs into Swift",
        "Upload the blobs of a ZODB blob directory (--blob-dir, bushy or lawn layout; "
        "Data.fs is kept as it is), copy a whole storage with its blobs (--source, for "
        "example RelStorage keeping blobs in the database), or copy the blob revisions the "
        "database references from the S3 bucket of a zodb-s3blobs deployment (--s3; the "
        "storage it wrapped is kept as it is; convert-config makes its configuration), "
        "keeping oids and transaction ids. Parallel and idempotent: run it again to resume "
        "or to pick up new blobs; objects already in Swift with the right size and MD5 are "
        "skipped.")
    origin = migrate.add_mutually_exclusive_group(required=True)
    origin.add_argument("--blob-dir", help="the blob directory to upload")
    origin.add_argument("--source", help="a configuration file of the storage to copy from "
                                         "into the (empty or partly copied) database")
    origin.add_argument("--s3", metavar="S3_CONFIG",
                        help="the zope.conf (or ZODB configuration file) of a zodb-s3blobs "
                             "deployment, whose <s3blobstorage> names the bucket, prefix and "
                             "credentials (needs the s3 extra); --deadline bounds the wait "
                             "for each S3 connection and answer too")
    migrate.add_argument("--source-database",
                         help="the database section name in --source or --s3 (by "
                              "default that of -d when the file has several)")
    migrate.add_argument("--jobs", type=positive_integer, default=8,
                         help="parallel uploads (default 8)")
    migrate.add_argument("--dry-run", action="store_true",
                         help="report what would be uploaded; change nothing")


def run_migrate(args: argparse.Namespace) -> int:
    """Upload a blob directory, copy a storage, or copy from S3; print the report."""
    section = swift_section(args.config, args.database, overrides=overrides(args))
    failure = None
    with Progress("migrating", unit="blobs", enabled=progress_shown(args)) as progress:
        try:
            if args.blob_dir:
                report = _upload_directory(args, section, progress)
            elif args.s3:
                report = _copy_from_s3(args, section, progress)
            else:
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
    print_result(args, result, lines)
    return 0 if result["ok"] else 1


def _upload_directory(args: argparse.Namespace, section,
                      progress: Progress) -> MigrationReport:
    container = section.open_container()
    try:
        if not args.dry_run:
            container.ensure_container()
        if progress.enabled:
            progress.total = sum(1 for _ in blob_directory_revisions(args.blob_dir))
        return migrate_blob_directory(args.blob_dir, container, section.object_layout(),
                                      jobs=args.jobs, dry_run=args.dry_run, progress=progress)
    finally:
        container.close()


def _copy_from_s3(args: argparse.Namespace, section,
                  progress: Progress) -> S3MigrationReport:
    """Copy the referenced blob revisions of the bucket into Swift (the
    database is the storage the <swiftblobstorage> wraps, opened read-only)."""
    settings = read_s3_settings(args.s3, args.source_database, default=args.database)
    bucket = S3Bucket(settings, connections=args.jobs, timeout=args.deadline)
    try:
        database = section.open_base()
        container = section.open_container()
        try:
            if not args.dry_run:
                container.ensure_container()
            if progress.enabled:
                progress.total = sum(1 for item in bucket.listing() if item.ids)
            return migrate_s3_bucket(bucket, database, container, section.object_layout(),
                                     jobs=args.jobs, dry_run=args.dry_run,
                                     progress=progress)
        finally:
            container.close()
            database.close()
    finally:
        bucket.close()


def _copy(args: argparse.Namespace, section, progress: Progress) -> MigrationReport:
    """Copy the source's transactions into the database (a dry run opens both
    read-only, and takes a destination that does not exist yet for empty)."""
    source = open_storage(args.source, args.source_database, default=args.database,
                          read_only=True)
    try:
        try:
            outer, destination = open_swift_storage(args.config, args.database,
                                                    read_only=args.dry_run,
                                                    overrides=overrides(args))
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
                progress=progress, container=container, layout=section.object_layout())
        finally:
            for opened in (destination, container):
                if opened is not None:
                    opened.close()
    finally:
        source.close()


def _migration_lines(report: MigrationReport) -> list[str]:
    verb = "to upload" if report.dry_run else "uploaded"
    lines = [f"{'dry run: ' if report.dry_run else ''}{report.blobs} blob revisions found; "
             f"{report.uploaded} {verb} ({mib(report.bytes_uploaded)}), {report.skipped} "
             f"already in Swift ({mib(report.bytes_skipped)}), {report.failed} failed, "
             f"in {report.seconds:.1f}s"]
    if report.transactions:
        lines.append(f"{report.transactions} transactions "
                     f"{'to copy' if report.dry_run else 'copied'}")
    lines += listed("failures", report.failures)
    if report.missing_in_source:
        lines.append(f"{report.missing_in_source} blob records have no file in the source: "
                     "their records were copied without one")
    if isinstance(report, S3MigrationReport):
        lines += _s3_lines(report)
    if report.failed:
        lines.append("run the same command again to retry what failed")
    return lines


def _s3_lines(report: S3MigrationReport) -> list[str]:
    lines = []
    if report.unreferenced:
        lines.append(f"{report.unreferenced} revisions in S3 ({mib(report.bytes_unreferenced)}) "
                     "left there: the database does not reference them (older revisions "
                     "zodb-s3blobs keeps, uploads of transactions that never committed)")
    if report.other_objects:
        lines.append(f"{report.other_objects} other objects under blobs/ left there: their "
                     "names are not those of blob revisions")
    if report.size_checked_only:
        lines.append(f"{report.size_checked_only} downloads checked by their size alone: "
                     "their ETag is no checksum (SSE-C or SSE-KMS)")
    return lines

"""The ``zodb-swiftblobs`` command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence

from .devswift import DevSwift, DevSwiftError
from .swiftaccess import MIB, Credentials, SwiftContainer, SwiftError

DEFAULT_DEVSWIFT_DIR = os.path.join("var", "devswift")


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
    before = sum(1 for _ in listing.list(prefix))
    db.pack()
    after = sum(1 for _ in listing.list(prefix))
    print(f"packed: garbage collection removed {before - after} of {before} Swift objects "
          "(the revisions the pack dropped)")
    stats = storage.cache_stats()
    print("cache: " + ", ".join(f"{key} {value}" for key, value in sorted(stats.items())))
    removed = listing.delete_many(listing.list(prefix))
    listing.close()
    db.close()
    print(f"removed the demo's {removed} Swift objects")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zodb-swiftblobs", description="Keep ZODB blobs in OpenStack Swift.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True)

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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (DevSwiftError, SwiftError) as exc:
        print(f"zodb-swiftblobs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

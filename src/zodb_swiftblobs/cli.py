"""The ``zodb-swiftblobs`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
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
    """Upload, list, download and delete real objects; print what happened."""
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
        container = SwiftContainer(credentials, args.container,
                                   large_object_threshold=4 * MIB, segment_size=MIB)
        try:
            with tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-demo-") as work:
                _demo_run(container, work, args.objects)
        finally:
            container.close()
    finally:
        if cluster is not None and not was_running and not args.keep:
            cluster.stop()
            print("embedded Swift stopped (use --keep to leave it running)")
    return 0


def _demo_run(container: SwiftContainer, work: str, count: int) -> None:
    container.ensure_container()
    sizes = [4096 * (i + 1) for i in range(count)] + [6 * MIB]
    names = [f"demo/{i:04d}" for i in range(len(sizes))]
    started = time.monotonic()
    for name, size in zip(names, sizes):
        path = os.path.join(work, "upload")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        stored = container.upload(name, path)
        os.replace(path, os.path.join(work, name.replace("/", "_")))
        if stored.large:
            print(f"uploaded {name}: {size} bytes as a Static Large Object (md5 {stored.md5})")
    total = sum(sizes)
    print(f"uploaded {len(names)} objects, {total / MIB:.1f} MiB, "
          f"in {time.monotonic() - started:.2f}s")
    listed = list(container.list("demo/", page_size=max(2, count // 3)))
    print(f"listed {len(listed)} objects in pages of {max(2, count // 3)}; "
          f"{sum(o.large for o in listed)} large")
    started = time.monotonic()
    for name in names:
        target = os.path.join(work, "download")
        container.download(name, target)
        with open(target, "rb") as got, open(os.path.join(work, name.replace("/", "_")),
                                             "rb") as sent:
            if got.read() != sent.read():
                raise SystemExit(f"downloaded bytes of {name} differ from the uploaded ones")
    print(f"downloaded and verified {len(names)} objects in {time.monotonic() - started:.2f}s")
    started = time.monotonic()
    deleted = container.delete_many(listed)
    remaining = list(container.list("demo/"))
    print(f"deleted {deleted} objects in {time.monotonic() - started:.2f}s; "
          f"{len(remaining)} left")


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
        "demo", help="exercise Swift: upload, list, download and delete real objects",
        description="Uses the Swift named by ST_AUTH/ST_USER/ST_KEY or OS_* variables, "
                    "or else starts the embedded Swift in --dir.")
    demo.add_argument("--dir", default=DEFAULT_DEVSWIFT_DIR,
                      help="embedded Swift directory (default: %(default)s)")
    demo.add_argument("--container", default="zodb-swiftblobs-demo")
    demo.add_argument("--objects", type=int, default=20, help="small objects to upload")
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

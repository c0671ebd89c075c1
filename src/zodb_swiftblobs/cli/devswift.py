"""``zodb-swiftblobs devswift``: run a real local OpenStack Swift."""

from __future__ import annotations

import argparse
import sys

from ..testing.devswift import DevSwift
from .arguments import DEFAULT_DEVSWIFT_DIR


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``devswift`` command."""
    devswift = commands.add_parser(
        "devswift", help="run a real local OpenStack Swift for development and tests",
        description="Start, stop or show a real OpenStack Swift all-in-one on 127.0.0.1. "
                    "'start' and 'env' print ST_AUTH, ST_USER and ST_KEY as shell exports: "
                    "eval \"$(zodb-swiftblobs devswift start)\".")
    devswift.add_argument("action", choices=("start", "stop", "env"),
                          help="start: set the cluster up in --dir (the first time), start "
                               "its servers unless they run, and print the exports; stop: "
                               "stop the processes it started (by PID; the data stays); "
                               "env: print the exports of the running cluster")
    devswift.add_argument("--dir", default=DEFAULT_DEVSWIFT_DIR,
                          help="directory for its data, configuration and logs "
                               "(default: %(default)s)")
    devswift.add_argument("--keystone", action="store_true",
                          help="start: also run a real Keystone v3 and a proxy that uses it; "
                               "start and env: print OS_* variables for it")
    devswift.set_defaults(func=run_devswift)


def run_devswift(args: argparse.Namespace) -> int:
    """Start, stop or show the embedded Swift in ``--dir``."""
    cluster = DevSwift(args.dir, keystone=args.keystone)
    if args.action == "start":
        settings = cluster.start()
        sys.stdout.write(cluster.keystone_settings().exports() if args.keystone
                         else settings.exports())
    elif args.action == "stop":
        cluster.stop()
        if not args.quiet:
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

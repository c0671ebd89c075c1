"""The ``zodb-swiftblobs`` command: one module per command (or pair of them)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
from collections.abc import Sequence

from zc.lockfile import LockError
from ZODB.POSException import POSKeyError, StorageError

from ..config import ConfigurationError
from ..migrate import MigrationError
from ..errors import SwiftAuthenticationError
from ..swift import AuthenticationError, SwiftError
from ..testing.devswift import DevSwiftError
from . import cache, claim, convert_config, demo, devswift, migrate, url, verify


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, with every command."""
    parser = argparse.ArgumentParser(
        prog="zodb-swiftblobs", description="Keep ZODB blobs in OpenStack Swift. Exit status: "
        "0 when all is well, 1 when something is missing, corrupt or failed, 2 for a usage "
        "or configuration error.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('zodb-swiftblobs')}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (migrate, convert_config, verify, cache, claim, url, devswift, demo):
        command.add_commands(commands)
    for command_parser in commands.choices.values():  # also after the command's name
        command_parser.add_argument("-v", "--verbose", action="store_true",
                                    default=argparse.SUPPRESS, help="log more")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command *argv* names; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ConfigurationError, AuthenticationError, SwiftAuthenticationError) as exc:
        failure, status = exc, 2  # a configuration error: wrong credentials included
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

"""The ``zodb-swiftblobs`` command: one module per command (or pair of them)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence

from zc.lockfile import LockError
from ZODB.POSException import POSKeyError, StorageError

from ..config import ConfigurationError
from ..migrate import MigrationError
from ..errors import SwiftAuthenticationError
from ..swift import AuthenticationError, SwiftError
from ..testing.devswift import DevSwiftError, MissingPackageError
from . import cache, claim, convert_config, demo, devswift, migrate, url, verify
from .output import waits_shown


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, with every command."""
    parser = argparse.ArgumentParser(
        prog="zodb-swiftblobs", description="Keep ZODB blobs in OpenStack Swift. Exit status: "
        "0 when all is well, 1 when something is missing, corrupt or failed, 2 for a usage "
        "or configuration error.")
    _add_output_options(parser)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {importlib.metadata.version('zodb-swiftblobs')}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (migrate, convert_config, verify, cache, claim, url, devswift, demo):
        command.add_commands(commands)
    for command_parser in commands.choices.values():  # also after the command's name
        _add_output_options(command_parser, default=argparse.SUPPRESS)
    return parser


def _add_output_options(parser: argparse.ArgumentParser, **default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log more", **default)
    parser.add_argument("-q", "--quiet", action="store_true", **default,
                        help="say nothing on stderr but errors: no progress line, no word "
                             "of what the command waits for, no warnings logged")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command *argv* names; return the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.nullcontext() if args.quiet else waits_shown(args.command):
            status = args.func(args)
            sys.stdout.flush()
            return status
    except BrokenPipeError:  # stdout's reader went away (``| head``): say no more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ConfigurationError, AuthenticationError, SwiftAuthenticationError,
            MissingPackageError) as exc:
        failure, status = exc, 2  # configuration: wrong credentials, a missing extra too
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

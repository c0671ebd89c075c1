"""The command line's argument types, and the arguments every storage command takes."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

from ZConfig.datatypes import Registry

DEFAULT_DEVSWIFT_DIR = os.path.join("var", "devswift")
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


def seconds(text: str) -> float:
    """A positive number of seconds: 5, 2.5."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def positive_integer(text: str) -> int:
    """A whole number of at least 1: 8."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


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


def add_storage_command(commands: argparse._SubParsersAction, name: str,
                        func: Callable[[argparse.Namespace], int], help: str,
                        description: str, *, swift: bool = True) -> argparse.ArgumentParser:
    """Add the command *name*, run by *func*, on the storage a configuration
    file names (with *swift*, a command that talks to Swift)."""
    command = commands.add_parser(name, help=help, description=description)
    command.add_argument("config", help="zope.conf, or a ZODB configuration file, whose "
                                        "database storage is (or wraps) a <swiftblobstorage>")
    command.add_argument("-d", "--database", help="the database's section name, when the "
                                                  "file has several (default: main)")
    command.add_argument("--json", action="store_true", help="print the result as JSON")
    if swift:
        add_deadline(command)
    command.set_defaults(func=func)
    return command


def add_deadline(command: argparse.ArgumentParser, default: str = "the configured "
                 "deadline") -> None:
    """Add ``--deadline`` to *command*, which talks to Swift."""
    command.add_argument(
        "--deadline", type=seconds, metavar="SECONDS",
        help=f"how long each request to Swift may take, retries included (default: "
             f"{default}); while Swift does not answer, the command says on stderr what "
             f"it is waiting for")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives instead of the configuration file's."""
    deadline = getattr(args, "deadline", None)
    return {} if deadline is None else {"deadline": deadline}

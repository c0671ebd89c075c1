"""``zodb-swiftblobs convert-config``: a zodb-s3blobs configuration made a
zodb-swiftblobs one."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigurationError, read_text
from ..config_conversion import convert_s3_config
from .output import print_result


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``convert-config`` command."""
    command = commands.add_parser(
        "convert-config", help="convert a zodb-s3blobs configuration into a zodb-swiftblobs one",
        description="Print the configuration file S3_CONFIG (zope.conf, or a ZODB "
        "configuration file) with each <s3blobstorage> section made the equivalent "
        "<swiftblobstorage> around the same storage section; everything else is kept as "
        "it is written. Comments in the new section (and notes on standard error) say "
        "what has no equivalent and which of Swift's settings to add. Nothing is opened "
        "or contacted. Then move the blobs with: migrate NEW_CONFIG --s3 S3_CONFIG.")
    command.add_argument("s3_config", metavar="S3_CONFIG",
                         help="the zodb-s3blobs deployment's configuration file")
    command.add_argument("--json", action="store_true",
                         help="print the converted text and the notes as JSON")
    command.set_defaults(func=run_convert_config)


def run_convert_config(args: argparse.Namespace) -> int:
    """Print the converted configuration, and the notes on standard error."""
    text = read_text(args.s3_config)
    try:
        converted = convert_s3_config(text)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{args.s3_config}: {exc}") from None
    if args.json:
        print_result(args, {"ok": True, "config": converted.text, "notes": converted.notes},
                     [])
        return 0
    sys.stdout.write(converted.text)
    for note in converted.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0

"""``zodb-swiftblobs url``: a Swift TempURL for a blob revision."""

from __future__ import annotations

import argparse
import time

from ..config import open_swift_storage
from .arguments import add_storage_command, duration, overrides, zodb_id
from .output import print_result


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``url`` command."""
    url = add_storage_command(
        commands, "url", run_url, "print a Swift TempURL for a blob revision",
        "A temporary URL serving a blob revision straight from Swift, without a token. "
        "The key is the configured temp-url-key, else the container's or the account's "
        "Temp-URL-Key (set one with: swift post -m Temp-URL-Key:SECRET CONTAINER).")
    url.add_argument("oid", type=zodb_id, help="the blob's oid (0x1a2b, or decimal)")
    url.add_argument("--serial", type=zodb_id,
                     help="the revision's transaction id (default: the current revision)")
    url.add_argument("--method", default="GET", choices=("GET", "HEAD"),
                     help="GET (the default): the URL serves the blob's bytes; HEAD: it "
                          "answers only the headers (size, type, checksum), to check a "
                          "blob without downloading it")
    url.add_argument("--expires", type=duration, default=3600.0,
                     help="validity (default 1h; say 90, 30m, 6h, 7d)")
    url.add_argument("--filename", help="download the blob as an attachment of this name")


def run_url(args: argparse.Namespace) -> int:
    """Print a TempURL for a blob revision."""
    opened, storage = open_swift_storage(args.config, args.database, read_only=True,
                                         overrides=overrides(args))
    try:
        url = storage.blob_url(args.oid, args.serial, method=args.method,
                               expires=int(args.expires), filename=args.filename)
    finally:
        opened.close()
    print_result(args, {"url": url, "method": args.method.upper(),
                        "expires_in": int(args.expires),
                        "expires_at": int(time.time() + int(args.expires))}, [url])
    return 0

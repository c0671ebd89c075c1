"""``zodb-swiftblobs cache``: show, prune or clear the local blob cache."""

from __future__ import annotations

import argparse

from ..config import ConfigurationError, swift_section
from .arguments import add_storage_command, byte_size
from .output import mib, print_result


ACTIONS = ("stats", "prune", "clear")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``cache`` command."""
    cache = add_storage_command(
        commands, "cache", run_cache, "show, prune or clear the local blob cache",
        "Show the cache's size, entries and hit rate (counted by every process using "
        "it), prune it to a size, or clear it. Running sites fetch what they miss again.",
        swift=False)
    cache.add_argument("action", nargs="?", default="stats", metavar="{stats,prune,clear}",
                       help="stats (the default): show the totals; prune: remove the least "
                            "recently used files down to --size; clear: remove every file "
                            "(before or after the configuration file)")
    cache.add_argument("--size", type=byte_size,
                       help="prune: the size to shrink to (default: the configured "
                            "cache-size), such as 500MB or 2GB")


def run_cache(args: argparse.Namespace) -> int:
    """Show, prune or clear the cache; print its totals."""
    if args.config in ACTIONS and args.action not in ACTIONS:  # cache ACTION CONFIG
        args.config, args.action = args.action, args.config
    if args.action not in ACTIONS:
        raise ConfigurationError(f"no cache action {args.action!r}: say "
                                 f"{', '.join(ACTIONS)}")
    cache = swift_section(args.config, args.database).open_cache()
    try:
        result: dict = {"directory": cache.directory, "budget": cache.size}
        lines = []
        if args.action == "prune":
            files, nbytes = cache.prune(args.size if args.size is not None else cache.size)
            result.update(removed=files, removed_bytes=nbytes)
            lines.append(f"removed {files} files ({mib(nbytes)})")
        elif args.action == "clear":
            files, nbytes = cache.clear()
            result.update(removed=files, removed_bytes=nbytes)
            lines.append(f"removed {files} files ({mib(nbytes)})")
        totals = cache.totals()
        lookups = totals["hits"] + totals["misses"]
        hit_rate = totals["hits"] / lookups if lookups else None
        result.update(totals, hit_rate=hit_rate)
        lines.append(f"blob cache {cache.directory}: {totals['entries']} files, "
                     f"{mib(totals['size'])} of {mib(cache.size)}; "
                     f"{totals['hits']} hits, {totals['misses']} misses"
                     + (f" (hit rate {100 * hit_rate:.1f}%)" if hit_rate is not None else "")
                     + f", {mib(totals['bytes_downloaded'])} downloaded, "
                     f"{totals['evictions']} evicted, {totals['corrupt']} found corrupt")
    finally:
        cache.close()
    print_result(args, result, lines)
    return 0

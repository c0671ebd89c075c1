"""How the commands print their results: lines for people, or JSON."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import sys
from collections.abc import Iterator, Sequence

from ..swift import MIB, WAITING_LOGGER

LISTED = 20  # names listed per kind of finding in human-readable output


def print_result(args: argparse.Namespace, result: dict, lines: Sequence[str]) -> None:
    """Print *result* as JSON with ``--json``, else *lines*."""
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


def progress_shown(args: argparse.Namespace) -> bool | None:
    """Whether to draw the progress line: never with ``--quiet``, else (None)
    when stderr is a terminal."""
    return False if args.quiet else None


def listed(title: str, names: Sequence[str]) -> list[str]:
    """Lines listing the first LISTED *names* under *title* (none for no names)."""
    if not names:
        return []
    lines = [f"{title} ({len(names)}):"] + [f"  {name}" for name in names[:LISTED]]
    if len(names) > LISTED:
        lines.append(f"  ... and {len(names) - LISTED} more (--json lists them all)")
    return lines


def mib(nbytes: int) -> str:
    """*nbytes* in MiB, as the commands print sizes."""
    return f"{nbytes / MIB:.1f} MiB"


def approximate_duration(seconds: float) -> str:
    """*seconds*, rounded for people: 45s, 55m, 3.5h, 2.0d."""
    for unit, length, limit in (("d", 86400, 172800), ("h", 3600, 7200), ("m", 60, 120)):
        if seconds >= limit:
            return f"{seconds / length:.1f}{unit}" if unit != "m" else f"{seconds // 60:.0f}m"
    return f"{max(seconds, 0):.0f}s"


def moment_text(moment: float, now: float) -> str:
    """POSIX time *moment* in UTC, and how long after *now* it is."""
    when = datetime.datetime.fromtimestamp(moment, datetime.timezone.utc)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC (in {approximate_duration(moment - now)})"


def duration_text(seconds: float) -> str:
    """*seconds* as the duration options take them: 7d, 6h, 30m or 90s."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length:g}{unit}"
    return f"{seconds:g}s"


@contextlib.contextmanager
def waits_shown(command: str) -> Iterator[None]:
    """Within this, say on stderr what *command* waits for while Swift does
    not answer (a line per wait, never on stdout)."""
    waiting = logging.getLogger(WAITING_LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"zodb-swiftblobs {command}: %(message)s"))
    waiting.addHandler(handler)
    level, propagate = waiting.level, waiting.propagate
    waiting.setLevel(logging.INFO)
    waiting.propagate = False
    try:
        yield
    finally:
        waiting.removeHandler(handler)
        waiting.setLevel(level)
        waiting.propagate = propagate

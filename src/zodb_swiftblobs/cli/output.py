"""How the commands print their results: lines for people, or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..swift import MIB

LISTED = 20  # names listed per kind of finding in human-readable output


def print_result(args: argparse.Namespace, result: dict, lines: Sequence[str]) -> None:
    """Print *result* as JSON with ``--json``, else *lines*."""
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


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


def duration_text(seconds: float) -> str:
    """*seconds* as the duration options take them: 7d, 6h, 30m or 90s."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds // length:g}{unit}"
    return f"{seconds:g}s"

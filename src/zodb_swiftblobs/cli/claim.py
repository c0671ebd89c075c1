"""``zodb-swiftblobs claim``: make the prefix this database's."""

from __future__ import annotations

import argparse

from ..bases import latest_committed_tid
from ..config import swift_section
from ..ownership import PrefixOwnership, database_identity, owner_of
from .arguments import add_storage_command, overrides
from .output import print_result


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``claim`` command."""
    add_storage_command(
        commands, "claim", run_claim, "make the prefix this database's",
        "Write the prefix's ownership marker naming this database (by where its records "
        "live: a FileStorage's host and path, RelStorage's database). Needed after moving "
        "a database elsewhere; never claim a prefix another live database uses: its "
        "garbage collection would delete the blobs this database lacks.")


def run_claim(args: argparse.Namespace) -> int:
    """Write the prefix's ownership marker naming this database."""
    section = swift_section(args.config, args.database, overrides=overrides(args))
    base = section.open_base()
    try:
        identity = database_identity(base)
        last = latest_committed_tid(base)
    finally:
        base.close()
    container = section.open_container()
    try:
        container.ensure_container()
        ownership = PrefixOwnership(container, section.object_layout(), identity,
                                    encrypts=container.encryption is not None,
                                    last_committed=lambda: last)
        previous = ownership.claim()
    finally:
        container.close()
    previous_owner = owner_of(previous) if previous else None
    lines = [f"{ownership.where} now belongs to {identity}"
             f"{', which encrypts its blobs' if ownership.encrypts else ''}"]
    if previous_owner and previous_owner != identity:
        lines.append(f"(it belonged to {previous_owner})")
    print_result(args, {"owner": identity, "previous_owner": previous_owner,
                        "encrypted": ownership.encrypts, "container": container.container,
                        "prefix": section.object_layout().prefix}, lines)
    return 0

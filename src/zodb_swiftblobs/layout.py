"""Where blob revisions live in Swift: the object name of (oid, tid).

A revision of blob *oid* committed in transaction *tid* is stored as
``<prefix><oid as 16 hex digits>/<tid as 16 hex digits>.blob``.  Listing the
container by name therefore walks blobs oid by oid, revisions in commit order,
and several databases can share one container under different prefixes.  The
object ``<prefix>zodb-swiftblobs.owner`` names the database owning the prefix
(see :mod:`zodb_swiftblobs.ownership`).
"""

from __future__ import annotations

import re

from .names import check_prefix

SUFFIX = ".blob"
MARKER = "zodb-swiftblobs.owner"
OBJECT_NAME = re.compile(r"^([0-9a-f]{16})/([0-9a-f]{16})\.blob$")


class ObjectLayout:
    """Object names of blob revisions under one *prefix*."""

    def __init__(self, prefix: str = "") -> None:
        check_prefix(prefix)
        self.prefix = prefix
        self.marker = f"{prefix}{MARKER}"

    def __repr__(self) -> str:
        return f"ObjectLayout(prefix={self.prefix!r})"

    def object_name(self, oid: bytes, tid: bytes) -> str:
        """The object name of revision *tid* of blob *oid* (8-byte ZODB ids)."""
        return f"{self.prefix}{_hex(oid)}/{_hex(tid)}{SUFFIX}"

    def oid_prefix(self, oid: bytes) -> str:
        """The common start of the names of every revision of blob *oid*."""
        return f"{self.prefix}{_hex(oid)}/"

    def parse(self, name: str) -> tuple[bytes, bytes] | None:
        """``(oid, tid)`` of a blob revision's object name; None for other names."""
        if not name.startswith(self.prefix):
            return None
        match = OBJECT_NAME.match(name[len(self.prefix):])
        if match is None:
            return None
        return bytes.fromhex(match.group(1)), bytes.fromhex(match.group(2))


def _hex(id8: bytes) -> str:
    if len(id8) != 8:
        raise ValueError(f"ZODB ids are 8 bytes, not {len(id8)}")
    return id8.hex()

"""Where blob revisions live in Swift: the object name of (oid, tid).

A revision of blob *oid* committed in transaction *tid* is stored as
``<prefix><oid as 16 hex digits>/<tid as 16 hex digits>.blob``.  Listing the
container by name therefore walks blobs oid by oid, revisions in commit order,
and several databases can share one container under different prefixes.  The
object ``<prefix>zodb-swiftblobs.owner`` names the database owning the prefix
(see :mod:`zodb_swiftblobs.ownership`).

A commit uploading blobs before its transaction id is known uses, in the
segment container, the names under ``<prefix>commits/<token>`` (a token: 16
hex digits, one per commit): that object is the commit's lease marker (see
:mod:`zodb_swiftblobs.leases`), ``<prefix>commits/<token>/<oid>`` the pending
upload of blob *oid* (see :mod:`zodb_swiftblobs.swift.pending`), whose
segments are named below it, and ``<prefix>commits/<token>/published`` the
record of the final names its pending uploads were published under.
"""

from __future__ import annotations

import re
import secrets

from .names import check_prefix

SUFFIX = ".blob"
MARKER = "zodb-swiftblobs.owner"
COMMITS = "commits/"
RECORD = "published"
OBJECT_NAME = re.compile(r"^([0-9a-f]{16})/([0-9a-f]{16})\.blob$")
COMMIT_TOKEN = re.compile(r"^[0-9a-f]{16}$")
COMMIT_NAME = re.compile(r"^([0-9a-f]{16})(?:/([0-9a-f]{16}))?$")
COMMIT_TOKEN_OF = re.compile(r"^([0-9a-f]{16})(?:/|$)")


def new_commit_token() -> str:
    """A new commit token: 16 random lowercase hex digits."""
    return secrets.token_hex(8)


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

    @property
    def commits_prefix(self) -> str:
        """The common start of the names of every commit's marker and pending
        uploads (in the segment container)."""
        return f"{self.prefix}{COMMITS}"

    def commit_marker(self, token: str) -> str:
        """The name of the lease marker of commit *token*."""
        return f"{self.commits_prefix}{_token(token)}"

    def pending_name(self, token: str, oid: bytes) -> str:
        """The name of the pending upload of blob *oid* in commit *token*."""
        return f"{self.commits_prefix}{_token(token)}/{_hex(oid)}"

    def commit_record(self, token: str) -> str:
        """The name of the record of the final names of commit *token*'s
        published pending uploads."""
        return f"{self.commits_prefix}{_token(token)}/{RECORD}"

    def parse_commit_name(self, name: str) -> tuple[str, bytes | None] | None:
        """``(token, None)`` of a commit's marker, ``(token, oid)`` of a pending
        upload's name; None for other names (their segments included)."""
        if not name.startswith(self.commits_prefix):
            return None
        match = COMMIT_NAME.match(name[len(self.commits_prefix):])
        if match is None:
            return None
        oid = match.group(2)
        return match.group(1), bytes.fromhex(oid) if oid else None

    def commit_token_of(self, name: str) -> str | None:
        """The token of the commit any *name* under :attr:`commits_prefix`
        belongs to (marker, pending upload or one of its segments); None for
        other names."""
        if not name.startswith(self.commits_prefix):
            return None
        match = COMMIT_TOKEN_OF.match(name[len(self.commits_prefix):])
        return match.group(1) if match else None


def _token(token: str) -> str:
    if not isinstance(token, str) or not COMMIT_TOKEN.match(token):
        raise ValueError(f"a commit token is 16 lowercase hex digits, not {token!r}")
    return token


def _hex(id8: bytes) -> str:
    if len(id8) != 8:
        raise ValueError(f"ZODB ids are 8 bytes, not {len(id8)}")
    return id8.hex()

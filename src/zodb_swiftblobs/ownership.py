"""Prefix ownership: which database a container prefix belongs to.

Garbage collection deletes every object whose revision the database lacks,
so a database collecting in another database's prefix would delete all of
that database's blobs.  The first database that opens a prefix for writing
claims it: it creates the marker object ``<prefix>zodb-swiftblobs.owner``
(JSON, never encrypted) naming itself.  Another database opening the prefix
is refused, and garbage collection runs only in a prefix its database owns.

A database is named by where its records live, which every process serving
it agrees on: a FileStorage by host and real path of its file, RelStorage
on SQLite by host and real path of its directory, other RelStorage by its
``name`` option or else its database server and database (never a
password).  A database moved elsewhere claims its prefix again with
``zodb-swiftblobs claim``.  In-memory bases (MappingStorage, DemoStorage)
claim nothing: they may use an unclaimed prefix, and never a claimed one
(a DemoStorage over a stored database goes by the stored one).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

import ZODB.DemoStorage
import ZODB.FileStorage
import ZODB.MappingStorage
from ZODB.POSException import StorageError

from .keys import KeyLayout
from .swiftaccess import NotFoundError, PermanentSwiftError, SwiftContainer

MARKER_FORMAT = 1
_ADDRESS = re.compile(r" at (0x)?[0-9a-f]+")
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_PASSWORD_SETTING = re.compile(r"\b(password|passwd|pwd)\s*=\s*('[^']*'|\"[^\"]*\"|\S+)",
                               re.IGNORECASE)


class ForeignPrefixError(StorageError):
    """The prefix belongs to another database (or its marker is unreadable)."""


def database_identity(base) -> str | None:
    """How the ownership marker names the database of *base*; None for a
    database that lives in memory only."""
    if isinstance(base, ZODB.DemoStorage.DemoStorage):
        return database_identity(base.base)
    host = socket.gethostname()
    if isinstance(base, ZODB.FileStorage.FileStorage):
        return f"FileStorage {host}:{os.path.realpath(base.getName())}"
    if type(base).__module__.startswith("relstorage."):
        return _relstorage_identity(base, host)
    if isinstance(base, ZODB.MappingStorage.MappingStorage):
        return None
    return f"{type(base).__name__} {_without_secrets(base.getName())}"


def _relstorage_identity(base, host: str) -> str:
    adapter = base._adapter
    data_dir = getattr(adapter, "data_dir", None)
    if data_dir:
        return f"RelStorage sqlite {host}:{os.path.realpath(data_dir)}"
    name = getattr(base._options, "name", None)
    if name:
        return f"RelStorage {name}"
    return f"RelStorage {_without_secrets(str(adapter))}"


def _without_secrets(text: str) -> str:
    text = _ADDRESS.sub("", text)
    text = _URI_PASSWORD.sub(r"\1@", text)
    return _PASSWORD_SETTING.sub(r"\1=***", text)


class PrefixOwnership:
    """The ownership marker of one prefix, for the database named *identity*."""

    def __init__(self, container: SwiftContainer, keys: KeyLayout,
                 identity: str | None) -> None:
        self.container = container
        self.keys = keys
        self.identity = identity

    @property
    def where(self) -> str:
        return f"prefix {self.keys.prefix!r} of container {self.container.container!r}"

    def owner(self) -> dict | None:
        """The marker's content; None when the prefix is unclaimed."""
        try:
            data = self.container.get_bytes(self.keys.marker)
        except NotFoundError:
            return None
        try:
            marker = json.loads(data)
            if not isinstance(marker, dict) or not isinstance(marker.get("owner"), str):
                raise ValueError("no owner")
        except ValueError:
            raise ForeignPrefixError(
                f"{self.where} has an unreadable ownership marker {self.keys.marker!r}; "
                "remove it, or claim the prefix with 'zodb-swiftblobs claim'") from None
        return marker

    def check(self, *, claim: bool) -> None:
        """Raise ForeignPrefixError unless the prefix is this database's or
        unclaimed; with *claim*, an unclaimed prefix is claimed."""
        marker = self.owner()
        if marker is None and claim and self.identity is not None:
            marker = self._create()
        if marker is not None and marker["owner"] != self.identity:
            raise ForeignPrefixError(self._foreign(marker))

    def claim(self) -> dict | None:
        """Make the prefix this database's, whoever owned it; return the
        previous marker (None if there was none)."""
        if self.identity is None:
            raise ForeignPrefixError("a database that lives in memory cannot claim a prefix")
        try:
            previous = self.owner()
        except ForeignPrefixError:
            previous = None
        self.container.put_bytes(self.keys.marker, self._marker())
        return previous

    def _create(self) -> dict:
        try:
            self.container.put_bytes(self.keys.marker, self._marker(), if_absent=True)
        except PermanentSwiftError as exc:
            if exc.status != 412:
                raise
        marker = self.owner()
        if marker is None:
            raise ForeignPrefixError(f"{self.where}: the ownership marker just written "
                                     "cannot be read back")
        return marker

    def _marker(self) -> bytes:
        return json.dumps({
            "format": MARKER_FORMAT,
            "owner": self.identity,
            "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "claimed_from": f"{socket.gethostname()} (pid {os.getpid()})",
        }, indent=1).encode()

    def _foreign(self, marker: dict) -> str:
        this = self.identity or "a database that lives in memory"
        return (f"{self.where} belongs to another database: {marker['owner']} (claimed "
                f"{marker.get('claimed_at', '?')} from {marker.get('claimed_from', '?')}); "
                f"this one is {this}.  Give each database its own prefix or container; if "
                "this is the same database moved elsewhere, run 'zodb-swiftblobs claim' "
                "with its configuration")

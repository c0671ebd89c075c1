"""Prefix ownership: which database a container prefix belongs to.

Garbage collection deletes every object whose revision the database lacks,
so a database collecting in another database's prefix would delete all of
that database's blobs.  The first database that opens a prefix for writing
claims it: it creates the marker object ``<prefix>zodb-swiftblobs.owner``
(JSON, never encrypted) naming itself.  Another database opening the prefix
is refused, and garbage collection runs only in a prefix its database owns.

A database is named by where its records live, which every process serving
it agrees on: a FileStorage by the real path of its file, RelStorage on
SQLite by the real path of its directory, other RelStorage by its ``name``
option or else its database server, port and database, whatever else its
connection settings say (never a password; see :mod:`.databases`).  A
database that lives in memory (MappingStorage) is named by its process and
instance: its prefix is its own for as long as it lives, and later ones are
refused it (give each a new prefix).  A DemoStorage goes by the database it is
layered on.  A database moved elsewhere claims its prefix again with
``zodb-swiftblobs claim``.

The marker also holds the *checksum watermark* (``checksums_from``): the id
of a transaction after which every blob revision's object carries the
checksum recorded at upload (see :mod:`zodb_swiftblobs.swift.checksums`), so
that ``verify --deep`` can tell an object whose content was replaced (and
its metadata lost) from one an earlier release wrote.  A marker made by this
release sets it to the database's last committed transaction; one of an
earlier release gets it the first time a writing process of this release
opens the prefix.  Once set, it never moves.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import ZODB.DemoStorage
import ZODB.FileStorage
import ZODB.MappingStorage
from ZODB.POSException import StorageError

from .bases import RelStorageSettings, is_relstorage
from .databases import legacy_identity, mysql_identity, oracle_identity, postgresql_identity
from .layout import ObjectLayout
from .swift import NotFoundError, PermanentSwiftError, SwiftContainer

log = logging.getLogger(__name__)

# Format 2 names server databases by server, port and database (format 1
# markers name them by their adapter's description: see legacy_identity).
MARKER_FORMAT = 2
_ADDRESS = re.compile(r" at (0x)?[0-9a-f]+")
_URI_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_PASSWORD_SETTING = re.compile(
    r"\b(password|passwd|pwd)\s*=\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)",
    re.IGNORECASE)


CHECKSUMS_FROM = "checksums_from"  # the checksum watermark: a transaction id, in hex
_TID_HEX = re.compile(r"^[0-9a-f]{16}$")


class ForeignPrefixError(StorageError):
    """The prefix belongs to another database (or its marker is unreadable)."""


def database_identity(base: Any) -> str:
    """How the ownership marker names the database of the storage *base*."""
    if isinstance(base, ZODB.DemoStorage.DemoStorage):
        return database_identity(base.base)
    if isinstance(base, ZODB.FileStorage.FileStorage):
        return f"FileStorage {os.path.realpath(base.getName())}"
    if is_relstorage(base):
        return _relstorage_identity(base)
    if isinstance(base, ZODB.MappingStorage.MappingStorage):
        return (f"{type(base).__name__} in memory, process {os.getpid()} on "
                f"{socket.gethostname()}, instance {id(base):x}")
    return f"{type(base).__name__} {without_secrets(base.getName())}"


def _relstorage_identity(base) -> str:
    settings = RelStorageSettings(base)
    if settings.data_dir:
        return f"RelStorage sqlite {os.path.realpath(settings.data_dir)}"
    if settings.name:
        return f"RelStorage {settings.name}"
    return f"RelStorage {_adapter_identity(settings)}"


def _adapter_identity(settings: RelStorageSettings) -> str:
    """The database server and database of a RelStorage adapter, from the
    connection settings RelStorage gave it."""
    kind = settings.adapter_kind
    if kind.startswith("PostgreSQL") and settings.dsn is not None:
        return postgresql_identity(settings.dsn)
    if kind.startswith("MySQL") and settings.params is not None:
        return mysql_identity(settings.params)
    if kind.startswith("Oracle") and settings.dsn is not None:
        return oracle_identity(settings.dsn, settings.user)
    return without_secrets(settings.adapter_text())


def without_secrets(text: str) -> str:
    """*text* (a storage's description) without object addresses and passwords."""
    text = _ADDRESS.sub("", text)
    text = _URI_PASSWORD.sub(r"\1@", text)
    return _PASSWORD_SETTING.sub(r"\1=***", text)


def owner_of(marker: dict) -> str:
    """The database an ownership marker names, as this version names it."""
    version = marker.get("format")
    if isinstance(version, int) and version >= 2:
        return marker["owner"]
    return legacy_identity(marker["owner"])


def checksums_from(marker: dict | None) -> bytes | None:
    """The transaction id after which every blob revision's object carries a
    recorded checksum, as ownership *marker* says; None when it says nothing
    (no process of this release has written in the prefix yet)."""
    value = (marker or {}).get(CHECKSUMS_FROM)
    return None if value is None else bytes.fromhex(value)


class EncryptionRequiredError(StorageError):
    """The prefix's database encrypts its blobs, and this process has no key."""


class PrefixOwnership:
    """The ownership marker of one prefix, for the database named *identity*.

    The marker also records whether the database *encrypts* its blobs, so
    that a process started without the key cannot quietly write new blobs
    in plaintext, and the checksum watermark: *last_committed* tells the
    database's last committed transaction id when a marker needs one (None:
    this process writes no watermark).
    """

    def __init__(self, container: SwiftContainer, layout: ObjectLayout, identity: str, *,
                 encrypts: bool = False,
                 last_committed: Callable[[], bytes] | None = None) -> None:
        self.container = container
        self.layout = layout
        self.identity = identity
        self.encrypts = encrypts
        self.last_committed = last_committed

    @property
    def where(self) -> str:
        return f"prefix {self.layout.prefix!r} of container {self.container.container!r}"

    def owner(self) -> dict | None:
        """The marker's content; None when the prefix is unclaimed."""
        try:
            data = self.container.get_bytes(self.layout.marker, newest=True)
        except NotFoundError:
            return None
        try:
            marker = json.loads(data)
            if not isinstance(marker, dict) or not isinstance(marker.get("owner"), str):
                raise ValueError("no owner")
            watermark = marker.get(CHECKSUMS_FROM)
            if watermark is not None and not (isinstance(watermark, str)
                                              and _TID_HEX.match(watermark)):
                raise ValueError("no transaction id")
        except ValueError:
            raise ForeignPrefixError(
                f"{self.where} has an unreadable ownership marker {self.layout.marker!r}; "
                "remove it, or claim the prefix with 'zodb-swiftblobs claim'") from None
        return marker

    def check(self, *, claim: bool) -> None:
        """Raise ForeignPrefixError unless the prefix is this database's or
        unclaimed; with *claim*, an unclaimed prefix is claimed."""
        marker = self.owner()
        if marker is None and claim:
            marker = self._create()
        if marker is not None and owner_of(marker) != self.identity:
            raise ForeignPrefixError(self._foreign(marker))
        if claim and marker is not None:
            self._check_encryption(marker)
            self._update(marker)

    def check_served(self, *, writes: bool) -> None:
        """For a ZEO client, whose server's database owns the prefix:
        ForeignPrefixError unless the prefix is claimed; for one that *writes*,
        EncryptionRequiredError if it would write plaintext into an encrypting
        database."""
        marker = self.owner()
        if marker is None:
            raise ForeignPrefixError(
                f"{self.where} is not claimed by any database: a ZEO client writes and reads "
                "the blobs of its server's database, so wrap the ZEO server's storage in a "
                "swiftblobstorage with this container and prefix, and start it first")
        if writes:
            self._check_encryption(marker)

    def _check_encryption(self, marker: dict) -> None:
        """For a process that writes: refuse to write plaintext into an
        encrypting database."""
        if marker.get("encrypted") and not self.encrypts:
            raise EncryptionRequiredError(
                f"the blobs of the database owning {self.where} are encrypted (its "
                "ownership marker says so), and no encryption key is configured here: "
                "new blobs would be stored in plaintext.  Configure its encryption-key "
                "(or ZODB_SWIFTBLOBS_ENCRYPTION_KEYS); to stop encrypting on purpose, "
                "run 'zodb-swiftblobs claim' with a configuration without keys")

    def _update(self, marker: dict) -> None:
        """Rewrite the marker of this database's prefix where it is out of date:
        the database now encrypts, the marker names it in an older format, or
        it has no checksum watermark yet."""
        changes = []
        if self.encrypts and not marker.get("encrypted"):
            changes.append("its database now encrypts its blobs")
        if marker["owner"] != self.identity:
            changes.append(f"its database is now named {self.identity}")
        watermark = checksums_from(marker)
        if watermark is None:
            watermark = self._last_committed()
            if watermark is not None:
                changes.append(f"the blobs of transactions after {watermark.hex()} carry "
                               "recorded checksums")
        if changes:
            self.container.put_bytes(self.layout.marker, self._marker(watermark))
            log.info("%s: %s (recorded in its marker)", self.where, "; ".join(changes))

    def claim(self) -> dict | None:
        """Make the prefix this database's, whoever owned it; return the
        previous marker (None if there was none).  The previous marker's
        checksum watermark is kept."""
        try:
            previous = self.owner()
        except ForeignPrefixError:
            previous = None
        watermark = checksums_from(previous)
        self.container.put_bytes(self.layout.marker, self._marker(
            self._last_committed() if watermark is None else watermark))
        log.info("%s claimed by %s (its owner was %s)", self.where, self.identity,
                 owner_of(previous) if previous else "nobody")
        return previous

    def _create(self) -> dict:
        try:
            self.container.put_bytes(self.layout.marker, self._marker(self._last_committed()),
                                     if_absent=True)
            log.info("%s is now owned by %s", self.where, self.identity)
        except PermanentSwiftError as exc:
            if exc.status != 412:
                raise  # 412: another process claimed it first; its marker is read below
        marker = self.owner()
        if marker is None:
            raise ForeignPrefixError(f"{self.where}: the ownership marker just written "
                                     "cannot be read back")
        return marker

    def _last_committed(self) -> bytes | None:
        return None if self.last_committed is None else self.last_committed()

    def _marker(self, watermark: bytes | None) -> bytes:
        """A marker naming this database, with checksum *watermark* (None: none)."""
        marker = {
            "format": MARKER_FORMAT,
            "owner": self.identity,
            "encrypted": self.encrypts,
            "claimed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "claimed_from": f"{socket.gethostname()} (pid {os.getpid()})",
        }
        if watermark is not None:
            marker[CHECKSUMS_FROM] = watermark.hex()
        return json.dumps(marker, indent=1).encode()

    def _foreign(self, marker: dict) -> str:
        this = self.identity
        return (f"{self.where} belongs to another database: {owner_of(marker)} (claimed "
                f"{marker.get('claimed_at', '?')} from {marker.get('claimed_from', '?')}); "
                f"this one is {this}.  Give each database its own prefix or container; if "
                "this is the same database moved elsewhere, run 'zodb-swiftblobs claim' "
                "with its configuration")

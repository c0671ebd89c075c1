"""Content checksums: recorded in a blob object's metadata when it is
uploaded, compared with its content when it is read.

Swift's ETag describes the bytes Swift holds, whoever put them there; the
recorded checksum describes the content this package uploaded, so content
replaced afterwards (other bytes of the same size, put with the object's
metadata) shows; content put without it shows by its absence (see the
checksum watermark in :mod:`zodb_swiftblobs.ownership`).  The record,
``X-Object-Meta-Swiftblobs-Checksum``, is ``sha256:<hex>``, the SHA-256 of
the content, or for an encrypted object
``hmac-sha256:<hex>``, a keyed hash of its plaintext that tells nothing of it
without the master key (see :meth:`.ObjectCipher.keyed_hash`).  For a large
object it describes the whole content, not the manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from ..encryption import ObjectCipher
from .transport import CHUNK_SIZE

CHECKSUM_METADATA = "Swiftblobs-Checksum"
SHA256 = "sha256"
KEYED_SHA256 = "hmac-sha256"


class Hash(Protocol):
    """What hashlib's and hmac's objects have in common."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def content_hash(cipher: ObjectCipher | None) -> Hash:
    """A new hash of the content of an object encrypted with *cipher* (None:
    a plain object), as :func:`file_checksum` records it."""
    return cipher.keyed_hash() if cipher is not None else hashlib.sha256()


def file_checksum(path: str, cipher: ObjectCipher | None) -> str:
    """The checksum to record for the file at *path*, uploaded with *cipher*."""
    digest = content_hash(cipher)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return f"{KEYED_SHA256 if cipher is not None else SHA256}:{digest.hexdigest()}"


def recorded_checksum(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(algorithm, hex digest) recorded in an object's *metadata*; None when
    it has no record of a known algorithm (an object uploaded before
    checksums were recorded)."""
    wanted = CHECKSUM_METADATA.lower()
    value = next((value for key, value in metadata.items() if key.lower() == wanted), "")
    algorithm, _, digest = value.strip().partition(":")
    if algorithm not in (SHA256, KEYED_SHA256) or not digest:
        return None
    return algorithm, digest.lower()


class ContentCheck:
    """The content of an object read, hashed as it comes (:meth:`update`),
    against the checksum recorded in its *metadata*; *cipher* is that of the
    object (None: a plain object)."""

    def __init__(self, metadata: Mapping[str, str], cipher: ObjectCipher | None) -> None:
        self.recorded = recorded_checksum(metadata)
        keyed = self.recorded is not None and self.recorded[0] == KEYED_SHA256
        self._hash = None
        if self.recorded is not None and (cipher is not None or not keyed):
            self._hash = content_hash(cipher if keyed else None)

    def update(self, data: bytes) -> None:
        """Hash the next bytes of the content."""
        if self._hash is not None:
            self._hash.update(data)

    def problem(self) -> str | None:
        """What is wrong with the whole content hashed (None: it matches the
        record, or there is none)."""
        if self.recorded is None:
            return None
        algorithm, digest = self.recorded
        if self._hash is None:
            return f"a {algorithm} checksum is recorded, but the object is not encrypted"
        if self._hash.hexdigest() != digest:
            return f"its content does not match the {algorithm} checksum recorded at upload"
        return None

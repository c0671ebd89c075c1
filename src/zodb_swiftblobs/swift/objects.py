"""Objects as Swift describes them: StoredObject, metadata headers, and the
marks this package puts in content types."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

METADATA_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
ENCRYPTION_METADATA = "Swiftblobs-Encryption"  # the parameters of an encrypted object
# The content-type parameter marking an object scheduled for deletion (its
# value: when), so that container listings show the schedule.
DELETION_MARK = "zodb-swiftblobs-delete-at"


@dataclass(frozen=True)
class StoredObject:
    """An object in Swift, as listed, uploaded or downloaded.  ``size`` and
    ``md5`` are those of the bytes in Swift (for an encrypted object, of its
    ciphertext)."""

    name: str
    size: int
    md5: str | None = None
    large: bool = False
    last_modified: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    delete_at: int | None = None  # when Swift deletes it (X-Delete-At), if scheduled

    @property
    def modified_at(self) -> float:
        """Its ``last_modified`` (UTC, ISO 8601, as listings give it) as a POSIX
        time; the far future when unknown (so that an unknown age counts as young)."""
        if not self.last_modified:
            return float("inf")
        moment = datetime.fromisoformat(self.last_modified)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()

    @property
    def marked_for_deletion(self) -> int | None:
        """When its content type (as a listing shows it) says it is scheduled
        for deletion (see :meth:`.SwiftContainer.schedule_deletion`)."""
        return deletion_mark(self.content_type)


@dataclass(frozen=True)
class SmallObject:
    """The content of a small object, and its ``age``: the seconds from its
    Last-Modified to the Date of the response that read it (both Swift's
    clock; never negative, though Swift rounds Last-Modified up to the
    second)."""

    data: bytes
    age: float


def small_object(data: bytes, headers: Mapping[str, str]) -> SmallObject:
    """The small object of content *data* that a GET answered with *headers*."""
    modified, date = headers.get("last-modified"), headers.get("date")
    age = 0.0
    if modified and date:
        age = (parsedate_to_datetime(date) - parsedate_to_datetime(modified)).total_seconds()
    return SmallObject(data, max(0.0, age))


def metadata_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The X-Object-Meta-* headers of *metadata*; ValueError for a key or value
    Swift would not keep as it is."""
    headers = {}
    for key, value in (metadata or {}).items():
        value = str(value)
        if not METADATA_KEY.match(key):
            raise ValueError(f"metadata key {key!r}: use letters, digits and dashes")
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"metadata value for {key!r} must be printable ASCII")
        headers[f"X-Object-Meta-{key}"] = value
    return headers


def metadata_of(headers: Mapping[str, str]) -> dict[str, str]:
    """The metadata that X-Object-Meta-* *headers* (as sent) carry."""
    return {k[len("X-Object-Meta-"):].lower(): v for k, v in headers.items()
            if k.startswith("X-Object-Meta-")}


def is_large(headers: Mapping[str, str]) -> bool:
    """Whether response *headers* are those of a Static Large Object."""
    return str(headers.get("x-static-large-object", "")).lower() == "true"


def stored_object(name: str, headers: Mapping[str, str]) -> StoredObject:
    """The object a response describes; ``md5`` is None for a large object
    (its ETag is not the MD5 of its content)."""
    large = is_large(headers)
    size = int(headers.get("content-length", 0))
    if "content-range" in headers:
        size = int(headers["content-range"].rsplit("/", 1)[1])
    md5 = None if large else headers.get("etag", "").strip('"') or None
    metadata = {k[len("x-object-meta-"):]: v for k, v in headers.items()
                if k.startswith("x-object-meta-")}
    delete_at = headers.get("x-delete-at")
    return StoredObject(name, size, md5, large, headers.get("last-modified"), metadata,
                        headers.get("content-type"), int(delete_at) if delete_at else None)


def deletion_mark(content_type: str | None) -> int | None:
    """The time of deletion a content type marks (None: not marked)."""
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == DELETION_MARK:
            try:
                return int(value.strip().strip('"'))
            except ValueError:
                return None
    return None


def without_deletion_mark(content_type: str) -> str:
    """*content_type* without its DELETION_MARK parameter."""
    return ";".join(part for part in content_type.split(";")
                    if part.partition("=")[0].strip().lower() != DELETION_MARK)


def encryption_header(metadata: Mapping[str, str]) -> str | None:
    """The encryption parameters in an object's metadata (None: a plain object)."""
    wanted = ENCRYPTION_METADATA.lower()
    return next((value for key, value in metadata.items() if key.lower() == wanted), None)


def younger(stored: StoredObject, min_age: float, now: float) -> bool:
    """Whether *stored* was modified less than *min_age* seconds before *now*."""
    return min_age > 0 and not now - stored.modified_at >= min_age

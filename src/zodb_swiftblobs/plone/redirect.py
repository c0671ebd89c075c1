"""Redirecting a named file's blob to Swift: which blobs (committed, above the
threshold, in a SwiftBlobStorage that does not encrypt), and the answer (a 302
to a TempURL, or an ``X-Accel-Redirect`` to it through nginx)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from ZODB.POSException import POSKeyError

from ..bases import current_serial
from ..errors import SwiftStorageError
from ..storage import SwiftBlobStorage
from ..swift.errors import SwiftError
from ..swift.objects import encryption_header
from .settings import ServingSettings

logger = logging.getLogger(__name__)

# Plone's headers of the bytes, left out of a 302: Swift's answer has its own.
CONTENT_HEADERS = ("content-type", "content-length", "content-disposition", "accept-ranges")


@dataclass(frozen=True)
class BlobRedirect:
    """The TempURL of a committed blob revision that Swift serves."""

    url: str

    def answer(self, response: Any, settings: ServingSettings) -> str:
        """Turn *response*, whose headers plone.namedfile has set, into the
        redirect to Swift; returns its (empty) body.

        nginx keeps Plone's Content-Type and Content-Disposition; a client
        sent to Swift gets the Content-Disposition from the TempURL's
        (unsigned) parameters."""
        response.setHeader("Cache-Control", "private, no-store")  # the URL expires
        if settings.mode == "x-accel-redirect":
            parts = urlsplit(self.url)
            location = settings.x_accel_location.rstrip("/")
            for name in ("content-length", "accept-ranges"):  # Swift sends its own
                response.headers.pop(name, None)
            response.setHeader("X-Accel-Redirect", f"{location}{parts.path}?{parts.query}")
            return ""
        url = self.url + disposition_parameters(response.getHeader("Content-Disposition"))
        for name in CONTENT_HEADERS:
            response.headers.pop(name, None)
        response.redirect(url)
        return ""


def disposition_parameters(disposition: str | None) -> str:
    """The TempURL parameters making Swift send plone.namedfile's
    Content-Disposition (``attachment`` or ``inline``, with a file name)."""
    kind, _, parameters = (disposition or "").partition(";")
    filename = filename_of(parameters)
    query = "&" + urlencode({"filename": filename}) if filename else ""
    return query if kind.strip() == "attachment" else query + "&inline"


def filename_of(parameters: str) -> str | None:
    """The file name that plone.namedfile's Content-Disposition parameters
    give (``filename*=UTF-8''...``), or None."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "filename*" and value.upper().startswith("UTF-8''"):
            return unquote(value[len("UTF-8''"):]) or None
    return None


def swift_storage_of(blob: Any) -> SwiftBlobStorage | None:
    """The SwiftBlobStorage holding *blob* (its database's storage, or one that
    it wraps), or None."""
    jar = getattr(blob, "_p_jar", None)
    storage = jar.db().storage if jar is not None else None
    while storage is not None and not isinstance(storage, SwiftBlobStorage):
        storage = getattr(storage, "base", None)
    return storage


def blob_redirect(file: Any, settings: ServingSettings | None) -> BlobRedirect | None:
    """The redirect to Swift of the blob of named file *file*, or None when
    Plone serves it: the integration is off, it is no blob file, it is not
    committed, it is encrypted (or the storage encrypts), or it is not above
    the threshold.

    Nothing here fetches the blob: its revision comes from the database when
    it is a ghost (loading it would fetch it), its size from plone.namedfile's
    cache of it (``size`` in the file's state, enough to leave a small blob
    to Plone) and from a HEAD request to Swift, which also says whether the
    object is encrypted (by a process with a key this one lacks: a TempURL
    would serve its ciphertext).  The size goes into that cache, so that the
    headers Plone sets do not read the blob either.
    """
    blob = getattr(file, "_blob", None)
    if settings is None or blob is None:
        return None
    storage = swift_storage_of(blob)
    if storage is None or storage.swift_container.encryption is not None:
        return None
    if blob._p_changed or blob._p_blob_uncommitted or blob._p_oid is None:
        return None
    oid, size = blob._p_oid, file.__dict__.get("size")
    if size is not None and size <= settings.above:
        return None
    try:
        serial = blob._p_serial if blob._p_changed is not None \
            else current_serial(blob._p_jar, oid)
        stored = storage.swift_container.head(storage.object_layout.object_name(oid, serial))
        if encryption_header(stored.metadata):
            return None
        # plone.namedfile keeps the size it measured in the instance's
        # __dict__; filled here, its own headers do not open the blob.  The
        # value is the stored blob's, so storing it with the file is harmless.
        size = file.__dict__["size"] = stored.size
        if size <= settings.above:
            return None
        return BlobRedirect(storage.blob_url(oid, serial, expires=settings.lifetime))
    except (SwiftError, SwiftStorageError, POSKeyError) as exc:  # Plone serves it
        logger.warning("zodb-swiftblobs: Plone serves blob 0x%s: %s", oid.hex(), exc)
        return None

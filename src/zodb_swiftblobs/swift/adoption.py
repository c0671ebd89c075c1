"""Adopting an object's content: recording, for an object that has none,
the checksum of its content as it is now (see :mod:`.checksums`); also for
the copy of such an object that an undo makes.

This trusts whatever content is there: it is for objects known to have been
written without a record (by a process of an earlier release), never for
objects whose content may have been replaced.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from .checksums import CHECKSUM_METADATA, file_checksum, recorded_checksum
from .errors import ChecksumMismatchError
from .posts import head_headers, post_keeping

if TYPE_CHECKING:
    from .container import SwiftContainer
    from .objects import StoredObject


def adopt_content(container: SwiftContainer, name: str) -> str:
    """Record in object *name*'s metadata the checksum of its content as it
    is now, keeping the rest of its metadata (encryption parameters,
    scheduled deletion); return the checksum.  The content is read through
    into a temporary file (in ``TMPDIR``), verified as a download is (size,
    MD5, segments, decryption); ChecksumMismatchError if it fails, or if a
    plain object's content changes before the record is written."""
    with tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-adopt-") as directory:
        path = os.path.join(directory, "content")
        stored = container.download(name, path)
        checksum = file_checksum(path, container.cipher_of(name, stored.metadata))
    headers = head_headers(container.transport, container.container, name)
    if stored.md5 is not None and headers.get("etag", "").strip('"') != stored.md5:
        raise ChecksumMismatchError("its content changed while it was read",
                                    operation="checksum record", name=name)
    post_keeping(container.transport, container.container, name, headers,
                 {f"x-object-meta-{CHECKSUM_METADATA.lower()}": checksum},
                 operation="checksum record")
    return checksum


def copy_with_record(container: SwiftContainer, source: str, destination: str, *,
                     source_predates_records: Callable[[], bool]) -> StoredObject:
    """Copy object *source* to *destination* inside Swift (see
    :meth:`.SwiftContainer.copy`), and return what the copy is.  The copy
    of an object without a record adopts its content when
    *source_predates_records* says an earlier release wrote the source
    (before the checksum watermark): the copy is the object of a later
    revision, where ``verify --deep`` expects one.  A source that should have
    had a record is copied as it is, for ``verify --deep`` to report."""
    copied = container.copy(source, destination)
    if recorded_checksum(copied.metadata) is None and source_predates_records():
        adopt_content(container, destination)
    return copied

"""Blob references: what a wrapped ZEO client sends its server in place of a
blob's bytes.

A ZEO client wrapped in a SwiftBlobStorage uploads each blob it commits
itself, as a pending object (see :mod:`zodb_swiftblobs.client_commit`), then
sends the server, through ZEO's ordinary blob messages, a small file naming
that object: a *reference*.  The server's wrapper publishes the pending
object under the blob's final name at its vote (see
:meth:`zodb_swiftblobs.commit.BlobCommit.adopt`), so no blob byte passes
through the server.

A reference file is the line ``zodb-swiftblobs blob reference v1`` followed
by JSON: the container and prefix, the commit's token, the blob's oid, the
pending object (name, size and etag in Swift, metadata headers) and how to
publish it: ``copy`` (a copy made inside Swift, for small blobs) or
``manifest`` (a manifest whose one segment is the pending object).  A file
without that first line is a blob's content; one with it that does not
describe a pending upload of that very blob, in the server's container and
prefix, is refused (:class:`InvalidBlobReference`), never stored as content.
A reference names its object by a random token, which only processes with
access to the container can learn.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ZODB.POSException import StorageError

from .layout import COMMIT_TOKEN, ObjectLayout
from .swift import DecryptionError, PendingObject, SwiftContainer
from .swift.objects import metadata_of

MAGIC = b"zodb-swiftblobs blob reference v1\n"
MAX_SIZE = 64 << 10  # bytes: far above any reference
PUBLISH_BY = ("copy", "manifest")
ETAG = re.compile(r"^[0-9a-f]{32}$")
OID = re.compile(r"^[0-9a-f]{16}$")
METADATA_HEADER = re.compile(r"^X-Object-Meta-[A-Za-z0-9][A-Za-z0-9-]*$", re.IGNORECASE)


class InvalidBlobReference(StorageError):
    """A blob file starts as a reference does but is not a valid one."""


@dataclass(frozen=True)
class BlobReference:
    """Pending object *pending* of commit *token* holds blob *oid*, for the
    database in *prefix* of *container*; *publish* says how to publish it."""

    container: str
    prefix: str
    token: str
    oid: bytes
    pending: PendingObject
    publish: str


def write_reference(path: str, reference: BlobReference) -> None:
    """Write *reference* into a new file at *path*."""
    pending = reference.pending
    body = {"container": reference.container, "prefix": reference.prefix,
            "token": reference.token, "oid": reference.oid.hex(), "publish": reference.publish,
            "pending": {"name": pending.name, "size": pending.size, "etag": pending.etag,
                        "headers": pending.headers}}
    with open(path, "xb") as f:
        f.write(MAGIC + json.dumps(body).encode())


def read_reference(path: str) -> BlobReference | None:
    """The reference in the file at *path*; None when the file is no
    reference (a blob's content); InvalidBlobReference when it starts as one
    but does not parse."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return None
        data = f.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise InvalidBlobReference("a blob reference of more than 64 KiB")
    try:
        return _parse(json.loads(data))
    except KeyError as exc:
        problem = f"no {exc}"
    except (ValueError, TypeError, AttributeError) as exc:
        problem = str(exc)
    raise InvalidBlobReference(f"a malformed blob reference ({problem})")


def take_reference(path: str, oid: bytes, container: SwiftContainer,
                   layout: ObjectLayout) -> BlobReference | None:
    """The reference to blob *oid*'s pending upload in the file at *path*
    (the file is then removed); None when the file is a blob's content;
    InvalidBlobReference when it starts as a reference but is not a valid
    one for *oid* in *container* under *layout*'s prefix, or names a blob
    *container* could not read or would have encrypted."""
    reference = read_reference(path)
    if reference is not None:
        check_reference(reference, oid, container.container, layout)
        check_encryption(reference, container)
        os.unlink(path)
    return reference


def check_encryption(reference: BlobReference, container: SwiftContainer) -> None:
    """InvalidBlobReference unless *container* has the key of the pending
    object *reference* names, which is encrypted if *container* encrypts."""
    pending = reference.pending
    advice = "configure the client's swiftblobstorage with the server's encryption keys"
    try:
        cipher = container.cipher_of(pending.name, metadata_of(pending.headers))
    except DecryptionError as exc:
        raise InvalidBlobReference(f"a ZEO client stored a blob this server cannot read "
                                   f"({exc}): {advice}") from None
    if cipher is None and container.encryption is not None:
        raise InvalidBlobReference(f"a ZEO client stored a blob unencrypted, while this "
                                   f"server's are encrypted: {advice}")


def _parse(body: dict) -> BlobReference:
    pending = body["pending"]
    headers = pending["headers"]
    if not (isinstance(body["container"], str) and isinstance(body["prefix"], str)
            and COMMIT_TOKEN.match(body["token"]) and OID.match(body["oid"])
            and body["publish"] in PUBLISH_BY and isinstance(pending["name"], str)
            and type(pending["size"]) is int and pending["size"] >= 0
            and ETAG.match(pending["etag"]) and isinstance(headers, dict)):
        raise ValueError("a field is missing or of the wrong kind")
    for key, value in headers.items():
        if not (METADATA_HEADER.match(key) and isinstance(value, str) and value.isascii()
                and value.isprintable()):
            raise ValueError(f"header {key!r} is not object metadata")
    return BlobReference(body["container"], body["prefix"], body["token"],
                         bytes.fromhex(body["oid"]),
                         PendingObject(pending["name"], pending["size"], pending["etag"],
                                       dict(headers)), body["publish"])


def check_reference(reference: BlobReference, oid: bytes, container: str,
                    layout: ObjectLayout) -> None:
    """InvalidBlobReference unless *reference* names the pending upload of
    blob *oid* into *container* under *layout*'s prefix."""
    if (reference.container, reference.prefix) != (container, layout.prefix):
        raise InvalidBlobReference(
            f"a ZEO client stores blobs in prefix {reference.prefix!r} of container "
            f"{reference.container!r}, while this server's are in prefix {layout.prefix!r} of "
            f"container {container!r}: configure the client's swiftblobstorage with the "
            "server's container and prefix")
    if reference.oid != oid:
        raise InvalidBlobReference(f"a blob reference for blob {reference.oid.hex()} was "
                                   f"stored as blob {oid.hex()}")
    if reference.pending.name != layout.pending_name(reference.token, oid):
        raise InvalidBlobReference(f"a blob reference names {reference.pending.name!r}, not "
                                   "a pending upload of its blob")
    if reference.publish == "manifest" and reference.pending.size == 0:
        raise InvalidBlobReference("an empty pending object cannot be published by manifest")

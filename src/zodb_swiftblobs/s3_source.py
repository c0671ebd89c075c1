"""Migration from zodb-s3blobs: the blob revisions a database references,
copied from an S3 bucket in zodb-s3blobs' layout into Swift, under the names
SwiftBlobStorage reads.

zodb-s3blobs keeps revision *tid* of blob *oid* as the object
``[<prefix>/]blobs/<oid>/<tid>.blob``, oid and tid in lowercase hex without
``0x`` or leading zeros (``0`` for zero), with no metadata.  Its pack deletes
only the objects of oids the database no longer has: older revisions of live
blobs, and uploads of transactions that never committed, stay in the bucket.
So only the revisions the database still references (a blob record of that
oid written in that transaction) are copied; the others are counted and left
where they are.  The bucket is only ever read.

Each object is streamed into a temporary file while its MD5 is computed, and
checked against its size and S3's ETag: the content's MD5 for a plain upload,
the MD5 of its parts' MD5s for a multipart upload (S3 tells each part's
size).  The ETag of an object encrypted with SSE-C or SSE-KMS is no checksum
of its content: such an object is checked by its size.  The file is then
uploaded as the other migrations upload files (MD5-checked, encrypted when
the storage encrypts).  An object Swift holds with S3's size and MD5 is not
downloaded again; one it holds otherwise is, and is uploaded only if it
differs: running the migration again resumes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError

from .config import ConfigurationError
from .layout import ObjectLayout
from .migrate import MigrationError, MigrationReport, Transfers, log_summary
from .progress import Progress
from .s3_config import S3Settings
from .swift import StoredObject, SwiftContainer

# Only the keys zodb-s3blobs writes (and reads): another spelling of the same
# ids (leading zeros) is another object, which zodb-s3blobs never served.
CANONICAL_HEX = r"(0|[1-9a-f][0-9a-f]{0,15})"
BLOB_KEY = re.compile(rf"blobs/{CANONICAL_HEX}/{CANONICAL_HEX}\.blob")
PLAIN_ETAG = re.compile(r"[0-9a-f]{32}")
MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-([1-9][0-9]*)")
CHUNK_SIZE = 1 << 20
TIMEOUT = 60  # seconds: zodb-s3blobs' connect and read timeouts
# What S3 answers for credentials, a bucket or a prefix that are wrong.
CONFIGURATION_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                        "NoSuchBucket", "InvalidBucketName", "AuthorizationHeaderMalformed",
                        "InvalidArgument", "403", "404"}


class S3ContentError(Exception):
    """What S3 sent does not match the object's size or checksum."""


@dataclass
class S3MigrationReport(MigrationReport):
    """What a migration from a zodb-s3blobs bucket found and did."""

    unreferenced: int = 0  # revisions the database does not reference: left in S3
    bytes_unreferenced: int = 0
    other_objects: int = 0  # objects under blobs/ that are no blob revision
    size_checked_only: int = 0  # downloaded objects whose ETag is no checksum


@dataclass(frozen=True)
class S3Object:
    """An object of the bucket as listed, and the blob revision it holds
    (``ids``: oid and tid; None when its key names none)."""

    key: str
    size: int
    etag: str  # without its quotes
    ids: tuple[bytes, bytes] | None

    @property
    def md5(self) -> str | None:
        """The content's MD5 if the ETag may be one (a plain upload)."""
        return self.etag if PLAIN_ETAG.fullmatch(self.etag) else None


class S3Bucket:
    """The objects of a zodb-s3blobs deployment's bucket, read with boto3 as
    zodb-s3blobs reads them; *connections* at a time, each connection and
    answer waited for *timeout* seconds at most (by default zodb-s3blobs')."""

    def __init__(self, settings: S3Settings, *, connections: int = 10,
                 timeout: float | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError:
            raise ConfigurationError("reading S3 needs boto3: install zodb-swiftblobs[s3]") \
                from None
        self.settings = settings
        self.customer_key = _customer_key(settings.sse_customer_key)
        options: dict[str, Any] = {"use_ssl": settings.use_ssl, "config": Config(
            s3={"addressing_style": settings.addressing_style},
            connect_timeout=timeout or TIMEOUT, read_timeout=timeout or TIMEOUT,
            max_pool_connections=connections,
            retries={"mode": "standard"})}
        for option, value in (("endpoint_url", settings.endpoint_url),
                              ("region_name", settings.region),
                              ("aws_access_key_id", settings.access_key),
                              ("aws_secret_access_key", settings.secret_key)):
            if value:
                options[option] = value
        self.client = boto3.client("s3", **options)
        self.errors = (BotoCoreError, ClientError)  # what boto3 raises

    def __repr__(self) -> str:
        return f"<S3Bucket {self.settings.bucket!r} prefix={self.settings.prefix!r}>"

    def close(self) -> None:
        self.client.close()

    def listing(self) -> Iterator[S3Object]:
        """Every object under the blobs' prefix, in key order."""
        start = self.settings.blobs_prefix[:-len("blobs/")]
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.settings.blobs_prefix)
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    match = BLOB_KEY.fullmatch(key[len(start):])
                    ids = (int(match.group(1), 16).to_bytes(8, "big"),
                           int(match.group(2), 16).to_bytes(8, "big")) if match else None
                    yield S3Object(key, item["Size"], item["ETag"].strip('"'), ids)
        except self.errors as exc:
            raise _listing_error(exc, self.settings) from None

    def download(self, item: S3Object, path: str) -> bool:
        """Write object *item* into the file at *path*, checked: return True
        when its checksum matched S3's, False when S3 has none for it (it was
        checked by its size); S3ContentError when it does not match."""
        response = self.client.get_object(Bucket=self.settings.bucket, Key=item.key,
                                           **self.customer_key)
        digest, received = hashlib.md5(), 0
        with open(path, "wb") as target:
            for chunk in response["Body"].iter_chunks(CHUNK_SIZE):
                target.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        etag = response["ETag"].strip('"')
        if (received, etag) != (item.size, item.etag):
            raise S3ContentError(f"{item.key}: S3 sent {received} bytes with ETag {etag}, "
                                 f"listed as {item.size} bytes with ETag {item.etag}")
        if response.get("SSECustomerAlgorithm") or \
                "kms" in response.get("ServerSideEncryption", ""):
            return False
        if PLAIN_ETAG.fullmatch(etag):
            received_etag = digest.hexdigest()
        elif multipart := MULTIPART_ETAG.fullmatch(etag):
            received_etag = self._multipart_etag(item, path, int(multipart.group(1)))
        else:
            return False
        if received_etag != etag:
            raise S3ContentError(f"{item.key}: the bytes received do not match S3's ETag "
                                 f"{etag} (they make {received_etag})")
        return True

    def _multipart_etag(self, item: S3Object, path: str, parts: int) -> str:
        """The ETag S3 gives a multipart upload of the file at *path* in the
        parts of object *item* (the MD5 of their MD5s, and their count)."""
        digests = []
        with open(path, "rb") as source:
            for number in range(1, parts + 1):
                part = self.client.head_object(Bucket=self.settings.bucket, Key=item.key,
                                               PartNumber=number, **self.customer_key)
                digests.append(_md5_of(source, part["ContentLength"]))
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{parts}"


def references(storage: Any, oid: bytes, tid: bytes) -> bool:
    """Whether *storage* holds a blob record of *oid* written in transaction *tid*."""
    try:
        data = storage.loadSerial(oid, tid)
    except POSKeyError:
        return False
    return bool(data) and is_blob_record(data)


def migrate_s3_bucket(bucket: S3Bucket, database: Any, container: SwiftContainer,
                      layout: ObjectLayout, *, jobs: int = 8, dry_run: bool = False,
                      progress: Progress | None = None) -> S3MigrationReport:
    """Copy into Swift every blob revision of *bucket* that *database* (the
    storage zodb-s3blobs wrapped) references and Swift lacks or holds wrong.

    A dry run downloads nothing: an object Swift holds without S3's MD5 (a
    multipart upload, say) counts as one to upload.
    """
    report = S3MigrationReport(dry_run=dry_run)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-s3-") as downloads, \
                Transfers(container, report, jobs, dry_run, progress) as transfers:
            for item in bucket.listing():
                if item.ids is None:
                    report.other_objects += 1
                elif not references(database, *item.ids):
                    report.unreferenced += 1
                    report.bytes_unreferenced += item.size
                    if progress is not None:
                        progress.advance(1)
                else:
                    report.blobs += 1
                    name = layout.object_name(*item.ids)

                    def transfer(item: S3Object = item, name: str = name) -> bool:
                        return _copy(bucket, item, name, transfers, downloads)
                    transfers.submit(name, item.size, transfer)
    except MigrationError as exc:
        exc.report = report
        raise
    finally:
        report.seconds = time.monotonic() - started
    log_summary("S3 bucket migration", report)
    return report


def _copy(bucket: S3Bucket, item: S3Object, name: str, transfers: Transfers,
          downloads: str) -> bool:
    """Bring *item* into Swift as *name* unless Swift holds it; return
    whether it was uploaded (in a dry run: would have been)."""
    stored = transfers.stored(name)
    if _holds(stored, item):
        return False
    if transfers.dry_run:
        return True
    descriptor, path = tempfile.mkstemp(dir=downloads, suffix=".blob")
    os.close(descriptor)
    try:
        if not bucket.download(item, path):
            with transfers.lock:
                transfers.report.size_checked_only += 1
        return transfers.upload_file(name, path, stored)
    finally:
        os.remove(path)


def _holds(stored: StoredObject | None, item: S3Object) -> bool:
    """Whether *stored* is known, without a download, to hold *item*'s content."""
    return (stored is not None and not stored.large and stored.size == item.size
            and item.md5 is not None and stored.md5 == item.md5)


def _md5_of(source: BinaryIO, size: int) -> bytes:
    digest = hashlib.md5()
    while size > 0:
        chunk = source.read(min(size, CHUNK_SIZE))
        if not chunk:
            break
        digest.update(chunk)
        size -= len(chunk)
    return digest.digest()


def _customer_key(text: str | None) -> dict[str, Any]:
    """The SSE-C arguments of S3 requests, as zodb-s3blobs makes them."""
    if not text:
        return {}
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ConfigurationError("s3-sse-customer-key must be 32 bytes in base64")
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def _listing_error(exc: Exception, settings: S3Settings) -> Exception:
    """The error to raise for *exc*, raised while listing the bucket."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
    where = f"listing s3://{settings.bucket}/{settings.blobs_prefix}"
    if code in CONFIGURATION_ERRORS or type(exc).__name__ in ("NoCredentialsError",
                                                                "PartialCredentialsError"):
        return ConfigurationError(f"{where}: {code or exc}")
    return MigrationError(f"{where}: {exc}")

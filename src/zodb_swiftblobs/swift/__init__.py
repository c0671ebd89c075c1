"""The Swift access layer: the one package of zodb_swiftblobs that talks to Swift.

:class:`SwiftContainer` reads and writes the objects of one container.  It is
safe to share between threads (each thread gets its own HTTP connection; the
authentication token is shared), retries transient failures with exponential
backoff and jitter within a per-operation deadline, streams bodies to and from
files, verifies checksums, and stores large files as Static Large Objects.

Errors are reported with the hierarchy of :class:`SwiftError`; their messages
name the operation, the object and Swift's transaction id, and never carry a
secret.
"""

from .auth import Credentials
from .checksums import recorded_checksum
from .container import SwiftContainer, container_arguments, open_container, require_positive
from .errors import (AuthenticationError, ChecksumMismatchError, DecryptionError,
                     MissingKeyError, NotFoundError, PermanentSwiftError, SwiftError,
                     SwiftUnavailableError)
from .objects import SmallObject, StoredObject
from .pending import PendingObject
from .transport import MIB, WAITING_LOGGER
from .upload import UPLOAD_ATTEMPTS, file_md5

__all__ = [
    "MIB", "UPLOAD_ATTEMPTS", "AuthenticationError", "ChecksumMismatchError", "Credentials",
    "DecryptionError", "MissingKeyError", "NotFoundError", "PendingObject",
    "PermanentSwiftError", "SmallObject", "StoredObject", "SwiftContainer", "SwiftError",
    "SwiftUnavailableError", "WAITING_LOGGER",
    "container_arguments", "file_md5", "open_container", "recorded_checksum",
    "require_positive",
]

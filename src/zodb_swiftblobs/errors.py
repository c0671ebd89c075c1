"""The storage errors SwiftBlobStorage raises (but the ownership errors, in
:mod:`zodb_swiftblobs.ownership`), and how other errors become them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import transaction.interfaces
from ZODB.POSException import StorageError

from .cache import CacheDirectoryError
from .swift import AuthenticationError, SwiftError, SwiftUnavailableError

Result = TypeVar("Result")


class SwiftTransientError(StorageError, transaction.interfaces.TransientError):
    """Swift could not be reached in time; the operation may succeed later
    (``transaction``'s retry loops retry it, as ZEO's ClientDisconnected)."""


class SwiftStorageError(StorageError):
    """Swift refused an operation (authentication, checksum, configuration)."""


class SwiftAuthenticationError(SwiftStorageError):
    """Swift rejected the credentials or token: a configuration error."""


class BlobCacheError(StorageError):
    """The local blob cache could not take a file: its disk is full or
    read-only, or permissions forbid it (the message says which, and where)."""


def storage_error(error: SwiftError | CacheDirectoryError) -> StorageError:
    """The storage error that reports *error* (with its message only)."""
    if isinstance(error, CacheDirectoryError):
        return BlobCacheError(str(error))
    if isinstance(error, AuthenticationError):
        return SwiftAuthenticationError(str(error))
    if isinstance(error, SwiftUnavailableError):
        return SwiftTransientError(str(error))
    return SwiftStorageError(str(error))


def raises_storage_errors(function: Callable[..., Result]) -> Callable[..., Result]:
    """Decorate *function* so that the Swift and cache errors it raises are
    raised as storage errors.  The original is not chained to them: it may
    carry a request, with its headers."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> Result:
        try:
            return function(*args, **kwargs)
        except (SwiftError, CacheDirectoryError) as exc:
            failure = storage_error(exc)
        raise failure
    return wrapper

"""Keep ZODB blobs in OpenStack Swift.

``from zodb_swiftblobs import SwiftBlobStorage`` gives the storage wrapper, and
the errors it raises are importable from here too (each imported on first use,
so that tools such as the embedded Swift's servers do not load ZODB).
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers see; at run time, each is imported on first use
    from .errors import (BlobCacheError, SwiftAuthenticationError, SwiftStorageError,
                         SwiftTransientError)
    from .ownership import EncryptionRequiredError, ForeignPrefixError
    from .storage import SwiftBlobStorage

# Each public name, and the module that defines it.
_EXPORTS = {
    "SwiftBlobStorage": "storage",
    "SwiftTransientError": "errors",
    "SwiftStorageError": "errors",
    "SwiftAuthenticationError": "errors",
    "BlobCacheError": "errors",
    "ForeignPrefixError": "ownership",
    "EncryptionRequiredError": "ownership",
}

__all__ = ["SwiftBlobStorage", "SwiftTransientError", "SwiftStorageError",
           "SwiftAuthenticationError", "BlobCacheError", "ForeignPrefixError",
           "EncryptionRequiredError"]


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)

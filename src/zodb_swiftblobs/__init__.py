"""Keep ZODB blobs in OpenStack Swift.

``from zodb_swiftblobs import SwiftBlobStorage`` gives the storage wrapper
(imported on first use, so that tools such as the embedded Swift's servers
do not load ZODB).
"""

__all__ = ["SwiftBlobStorage"]


def __getattr__(name: str):
    if name == "SwiftBlobStorage":
        from .storage import SwiftBlobStorage
        return SwiftBlobStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

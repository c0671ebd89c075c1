"""The local blob cache, shared by the processes of one host.

- :mod:`.lookup`: :class:`BlobCache`, finding, fetching and publishing
  committed blob files (and the cache directory's layout);
- :mod:`.entries`: one entry's files and locks;
- :mod:`.integrity`: the record binding a file to its blob revision;
- :mod:`.pins`: files handed out stay until their callers open them;
- :mod:`.eviction`: the shared account of the cache's bytes, and
  least-recently-used eviction;
- :mod:`.counters`: hits, misses... of every process.

``BlobCache`` and ``CacheDirectoryError`` are imported on first use, so that
an eviction pass's child process loads none of ZODB.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time, imported on first use
    from .lookup import BlobCache, CacheDirectoryError

__all__ = ["BlobCache", "CacheDirectoryError"]


def __getattr__(name: str):
    if name in __all__:
        from . import lookup
        return getattr(lookup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The partial files downloads write beside their targets: made by
:mod:`zodb_swiftblobs.swift.download`, recognised (when left by a process
that died) by the cache.  Importing this module imports nothing else."""

from __future__ import annotations

import os
import tempfile

PARTIAL_SUFFIX = ".part"


def make_partial_file(path: str) -> tuple[int, str]:
    """Create the partial file of a download to *path*, hidden beside it and
    named after it; its open descriptor and its path."""
    directory, base = os.path.split(os.path.abspath(path))
    return tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=PARTIAL_SUFFIX)


def is_partial_file(file_name: str, target_prefix: str) -> bool:
    """Whether *file_name* is the partial file of a download to a file beside
    it whose name starts with *target_prefix*."""
    return file_name.startswith(f".{target_prefix}") and file_name.endswith(PARTIAL_SUFFIX)

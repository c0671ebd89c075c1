"""Waiting for a commit's requests to Swift (uploads, copies, publishing):
the first failure becomes the storage error the vote raises."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, wait

from .errors import SwiftStorageError, storage_error
from .swift import SwiftError

log = logging.getLogger(__name__)


def wait_for(futures: Collection[Future]) -> None:
    """Wait for *futures*; on the first failure cancel those not started,
    wait for the others, and raise it as a storage error."""
    wait(futures, return_when=FIRST_EXCEPTION)
    for future in futures:
        future.cancel()  # does nothing to the finished and the running
    wait(futures)
    failures = [future.exception() for future in futures
                if not future.cancelled() and future.exception() is not None]
    if not failures:
        return
    cancelled = sum(future.cancelled() for future in futures)
    log.warning("%d of %d blob uploads failed (%d cancelled before they started); "
                "the transaction aborts", len(failures), len(futures), cancelled)
    error = failures[0]
    if isinstance(error, SwiftError):
        raise storage_error(error)
    raise SwiftStorageError(f"blob upload failed: {type(error).__name__}: {error}")


def results(futures: Iterable[Future]) -> list:
    """Cancel what has not started, wait for the rest: the results of those
    that succeeded."""
    futures = list(futures)
    for future in futures:
        future.cancel()
    wait(futures)
    return [future.result() for future in futures
            if not future.cancelled() and future.exception() is None]

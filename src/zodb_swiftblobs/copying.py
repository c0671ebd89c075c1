"""Copying transactions into a storage, keeping their ids (what zodbconvert
and ``zodb-swiftblobs migrate`` do)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ZODB.blob import is_blob_record
from ZODB.POSException import POSKeyError
from ZODB.utils import cp

from .staging import StagingArea


def commit_copy(destination: Any, transaction: Any, restore_records: Callable[[], None]) -> None:
    """Commit in *destination* the copy of *transaction* (one of a source's
    transactions, keeping its id); *restore_records* restores its records."""
    destination.tpc_begin(transaction, transaction.tid, transaction.status)
    try:
        restore_records()
        destination.tpc_vote(transaction)
    except BaseException:
        destination.tpc_abort(transaction)
        raise
    destination.tpc_finish(transaction)


def copy_transactions_with_blobs(destination: Any, source: Any, staging: StagingArea) -> None:
    """Copy every transaction of *source* into *destination* (a blob storage),
    each blob's file copied into *staging* first."""
    for transaction in source.iterator():
        commit_copy(destination, transaction,
                    lambda transaction=transaction: _restore_records(destination, source,
                                                                     transaction, staging))


def _restore_records(destination, source, transaction, staging: StagingArea) -> None:
    for record in transaction:
        blobfilename = None
        if is_blob_record(record.data):
            try:
                blobfilename = source.loadBlob(record.oid, record.tid)
            except POSKeyError:
                pass
        if blobfilename is None:
            destination.restore(record.oid, record.tid, record.data, "",
                                record.data_txn, transaction)
            continue
        fd, name = staging.new_file()
        with os.fdopen(fd, "wb") as target, open(blobfilename, "rb") as source_file:
            cp(source_file, target)
        destination.restoreBlob(record.oid, record.tid, record.data, name,
                                record.data_txn, transaction)

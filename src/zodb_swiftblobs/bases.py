"""What the wrapper must know of base storages beyond ZODB's interfaces.

ZODB has no public way to ask a storage for the id of the transaction it is
committing, nor, for a FileStorage opened read-only beside a writing process,
for its last *committed* transaction.  Each supported base keeps these
somewhere known; this module is the only one that looks there (the
RelStorage names it reads exist from RelStorage 3.4 on: see pyproject.toml).  It also
knows how to ask a base for one revision and for its current state,
recognises a ZEO server registering with the wrapper, sends a ZEO server
a blob file the way ZEO's ClientStorage does, and reads an object's current
revision as a connection sees it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from collections.abc import Iterator
from enum import Enum
from typing import Any

import ZODB.BaseStorage
import ZODB.DemoStorage
import ZODB.FileStorage
import ZODB.MappingStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import u64, z64

TRANSACTION_LENGTH = 8  # FileStorage repeats each transaction's length after it
FILE_HEADER = 4         # FileStorage's magic bytes before the first transaction
ZEO_CHUNK = 59000       # bytes per message of a blob sent to a ZEO server, as ZEO's own


class TidKnown(Enum):
    """When a base storage chooses the id of the transaction it commits."""

    AT_BEGIN = "begin"
    AT_VOTE = "vote"
    AT_FINISH = "finish"  # a ZEO client: its server chooses, and tells at tpc_finish
    NEVER = "never"  # a read-only view (a historical connection's): it never commits


class TidProbe:
    """Learns the id of the transaction a base storage is committing.

    FileStorage, MappingStorage and DemoStorage choose it at ``tpc_begin``.
    RelStorage chooses it when it takes its commit lock, normally in
    ``tpc_finish``; for a transaction with blobs the probe asks that one
    transaction to lock at the end of its vote instead (the step RelStorage
    itself takes for its shared blob directory), so the blobs can be uploaded
    before the vote ends.  Nothing process-wide is changed.  A ZEO client
    learns it from ``tpc_finish`` only.
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        if is_zeo_client(base):
            self.known = TidKnown.AT_FINISH
        elif is_relstorage(base):
            _require_relstorage_vote()
            self.known = TidKnown.AT_VOTE
        elif isinstance(base, ZODB.DemoStorage.DemoStorage):
            self.known = TidProbe(base.changes).known
        elif isinstance(base, (ZODB.BaseStorage.BaseStorage,
                               ZODB.MappingStorage.MappingStorage)):
            self.known = TidKnown.AT_BEGIN
        elif getattr(base, "isReadOnly", lambda: False)():
            self.known = TidKnown.NEVER
        else:
            raise ValueError(
                f"SwiftBlobStorage cannot wrap {type(base).__name__}: it cannot learn the "
                "transaction id while committing; supported bases are FileStorage, "
                "MappingStorage, DemoStorage, RelStorage and ZEO's ClientStorage")

    def tid(self) -> bytes:
        """The id of the transaction the base is committing (past ``tpc_begin``
        for AT_BEGIN bases, during the vote for AT_VOTE ones)."""
        base = self.base
        if self.known is TidKnown.AT_VOTE:
            phase = base._tpc_phase
            if phase.committing_tid_lock is None:
                phase._lock_and_move(vote_only=True)
            return phase.committing_tid_lock.tid
        while isinstance(base, ZODB.DemoStorage.DemoStorage):
            base = base.changes
        return base._tid


def _require_relstorage_vote() -> None:
    """ValueError unless this RelStorage's vote has what :meth:`TidProbe.tid` uses."""
    from relstorage.storage.tpc.vote import AbstractVote
    if not hasattr(AbstractVote, "_lock_and_move"):
        raise ValueError(
            f"SwiftBlobStorage cannot learn the transaction id from RelStorage "
            f"{importlib.metadata.version('RelStorage')}: it supports RelStorage 3.4 to 4 "
            "(see the relstorage extra of zodb-swiftblobs)")


def last_committed_tid(base: Any) -> bytes:
    """The id of the last transaction *base* has committed, as *base* sees it.

    A FileStorage opened read-only while another process is between the vote
    and the finish of a transaction has already read that transaction's header
    and reports it from ``lastTransaction()``, though it is not committed (its
    index stops before it).  Its last committed transaction is the one that
    ends where the storage's committed data ends.
    """
    if not isinstance(base, ZODB.FileStorage.FileStorage):
        return base.lastTransaction()
    with base._files.get() as f:  # as FileStorage's load: no writer (nor pack) meanwhile
        end = base._pos
        if end <= FILE_HEADER:
            return z64
        f.seek(end - TRANSACTION_LENGTH)
        start = end - TRANSACTION_LENGTH - u64(f.read(TRANSACTION_LENGTH))
        f.seek(start)
        return f.read(8)


def is_zeo_client(base: Any) -> bool:
    """Whether *base* is a ZEO client (ZEO's ClientStorage)."""
    client = sys.modules.get("ZEO.ClientStorage")
    return client is not None and isinstance(base, client.ClientStorage)


def send_blob_file(client: Any, oid: bytes, serial: bytes, data: bytes, path: str,
                   transaction: Any) -> None:
    """Send ZEO client *client*'s server the file at *path* as blob *oid*'s
    (record *data*, stored over *serial*) in *transaction*: the messages of
    ``ClientStorage.storeBlob`` (``storeBlobStart``, ``storeBlobChunk``,
    ``storeBlobEnd``), without its moving the file into the client's blob
    directory.  The file is read as the messages go, before the server
    answers the vote; the record must have been stored (``store``) already."""
    def messages() -> Iterator[tuple[str, tuple]]:
        yield "storeBlobStart", ()
        with open(path, "rb") as f:
            while chunk := f.read(ZEO_CHUNK):
                yield "storeBlobChunk", (chunk,)
        yield "storeBlobEnd", (oid, serial, data, id(transaction))
    client._async_iter(messages())


def is_relstorage(base: Any) -> bool:
    """Whether *base* is a RelStorage."""
    return type(base).__module__.startswith("relstorage.")


class RelStorageSettings:
    """What the RelStorage *base* says of its database: the input of its identity.

    RelStorage keeps its adapter and options private, and the adapters their
    connection settings (a setting an adapter lacks is None).
    """

    def __init__(self, base: Any) -> None:
        self._adapter = base._adapter
        self._options = base._options

    @property
    def name(self) -> str | None:
        """The ``name`` option."""
        return getattr(self._options, "name", None) or None

    @property
    def data_dir(self) -> str | None:
        """SQLite's directory."""
        return getattr(self._adapter, "data_dir", None) or None

    @property
    def adapter_kind(self) -> str:
        return type(self._adapter).__name__

    @property
    def dsn(self) -> str | None:
        """PostgreSQL's and Oracle's connection string."""
        return getattr(self._adapter, "_dsn", None)

    @property
    def params(self) -> Any:
        """MySQL's connection parameters."""
        return getattr(self._adapter, "_params", None)

    @property
    def user(self) -> str | None:
        """Oracle's user."""
        return getattr(self._adapter, "_user", None)

    def adapter_text(self) -> str:
        """The adapter's own description."""
        return str(self._adapter)


def revision_exists(base: Any, oid: bytes, tid: bytes) -> bool:
    """Whether the base storage still has revision *tid* of object *oid*."""
    try:
        base.loadSerial(oid, tid)
    except POSKeyError:
        return False
    return True


@contextlib.contextmanager
def current_view(base: Any) -> Iterator[Any]:
    """*base* as it is now.  Each instance of an MVCC base (RelStorage) sees
    the snapshot it last polled, which for the instance a DB was opened with
    may be long ago: a new instance, polled, is used (for the last transaction
    and every existence check alike: one snapshot)."""
    new_instance = getattr(base, "new_instance", None)
    if new_instance is None:
        yield base
        return
    instance = new_instance()
    try:
        instance.poll_invalidations()
        yield instance
    finally:
        instance.release()


def latest_committed_tid(base: Any) -> bytes:
    """The id of the last transaction the database of *base* has committed,
    as a view of it as it is now sees it (see :func:`current_view`)."""
    with current_view(base) as view:
        return last_committed_tid(view)


def served_by_zeo_server(db: Any) -> bool:
    """Whether *db*, given to ``registerDB``, is a ZEO server's (which opens
    each blob file it asks for when its turn to be sent comes)."""
    server = sys.modules.get("ZEO.StorageServer")
    return server is not None and isinstance(db, server.StorageServerDB)


def current_serial(connection: Any, oid: bytes) -> bytes:
    """The revision of object *oid* that ZODB *connection* sees, read from
    its view of the storage (ZODB names it only ``_storage``), as loading the
    object would, without loading it (which, for a blob, fetches the blob)."""
    return connection._storage.load(oid)[1]

"""``zodb-swiftblobs demo``: the main job, committing, reading, undoing and
packing blobs kept in Swift."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tempfile
import time
import uuid

import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from ..config import ConfigurationError
from ..storage import SwiftBlobStorage
from ..swift import MIB, Credentials, SwiftContainer
from ..testing.devswift import DevSwift
from .arguments import add_deadline


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` command."""
    demo = commands.add_parser(
        "demo", help="the main job: commit, read, undo and pack blobs kept in Swift",
        description="Runs a FileStorage wrapped by SwiftBlobStorage against the Swift "
                    "named by ST_AUTH/ST_USER/ST_KEY or OS_* variables, or else against "
                    "an embedded Swift (in a temporary directory unless --dir names one), "
                    "and prints what it did. It leaves nothing behind in the current "
                    "directory, nor in Swift.")
    demo.add_argument("--dir", help="run the embedded Swift in this directory, or use the "
                                    "one running there (default: a temporary directory, "
                                    "removed afterwards)")
    demo.add_argument("--container", default="zodb-swiftblobs-demo")
    demo.add_argument("--objects", type=int, default=20, help="small blobs to commit")
    demo.add_argument("--keep", action="store_true",
                      help="leave the embedded Swift in --dir running afterwards (stop it "
                           "with: zodb-swiftblobs devswift stop --dir DIR)")
    add_deadline(demo, "60")
    demo.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Commit, read, undo and pack blobs through SwiftBlobStorage; print what happened."""
    credentials = Credentials.from_environ()
    with contextlib.ExitStack() as cleanup:
        if credentials.is_empty:
            credentials = _embedded_swift(args, cleanup)
        else:
            print(f"using the Swift named by the environment: {credentials.describe()}")
        work = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-demo-"))
        _Demo(credentials, args.container, work, args.objects, args.deadline).run()
    return 0


def _embedded_swift(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> Credentials:
    """Start the embedded Swift in --dir (or use the one running there), else
    in a temporary directory; *cleanup* stops what was started (unless
    --keep) and removes the temporary directory."""
    if args.dir is not None:
        directory = args.dir
    elif args.keep:
        raise ConfigurationError("--keep leaves the embedded Swift running in --dir: "
                                 "name that directory")
    else:
        directory = cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix="zodb-swiftblobs-devswift-"))
    cluster = DevSwift(directory)
    was_running = cluster.running()
    started = time.monotonic()
    settings = cluster.start()
    where = f"directory {cluster.directory}" if args.dir is not None \
        else "in a temporary directory"
    print(f"embedded Swift {'already running' if was_running else 'started'} at "
          f"{settings.auth_url} in {time.monotonic() - started:.1f}s ({where})")
    if not (was_running or args.keep):
        cleanup.callback(_stop, cluster, "" if args.dir is None
                         else " (use --keep to leave it running)")
    return Credentials(auth_url=settings.auth_url, user=settings.user, key=settings.key)


def _stop(cluster: DevSwift, hint: str) -> None:
    cluster.stop()
    print(f"embedded Swift stopped{hint}")


class _Demo:
    """The demo's blobs, in a prefix of their own, and its steps."""

    def __init__(self, credentials: Credentials, container_name: str, work: str,
                 count: int, deadline: float | None) -> None:
        self.credentials = credentials
        self.container_name = container_name
        self.prefix = f"demo-{uuid.uuid4().hex[:8]}/"
        options = {name: value for name, value in dataclasses.asdict(credentials).items()
                   if value is not None}
        options.update(container=container_name, prefix=self.prefix,
                       large_object_threshold=4 * MIB, segment_size=MIB)
        if deadline is not None:
            options["deadline"] = deadline
        self.options = options
        self.work = work
        self.payloads = {f"file{i:03d}": os.urandom(4096 * (i + 1)) for i in range(count)}
        self.payloads["video"] = os.urandom(6 * MIB)
        self.changed = sorted(self.payloads)[:3]

    def run(self) -> None:
        db, _ = self.open_db("cache")
        self.commit(db)
        db.close()
        db, storage = self.open_db("cold-cache")
        self.read_back(db)
        self.undo(db)
        self.pack_and_remove(db, storage)

    def open_db(self, cache: str) -> tuple[ZODB.DB, SwiftBlobStorage]:
        storage = SwiftBlobStorage(FileStorage(os.path.join(self.work, "Data.fs")),
                                   cache_dir=os.path.join(self.work, cache), **self.options)
        return ZODB.DB(storage), storage

    def commit(self, db: ZODB.DB) -> None:
        """Commit every blob in one transaction, then new revisions of a few."""
        total = sum(map(len, self.payloads.values()))
        started = time.monotonic()
        with db.transaction() as conn:
            for name, data in self.payloads.items():
                conn.root()[name] = Blob(data)
        print(f"committed {len(self.payloads)} blobs ({total / MIB:.1f} MiB, one of them a "
              f"Static Large Object) in one transaction in {time.monotonic() - started:.2f}s "
              f"(container {self.container_name!r}, prefix {self.prefix!r})")
        with db.transaction() as conn:
            for name in self.changed:
                with conn.root()[name].open("w") as f:
                    f.write(b"changed " + name.encode())
        print(f"committed new revisions of {len(self.changed)} blobs")

    def read_back(self, db: ZODB.DB) -> None:
        """Read every blob through an empty cache and check its bytes."""
        started = time.monotonic()
        with db.transaction() as conn:
            for name, data in self.payloads.items():
                with conn.root()[name].open() as f:
                    expected = b"changed " + name.encode() if name in self.changed else data
                    if f.read() != expected:
                        raise SystemExit(f"blob {name} read back wrong")
        print(f"read and verified {len(self.payloads)} blobs through an empty cache in "
              f"{time.monotonic() - started:.2f}s")

    def undo(self, db: ZODB.DB) -> None:
        """Undo the new revisions and check that the first bytes are back."""
        with db.transaction() as conn:
            for name in self.payloads:
                with conn.root()[name].open() as f:
                    f.read()
        db.undo(db.undoLog(0, 1)[0]["id"])
        transaction.commit()
        with db.transaction() as conn:
            for name in self.changed:
                with conn.root()[name].open() as f:
                    if f.read() != self.payloads[name]:
                        raise SystemExit(f"undo did not bring back blob {name}")
        print(f"undid the last transaction: {len(self.changed)} blobs have their first bytes "
              "again (copied inside Swift)")

    def pack_and_remove(self, db: ZODB.DB, storage: SwiftBlobStorage) -> None:
        """Pack, show the cache's counters, and remove the demo's objects from Swift."""
        listing = SwiftContainer(self.credentials, self.container_name)

        def revisions() -> list:
            return [o for o in listing.list(self.prefix) if storage.object_layout.parse(o.name)]
        before = len(revisions())
        db.pack()
        scheduled = sum(1 for o in revisions() if o.marked_for_deletion is not None)
        print(f"packed: garbage collection scheduled the deletion of {scheduled} of {before} "
              "blob revisions (those the pack dropped) in a week, the gc grace period: a "
              "database restored from an older backup gets them back with verify --repair")
        stats = storage.cache_stats()
        print("cache: " + ", ".join(f"{key} {value}" for key, value in sorted(stats.items())))
        removed = listing.delete_many(listing.list(self.prefix))
        listing.close()
        db.close()
        print(f"removed the demo's {removed} Swift objects (its blob revisions and the "
              "prefix's ownership marker)")

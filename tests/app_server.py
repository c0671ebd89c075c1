"""One app server of test_postgresql_app_servers.py, run as a separate process.

``run CONFIG HOST HOSTS ROUNDS [--pack]`` opens the database of the ZODB
configuration file CONFIG (with a cache directory of its own) and, in each
round: commits new blobs under ``root["host<HOST>"]`` (a new revision of
``kept``, a new blob object as ``replaced``), waits until every other host
has committed that round, reads their current blobs (checking every byte).
With ``--pack`` it also collects garbage through the database's first
storage instance (which saw nothing since the last pack) before reading, and
packs the database (its blob garbage collection included) after, at the
time its own commit of the round began.  It prints, as JSON, the revisions
it committed, how many of the others' it read, and its cache's counters.

Every read made after a pack is of a round the packer had reached when it
took its pack time, so a pack never drops a revision another host may still
be about to read: a revision that is missing is a lost one.

``check CONFIG REVISIONS`` reads each revision of the JSON file REVISIONS
(``[oid, tid, host, key, round]``) that the database still has, and prints
how many it read and which it found packed away.
"""

import argparse
import json
import random
import sys
import time

import transaction
import ZODB.config
from persistent.mapping import PersistentMapping
from transaction.interfaces import TransientError
from ZODB.blob import Blob
from ZODB.POSException import POSKeyError

KEYS = ("kept", "replaced")
WAIT_LIMIT = 180.0  # seconds another host may take to reach a round


def payload(host, key, round_):
    """The bytes of blob *key* of *host* in *round_* (from 1 KiB to 200 KiB)."""
    seed = f"host {host} {key} round {round_}"
    generator = random.Random(seed)
    return seed.encode() + b"\n" + generator.randbytes(generator.randrange(1 << 10, 200 << 10))


def initial_data(hosts):
    """The root's content before the hosts start: each host's round 0."""
    return {f"host{host}": PersistentMapping(
        round=0, **{key: Blob(payload(host, key, 0)) for key in KEYS}) for host in range(hosts)}


def committing(db, change, attempts=20):
    """Run ``change(root)`` in a transaction, again on a transient error (a lock
    a pack holds)."""
    manager = transaction.TransactionManager()
    for attempt in range(attempts):
        conn = db.open(manager)
        try:
            with manager:
                change(conn.root())
            return
        except TransientError:
            if attempt == attempts - 1:
                raise
        finally:
            conn.close()


def commit_round(db, host, round_):
    """Commit *host*'s blobs of *round_*; their ``[oid, tid, host, key, round]``."""
    def change(root):
        mine = root[f"host{host}"]
        with mine["kept"].open("w") as f:
            f.write(payload(host, "kept", round_))
        mine["replaced"] = Blob(payload(host, "replaced", round_))
        mine["round"] = round_
    committing(db, change)
    with db.transaction() as conn:
        mine = conn.root()[f"host{host}"]
        return [revision(mine[key], host, key, round_) for key in KEYS]


def revision(blob, host, key, round_):
    """``[oid, tid, host, key, round]`` of the revision of *blob* a connection sees."""
    blob._p_activate()
    return [blob._p_oid.hex(), blob._p_serial.hex(), host, key, round_]


def wait_for_round(db, hosts, round_):
    """Wait until every host has committed *round_*."""
    give_up = time.monotonic() + WAIT_LIMIT
    while True:
        with db.transaction() as conn:
            if all(conn.root()[f"host{host}"]["round"] >= round_ for host in range(hosts)):
                return
        if time.monotonic() > give_up:
            raise AssertionError(f"the other hosts did not reach round {round_}")
        time.sleep(0.1)


def read_others(db, host, hosts, round_):
    """Read, in one snapshot, the other hosts' current blobs (of *round_* or
    later), checking their bytes; how many were read."""
    read = 0
    with db.transaction() as conn:
        for other in range(hosts):
            theirs = conn.root()[f"host{other}"]
            if other == host:
                continue
            assert theirs["round"] >= round_
            for key in KEYS:
                with theirs[key].open() as f:
                    data = f.read()
                assert data == payload(other, key, theirs["round"]), \
                    f"host {host} read wrong bytes for {key} of host {other}"
                read += 1
    return read


def run(args):
    """The rounds of one app server."""
    db = ZODB.config.databaseFromURL(args.config)
    committed, read, packs = [], 0, 0
    try:
        for round_ in range(1, args.rounds + 1):
            began = time.time()
            committed += commit_round(db, args.host, round_)
            wait_for_round(db, args.hosts, round_)
            if args.pack:  # the first storage instance saw nothing since the last pack
                db.storage.collect_garbage()
            read += read_others(db, args.host, args.hosts, round_)
            if args.pack:
                db.pack(began)
                packs += 1
        stats = db.storage.cache_stats()
    finally:
        db.close()
    return {"committed": committed, "read": read, "packs": packs, "cache": stats}


def check(args):
    """Read back every revision still in the database, from a cold cache."""
    with open(args.revisions) as f:
        revisions = json.load(f)
    db = ZODB.config.databaseFromURL(args.config)
    verified, packed = 0, []
    try:
        for oid, tid, host, key, round_ in revisions:
            try:
                path = db.storage.loadBlob(bytes.fromhex(oid), bytes.fromhex(tid))
            except POSKeyError:
                packed.append([oid, tid])
                continue
            with open(path, "rb") as f:
                assert f.read() == payload(host, key, round_), \
                    f"revision {tid} of {oid} reads back wrong"
            verified += 1
        stats = db.storage.cache_stats()
    finally:
        db.close()
    return {"verified": verified, "packed": packed, "cache": stats}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run")
    running.add_argument("config")
    running.add_argument("host", type=int)
    running.add_argument("hosts", type=int)
    running.add_argument("rounds", type=int)
    running.add_argument("--pack", action="store_true")
    checking = commands.add_parser("check")
    checking.add_argument("config")
    checking.add_argument("revisions")
    args = parser.parse_args(argv)
    json.dump(run(args) if args.command == "run" else check(args), sys.stdout)


if __name__ == "__main__":
    main()

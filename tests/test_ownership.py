"""Prefix ownership: one database per prefix, and no garbage collection in
another database's prefix."""

import json
import os
import threading

import pytest
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.utils import p64

from conftest import (blob_objects, credentials_for, sqlite_relstorage, store_blobs, swift_config,
                      swift_storage)
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.keys import KeyLayout
from zodb_swiftblobs.ownership import ForeignPrefixError, database_identity, without_secrets
from zodb_swiftblobs.swiftaccess import NotFoundError, SwiftContainer


@pytest.fixture
def view(devswift, container_name):
    view = SwiftContainer(credentials_for(devswift), container_name)
    yield view
    view.close()


def open_file_db(cluster, path, container, cache, **options):
    return ZODB.DB(swift_storage(cluster, FileStorage(str(path)), container, cache, **options))


def refused(cluster, base, container, cache):
    """The error opening *base* in *container* fails with (the base is closed)."""
    try:
        with pytest.raises(ForeignPrefixError) as info:
            swift_storage(cluster, base, container, cache)
    finally:
        base.close()
    return info.value


def marker(view, prefix=""):
    return json.loads(view.get_bytes(KeyLayout(prefix).marker))


def test_the_first_database_claims_the_prefix_and_others_are_refused(devswift, tmp_path,
                                                                      container_name, view):
    db = open_file_db(devswift, tmp_path / "a.fs", container_name, tmp_path / "ca")
    store_blobs(db, blob=b"a's")
    owner = marker(view)["owner"]
    assert owner.startswith("FileStorage ") and owner.endswith(str(tmp_path / "a.fs"))
    message = str(refused(devswift, FileStorage(str(tmp_path / "b.fs")), container_name,
                          tmp_path / "cb"))
    assert "a.fs" in message and "b.fs" in message and "claim" in message
    assert devswift.settings().key not in message
    other = open_file_db(devswift, tmp_path / "b.fs", container_name, tmp_path / "cb",
                         prefix="b/")
    store_blobs(other, blob=b"b's")
    assert marker(view, "b/")["owner"].endswith("b.fs")
    other.close()
    db.close()
    db = open_file_db(devswift, tmp_path / "a.fs", container_name, tmp_path / "ca")
    db.close()


def test_garbage_collection_never_runs_in_a_prefix_it_does_not_own(devswift, tmp_path,
                                                                    container_name, view):
    db = open_file_db(devswift, tmp_path / "a.fs", container_name, tmp_path / "ca")
    storage = db.storage
    store_blobs(db, blob=b"a's")
    (tmp_path / "foreign").write_bytes(b"a blob of another database")
    foreign = [KeyLayout().key(p64(1000 + i), p64(1 + i)) for i in range(3)]
    for name in foreign:
        view.upload(name, str(tmp_path / "foreign"))
    view.put_bytes(KeyLayout().marker, json.dumps({"owner": "FileStorage elsewhere"}).encode())
    with pytest.raises(ForeignPrefixError, match="elsewhere"):
        storage.collect_garbage()
    with pytest.raises(ForeignPrefixError):
        db.pack()
    assert set(foreign) <= {o.name for o in view.list()}, "nothing was deleted"
    view.delete(KeyLayout().marker)
    assert storage.collect_garbage().deleted == 3, "it would have deleted them"
    assert marker(view)["owner"].endswith("a.fs"), "an unclaimed prefix is claimed first"
    db.close()


def test_a_database_in_memory_owns_its_prefix_while_it_lives(devswift, tmp_path,
                                                              container_name, view):
    db = ZODB.DB(swift_storage(devswift, MappingStorage(), container_name, tmp_path / "c"))
    store_blobs(db, blob=b"in memory")
    assert "MappingStorage in memory" in marker(view)["owner"]
    db.storage.collect_garbage()
    assert len(blob_objects(view)) == 1
    error = refused(devswift, MappingStorage(), container_name, tmp_path / "c")
    assert "in memory" in str(error), "another instance is another database"
    db.close()
    error = refused(devswift, FileStorage(str(tmp_path / "a.fs")), container_name,
                    tmp_path / "ca")
    assert "in memory" in str(error)


def test_read_only_opens_claim_nothing_and_respect_the_owner(devswift, tmp_path,
                                                             container_name, view):
    view.ensure_container()
    FileStorage(str(tmp_path / "a.fs")).close()
    read_only = swift_storage(devswift, FileStorage(str(tmp_path / "a.fs"), read_only=True),
                              container_name, tmp_path / "c")
    read_only.close()
    with pytest.raises(NotFoundError):
        view.get_bytes(KeyLayout().marker)
    open_file_db(devswift, tmp_path / "b.fs", container_name, tmp_path / "cb").close()
    refused(devswift, FileStorage(str(tmp_path / "a.fs"), read_only=True), container_name,
            tmp_path / "c")


def test_an_unreadable_marker_is_a_clear_error(devswift, tmp_path, container_name, view):
    view.ensure_container()
    view.put_bytes(KeyLayout().marker, b"not json")
    error = refused(devswift, FileStorage(str(tmp_path / "a.fs")), container_name,
                    tmp_path / "c")
    assert "unreadable ownership marker" in str(error)


def test_relstorage_processes_of_one_database_agree(tmp_path):
    first, second = (sqlite_relstorage(tmp_path / "db", True) for _ in range(2))
    other = sqlite_relstorage(tmp_path / "other", True)
    try:
        assert database_identity(first) == database_identity(second)
        assert database_identity(first) != database_identity(other)
        assert str(tmp_path / "db") in database_identity(first)
    finally:
        for storage in (first, second, other):
            storage.close()


@pytest.mark.parametrize("description, expected", [
    ("<PostgreSQLAdapter at 7f3a2b history free,dsn='dbname=zodb host=db1 user=z'>",
     "<PostgreSQLAdapter history free,dsn='dbname=zodb host=db1 user=z'>"),
    ("dsn='postgresql://zope:s3cret@db1:5432/zodb'", "dsn='postgresql://zope@db1:5432/zodb'"),
    ("dsn='dbname=zodb password=s3cret host=db1'", "dsn='dbname=zodb password=*** host=db1'"),
    ("MySQLAdapter, db='zodb', host='db1', passwd='s3cret'",
     "MySQLAdapter, db='zodb', host='db1', passwd=***"),
])
def test_identities_never_carry_passwords(description, expected):
    assert without_secrets(description) == expected


def test_claim_after_moving_the_database(devswift, tmp_path, container_name, view, capsys):
    db = open_file_db(devswift, tmp_path / "old.fs", container_name, tmp_path / "c")
    store_blobs(db, blob=b"kept across the move")
    db.close()
    os.rename(tmp_path / "old.fs", tmp_path / "new.fs")
    config = tmp_path / "zodb.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "c",
                                   f"<filestorage>\npath {tmp_path / 'new.fs'}\n</filestorage>"))
    refused(devswift, FileStorage(str(tmp_path / "new.fs")), container_name, tmp_path / "c")
    status = main(["claim", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["owner"].endswith("new.fs")
    assert result["previous_owner"].endswith("old.fs")
    db = open_file_db(devswift, tmp_path / "new.fs", container_name, tmp_path / "c")
    with db.transaction() as conn:
        with conn.root()["blob"].open() as f:
            assert f.read() == b"kept across the move"
    db.close()


def test_two_databases_opening_a_new_prefix_at_once_one_wins(devswift, tmp_path,
                                                             container_name, view):
    view.ensure_container()
    for round_ in range(3):
        prefix = f"race-{round_}/"
        barrier = threading.Barrier(2)
        outcomes = {}

        def open_one(name):
            base = FileStorage(str(tmp_path / f"{name}-{round_}.fs"))
            barrier.wait()
            try:
                storage = swift_storage(devswift, base, container_name,
                                        tmp_path / f"cache-{name}", prefix=prefix)
            except ForeignPrefixError:
                base.close()
                outcomes[name] = "refused"
            else:
                storage.close()
                outcomes[name] = "owner"
        threads = [threading.Thread(target=open_one, args=(name,)) for name in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes.values()) == ["owner", "refused"]
        winner = next(name for name, outcome in outcomes.items() if outcome == "owner")
        assert marker(view, prefix)["owner"].endswith(f"{winner}-{round_}.fs")

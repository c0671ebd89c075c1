"""Prefix ownership: one database per prefix, and no garbage collection in
another database's prefix."""

import json
import logging
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
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.databases import DSNError, legacy_identity, postgresql_identity
from zodb_swiftblobs.ownership import (ForeignPrefixError, PrefixOwnership, database_identity,
                                       without_secrets)
from zodb_swiftblobs.swift import NotFoundError, SwiftContainer


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
    return json.loads(view.get_bytes(ObjectLayout(prefix).marker))


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
    foreign = [ObjectLayout().object_name(p64(1000 + i), p64(1 + i)) for i in range(3)]
    for name in foreign:
        view.upload(name, str(tmp_path / "foreign"))
    view.put_bytes(ObjectLayout().marker, json.dumps({"owner": "FileStorage elsewhere"}).encode())
    with pytest.raises(ForeignPrefixError, match="elsewhere"):
        storage.collect_garbage()
    with pytest.raises(ForeignPrefixError):
        db.pack()
    assert set(foreign) <= {o.name for o in view.list()}, "nothing was deleted"
    view.delete(ObjectLayout().marker)
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
        view.get_bytes(ObjectLayout().marker)
    open_file_db(devswift, tmp_path / "b.fs", container_name, tmp_path / "cb").close()
    refused(devswift, FileStorage(str(tmp_path / "a.fs"), read_only=True), container_name,
            tmp_path / "c")


def test_an_unreadable_marker_is_a_clear_error(devswift, tmp_path, container_name, view):
    view.ensure_container()
    view.put_bytes(ObjectLayout().marker, b"not json")
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

        def open_one(name, round_=round_, barrier=barrier, prefix=prefix, outcomes=outcomes):
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


# -- server databases: named by server, port and database, never by secrets ---

PASSWORDS = ("s3cret", "horse", "battery", "staple", "it's")
SAME_DATABASE = [
    "dbname=zodb host=db.example port=5432 user=zope password=s3cret",
    "host=db.example dbname=zodb user=zope",
    "host = db.example  dbname = 'zodb' connect_timeout=10 application_name='app server 2'",
    "dbname='zodb' host='DB.Example' password='horse battery staple' sslmode=require",
    "password = s3cret host=db.example dbname=zo\\db",
    "password='it\\'s a \\\\ secret' dbname=zodb host=db.example port = '5432'",
    "postgresql://zope:s3cret@db.example:5432/zodb?connect_timeout=10&application_name=x",
    "postgres://db.example/zodb",
    "postgresql:///zodb?host=db.example&port=5432&password=s3cret",
    "postgresql://zope:horse%20battery%20staple@db.example/%7Aodb".replace("%7A", "z"),
    "dbname='postgresql://zope:s3cret@db.example/zodb' connect_timeout=3",
]
OTHER_DATABASES = [
    "dbname=zodb2 host=db.example", "dbname=zodb host=db2.example",
    "dbname=zodb host=db.example port=5433", "postgresql://db.example:6432/zodb",
    "dbname=zodb host=db.example,db2.example", "dbname=zodb host=/var/run/postgresql",
    "dbname=zodb",  # localhost
]


@pytest.fixture(autouse=True)
def no_libpq_environment(monkeypatch):
    """libpq's defaults, not those of the machine's environment."""
    for variable in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)


def unconnected_relstorage(adapter_class, **attributes):
    """A RelStorage as database_identity sees it: its adapter holding the
    connection settings RelStorage gives it (no driver is needed to read them)."""
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    adapter = object.__new__(adapter_class)
    adapter.keep_history = False
    vars(adapter).update(attributes)
    storage = object.__new__(RelStorage)
    storage._adapter, storage._options = adapter, Options()
    return storage


def postgresql(dsn):
    from relstorage.adapters.postgresql import PostgreSQLAdapter

    return database_identity(unconnected_relstorage(PostgreSQLAdapter, _dsn=dsn))


def test_equivalent_dsns_name_the_same_database():
    identities = {postgresql(dsn) for dsn in SAME_DATABASE}
    assert identities == {"RelStorage PostgreSQL database 'zodb' on db.example:5432"}


def test_other_servers_ports_and_databases_are_other_databases():
    identities = [postgresql(dsn) for dsn in OTHER_DATABASES]
    assert len(set(identities)) == len(OTHER_DATABASES)
    assert postgresql(SAME_DATABASE[0]) not in identities


@pytest.mark.parametrize("dsn", SAME_DATABASE + [
    "password=s3cret", "password = 's3cret", "password=s3cret =", "password=s3cret dbname",
    "postgresql://u:s3cret@h/d?password"])
def test_no_password_in_identities_or_errors(dsn):
    try:
        text = postgresql(dsn)
    except DSNError as exc:
        text = str(exc)
    assert not any(word in text for word in PASSWORDS)


def test_libpq_defaults_and_environment():
    assert postgresql_identity("dbname=zodb", {}) == \
        "PostgreSQL database 'zodb' on localhost:5432"
    environ = {"PGHOST": "db.example", "PGPORT": "5433", "PGDATABASE": "zodb"}
    assert postgresql_identity("", environ) == postgresql_identity(
        "host=db.example port=5433 dbname=zodb", {})
    assert postgresql_identity("user=zope", {}) == postgresql_identity("dbname=zope", {})
    assert postgresql_identity("postgresql://[::1]:5432,db.example/zodb", {}) == \
        "PostgreSQL database 'zodb' on [::1]:5432,db.example:5432"


def test_mysql_and_oracle_databases_are_named_without_credentials():
    from relstorage.adapters.mysql import MySQLAdapter
    from relstorage.adapters.oracle import OracleAdapter

    def mysql(**params):
        return database_identity(unconnected_relstorage(MySQLAdapter, _params=params))
    first = mysql(db="zodb", host="DB.example", user="zope", passwd="s3cret")
    assert first == mysql(db="zodb", host="db.example", port=3306, connect_timeout=5) == \
        "RelStorage MySQL database 'zodb' on db.example:3306"
    assert first != mysql(db="zodb", host="db.example", port=3307)
    assert mysql(db="zodb", unix_socket="/run/mysqld.sock") == \
        "RelStorage MySQL database 'zodb' on socket /run/mysqld.sock"
    oracle = database_identity(unconnected_relstorage(
        OracleAdapter, _user="zope", _password="s3cret", _dsn="db.example:1521/ZODB"))
    assert oracle == "RelStorage Oracle schema 'ZOPE' in db.example:1521/ZODB"
    assert oracle != database_identity(unconnected_relstorage(
        OracleAdapter, _user="other", _password="s3cret", _dsn="db.example:1521/ZODB")), \
        "two schemas (two databases) on one Oracle instance"


# Owners as versions before marker format 2 wrote them (adapters' descriptions).
LEGACY_OWNERS = [
    ("RelStorage <PostgreSQLAdapter history free,dsn='dbname=zodb host=db.example user=zope'>",
     "dbname=zodb host=db.example user=zope password=s3cret"),
    ("RelStorage <PostgreSQLAdapter history free,dsn='dbname=zodb host=db.example = s3cret'>",
     "dbname=zodb host=db.example password = s3cret"),
    ("RelStorage <PostgreSQLAdapter history free,dsn=\"dbname=zodb battery staple' "
     "host=db.example\">", "dbname=zodb password='horse battery staple' host=db.example"),
    ("RelStorage <PostgreSQLAdapter history free,dsn='postgresql://zope@db.example:5432/zodb'>",
     "postgresql://zope:s3cret@db.example:5432/zodb"),
]


@pytest.mark.parametrize("owner, dsn", LEGACY_OWNERS)
def test_markers_of_the_older_format_name_the_same_database(owner, dsn):
    assert legacy_identity(owner) == postgresql(dsn) == postgresql(SAME_DATABASE[1])
    assert not any(word in legacy_identity(owner) for word in PASSWORDS)
    assert legacy_identity("RelStorage MySQLAdapter, history preserving, db='zodb', "
                           "host='db.example', port=3306, user='zope'") == \
        "RelStorage MySQL database 'zodb' on db.example:3306"
    assert legacy_identity("RelStorage OracleAdapter, history preserving, user='zope', "
                           "dsn='db.example:1521/ZODB', twophase=False") == \
        "RelStorage Oracle schema 'ZOPE' in db.example:1521/ZODB"
    for unchanged in ("FileStorage /srv/Data.fs", "RelStorage sqlite /srv/db",
                      "RelStorage main-db"):
        assert legacy_identity(unchanged) == unchanged


def test_another_app_server_of_the_same_database_is_not_refused(devswift, container_name,
                                                                 view, caplog):
    caplog.set_level(logging.DEBUG)
    view.ensure_container()
    first = PrefixOwnership(view, ObjectLayout("pg/"), postgresql(SAME_DATABASE[0]))
    first.check(claim=True)
    for dsn in SAME_DATABASE[1:]:
        PrefixOwnership(view, ObjectLayout("pg/"), postgresql(dsn)).check(claim=True)
    with pytest.raises(ForeignPrefixError) as refused:
        PrefixOwnership(view, ObjectLayout("pg/"), postgresql(OTHER_DATABASES[0])).check(
            claim=False)
    texts = [json.dumps(marker(view, "pg/")), str(refused.value), caplog.text]
    assert "is now owned by RelStorage PostgreSQL database 'zodb'" in caplog.text
    assert not any(word in text for word in PASSWORDS for text in texts)


@pytest.mark.parametrize("owner, dsn", LEGACY_OWNERS)
def test_a_marker_of_the_older_format_is_recognised_and_rewritten(devswift, container_name,
                                                                  view, caplog, owner, dsn):
    caplog.set_level(logging.DEBUG)
    view.ensure_container()
    layout = ObjectLayout("old/")
    view.put_bytes(layout.marker, json.dumps({"format": 1, "owner": owner}).encode())
    with pytest.raises(ForeignPrefixError) as refused:
        PrefixOwnership(view, layout, postgresql("dbname=other host=db.example")).check(
            claim=True)
    assert "PostgreSQL database 'zodb' on db.example:5432" in str(refused.value)
    PrefixOwnership(view, layout, postgresql(dsn)).check(claim=False)
    assert marker(view, "old/")["owner"] == owner, "a read-only open changes nothing"
    PrefixOwnership(view, layout, postgresql(SAME_DATABASE[2])).check(claim=True)
    assert marker(view, "old/")["owner"] == postgresql(dsn)
    assert marker(view, "old/")["format"] == 2
    texts = [json.dumps(marker(view, "old/")), str(refused.value), caplog.text]
    assert not any(word in text for word in PASSWORDS for text in texts)

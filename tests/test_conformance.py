"""ZODB's own reusable blob storage suite, run against SwiftBlobStorage on the real local Swift.

Each base runs the cases that apply to it (no undo without history, no
recovery without IStorageRestoreable), judged as blob_suite.py says: a case
passes, or the base's own blob support fails it too.  RelStorage runs on
SQLite and on the session's PostgreSQL server.
"""

import os

import pytest
from ZODB.blob import BlobStorage
from ZODB.FileStorage import FileStorage
from ZODB.tests.MVCCMappingStorage import MVCCMappingStorage

from blob_suite import BlobSuiteBase, case_name
from conftest import postgres_relstorage, sqlite_relstorage


def sqlite(keep_history):
    return lambda name, blob_dir=None: sqlite_relstorage(f"{name}.sqlite", keep_history, blob_dir)


class PostgresDatabases:
    """RelStorages on the session's PostgreSQL server (*server*, set by the
    test), opened as the suite opens SQLite's files: a database per storage
    name, empty when a run of a case (in a directory of its own) first opens it."""

    def __init__(self, keep_history):
        self.keep_history = keep_history
        self.server = None
        self.opened = set()

    def __call__(self, name, blob_dir=None):
        database = f"suite_{'hp' if self.keep_history else 'hf'}_{name}"
        if (os.getcwd(), name) in self.opened:
            dsn = self.server.dsn(database)
        else:
            self.opened.add((os.getcwd(), name))
            dsn = self.server.empty_database(database, self.keep_history)
        return postgres_relstorage(dsn, self.keep_history, blob_dir)


def relstorage_base(name, open_relstorage, undo):
    return BlobSuiteBase(name, open_relstorage, open_relstorage,
                         test_blob_storage_recovery=True, test_undo=undo)


POSTGRES = {keep_history: PostgresDatabases(keep_history) for keep_history in (True, False)}
BASES = [
    BlobSuiteBase("FileStorage", lambda name: FileStorage(f"{name}.fs"),
                  lambda name, blob_dir: BlobStorage(blob_dir, FileStorage(f"{name}.fs")),
                  test_blob_storage_recovery=True, test_undo=True),
    relstorage_base("RelStorage-history-preserving", sqlite(True), undo=True),
    relstorage_base("RelStorage-history-free", sqlite(False), undo=False),
    relstorage_base("RelStorage-PostgreSQL-history-preserving", POSTGRES[True], undo=True),
    relstorage_base("RelStorage-PostgreSQL-history-free", POSTGRES[False], undo=False),
    BlobSuiteBase("MVCCMappingStorage", lambda name: MVCCMappingStorage(),
                  lambda name, blob_dir: BlobStorage(blob_dir, MVCCMappingStorage()),
                  test_blob_storage_recovery=False, test_undo=False),
]
CASES = [(base, case) for base in BASES for case in base.cases()]


def test_the_suite_runs_every_case_that_applies():
    counts = {base.name: len(base.cases()) for base in BASES}
    assert counts == {"FileStorage": 21, "RelStorage-history-preserving": 21,
                      "RelStorage-history-free": 16,
                      "RelStorage-PostgreSQL-history-preserving": 21,
                      "RelStorage-PostgreSQL-history-free": 16, "MVCCMappingStorage": 15}


@pytest.mark.parametrize("base, case", CASES,
                         ids=[f"{base.name}-{case_name(case)}" for base, case in CASES])
def test_reusable_blob_suite(base, case, devswift, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    if base.open_base in POSTGRES.values():
        base.open_base.server = request.getfixturevalue("postgresql")
    base.check(case, devswift)

"""ZODB's own reusable blob storage suite, run against SwiftBlobStorage on the real local Swift.

Each base runs the cases that apply to it (no undo without history, no
recovery without IStorageRestoreable).  A case must pass, unless the base's
own blob support (ZODB's BlobStorage, RelStorage with a blob directory) fails
it too, in the same doctest examples or more: as root, one example of
blob_transaction.txt fails for every storage (root may write a read-only
file), and RelStorage refuses the str serial another example passes.
"""

import os
import re
import tempfile
import unittest
import uuid

import pytest
from ZODB.blob import BlobStorage
from ZODB.FileStorage import FileStorage
from ZODB.tests.MVCCMappingStorage import MVCCMappingStorage
from ZODB.tests.testblob import storage_reusable_suite

from conftest import sqlite_relstorage, swift_storage


def relstorage(keep_history, blob_dir=None):
    return lambda name: sqlite_relstorage(f"{name}.sqlite", keep_history, blob_dir)


# base name: (open a base without blobs, open the same base with its own blob
# support, what the suite runs for it)
BASES = {
    "FileStorage": (
        lambda name: FileStorage(f"{name}.fs"),
        lambda name, blob_dir: BlobStorage(blob_dir, FileStorage(f"{name}.fs")),
        dict(test_blob_storage_recovery=True, test_undo=True)),
    "RelStorage-history-preserving": (
        relstorage(True), lambda name, blob_dir: relstorage(True, blob_dir)(name),
        dict(test_blob_storage_recovery=True, test_undo=True)),
    "RelStorage-history-free": (
        relstorage(False), lambda name, blob_dir: relstorage(False, blob_dir)(name),
        dict(test_blob_storage_recovery=True, test_undo=False)),
    "MVCCMappingStorage": (
        lambda name: MVCCMappingStorage(),
        lambda name, blob_dir: BlobStorage(blob_dir, MVCCMappingStorage()),
        dict(test_blob_storage_recovery=False, test_undo=False)),
}


class Factory:
    """Makes the storages of one test: each test gets a container of its own,
    and each storage name ('data', '1', '2', 'dest') a prefix in it."""

    cluster = None
    container = None

    def __init__(self, open_base):
        self.open_base = open_base

    def __call__(self, name, blob_dir):
        return swift_storage(self.cluster, self.open_base(name), self.container, blob_dir,
                             prefix=f"{name}/")


def flatten(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


def case_name(case):
    return case.id().rsplit(".", 1)[-1]


SUITES, CASES = {}, []
for base_name, (open_base, _, options) in BASES.items():
    factory = Factory(open_base)
    suite = storage_reusable_suite(f"Swift-{base_name}", factory, **options)
    SUITES[base_name] = (factory, suite)
    CASES += [(base_name, case) for case in flatten(suite)]


def run_case(case, suite):
    """Run one case of the suite in the current directory; its failure reports."""
    suite.layer.setUp()
    suite.layer.testSetUp()
    try:
        result = unittest.TestResult()
        case.run(result)
    finally:
        suite.layer.testTearDown()
        suite.layer.tearDown()
    assert result.testsRun == 1
    return [text for _, text in result.errors + result.failures]


def failed_examples(problems):
    """The source of each failed doctest example in a test's failure reports."""
    return [m.group(1) for text in problems
            for m in re.finditer(r"Failed example:\n(.*?)\n(?:Expected|Exception)", text, re.S)]


def run_case_named(suite, case_id):
    """Run the case of *suite* named *case_id* in a new directory; its failure reports."""
    [case] = [c for c in flatten(suite) if case_name(c) == case_id]
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp(dir=here))
    try:
        return run_case(case, suite)
    finally:
        os.chdir(here)


def reference_failures(base_name, case_id):
    """What the base's own blob support fails in the same case."""
    _, open_reference, options = BASES[base_name]
    return run_case_named(
        storage_reusable_suite(f"Native-{base_name}", open_reference, **options), case_id)


def test_the_suite_runs_every_case_that_applies():
    counts = {name: sum(1 for base, _ in CASES if base == name) for name in BASES}
    assert counts == {"FileStorage": 21, "RelStorage-history-preserving": 21,
                      "RelStorage-history-free": 16, "MVCCMappingStorage": 15}


@pytest.mark.parametrize("base_name, case", CASES,
                         ids=[f"{base}-{case_name(case)}" for base, case in CASES])
def test_reusable_blob_suite(base_name, case, devswift, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factory, suite = SUITES[base_name]
    factory.cluster = devswift
    factory.container = f"conformance-{uuid.uuid4().hex[:10]}"
    problems = run_case(case, suite)
    if not problems:
        return
    native = reference_failures(base_name, case_name(case))
    assert native, "fails where the base's own blob support passes:\n" + "\n".join(problems)
    ours, theirs = failed_examples(problems), failed_examples(native)
    assert ours and set(ours) <= set(theirs), (
        "fails doctest examples the base's own blob support passes:\n" + "\n".join(problems))

"""ZODB's reusable blob storage suite, case by case, against SwiftBlobStorage
around a base, judged against the base's own blob support.

A case must pass, unless the base's own blob support (ZODB's BlobStorage,
RelStorage with a blob directory) fails it too, in the same doctest examples
or more: as root, one example of blob_transaction.txt fails for every storage
(root may write a read-only file), and RelStorage refuses the str serial
another example passes.
"""

import os
import re
import tempfile
import unittest
import uuid

from ZODB.tests.testblob import storage_reusable_suite

from conftest import swift_storage


def flatten(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


def case_name(case):
    return case.id().rsplit(".", 1)[-1]


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


def run_case_named(suite, case_id):
    """Run the case of *suite* named *case_id* in a new directory; its failure reports."""
    [case] = [c for c in flatten(suite) if case_name(c) == case_id]
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp(dir=here))
    try:
        return run_case(case, suite)
    finally:
        os.chdir(here)


def failed_examples(problems):
    """The source of each failed doctest example in a test's failure reports."""
    return [m.group(1) for text in problems
            for m in re.finditer(r"Failed example:\n(.*?)\n(?:Expected|Exception)", text, re.S)]


class BlobSuiteBase:
    """A base the suite runs over: *open_base(name)* opens it without blobs,
    *open_native(name, blob_dir)* with its own blob support; *options* (of
    ``storage_reusable_suite``) say which parts of the suite apply to it.

    Wrapped, each test gets a container of its own, and each storage name
    ('data', '1', '2', 'dest') a prefix in it."""

    def __init__(self, name, open_base, open_native, **options):
        self.name = name
        self.open_base = open_base
        self.open_native = open_native
        self.options = options
        self.cluster = None
        self.container = None
        self.suite = storage_reusable_suite(f"Swift-{name}", self.open_wrapped, **options)

    def __repr__(self):
        return self.name

    def open_wrapped(self, name, blob_dir):
        return swift_storage(self.cluster, self.open_base(name), self.container, blob_dir,
                             prefix=f"{name}/")

    def cases(self):
        return list(flatten(self.suite))

    def check(self, case, cluster):
        """Run *case* in the current directory, over SwiftBlobStorage on *cluster*;
        fail unless it passes or the base's own blob support fails the same
        doctest examples."""
        self.cluster = cluster
        self.container = f"conformance-{uuid.uuid4().hex[:10]}"
        problems = run_case(case, self.suite)
        if not problems:
            return
        native = self.native_failures(case_name(case))
        assert native, "fails where the base's own blob support passes:\n" + "\n".join(problems)
        ours, theirs = failed_examples(problems), failed_examples(native)
        assert ours and set(ours) <= set(theirs), (
            "fails doctest examples the base's own blob support passes:\n" + "\n".join(problems))

    def native_failures(self, case_id):
        """What the base's own blob support fails in the case named *case_id*
        (run in a new directory)."""
        return run_case_named(
            storage_reusable_suite(f"Native-{self.name}", self.open_native, **self.options),
            case_id)

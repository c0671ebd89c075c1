"""The object layout: pure functions."""

import pytest
from ZODB.utils import p64

from zodb_swiftblobs.layout import ObjectLayout


def test_object_name_and_parse_round_trip():
    layout = ObjectLayout("site-a/")
    name = layout.object_name(p64(0x1234), p64(0x03D5A2B1C4E6F708))
    assert name == "site-a/0000000000001234/03d5a2b1c4e6f708.blob"
    assert layout.parse(name) == (p64(0x1234), p64(0x03D5A2B1C4E6F708))
    assert name.startswith(layout.oid_prefix(p64(0x1234)))


def test_names_sort_by_oid_then_tid():
    layout = ObjectLayout()
    names = [layout.object_name(p64(oid), p64(tid)) for oid in (2, 1, 300) for tid in (9, 10, 256)]
    assert [layout.parse(k) for k in sorted(names)] == [
        (p64(oid), p64(tid)) for oid in (1, 2, 300) for tid in (9, 10, 256)]


@pytest.mark.parametrize("name", [
    "other/0000000000000001/0000000000000002.blob",   # another prefix
    "site-a/0000000000000001/0000000000000002",       # no suffix
    "site-a/000000000000001/0000000000000002.blob",   # short oid
    "site-a/0000000000000001/0000000000000002.blob/x",
    "site-a/.zodb-swiftblobs",
    "site-a/0000000000000001/00000000000000AB.blob",  # upper case is not ours
])
def test_foreign_names_are_not_parsed(name):
    assert ObjectLayout("site-a/").parse(name) is None


@pytest.mark.parametrize("prefix", ["no-slash", "/absolute/", "a//b/"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(ValueError):
        ObjectLayout(prefix)


def test_ids_must_be_eight_bytes():
    with pytest.raises(ValueError):
        ObjectLayout().object_name(b"\x01", p64(1))

"""The object layout: pure functions."""

import pytest
from ZODB.utils import p64

from zodb_swiftblobs.layout import ObjectLayout, new_commit_token
from zodb_swiftblobs.names import LONGEST_NAME_UNDER_PREFIX


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


def test_commit_names_and_their_parsing():
    layout = ObjectLayout("site-a/")
    token = new_commit_token()
    assert len(token) == 16 and int(token, 16) >= 0 and token == token.lower()
    assert new_commit_token() != token
    assert layout.commits_prefix == "site-a/commits/"
    marker = layout.commit_marker(token)
    pending = layout.pending_name(token, p64(0x1234))
    assert marker == f"site-a/commits/{token}"
    assert pending == f"site-a/commits/{token}/0000000000001234"
    assert layout.parse_commit_name(marker) == (token, None)
    assert layout.parse_commit_name(pending) == (token, p64(0x1234))
    segment = f"{pending}/{'ab' * 16}/00000003"
    assert layout.parse_commit_name(segment) is None
    assert [layout.commit_token_of(name) for name in (marker, pending, segment)] == [token] * 3
    assert layout.parse(marker) is None and layout.parse(pending) is None


def test_the_longest_name_is_a_pending_uploads_segment():
    layout = ObjectLayout()
    segment = f"{layout.pending_name(new_commit_token(), p64(1))}/{'ab' * 16}/00000000"
    assert len(segment) == LONGEST_NAME_UNDER_PREFIX


@pytest.mark.parametrize("name", [
    "site-a/commits/",
    "site-a/commits/0123456789abcdeF",                  # upper case
    "site-a/commits/0123456789abcde",                   # short token
    "site-a/commits/0123456789abcdef0",                 # long token
    "site-a/commits/0123456789abcdefx/0000000000000001",
    "other/commits/0123456789abcdef",                   # another prefix
    "site-a/0000000000000001/0000000000000002.blob",
])
def test_foreign_names_are_no_commit_names(name):
    layout = ObjectLayout("site-a/")
    assert layout.parse_commit_name(name) is None
    assert layout.commit_token_of(name) is None


def test_a_pending_name_with_a_short_oid_is_no_commit_name():
    layout = ObjectLayout("site-a/")
    name = "site-a/commits/0123456789abcdef/00000001"
    assert layout.parse_commit_name(name) is None
    assert layout.commit_token_of(name) == "0123456789abcdef"


@pytest.mark.parametrize("token", ["", "0123456789ABCDEF", "0123456789abcde", "../x",
                                   "0123456789abcdef/", None])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(ValueError):
        ObjectLayout().commit_marker(token)
    with pytest.raises(ValueError):
        ObjectLayout().pending_name(token, p64(1))

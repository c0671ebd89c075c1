"""Container and prefix names: those HTTP would rewrite are refused at open;
the others reach Swift exactly, in every kind of request."""

import os
import urllib.request
from urllib.parse import quote

import pytest
import swiftclient
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

from conftest import blob_objects, blob_revision, credentials_for, store_blobs, swift_storage
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.names import check_container, check_prefix
from zodb_swiftblobs.swift import PermanentSwiftError, SwiftContainer
from zodb_swiftblobs.verify import verify

ESCAPING_PREFIXES = ["../victim/", "a/./b/", "x/../", "./", "../", "a/../../victim/",
                     "a/.", "/", "/a/", "a//b/", "a/\n/", "a\x00/", "a\x7f/", "a\x85/",
                     "no-slash", "x" * 941 + "/"]
EXACT_PREFIXES = ["", "site-a/", "a b/", "100%/", "%2e%2e/", "q?x=1/", "frag#1/",
                  "ünïcödé ✓/", ".../", ".a/..b/", "a.b/c../", "x" * 940 + "/"]


@pytest.mark.parametrize("prefix", ESCAPING_PREFIXES)
def test_prefixes_http_would_rewrite_are_refused(prefix):
    with pytest.raises(ValueError, match="prefix"):
        check_prefix(prefix)
    with pytest.raises(ValueError):
        ObjectLayout(prefix)


@pytest.mark.parametrize("prefix", EXACT_PREFIXES)
def test_prefixes_sent_exactly_are_accepted(prefix):
    check_prefix(prefix)
    assert ObjectLayout(prefix).prefix == prefix


@pytest.mark.parametrize("container", [".", "..", "", "a/b", "../victim", "a\nb", "a\tb",
                                       "\x00", "x" * 248, "\udc80"])
def test_container_names_swift_would_not_keep_are_refused(container, credentials):
    with pytest.raises(ValueError, match="container name"):
        check_container(container)
    with pytest.raises(ValueError, match="container name"):
        SwiftContainer(credentials, container)


@pytest.mark.parametrize("container", ["...", ".a", "a b", "100%", "q?x", "f#1", "ü ✓",
                                       "x" * 247])
def test_container_names_sent_exactly_are_accepted(container):
    check_container(container)


def test_a_prefix_escaping_its_container_is_refused_at_open(devswift, tmp_path,
                                                             container_name):
    victim = f"{container_name}-victim"
    view = SwiftContainer(credentials_for(devswift), victim)
    view.ensure_container()
    try:
        for prefix in (f"../{victim}/", "a/./b/", "x/../", "./"):
            base = FileStorage(str(tmp_path / "Data.fs"))
            try:
                with pytest.raises(ValueError, match="segment"):
                    swift_storage(devswift, base, container_name, tmp_path / "cache",
                                  prefix=prefix)
            finally:
                base.close()
        assert list(view.list()) == [], "nothing landed in another container"
        for container in (".", ".."):
            with pytest.raises(ValueError, match="container name"):
                swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container,
                              tmp_path / "cache")
    finally:
        view.delete_many(view.list())
        view.close()


def test_a_request_path_with_dot_segments_is_never_sent(swift_container):
    swift_container.ensure_container()
    swift_container.put_bytes("victim", b"must stay")
    with pytest.raises(PermanentSwiftError, match="'.' or '..' segment"):
        swift_container.delete("a/../victim", large=False)
    assert swift_container.get_bytes("victim") == b"must stay"


def test_accepted_names_round_trip_exactly(devswift, tmp_path):
    container = f"t {os.urandom(4).hex()} 100% q?#ü"
    prefix = "a b/100%/%2e%2e/q?x=1/frag#1/ünïcödé ✓/.a/"
    cache = tmp_path / "cache"
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container, cache,
                            prefix=prefix, large_object_threshold=1 << 20,
                            segment_size=1 << 19)
    settings = devswift.settings()
    url, token = swiftclient.get_auth(settings.auth_url, settings.user, settings.key)
    swiftclient.post_container(url, token, container, {"X-Container-Meta-Temp-URL-Key": "k"})
    db = ZODB.DB(storage)
    view = SwiftContainer(credentials_for(devswift), container)
    try:
        first, second = os.urandom(3 << 19), os.urandom(3 << 19)
        store_blobs(db, small=b"first", large=first)
        store_blobs(db, small=b"second", large=second)
        db.undo(db.undoLog(0, 1)[0]["id"])  # copies inside Swift, segments included
        transaction.commit()
        layout = ObjectLayout(prefix)
        current = {layout.object_name(*blob_revision(db, name)) for name in ("small", "large")}
        assert current <= {o.name for o in blob_objects(view, prefix)}
        assert layout.marker in {o.name for o in view.list(prefix)}
        report = verify(storage, deep=True)
        assert (report.referenced, report.present, report.missing, report.corrupt,
                report.orphans) == (6, 6, [], [], [])

        db.pack()
        assert {o.name for o in blob_objects(view, prefix)} == current
        report = verify(storage, deep=True)
        assert (report.present, report.missing, report.corrupt, report.orphans) == \
            (2, [], [], [])
        large_key = layout.object_name(*blob_revision(db, "large"))
        assert len([s for s in view.list(prefix, container=view.segment_container)
                    if s.name.startswith(large_key)]) == 3

        storage.cache.clear()
        with db.transaction() as conn:
            assert conn.root()["small"].open().read() == b"first"
            assert conn.root()["large"].open().read() == first
        url = storage.blob_url(*blob_revision(db, "small"))
        assert quote(prefix) in url
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.read() == b"first"
    finally:
        db.close()
        view.delete_many(view.list())
        view.delete_many(view.list(container=view.segment_container),
                         container=view.segment_container)
        view.close()

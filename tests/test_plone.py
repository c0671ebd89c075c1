"""The Plone integration on a real Plone 6.2 site served over HTTP: big blobs
are served by Swift (a redirect to a TempURL, or an X-Accel-Redirect), with
Range requests; small ones, and private ones for anonymous users, by Plone."""

import contextlib
import io
import os
import shutil
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image
from plone.namedfile.file import NamedBlobFile
from plone.namedfile.interfaces import IStorage
from plone.namedfile.storages import BytesStorable
from swiftclient import client as swiftclient
from ZODB import DB
from ZODB.FileStorage import FileStorage
from zope.component import getGlobalSiteManager

from zodb_swiftblobs.plone.redirect import blob_redirect
from zodb_swiftblobs.plone.settings import parse_settings

from conftest import sqlite_relstorage, swift_storage
from plone_site import ADMIN, behind_nginx, build_site, served, write_instance

ABOVE = 1 << 20
BIG = os.urandom(3 << 20)  # a Static Large Object: 1 MiB segments above 2 MiB
SMALL = b"a few notes\n" * 100
ABOVE_1MB = parse_settings({"serve-from-swift-above": "1MB"})


def noise_png(side):
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


PICTURE = noise_png(700)
POSTER = noise_png(650)


@pytest.fixture(scope="module")
def account_key(devswift):
    """An account-level TempURL key: a container's key does not reach the
    segments of a large object, in the segment container."""
    settings = devswift.settings()
    url, token = swiftclient.get_auth(settings.auth_url, settings.user, settings.key)
    key = uuid.uuid4().hex
    swiftclient.post_account(url, token, {"X-Account-Meta-Temp-URL-Key-2": key})
    yield key
    swiftclient.post_account(url, token, {"X-Account-Meta-Temp-URL-Key-2": ""})


@pytest.fixture(scope="module")
def plone_home(devswift, account_key, tmp_path_factory):
    """A Zope instance with a Plone site (built once), its blobs in Swift."""
    home = tmp_path_factory.mktemp("plone")
    files = tmp_path_factory.mktemp("plone-files")
    for name, data in (("big", BIG), ("small", SMALL), ("picture.png", PICTURE),
                       ("poster.png", POSTER)):
        (files / name).write_bytes(data)
    container = f"test-plone-{uuid.uuid4().hex[:8]}"
    write_instance(home, devswift, container, {}, tmp_path_factory.mktemp("plone-cache"))
    build_site(home, files)
    return home, container


@pytest.fixture(scope="module")
def plone_server(devswift, plone_home, tmp_path_factory):
    """serve(**settings): the URL of Zope serving the site with these
    <product-config zodb-swiftblobs> settings (restarted when they change:
    one Zope at a time opens the Data.fs), from a cold cache: its directory
    is ``serve.current["cache"]``."""
    home, container = plone_home
    running, current = contextlib.ExitStack(), {}

    def serve(**settings):
        if current.get("settings") != settings:
            running.close()
            current.clear()
            cache = tmp_path_factory.mktemp("plone-cache")
            write_instance(home, devswift, container, settings, cache)
            current.update(url=running.enter_context(served(home)), settings=settings,
                           cache=cache)
        return current["url"]
    serve.current = current
    with running:
        yield serve


TEMPURL = {"serve-from-swift-above": "1MB", "tempurl-lifetime": "10m"}
X_ACCEL = {"serve-from-swift-above": "1MB", "serve-with": "x-accel-redirect",
           "x-accel-location": "/swift-blobs/"}


@pytest.fixture
def tempurl_site(plone_server):
    return plone_server(**TEMPURL)


def get(url, auth=None, **headers):
    return requests.get(url, auth=auth, headers=headers, allow_redirects=False, timeout=120)


def test_a_big_download_is_a_redirect_to_swift_serving_ranges(tempurl_site, devswift):
    response = get(f"{tempurl_site}/Plone/big/@@download/file", Range="bytes=1000-1999")
    assert response.status_code == 302 and response.content == b""
    location = response.headers["Location"]
    assert location.startswith(devswift.settings().auth_url.split("/auth")[0])
    query = parse_qs(urlsplit(location).query)
    assert 0 < int(query["temp_url_expires"][0]) and "temp_url_sig" in query
    assert "no-store" in response.headers["Cache-Control"]

    from_swift = requests.get(location, headers={"Range": "bytes=1000-1999"}, timeout=120)
    assert from_swift.status_code == 206 and from_swift.content == BIG[1000:2000]
    assert from_swift.headers["Content-Range"] == f"bytes 1000-1999/{len(BIG)}"
    assert from_swift.headers["X-Static-Large-Object"] == "True"  # the account's key
    assert from_swift.headers["Content-Disposition"].startswith("attachment")
    assert "big%20video.mp4" in from_swift.headers["Content-Disposition"]
    # Swift answers with the type it stored the object with, not Plone's.
    assert from_swift.headers["Content-Type"] == "application/octet-stream"
    whole = requests.get(location, timeout=120)
    assert whole.status_code == 200 and whole.content == BIG


def test_a_redirect_leaves_the_blob_out_of_zopes_cache(plone_server, tempurl_site):
    for view in ("@@download/file", "@@display-file/file", "@@download/file/other.mp4"):
        assert get(f"{tempurl_site}/Plone/big/{view}").status_code == 302
    head = requests.head(f"{tempurl_site}/Plone/poster/@@images/image", timeout=120)
    assert head.status_code == 302 and "temp_url_sig" in head.headers["Location"]
    assert get(f"{tempurl_site}/Plone/poster/@@images/image").status_code == 302
    cached = [path.stat().st_size for path in plone_server.current["cache"].rglob("*")
              if path.is_file()]
    assert len(BIG) not in cached and len(POSTER) not in cached


def test_a_small_download_is_served_by_plone(tempurl_site):
    response = get(f"{tempurl_site}/Plone/small/@@download/file")
    assert response.status_code == 200 and response.content == SMALL
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "notes.txt" in response.headers["Content-Disposition"]


def test_display_file_redirects_inline(tempurl_site):
    response = get(f"{tempurl_site}/Plone/picture/@@display-file/image")
    assert response.status_code == 302
    from_swift = requests.get(response.headers["Location"], timeout=120)
    assert from_swift.content == PICTURE
    assert from_swift.headers["Content-Disposition"].startswith("inline")
    assert "picture.png" in from_swift.headers["Content-Disposition"]


def test_an_image_above_the_threshold_is_served_by_swift_its_scales_by_plone(tempurl_site):
    original = get(f"{tempurl_site}/Plone/picture/@@images/image")
    assert original.status_code == 302
    assert requests.get(original.headers["Location"], timeout=120).content == PICTURE
    thumb = get(f"{tempurl_site}/Plone/picture/@@images/image/thumb")
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/png"
    assert thumb.content.startswith(b"\x89PNG") and len(thumb.content) < ABOVE


def test_a_private_file_is_never_redirected_for_anonymous(tempurl_site):
    for view in ("@@download/file", "@@display-file/file"):
        response = get(f"{tempurl_site}/Plone/private/secret/{view}")
        assert response.status_code == 302  # Plone's login form, never Swift
        assert "/require_login?came_from=" in response.headers["Location"]
        assert "temp_url" not in response.headers["Location"]
        assert "temp_url" not in response.text and BIG[:64] not in response.content
    allowed = get(f"{tempurl_site}/Plone/private/secret/@@download/file", auth=ADMIN)
    assert allowed.status_code == 302 and "temp_url_sig" in allowed.headers["Location"]


def test_a_big_scale_is_served_by_plone_as_it_is_made_then_by_swift(tempurl_site):
    made = get(f"{tempurl_site}/Plone/picture/@@images/image/huge")  # not in Swift yet
    assert made.status_code == 200 and made.headers["Content-Type"] == "image/png"
    assert len(made.content) > ABOVE
    stored = get(f"{tempurl_site}/Plone/picture/@@images/image/huge")
    assert stored.status_code == 302
    assert requests.get(stored.headers["Location"], timeout=120).content == made.content


def test_x_accel_redirect_names_the_tempurl_behind_nginx_location(plone_server, devswift):
    site = plone_server(**X_ACCEL)
    response = get(f"{site}/Plone/big/@@download/file", Range="bytes=10-19")
    assert response.status_code == 200 and response.content == b""
    internal = response.headers["X-Accel-Redirect"]
    assert internal.startswith("/swift-blobs/v1/AUTH_") and "temp_url_sig=" in internal
    # Plone's own headers, which nginx keeps (Content-Type, Content-Disposition)
    assert response.headers["Content-Type"] == "video/mp4"
    assert "big%20video.mp4" in response.headers["Content-Disposition"]
    # What nginx's "location /swift-blobs/ { internal; proxy_pass SWIFT/; }" asks Swift
    swift = devswift.settings().auth_url.split("/auth")[0]
    from_swift = requests.get(swift + internal[len("/swift-blobs"):],
                              headers={"Range": "bytes=10-19"}, timeout=120)
    assert from_swift.status_code == 206 and from_swift.content == BIG[10:20]
    small = get(f"{site}/Plone/small/@@download/file")
    assert small.status_code == 200 and "X-Accel-Redirect" not in small.headers
    anonymous = get(f"{site}/Plone/private/secret/@@download/file")
    assert "X-Accel-Redirect" not in anonymous.headers and anonymous.status_code != 200


@pytest.mark.skipif(not shutil.which("nginx"), reason="needs nginx (apt-get install nginx)")
def test_nginx_serves_the_x_accel_redirect_from_swift(plone_server, plone_home, devswift):
    site = plone_server(**X_ACCEL)
    swift = devswift.settings().auth_url.split("/auth")[0]
    with behind_nginx(plone_home[0], site, swift) as nginx:
        response = requests.get(f"{nginx}/Plone/big/@@download/file",
                                headers={"Range": "bytes=100-4194303"}, timeout=120)
        assert response.status_code == 206 and response.content == BIG[100:]
        assert response.headers["Content-Range"] == f"bytes 100-{len(BIG) - 1}/{len(BIG)}"
        assert response.headers["Content-Type"] == "video/mp4"  # Plone's, not Swift's
        assert response.headers["Content-Disposition"] == \
            "attachment; filename*=UTF-8''big%20video.mp4"
        assert response.headers["Accept-Ranges"] == "bytes"

        small = requests.get(f"{nginx}/Plone/small/@@download/file", timeout=120)
        assert small.status_code == 200 and small.content == SMALL
        anonymous = requests.get(f"{nginx}/Plone/private/secret/@@download/file",
                                 timeout=120)
        assert BIG[:64] not in anonymous.content and anonymous.status_code != 206
        internal = get(f"{site}/Plone/big/@@download/file").headers["X-Accel-Redirect"]
        assert requests.get(nginx + internal, timeout=120).status_code == 404  # internal


@pytest.fixture
def caching_proxy_rules(plone_server, tempurl_site):
    """plone.app.caching on, with its rules for a site behind a caching proxy
    (``with-caching-proxy``: a shared cache keeps files a day), for this test."""
    rest = {"auth": ADMIN, "headers": {"Accept": "application/json"}, "timeout": 120}
    enabled = "plone.caching.interfaces.ICacheSettings.enabled"
    requests.post(f"{tempurl_site}/Plone/@addons/plone.app.caching/install", **rest)
    requests.post(f"{tempurl_site}/Plone/@addons/plone.app.caching/import/with-caching-proxy",
                  **rest).raise_for_status()
    requests.patch(f"{tempurl_site}/Plone/@registry", json={enabled: True},
                   **rest).raise_for_status()
    yield
    requests.patch(f"{plone_server.current['url']}/Plone/@registry", json={enabled: False},
                   **rest).raise_for_status()


def test_plone_caching_rules_never_let_a_shared_cache_keep_a_redirect(
        plone_server, caching_proxy_rules):
    site = plone_server(**TEMPURL)
    small = get(f"{site}/Plone/small/@@download/file")
    assert "s-maxage=86400" in small.headers["Cache-Control"]  # the rules apply
    for view in ("big/@@download/file", "picture/@@images/image"):
        redirect = get(f"{site}/Plone/{view}")
        assert redirect.status_code == 302 and "temp_url_sig" in redirect.headers["Location"]
        assert redirect.headers["Cache-Control"] == "private, no-store"
    x_accel = get(f"{plone_server(**X_ACCEL)}/Plone/big/@@download/file")
    assert "X-Accel-Redirect" in x_accel.headers
    assert x_accel.headers["Cache-Control"] == "private, no-store"


def test_a_container_key_left_from_earlier_does_not_break_big_downloads(
        plone_server, plone_home, devswift):
    """A container's key does not reach a large object's segments (Swift
    answers 409): the account's key signs when both are set."""
    settings = devswift.settings()
    url, token = swiftclient.get_auth(settings.auth_url, settings.user, settings.key)
    swiftclient.post_container(url, token, plone_home[1], {"X-Container-Meta-Temp-URL-Key":
                                                           uuid.uuid4().hex})
    try:
        site = plone_server(**{**TEMPURL, "tempurl-lifetime": "11m"})  # a Zope reading keys
        response = get(f"{site}/Plone/big/@@download/file")
        assert response.status_code == 302
        from_swift = requests.get(response.headers["Location"], timeout=120)
        assert from_swift.status_code == 200 and from_swift.content == BIG
    finally:
        swiftclient.post_container(url, token, plone_home[1],
                                   {"X-Container-Meta-Temp-URL-Key": ""})


def test_a_mistake_in_the_settings_stops_zope_as_it_starts(plone_server):
    with pytest.raises(AssertionError, match="serve-with is one of tempurl or "
                                             "x-accel-redirect, not 'sendfile'"):
        plone_server(**{"serve-from-swift-above": "1MB", "serve-with": "sendfile"})


def store_file(db, data):
    """Commit a plone.namedfile file of *data* as the root's "file"."""
    with db.transaction() as conn:
        conn.root()["file"] = NamedBlobFile(data, filename="report.bin")


@pytest.fixture
def bytes_storable():
    """plone.namedfile's way of storing bytes in a blob (which its ZCML registers)."""
    registry, storable = getGlobalSiteManager(), BytesStorable()
    registry.registerUtility(storable, IStorage, name="builtins.bytes")
    yield
    registry.unregisterUtility(storable, IStorage, name="builtins.bytes")


@pytest.mark.parametrize("base", ["FileStorage", "RelStorage", "history-free RelStorage"])
def test_a_ghost_blob_redirects_to_the_revision_its_connection_sees(
        base, devswift, account_key, bytes_storable, tmp_path, container_name):
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs"))
                            if base == "FileStorage" else
                            sqlite_relstorage(tmp_path / "db", base == "RelStorage"),
                            container_name, tmp_path / "cache")
    db = DB(storage)
    store_file(db, BIG[:2 << 20])
    reader = db.open()
    file = reader.root()["file"]
    with db.transaction() as conn:
        with conn.root()["file"].open("w") as f:
            f.write(BIG)
    assert file._blob._p_changed is None  # a ghost: loading it would fetch it
    redirect = blob_redirect(file, ABOVE_1MB)
    assert requests.get(redirect.url, timeout=120).content == BIG[:2 << 20]
    assert file._blob._p_changed is None and file.getSize() == 2 << 20
    assert storage.cache_stats()["misses"] == 0
    reader.close()
    db.close()


def test_an_encrypted_blob_is_served_by_plone(devswift, account_key, bytes_storable,
                                               tmp_path, container_name):
    db = DB(swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                          tmp_path / "cache", encryption_keys=bytes(range(32)).hex()))
    store_file(db, BIG)
    with db.transaction() as conn:
        file = conn.root()["file"]
        assert blob_redirect(file, ABOVE_1MB) is None  # a TempURL would serve ciphertext
        with file.open() as f:
            assert f.read() == BIG
    db.close()


def test_an_encrypted_blob_is_never_redirected_by_a_process_without_its_key(
        devswift, account_key, bytes_storable, tmp_path, container_name):
    keys = bytes(range(32)).hex()
    db = DB(swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                          tmp_path / "cache", encryption_keys=keys))
    with db.transaction() as conn:
        file = conn.root()["file"] = NamedBlobFile(BIG, filename="report.bin")
        assert file.getSize() == len(BIG)  # its size in its state: no HEAD needed for it
    db.close()
    # A read-only Zope (a replica, a ZEO read-only client) whose zope.conf forgot the key
    db = DB(swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs"), read_only=True),
                          container_name, tmp_path / "other-cache"))
    with db.transaction() as conn:
        file = conn.root()["file"]
        file._p_activate()
        assert file.__dict__["size"] == len(BIG)
        assert blob_redirect(file, ABOVE_1MB) is None  # never ciphertext
    db.close()

"""SwiftBlobStorage over a cache that goes bad: corrupt files, a full or
read-only disk (real small and read-only mounts, the real local Swift)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZEO.StorageServer import StorageServerDB
from ZODB.POSException import POSKeyError

from conftest import (blob_objects, child_environment, corrupt_cached_file, credentials_for,
                      make_non_file, mounted, swift_storage, wait_for_logged)
from test_storage import commit_blob, read_blob
from zodb_swiftblobs import BlobCacheError
from zodb_swiftblobs.swift import SwiftContainer

MIB = 1 << 20

READER = """
import json, sys, ZODB
from ZODB.FileStorage import FileStorage
from zodb_swiftblobs.storage import SwiftBlobStorage

data_fs, cache_dir, container, auth_url, user, key = sys.argv[1:]
storage = SwiftBlobStorage(FileStorage(data_fs, read_only=True), container=container,
                           cache_dir=cache_dir, auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
with db.transaction() as conn:
    with conn.root()["blob"].open() as f:
        data = f.read()
stats = storage.cache_stats()
db.close()
print(json.dumps({"data": data.hex(), "stats": stats}))
"""


UNWRITABLE = """
import json, os, sys, ZODB
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from zodb_swiftblobs import BlobCacheError, SwiftBlobStorage

data_fs, cache_dir, container, auth_url, user, key, oid, serial = sys.argv[1:]
uncached = bytes.fromhex(oid), bytes.fromhex(serial)
storage = SwiftBlobStorage(FileStorage(data_fs), container=container, cache_dir=cache_dir,
                           auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
with db.transaction() as conn:
    conn.root()["cached"] = Blob(b"in the cache too")


def set_mode(mode):
    for directory, _, _ in os.walk(cache_dir):
        os.chmod(directory, mode)


def commit():
    with db.transaction() as conn:
        conn.root()["new"] = Blob(b"new")


results = {}
set_mode(0o500)
try:
    with db.transaction() as conn:
        with conn.root()["cached"].open() as f:
            results["cached"] = f.read().decode()
    for step, action in (("download", lambda: storage.loadBlob(*uncached)),
                         ("commit", commit)):
        try:
            action()
        except BlobCacheError as exc:
            results[step] = str(exc)
finally:
    set_mode(0o700)
results["staged"] = os.listdir(os.path.join(cache_dir, "tmp"))
with open(storage.loadBlob(*uncached), "rb") as f:
    results["uncached"] = f.read().decode()
db.close()
print(json.dumps(results))
"""


def cached_path(cache_dir, oid, serial):
    return os.path.join(cache_dir, oid.hex(), f"{serial.hex()}.blob")


def downloads(cluster, container, oid, serial, *, expected):
    """How many GETs of the object of (*oid*, *serial*) the proxy has logged,
    once it has logged the *expected* number."""
    return len(wait_for_logged(
        cluster, f"GET /v1/AUTH_test/{container}/{oid.hex()}/{serial.hex()}", count=expected))


def commit_elsewhere(cluster, data_fs, container, cache_dir, blobs):
    """Commit *blobs* (key: bytes) to Data.fs *data_fs* through a storage whose
    cache is *cache_dir*; return their (oid, serial) by key."""
    db = ZODB.DB(swift_storage(cluster, FileStorage(data_fs), container, cache_dir))
    try:
        return {key: commit_blob(db, key, data) for key, data in blobs.items()}
    finally:
        db.close()


def read_in_new_process(cluster, data_fs, cache_dir, container):
    """Read root["blob"] in a new process: (its bytes, its cache counters, its stderr)."""
    credentials = credentials_for(cluster)
    process = subprocess.run(
        [sys.executable, "-c", READER, data_fs, str(cache_dir), container,
         credentials.auth_url, credentials.user, credentials.key],
        capture_output=True, text=True, env=child_environment(), timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(process.stdout)
    return bytes.fromhex(result["data"]), result["stats"], process.stderr


def test_a_corrupt_or_truncated_cached_blob_is_fetched_again(devswift, tmp_path,
                                                             container_name):
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    storage = swift_storage(devswift, FileStorage(data_fs), container_name, cache_dir)
    db = ZODB.DB(storage)
    data = os.urandom(200_000)
    try:
        oid, serial = commit_blob(db, "blob", data)  # into the cache at commit: no GET
        path = cached_path(cache_dir, oid, serial)
        os.chmod(path, 0o600)
        os.truncate(path, 1000)
        assert read_blob(db, "blob") == data
        assert downloads(devswift, container_name, oid, serial, expected=1) == 1
        assert storage.cache_stats()["corrupt"] == 1
    finally:
        db.close()

    corrupt_cached_file(path)  # size and modification time kept: a new process finds it
    read, stats, stderr = read_in_new_process(devswift, data_fs, cache_dir, container_name)
    assert read == data
    assert (stats["corrupt"], stats["misses"]) == (1, 1)
    assert f"{path} is corrupt (checksum mismatch); fetching it again" in stderr
    assert downloads(devswift, container_name, oid, serial, expected=2) == 2
    read, stats, _ = read_in_new_process(devswift, data_fs, cache_dir, container_name)
    assert read == data and (stats["corrupt"], stats["misses"]) == (0, 0)


def test_reading_into_a_full_cache_is_a_clear_storage_error(devswift, tmp_path,
                                                             container_name):
    data_fs = str(tmp_path / "Data.fs")
    committed = commit_elsewhere(devswift, data_fs, container_name, tmp_path / "cache",
                                 {"big": os.urandom(3 * MIB), "small": b"fits"})
    big, small = committed["big"], committed["small"]
    cache_dir = tmp_path / "small" / "cache"
    with mounted(tmp_path / "small", size="2m"):
        storage = swift_storage(devswift, FileStorage(data_fs, read_only=True),
                                container_name, cache_dir)
        try:
            with pytest.raises(BlobCacheError) as raised:
                storage.loadBlob(*big)
            assert not isinstance(raised.value, POSKeyError)
            assert str(raised.value) == (
                f"blob cache {cache_dir}: cannot store revision {big[1].hex()} of blob "
                f"{big[0].hex()}: No space left on device (free space on its file system, "
                "or lower cache-size)")
            listed = [name for name in os.listdir(cache_dir) if not name.endswith(".lock")]
            assert listed == ["tmp"]  # no partial file, no directory (only the storage's locks)
            assert os.listdir(cache_dir / "tmp") == []
            with open(storage.loadBlob(*small), "rb") as f:
                assert f.read() == b"fits"
        finally:
            storage.close()


def test_a_commit_whose_blob_cannot_be_staged_aborts_cleanly(devswift, tmp_path,
                                                             container_name):
    cache_dir = tmp_path / "small" / "cache"
    view = SwiftContainer(credentials_for(devswift), container_name)
    with mounted(tmp_path / "small", size="2m"):
        db = ZODB.DB(swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")),
                                   container_name, cache_dir))
        try:
            with pytest.raises(BlobCacheError, match=(
                    f"blob cache {cache_dir}: cannot stage {cache_dir}/tmp/.*: No space "
                    r"left on device \(free space")):
                with db.transaction() as conn:
                    conn.root()["fits"] = Blob(b"fits")
                    # Written outside any connection, in the system's temporary
                    # directory: copied into the cache's at commit.
                    conn.root()["big"] = Blob(os.urandom(3 * MIB))
            assert os.listdir(cache_dir / "tmp") == []
            assert [stored.name for stored in blob_objects(view)] == []
            with db.transaction() as conn:
                assert "big" not in conn.root() and "fits" not in conn.root()
            commit_blob(db, "after", b"committed after")
            assert read_blob(db, "after") == b"committed after"
        finally:
            db.close()
            view.close()


def test_a_cache_remounted_read_only_serves_what_it_holds(devswift, tmp_path,
                                                          container_name):
    data_fs = str(tmp_path / "Data.fs")
    uncached = commit_elsewhere(devswift, data_fs, container_name, tmp_path / "cache",
                                {"uncached": b"in Swift only"})["uncached"]
    cache_dir = tmp_path / "mount" / "cache"
    with mounted(tmp_path / "mount", size="4m") as remount:
        storage = swift_storage(devswift, FileStorage(data_fs), container_name, cache_dir)
        db = ZODB.DB(storage)
        try:
            commit_blob(db, "cached", b"in the cache too")
            remount("ro")
            assert read_blob(db, "cached") == b"in the cache too"
            with pytest.raises(BlobCacheError, match=(
                    f"cannot store revision {uncached[1].hex()} of blob {uncached[0].hex()}: "
                    r"Read-only file system \(check its permissions and how its file system "
                    r"is mounted\)")):
                storage.loadBlob(*uncached)
            with pytest.raises(BlobCacheError, match="cannot stage .*Read-only file system"):
                with db.transaction() as conn:
                    conn.root()["new"] = Blob(b"new")
            remount("rw")
            assert os.listdir(cache_dir / "tmp") == []
            assert read_blob(db, "uncached") == b"in Swift only"
        finally:
            db.close()


def test_a_cache_directory_without_write_permission_serves_what_it_holds(
        devswift, tmp_path, container_name):
    """The read-only cache where no file system can be mounted: its
    directories made read-only by their permissions, in a child process (as
    root, one without root's power to override permissions)."""
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    oid, serial = commit_elsewhere(devswift, data_fs, container_name, tmp_path / "committer",
                                   {"uncached": b"in Swift only"})["uncached"]
    credentials = credentials_for(devswift)
    argv = [sys.executable, "-c", UNWRITABLE, data_fs, str(cache_dir), container_name,
            credentials.auth_url, credentials.user, credentials.key, oid.hex(), serial.hex()]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("as root, this needs setpriv (util-linux) to drop root's power to "
                        "override permissions")
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *argv]
    child = subprocess.run(argv, capture_output=True, text=True, env=child_environment(),
                           timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    results = json.loads(child.stdout)
    denied = r": Permission denied \(check its permissions and how its file system is mounted\)"
    assert re.fullmatch(f"blob cache {cache_dir}: cannot store revision {serial.hex()} of "
                        f"blob {oid.hex()}{denied}", results.pop("download"))
    assert re.fullmatch(f"blob cache {cache_dir}: cannot stage {cache_dir}/tmp/.*{denied}",
                        results.pop("commit"))
    assert results == {"cached": "in the cache too", "staged": [],
                       "uncached": "in Swift only"}


def test_a_download_killed_midway_leaves_nothing_once_read_again(devswift, tmp_path,
                                                                  container_name):
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    data = os.urandom(160 * MIB)
    oid, serial = commit_elsewhere(devswift, data_fs, container_name, tmp_path / "committer",
                                   {"blob": data})["blob"]
    credentials = credentials_for(devswift)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, data_fs, str(cache_dir), container_name,
         credentials.auth_url, credentials.user, credentials.key],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_environment())
    directory = cache_dir / oid.hex()
    try:
        partial = []
        while not partial and reader.poll() is None:
            if directory.is_dir():
                partial = [p for p in directory.iterdir() if p.name.endswith(".part")
                           and p.stat().st_size > MIB]
        reader.kill()
    finally:
        reader.wait()
    assert partial, "the download finished before it was killed"
    assert any(name != f"{serial.hex()}.blob" for name in os.listdir(directory))
    storage = swift_storage(devswift, FileStorage(data_fs, read_only=True), container_name,
                            cache_dir)
    try:
        with open(storage.loadBlob(oid, serial), "rb") as f:
            assert f.read() == data
    finally:
        storage.close()
    assert os.listdir(directory) == [f"{serial.hex()}.blob"], "the killed fetch's files went"


@pytest.mark.parametrize("tampering", ["copy keeping its attributes", "hard link",
                                       "symbolic link"])
def test_another_revisions_file_at_a_cached_path_is_never_served(devswift, tmp_path,
                                                                  container_name, tampering):
    """The cached file of one revision replaced by (a copy of, a link to) the
    intact file of another revision of the same size: it is fetched again."""
    cache_dir = tmp_path / "cache"
    storage = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs")), container_name,
                            cache_dir)
    db = ZODB.DB(storage)
    first, second = os.urandom(100_000), os.urandom(100_000)
    try:
        oid, serial = commit_blob(db, "first", first)  # into the cache at commit: no GET
        other = cached_path(cache_dir, *commit_blob(db, "second", second))
        path = cached_path(cache_dir, oid, serial)
        os.unlink(path)
        if tampering == "hard link":
            os.link(other, path)
        elif tampering == "symbolic link":
            os.symlink(other, path)
        else:
            shutil.copy2(other, path)
            assert os.getxattr(path, "user.zodb-swiftblobs") == \
                os.getxattr(other, "user.zodb-swiftblobs")
        assert read_blob(db, "first") == first
        assert downloads(devswift, container_name, oid, serial, expected=1) == 1
        assert read_blob(db, "second") == second
        assert storage.cache_stats()["corrupt"] == 1
        assert os.path.isfile(path) and not os.path.islink(path)
        assert not os.path.samefile(path, other)
    finally:
        db.close()


@pytest.mark.parametrize("thing", ["directory", "FIFO", "socket"])
@pytest.mark.parametrize("where", ["blob", "lock"])
def test_a_non_file_at_a_cached_blobs_path_or_lock_path_is_removed(devswift, tmp_path,
                                                                   container_name, where,
                                                                   thing):
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    data = os.urandom(50_000)
    oid, serial = commit_elsewhere(devswift, data_fs, container_name, cache_dir,
                                   {"blob": data})["blob"]
    path = cached_path(cache_dir, oid, serial)
    os.unlink(path)
    in_the_way = path if where == "blob" else f"{os.path.dirname(path)}/.{serial.hex()}.lock"
    make_non_file(in_the_way, thing)
    read, stats, stderr = read_in_new_process(devswift, data_fs, cache_dir, container_name)
    assert read == data
    assert in_the_way in stderr
    assert stats["misses"] == 1
    assert os.path.isfile(path)
    assert where == "blob" or not os.path.exists(in_the_way)
    read, stats, _ = read_in_new_process(devswift, data_fs, cache_dir, container_name)
    assert read == data and (stats["misses"], stats["corrupt"]) == (0, 0)


def clear_in_new_process(cache_dir):
    """``BlobCache.clear()`` of *cache_dir* in a new process: its (files, bytes) as text."""
    clear = ("import sys; from zodb_swiftblobs.cache import BlobCache; "
             "print(*BlobCache(sys.argv[1], 1).clear())")
    cleared = subprocess.run([sys.executable, "-c", clear, str(cache_dir)],
                             capture_output=True, text=True, env=child_environment(),
                             timeout=120)
    assert cleared.returncode == 0, cleared.stderr[-3000:]
    return cleared.stdout.split()


def test_a_path_load_blob_returned_survives_a_clear_from_another_process(devswift, tmp_path,
                                                                         container_name):
    """As a ZEO server opens the path after loadBlob: an operator's
    ``zodb-swiftblobs cache clear`` (or another process's eviction) in between
    leaves it."""
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    data = os.urandom(50_000)
    oid, serial = commit_elsewhere(devswift, data_fs, container_name, cache_dir,
                                   {"blob": data})["blob"]
    storage = swift_storage(devswift, FileStorage(data_fs, read_only=True), container_name,
                            cache_dir)
    try:
        path = storage.loadBlob(oid, serial)
        assert clear_in_new_process(cache_dir) == ["0", "0"]
        with open(path, "rb") as f:
            assert f.read() == data
    finally:
        storage.close()
    assert clear_in_new_process(cache_dir) == ["1", str(len(data))]  # closed: not pinned


def test_paths_load_blob_returned_stay_until_opened_however_big(devswift, tmp_path,
                                                                container_name):
    """A ZEO server hands out the paths of several clients' blobs before it
    opens the first (each is sent when its turn comes): blobs of 40 % of the
    cache each stay through another process's clear until opened, and go once
    they were.  (The server registers with the storage it serves.)"""
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    blobs = {f"big{n}": os.urandom(400_000) for n in range(3)}
    revisions = commit_elsewhere(devswift, data_fs, container_name, cache_dir,
                                 {**blobs, "small": b"small"})
    storage = swift_storage(devswift, FileStorage(data_fs, read_only=True), container_name,
                            cache_dir, cache_size=1_000_000)
    storage.registerDB(StorageServerDB(None, "1"))
    try:
        paths = {name: storage.loadBlob(*revisions[name]) for name in blobs}
        assert clear_in_new_process(cache_dir) == ["1", "5"]  # only the small one went
        for name, path in paths.items():
            with open(path, "rb") as f:
                assert f.read() == blobs[name], name
        storage.loadBlob(*revisions["small"])  # this thread opened the big ones: they go
        assert clear_in_new_process(cache_dir) == ["3", "1200000"]
    finally:
        storage.close()


def test_a_storage_no_zeo_server_serves_holds_paths_not_opened_only_briefly(
        devswift, tmp_path, container_name):
    """Whatever wraps it (a ZODB database, zc.zlibstorage, DemoStorage, a
    script): a path not opened goes when its thread asks for the next."""
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    blobs = {f"big{n}": os.urandom(400_000) for n in range(3)}
    revisions = commit_elsewhere(devswift, data_fs, container_name, cache_dir, blobs)
    storage = swift_storage(devswift, FileStorage(data_fs, read_only=True), container_name,
                            cache_dir, cache_size=1_000_000)
    try:
        for name in blobs:
            storage.loadBlob(*revisions[name])
        assert clear_in_new_process(cache_dir) == ["2", "800000"]  # all but the last
    finally:
        storage.close()


def test_in_a_zodb_process_blobs_loaded_and_not_read_are_not_held(devswift, tmp_path,
                                                                  container_name):
    """ZODB asks for the path of each blob object it loads, read or not (a
    Plone listing loads many): a path not opened stays pinned only until its
    thread asks for another, or the cache would keep them all."""
    data_fs, cache_dir = str(tmp_path / "Data.fs"), tmp_path / "cache"
    blobs = {f"big{n}": os.urandom(400_000) for n in range(3)}
    commit_elsewhere(devswift, data_fs, container_name, cache_dir, {**blobs, "small": b"small"})
    db = ZODB.DB(swift_storage(devswift, FileStorage(data_fs, read_only=True),
                               container_name, cache_dir, cache_size=1_000_000))
    try:
        with db.transaction() as conn:
            for name in blobs:
                conn.root()[name]._p_activate()
            assert clear_in_new_process(cache_dir) == ["3", "800005"]  # all but the last
        for name, data in blobs.items():
            assert read_blob(db, name) == data
    finally:
        db.close()

"""Fixtures: a real OpenStack Swift on 127.0.0.1, started once per session, and a
PostgreSQL server of the tests' own (postgres_server.py)."""

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest
from cryptography.fernet import Fernet

import postgres_server

from zodb_swiftblobs.swift import Credentials, SwiftContainer
from zodb_swiftblobs.testing.devswift import DevSwift
from zodb_swiftblobs.testing.swiftconf import ACCOUNT, USER


RAM_DISK = "/dev/shm"


@pytest.fixture(scope="session")
def start_cluster(tmp_path_factory):
    """Start an embedded Swift (object data on a RAM disk when there is one)."""
    clusters = []

    def start(name, **options):
        devices = None
        if os.path.isdir(RAM_DISK) and os.access(RAM_DISK, os.W_OK):
            devices = tempfile.mkdtemp(prefix=f"zodb-swiftblobs-{name}-", dir=RAM_DISK)
        cluster = DevSwift(str(tmp_path_factory.mktemp(name)), devices=devices, **options)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()
        if cluster.devices.startswith(RAM_DISK):
            shutil.rmtree(cluster.devices, ignore_errors=True)


@pytest.fixture(scope="session")
def devswift(start_cluster):
    """The session's embedded Swift (never stopped or paused by a test)."""
    return start_cluster("devswift")


@pytest.fixture(scope="session")
def small_swift(start_cluster):
    """A cluster with small limits: 8 MiB max_file_size, 400 deletes per bulk request."""
    return start_cluster("small", max_file_size=8 << 20, max_deletes_per_request=400)


@pytest.fixture(scope="session")
def postgresql():
    """The session's PostgreSQL server (see postgres_server.py).  Without
    PostgreSQL the tests that use it skip, or fail in CI (``CI=true``)."""
    reason = postgres_server.unavailable_reason()
    if reason is not None:
        (pytest.fail if postgres_server.in_ci() else pytest.skip)(reason)
    server = postgres_server.PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def credentials_for(cluster):
    settings = cluster.settings()
    return Credentials(auth_url=settings.auth_url, user=settings.user, key=settings.key)


@pytest.fixture(scope="session")
def credentials(devswift):
    return credentials_for(devswift)


@pytest.fixture
def container_name():
    """A container name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def swift_container(credentials, container_name):
    container = SwiftContainer(credentials, container_name, large_object_threshold=4 << 20,
                               segment_size=1 << 20, deadline=30)
    yield container
    container.close()


def mint_token(cluster, *, age=0.0):
    """A genuine tempauth token for the test user, issued *age* seconds ago."""
    groups = f"{ACCOUNT},{ACCOUNT}:{USER},AUTH_{ACCOUNT}".encode()
    issued = int(time.time() - age)
    return "AUTH_ftk" + Fernet(cluster.fernet_key).encrypt_at_time(groups, issued).decode()


def proxy_log(cluster):
    with open(f"{cluster.logs}/proxy.log", errors="replace") as f:
        return f.read()


def wait_for(condition, what, timeout=60.0):
    """Poll *condition* until it returns something true, and return that; fail
    after *timeout* seconds (generous: the machine may be loaded)."""
    give_up = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.05)


def in_background(function, *args, delay=0.0, **kwargs):
    """Run *function* in a thread after *delay* seconds; returns (the thread,
    join), join() waiting for it and re-raising its error."""
    errors = []

    def run():
        time.sleep(delay)
        try:
            function(*args, **kwargs)
        except Exception as exc:  # re-raised by join()
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()

    def join():
        thread.join()
        if errors:
            raise errors[0]
    return thread, join


def awaited_locks(directory):
    """The files in *directory* whose lock (flock, lockf) a thread or process
    is waiting for: Linux lists each waiting request in /proc/locks, marked
    ``->``, with the device and inode of its file."""
    files = {}
    for name in os.listdir(directory):
        with contextlib.suppress(FileNotFoundError):
            status = os.stat(os.path.join(directory, name))
            device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}"
            files[f"{device}:{status.st_ino}"] = name
    with open("/proc/locks") as f:
        waiting = [line.split() for line in f if " -> " in line]
    return sorted({files[field] for fields in waiting for field in fields if field in files})


def logged(cluster, *needles):
    """The lines of the proxy's log that contain every one of *needles*."""
    return [line for line in proxy_log(cluster).splitlines()
            if all(needle in line for needle in needles)]


def wait_for_logged(cluster, *needles, count=1, timeout=60.0):
    """The proxy's log lines containing every one of *needles*, once there are
    at least *count* of them: the proxy writes a request's line only after
    it has answered, so a client may see the answer before the line."""
    def enough():
        lines = logged(cluster, *needles)
        return lines if len(lines) >= count else None
    return wait_for(enough, f"{count} proxy log line(s) with {needles}", timeout)


def assert_secret_free(error, *secrets):
    """No secret anywhere in *error*, its chained exceptions or their attributes
    (a chained requests exception would carry the request with its headers)."""
    seen, pending = set(), [error]
    while pending:
        item = pending.pop()
        if id(item) in seen or item is None:
            continue
        seen.add(id(item))
        text = repr(item) + str(item) if isinstance(item, BaseException) else repr(item)
        for secret in secrets:
            assert secret not in text, f"secret found in {type(item).__name__}"
        if isinstance(item, BaseException):
            pending += [item.__cause__, item.__context__, *item.args]
        for attribute in ("response", "request", "headers", "body", "reason",
                          "http_response_headers", "http_response_content"):
            pending.append(getattr(item, attribute, None))
        if isinstance(item, dict):
            pending += list(item.values())


def corrupt_on_disk(cluster, data):
    """Flip bytes in the object server's file that holds *data* (same length)."""
    for root, _, files in os.walk(cluster.devices):
        for filename in files:
            path = os.path.join(root, filename)
            if filename.endswith(".data") and os.path.getsize(path) == len(data) \
                    and read(path) == data:
                with open(path, "r+b") as f:
                    f.seek(len(data) // 2)
                    f.write(bytes(b ^ 0xFF for b in data[len(data) // 2:len(data) // 2 + 16]))
                return
    raise AssertionError("object file not found on disk")


def swift_config(cluster, container, cache_dir, base, *, prefix="", extra="",
                 database="main", gc_grace_period="0"):
    """A ZODB configuration file's text: database *database*, whose storage is
    the storage section *base* wrapped in a <swiftblobstorage> on *cluster*
    (*database* None: that storage section alone, as zodbpack reads it).
    Garbage collection deletes at once unless a *gc_grace_period* is given
    (None: the default)."""
    settings = cluster.settings()
    if gc_grace_period is not None:
        extra = f"gc-grace-period {gc_grace_period}\n    {extra}"
    storage = f"""  <swiftblobstorage>
    container {container}
    prefix {prefix}
    cache-dir {cache_dir}
    auth-url {settings.auth_url}
    user {settings.user}
    key {settings.key}
    {extra}
    {base}
  </swiftblobstorage>
"""
    if database is None:
        return f"%import zodb_swiftblobs\n{storage}"
    return f"%import zodb_swiftblobs\n<zodb {database}>\n{storage}</zodb>\n"


def child_environment():
    """The environment for a child Python that imports what this one does
    (under buildout, packages are on sys.path rather than in site-packages)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def blob_objects(view, prefix=""):
    """The objects of blob revisions *view* lists under *prefix* (not the
    prefix's ownership marker)."""
    from zodb_swiftblobs.layout import ObjectLayout

    return [o for o in view.list(prefix) if o.name != ObjectLayout(prefix).marker]


def store_blobs(db, **blobs):
    """Commit new revisions of the root's blobs of these names (created if
    missing) in one transaction; return its id."""
    from ZODB.blob import Blob

    with db.transaction() as conn:
        for name, data in blobs.items():
            if name in conn.root():
                with conn.root()[name].open("w") as f:
                    f.write(data)
            else:
                conn.root()[name] = Blob(data)
    return blob_revision(db, next(iter(blobs)))[1]


def download_cut_mid_stream(cluster, container, name, target, *, cut_after=8 << 20):
    """Download object *name* into the file *target* while the proxy of *cluster*
    is paused, killed and restarted once *cut_after* bytes have arrived (the
    download then resumes).  Returns the size of the partial file at the cut
    (None if the download finished first)."""
    errors = []

    def download():
        try:
            container.download(name, str(target))
        except Exception as exc:  # re-raised below
            errors.append(exc)
    thread = threading.Thread(target=download)
    thread.start()
    partial = []
    while not partial and thread.is_alive():
        partial = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")
                   and p.stat().st_size >= cut_after]
        time.sleep(0.001)
    cluster.pause_server("proxy")
    cut_at = partial[0].stat().st_size if partial else None
    cluster.kill_server("proxy")
    cluster.start_server("proxy")
    thread.join()
    if errors:
        raise errors[0]
    return cut_at


def blob_revision(db, name):
    """(oid, serial) of the current revision of the root's blob *name*."""
    with db.transaction() as conn:
        blob = conn.root()[name]
        blob._p_activate()
        return blob._p_oid, blob._p_serial


def with_checksum(data, **metadata):
    """The metadata of an object uploaded (unencrypted) with *metadata* and
    content *data*: with the checksum recorded at upload."""
    return {**metadata, "swiftblobs-checksum": f"sha256:{hashlib.sha256(data).hexdigest()}"}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def swift_storage(cluster, base, container, cache_dir, **options):
    """*base* wrapped in a SwiftBlobStorage on *cluster*, in *container*.
    Garbage collection deletes at once (so that tests see what it removes)
    unless a ``gc_grace_period`` is given."""
    from zodb_swiftblobs.storage import SwiftBlobStorage

    options.setdefault("gc_grace_period", 0)
    credentials = credentials_for(cluster)
    return SwiftBlobStorage(base, container=container, cache_dir=str(cache_dir),
                            auth_url=credentials.auth_url, user=credentials.user,
                            key=credentials.key, **options)


def relstorage_on(make_adapter, keep_history, blob_dir=None, **settings):
    """A RelStorage on the adapter ``make_adapter(options)`` (with blob support
    of its own when given a *blob_dir*), with RelStorage's options *settings*."""
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    options = Options(keep_history=keep_history, shared_blob_dir=True,
                      blob_dir=os.path.abspath(blob_dir) if blob_dir else None, **settings)
    return RelStorage(make_adapter(options), options=options)


def sqlite_relstorage(path, keep_history, blob_dir=None):
    """A RelStorage on SQLite in directory *path*."""
    from relstorage.adapters.sqlite.adapter import Sqlite3Adapter

    return relstorage_on(
        lambda options: Sqlite3Adapter(os.path.abspath(str(path)), {}, options=options),
        keep_history, blob_dir)


def postgres_relstorage(dsn, keep_history, blob_dir=None, **settings):
    """A RelStorage on the PostgreSQL database of connection string *dsn*."""
    from relstorage.adapters.postgresql import PostgreSQLAdapter

    return relstorage_on(lambda options: PostgreSQLAdapter(dsn=dsn, options=options),
                         keep_history, blob_dir, **settings)


@contextlib.contextmanager
def mounted(directory, fstype="tmpfs", size=None):
    """Mount a new file system of type *fstype* (of *size*, such as "2m") at
    the new *directory* for the duration; yields ``remount(mode)`` ("ro" or
    "rw").  A real read-only or full file system stops root too, whom
    permission bits do not.  Skips the test where mounting is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small or read-only file system needs root")
    os.makedirs(directory)
    options = ["-o", f"size={size}"] if size else []
    mount = subprocess.run(["mount", "-t", fstype, *options, fstype, str(directory)],
                           capture_output=True, text=True)
    if mount.returncode:
        pytest.skip(f"mounting {fstype} is not allowed here: {mount.stderr.strip()}")

    def remount(mode):
        """Remount read-only ("ro") or read-write ("rw"); a file open for
        writing at that moment (the cache's counters being flushed) makes the
        kernel refuse a read-only remount as busy, so that is tried again."""
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                return
            if "busy" not in result.stderr or time.monotonic() > deadline:
                raise subprocess.CalledProcessError(result.returncode, result.args,
                                                    result.stdout, result.stderr)
            time.sleep(0.1)

    try:
        yield remount
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def corrupt_cached_file(path):
    """Flip bytes in the middle of the cached file *path*, keeping its size,
    mode and modification time (as a failing disk would)."""
    status = os.stat(path)
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.seek(status.st_size // 2)
        damaged = bytes(b ^ 0xFF for b in f.read(16))
        f.seek(status.st_size // 2)
        f.write(damaged)
    os.chmod(path, status.st_mode & 0o7777)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def make_non_file(path, kind):
    """Put *kind* ("directory", "FIFO", "socket" or "dangling link") at *path*.

    A socket is bound by its name relative to its directory (a socket's path
    is limited to 107 bytes) and closed: its file stays, and opening it fails
    with ENXIO."""
    if kind == "directory":
        os.makedirs(os.path.join(path, "inside"))
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "socket":
        directory, here = os.path.dirname(path), os.getcwd()
        with socket.socket(socket.AF_UNIX) as bound:
            os.chdir(directory)
            try:
                bound.bind(os.path.basename(path))
            finally:
                os.chdir(here)
    elif kind == "dangling link":
        os.symlink(os.path.join(os.path.dirname(path), "nowhere"), path)
    else:
        raise ValueError(kind)

"""The three subjects the benchmarks compare, and how they are measured.

- ``raw``: python-swiftclient alone (a Connection per thread), the cluster's limit;
- ``local``: ZODB's own BlobStorage over FileStorage, the local disk's limit;
- ``swiftblobs``: SwiftBlobStorage over FileStorage (W9 also over RelStorage
  on SQLite).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import transaction
import ZODB
import ZODB.blob
import ZODB.FileStorage
from swiftclient import client as swift

from zodb_swiftblobs import SwiftBlobStorage
from zodb_swiftblobs.testing.devswift import DevSwiftSettings

MIB = 1 << 20
RAW, LOCAL, SWIFTBLOBS = "raw", "local", "swiftblobs"
SUBJECTS = (RAW, LOCAL, SWIFTBLOBS)
POPULATE_BATCH = 1000     # objects per extract-archive request
POPULATE_THREADS = 4      # extract-archive requests at a time
BULK_TIMEOUT = 600.0      # seconds a bulk request may take


# -- time and memory -------------------------------------------------------------

class Stopwatch:
    """``with Stopwatch() as watch: ...``; then ``watch.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self.started


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class CpuSeconds:
    """The CPU seconds (user and system) this process (``client``) and the
    processes *pids* (``servers``: the embedded Swift's) used in the block."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.client = self.servers = 0.0

    def __enter__(self) -> CpuSeconds:
        self._start = self._now()
        return self

    def __exit__(self, *exc_info) -> None:
        client, servers = self._now()
        self.client, self.servers = client - self._start[0], servers - self._start[1]

    def _now(self) -> tuple[float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime, sum(map(_process_cpu, self.pids))

    def text(self) -> str:
        return f"{self.client:.2f} + {self.servers:.2f} s"


def _process_cpu(pid: int) -> float:
    """CPU seconds process *pid* has used (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakMemory:
    """Peak resident memory growth of this process over a ``with`` block (MiB).

    Linux's peak-RSS counter is reset at the start (``/proc/self/clear_refs``),
    so each block is measured on its own; :meth:`so_far` reads it mid-block.
    """

    def __enter__(self) -> PeakMemory:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.baseline = _status_kib("VmRSS")
        return self

    def so_far(self) -> float:
        return max(0, _status_kib("VmHWM") - self.baseline) / 1024

    def __exit__(self, *exc_info) -> None:
        self.growth = self.so_far()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- raw python-swiftclient -----------------------------------------------------------

class RawSwift:
    """python-swiftclient alone against the benchmark cluster."""

    def __init__(self, settings: DevSwiftSettings) -> None:
        self.url, self.token = swift.get_auth(settings.auth_url, settings.user, settings.key)
        self._local = threading.local()

    def connection(self) -> swift.Connection:
        """This thread's Connection (kept, so connections are reused)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = swift.Connection(
                preauthurl=self.url, preauthtoken=self.token, retries=0)
        return conn

    def _http(self):
        """A new low-level connection for long bulk requests."""
        parsed, http = swift.http_connection(self.url)
        http.requests_args["timeout"] = BULK_TIMEOUT
        return parsed, http

    def new_container(self, label: str) -> str:
        name = f"bench-{label}-{uuid.uuid4().hex[:8]}"
        self.connection().put_container(name)
        return name

    def put_files(self, container: str, files: list[tuple[str, str]], threads: int) -> None:
        """PUT (name, path) pairs, *threads* at a time, each with its own connection."""
        def put(item):
            name, path = item
            with open(path, "rb") as body:
                self.connection().put_object(container, name, body,
                                             content_length=os.path.getsize(path))
        _run_all(put, files, threads)

    def put_large(self, container: str, name: str, path: str, segment_size: int,
                  threads: int) -> None:
        """A Static Large Object: segments PUT *threads* at a time, then the manifest."""
        size = os.path.getsize(path)
        segments_container = f"{container}_segments"
        self.connection().put_container(segments_container)
        offsets = list(range(0, size, segment_size))

        def put(index):
            offset = offsets[index]
            length = min(segment_size, size - offset)
            with open(path, "rb") as f:
                f.seek(offset)
                etag = self.connection().put_object(
                    segments_container, f"{name}/{index:08d}", _Window(f, length),
                    content_length=length)
            return {"path": f"/{segments_container}/{name}/{index:08d}", "etag": etag,
                    "size_bytes": length}
        with ThreadPoolExecutor(threads) as pool:
            manifest = list(pool.map(put, range(len(offsets))))
        self.connection().put_object(container, name, json.dumps(manifest),
                                     query_string="multipart-manifest=put")

    def delete_large_objects(self, container: str) -> None:
        """Delete every object of *container*, each a large object with its segments."""
        conn = self.connection()
        for entry in conn.get_container(container, full_listing=True)[1]:
            conn.delete_object(container, entry["name"], query_string="multipart-manifest=delete")

    def get_to_file(self, container: str, name: str, path: str, check: bool = False) -> int:
        """Streamed GET of one object into a file; returns its size.  With
        *check*, the bytes' MD5 is compared with the object's ETag."""
        headers, body = self.connection().get_object(container, name, resp_chunk_size=MIB)
        size, md5 = 0, hashlib.md5(usedforsecurity=False)
        with open(path, "wb") as out:
            for chunk in body:
                out.write(chunk)
                if check:
                    md5.update(chunk)
                size += len(chunk)
        if check and md5.hexdigest() != headers["etag"].strip('"'):
            raise RuntimeError(f"{name}: MD5 mismatch")
        return size

    def bulk_delete(self, container: str, names: list[str], per_request: int) -> None:
        """Bulk-delete middleware requests of *per_request* names, one after the other."""
        parsed, http = self._http()
        try:
            for start in range(0, len(names), per_request):
                body = "\n".join(f"/{quote(container)}/{quote(n)}"
                                 for n in names[start:start + per_request]).encode()
                http.request("POST", f"{parsed.path}?bulk-delete", data=body, headers={
                    "X-Auth-Token": self.token, "Content-Type": "text/plain",
                    "Accept": "application/json"})
                response = http.getresponse()
                result = response.read()
                if response.status != 200 or b'"Errors": []' not in result:
                    raise RuntimeError(f"bulk delete failed: {response.status} {result[:200]}")
        finally:
            http.close()

    def populate(self, container: str, names: list[str], size: int = 16) -> None:
        """Create many small objects quickly (bulk middleware's extract-archive)."""
        payload = os.urandom(size)

        def archive(batch: list[str]) -> None:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name in batch:
                    info = tarfile.TarInfo(name)
                    info.size = size
                    tar.addfile(info, io.BytesIO(payload))
            parsed, http = self._http()
            try:
                http.request("PUT", f"{parsed.path}/{quote(container)}?extract-archive=tar",
                             data=buffer.getvalue(), headers={
                                 "X-Auth-Token": self.token, "Accept": "application/json"})
                response = http.getresponse()
                result = response.read()
                if b'"Errors": []' not in result:
                    raise RuntimeError(f"extract-archive failed: {result[:300]}")
            finally:
                http.close()
        batches = [names[i:i + POPULATE_BATCH] for i in range(0, len(names), POPULATE_BATCH)]
        _run_all(archive, batches, POPULATE_THREADS)

    def count(self, container: str, prefix: str = "") -> int:
        _, listing = self.connection().get_container(container, prefix=prefix or None,
                                                     full_listing=True)
        return len(listing)

    def max_deletes_per_request(self) -> int:
        info = self.connection().get_capabilities()
        return int(info.get("bulk_delete", {}).get("max_deletes_per_request", 10000))


class _Window:
    """*length* bytes of an open file, read in large chunks (an upload body)."""

    def __init__(self, f, length: int) -> None:
        self._f, self._left = f, length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._f.read(size)
        self._left -= len(data)
        return data


def _run_all(function, items, threads: int) -> list:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(function, items))


# -- ZODB databases ----------------------------------------------------------------------

@dataclass
class Databases:
    """Where the ZODB subjects keep their files, and how they reach Swift."""

    directory: str
    settings: DevSwiftSettings
    large_object_threshold: int | None = None
    segment_size: int | None = None

    def _directory(self, *parts: str) -> str:
        path = os.path.join(self.directory, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def local(self, label: str) -> ZODB.DB:
        """ZODB's BlobStorage over a FileStorage (reopened when *label* is reused)."""
        storage = ZODB.FileStorage.FileStorage(
            os.path.join(self._directory(label), "Data.fs"),
            blob_dir=os.path.join(self._directory(label), "blobs"))
        return ZODB.DB(storage)

    def relstorage(self, label: str) -> Any:
        """A history-free RelStorage on SQLite, without blobs of its own
        (reopened when *label* is reused)."""
        from relstorage.adapters.sqlite.adapter import Sqlite3Adapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage

        options = Options(keep_history=False)
        return RelStorage(Sqlite3Adapter(self._directory(label, "sqlite"), {},
                                         options=options), options=options)

    def swift_storage(self, label: str, container: str, *, cache: str = "cache",
                      cache_size: int = 100 << 30, prefix: str = "", base: Any = None,
                      **options) -> SwiftBlobStorage:
        """SwiftBlobStorage over *base*, by default a FileStorage (reopened when
        *label* is reused), with the cache directory *cache* (a new one is a
        cold cache) and other keyword *options* of SwiftBlobStorage (the
        run's large object threshold and segment size unless given)."""
        if self.large_object_threshold:
            options.setdefault("large_object_threshold", self.large_object_threshold)
        if self.segment_size:
            options.setdefault("segment_size", self.segment_size)
        if base is None:
            base = ZODB.FileStorage.FileStorage(
                os.path.join(self._directory(label), "Data.fs"))
        return SwiftBlobStorage(
            base, container, cache_dir=self._directory(label, cache),
            cache_size=cache_size, prefix=prefix, auth_url=self.settings.auth_url,
            user=self.settings.user, key=self.settings.key, **options)

    def swift(self, label: str, container: str, **options) -> ZODB.DB:
        return ZODB.DB(self.swift_storage(label, container, **options))


@contextmanager
def opened(db: ZODB.DB, close_db: bool = True):
    """A connection to *db* with its own transaction manager; closes both, and
    *db* too unless *close_db* is false."""
    manager = transaction.TransactionManager()
    conn = db.open(manager)
    try:
        yield conn, manager
    finally:
        manager.abort()
        conn.close()
        if close_db:
            db.close()


def add_blobs(conn, manager, datas: dict[str, bytes | str],
              into: Any = None) -> list[ZODB.blob.Blob]:
    """New blobs in the root (or the mapping *into*), written but not committed:
    *datas* maps a key to bytes, or to the path of a file the blob consumes."""
    root = conn.root() if into is None else into
    blobs = []
    for key, data in datas.items():
        blob = ZODB.blob.Blob()
        conn.add(blob)
        if isinstance(data, bytes):
            with blob.open("w") as f:
                f.write(data)
        else:
            blob.consumeFile(data)
        root[key] = blob
        blobs.append(blob)
    return blobs

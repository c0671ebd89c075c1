"""Static Large Objects: segment names, segment uploads and copies with their
manifest, the manifest read back, and the removal of segments left behind."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import quote

from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from ..names import SEGMENT_CONTAINER_SUFFIX
from .cluster import Cluster
from .errors import NotFoundError, SwiftError, SwiftUnavailableError
from .listing import BulkDeleter
from .manifests import (Manifest, expand, get_manifest, segment_length, segment_md5,
                        split_path)
from .objects import StoredObject, metadata_of
from .transport import TimeBudget, Transport, raise_for_bulk_result
from .upload import Uploader, UploadSource

log = logging.getLogger(__name__)

# A manifest entry, as sent: {"path": "/<container>/<segment>", "etag": ..., "size_bytes": ...}
ManifestEntry = dict


def segment_container_of(container: str) -> str:
    """The container holding the segments of *container*'s large objects."""
    return f"{container}{SEGMENT_CONTAINER_SUFFIX}"


def new_segment_prefix(name: str) -> str:
    """The prefix of the segments of one upload (or copy) of object *name*:
    ``<name>/<upload id>/``; a segment's name adds its index."""
    return f"{name}/{uuid.uuid4().hex}/"


def segment_name(prefix: str, index: int) -> str:
    """The name of segment *index* (from 0) under *prefix*."""
    return f"{prefix}{index:08d}"


def slo_etag(entries: list[ManifestEntry]) -> str:
    """The etag Swift gives the manifest of *entries*: the MD5 of their
    etags, one after the other."""
    digest = hashlib.md5(usedforsecurity=False)
    for entry in entries:
        digest.update(entry["etag"].encode("ascii"))
    return digest.hexdigest()


def segment_group(segment: str) -> tuple[str, str] | None:
    """(object name, segment prefix) of the segment named *segment*; None when
    it is not named as this package names segments."""
    parts = segment.rsplit("/", 2)
    if len(parts) != 3:
        return None
    return parts[0], f"{parts[0]}/{parts[1]}/"


class LargeObjects:
    """The large objects of *container*, their segments in its segment
    container, *segment_concurrency* segments at a time."""

    def __init__(self, transport: Transport, cluster: Cluster, uploader: Uploader,
                 bulk: BulkDeleter, container: str, *, segment_size: int,
                 segment_concurrency: int) -> None:
        self.transport, self.cluster, self.uploader, self.bulk = \
            transport, cluster, uploader, bulk
        self.container = container
        self.segment_container = segment_container_of(container)
        self.segment_size = segment_size
        self.segment_concurrency = segment_concurrency
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def executor(self) -> ThreadPoolExecutor:
        """The pool segments are sent and checked in (made on first use)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.segment_concurrency,
                                                thread_name_prefix="swift-segment")
            return self._pool

    def close(self) -> None:
        """Wait for the segment pool's work and end it."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool:
            pool.shutdown(wait=True)

    def upload(self, name: str, source: UploadSource, headers: dict[str, str],
               budget: TimeBudget) -> StoredObject:
        """Upload *source* as large object *name*, in segments."""
        self.upload_manifest(name, source, headers, budget, container=self.container)
        return StoredObject(name, source.size, None, True, None,
                            metadata_of(source.with_checksum(headers)))

    def upload_manifest(self, name: str, source: UploadSource, headers: dict[str, str],
                        budget: TimeBudget, *, container: str) -> list[ManifestEntry]:
        """Upload *source* in segments (one at least), then the manifest listing
        them as object *name* of *container* with *headers* and the checksum of
        the content (computed while the segments are sent); its entries."""
        size = source.size
        slo = self.cluster.info().get("slo", {})
        max_segments = int(slo.get("max_manifest_segments", 1000))
        segment_size = min(max(self.segment_size, math.ceil(size / max_segments),
                               int(slo.get("min_segment_size", 1))),
                           self.cluster.max_file_size)
        self.cluster.ensure_container(self.segment_container)

        def sender(offset: int, length: int) -> Callable[[str], ManifestEntry]:
            def send(segment: str) -> ManifestEntry:
                md5 = self.uploader.put_file(self.segment_container, segment, source, offset,
                                             length, {}, budget)
                return self._entry(segment, md5, length)
            return send
        jobs = [sender(offset, min(segment_size, size - offset))
                for offset in range(0, max(size, 1), segment_size)]
        entries = self._store(name, jobs, lambda: source.with_checksum(headers), budget,
                              "upload", container=container)
        log.debug("uploaded %r as a large object of %d segments", name, len(jobs))
        return entries

    def copy(self, source: StoredObject, destination: str, headers: dict[str, str],
             budget: TimeBudget) -> None:
        """Copy large object *source* to *destination*, with copies of its segments
        (so that deleting either object never breaks the other)."""
        def copier(segment: dict) -> Callable[[str], ManifestEntry]:
            container, name = split_path(segment["name"])

            def copy(copied: str) -> ManifestEntry:
                self.transport.call("segment copy", copied, lambda u, t, h: swift.copy_object(
                    u, t, container, name, destination=f"/{self.segment_container}/{copied}",
                    http_conn=h), budget=budget)
                return self._entry(copied, segment["hash"], segment["bytes"])
            return copy
        segments = self.manifest(source.name, operation="copy", budget=budget)
        self._store(destination, [copier(segment) for segment in segments], lambda: headers,
                    budget, "copy")

    def _entry(self, segment: str, md5: str, size: int) -> ManifestEntry:
        return {"path": f"/{self.segment_container}/{segment}", "etag": md5, "size_bytes": size}

    def _store(self, name: str, jobs: list[Callable[[str], ManifestEntry]],
               headers: Callable[[], dict[str, str]], budget: TimeBudget, operation: str, *,
               container: str | None = None) -> list[ManifestEntry]:
        """Make the segments of large object *name* of *container* (by default
        this one; each job makes the segment it is given the name of), then its
        manifest with the *headers* made (called while the segments are
        made); its entries.  On a failure the segments made are removed,
        unless the manifest may be stored."""
        container = container or self.container
        prefix = new_segment_prefix(name)
        pool = self.executor()
        futures = [pool.submit(job, segment_name(prefix, index))
                   for index, job in enumerate(jobs)]
        entries = None
        try:
            manifest_headers = headers()
            entries = [future.result() for future in futures]
            self.put_manifest(name, entries, manifest_headers, budget, operation,
                              container=container)
        except BaseException as exc:
            made = _stop(futures)
            if entries is not None and isinstance(exc, SwiftUnavailableError):
                stored = self.manifest_stored(name, prefix, budget, container=container)
                if stored:
                    return entries
                if stored is None:
                    raise  # unknown: keep the segments rather than break a stored manifest
            self.remove_segments(name, [segment_name(prefix, index) for index in made])
            raise
        return entries

    def put_manifest(self, name: str, entries: list[ManifestEntry], headers: dict[str, str],
                     budget: TimeBudget, operation: str, *, container: str) -> None:
        """Store the manifest of *entries* as object *name* of *container*
        with *headers* (and its SLO etag, which Swift checks)."""
        body = json.dumps(entries).encode()
        headers = {**headers, "Etag": slo_etag(entries)}
        self.uploader.put_creating_container(
            container, name, lambda u, t, h: swift.put_object(
                u, t, container, name, body, content_length=len(body), headers=headers,
                query_string="multipart-manifest=put", http_conn=h),
            budget, operation)

    def delete(self, name: str, token: str, http: tuple, *,
               container: str | None = None) -> None:
        """The request deleting large object *name* of *container* (by default
        this one) with its segments (NotLargeObject when it is a plain object)."""
        path = f"{http[0].path}/{quote(container or self.container)}/{quote(name)}"
        http[1].request("DELETE", f"{path}?multipart-manifest=delete",
                        headers={"X-Auth-Token": token, "Accept": "application/json"})
        result = raise_for_bulk_result(http[1].getresponse())
        if result.get("Number Not Found") and not result.get("Number Deleted"):
            raise ClientException("not found", http_status=404)

    def manifest(self, name: str, *, operation: str = "manifest",
                 deadline: float | None = None,
                 budget: TimeBudget | None = None) -> list[dict]:
        """The leaf segments of large object *name*, as Swift lists them (nested
        manifests expanded; NotFoundError when one is missing), within
        *budget*, else *deadline* seconds."""
        return self.read_manifest(name, operation=operation, deadline=deadline,
                                  budget=budget).complete(name, operation).segments

    def read_manifest(self, name: str, *, operation: str = "manifest",
                      deadline: float | None = None,
                      budget: TimeBudget | None = None) -> Manifest:
        """The manifest of large object *name*, nested manifests expanded
        (those missing noted), within *budget*, else *deadline* seconds."""
        budget = budget or self.transport.budget(deadline)
        _, entries = get_manifest(self.transport, self.container, name, operation=operation,
                                  budget=budget)
        return expand(self.transport, entries, name=name, operation=operation, budget=budget)

    def manifest_stored(self, name: str, prefix: str, budget: TimeBudget, *,
                        container: str) -> bool | None:
        """Whether the manifest of object *name* of *container* whose first
        segment's name (in the segment container) starts with *prefix* is in
        Swift; None when that cannot be told within what is left of *budget*
        (one attempt when nothing is)."""
        try:
            _, segments = get_manifest(self.transport, container, name,
                                       operation="manifest check",
                                       budget=TimeBudget(max(0.0, budget.remaining())))
        except NotFoundError:
            return False
        except (SwiftError, ValueError):
            return None
        first = segments[0].get("name", "") if segments else ""
        return first.startswith(f"/{self.segment_container}/{prefix}")

    def remove_segments(self, name: str, segments: Iterable[str]) -> None:
        """Remove the *segments* of a failed upload of *name* (logged if that fails)."""
        try:
            self.bulk.delete(self.segment_container, segments)
        except Exception as exc:
            log.warning("could not remove the segments of failed upload %r: %s", name, exc)

    def examine(self, name: str) -> tuple[str | None, int | None]:
        """What is wrong with large object *name* (None: nothing), and when the
        first of its segments or nested manifests scheduled for deletion goes
        (None: none is)."""
        manifest = self.read_manifest(name)
        problem = f"its segment {manifest.missing[0]} is missing" if manifest.missing else None
        deletions = [int(headers["x-delete-at"]) for _, headers in manifest.nested
                     if headers.get("x-delete-at")]
        for segment in manifest.segments:
            segment_problem, delete_at = self._segment_state(segment)
            problem = problem or segment_problem
            if delete_at is not None:
                deletions.append(delete_at)
        return problem, min(deletions, default=None)

    def holds(self, name: str, source: UploadSource) -> bool:
        """Whether the segments of large object *name* hold the bytes of *source*,
        each in place and of the MD5 of its part of them."""
        manifest = self.read_manifest(name)
        segments = manifest.segments
        offsets = list(itertools.accumulate(map(segment_length, segments), initial=0))
        if manifest.missing or offsets[-1] != source.size:
            return False

        def matches(index: int) -> bool:
            segment = segments[index]
            return self._segment_state(segment)[0] is None and \
                source.md5(offsets[index], segment_length(segment)) == segment_md5(segment)
        return all(self.executor().map(matches, range(len(segments))))

    def segment_groups(self, name: str) -> set[str]:
        """The segment prefixes (see :func:`segment_group`) that the manifest of
        large object *name* refers to; empty when there is no such object."""
        try:
            segments = self.read_manifest(name).segments
        except NotFoundError:
            return set()
        container_path = f"/{self.segment_container}/"
        groups = (segment_group(segment["name"][len(container_path):])
                  for segment in segments if segment["name"].startswith(container_path))
        return {group[1] for group in groups if group is not None}

    def segment_paths(self, name: str) -> list[tuple[str, str]]:
        """(container, name) of each nested manifest (outermost first), then of
        each leaf segment, of large object *name* (those found)."""
        manifest = self.read_manifest(name)
        return [split_path(path) for path, _ in manifest.nested] + \
            [split_path(segment["name"]) for segment in manifest.segments]

    def _segment_state(self, segment: dict) -> tuple[str | None, int | None]:
        """What is wrong with a manifest's *segment* (None: nothing), and when
        Swift deletes it (None: not scheduled)."""
        container, object_name = split_path(segment["name"])
        try:
            headers = self.transport.call("head", object_name, lambda u, t, h: (
                swift.head_object(u, t, container, object_name, http_conn=h)))
        except NotFoundError:
            return f"its segment {segment['name']} is missing", None
        delete_at = int(headers["x-delete-at"]) if headers.get("x-delete-at") else None
        size = int(headers.get("content-length", -1))
        if size != int(segment["bytes"]):
            return (f"its segment {segment['name']} has {size} bytes, its manifest "
                    f"says {segment['bytes']}"), delete_at
        return None, delete_at


def _stop(futures: list[Future]) -> list[int]:
    """Cancel the *futures* not started, wait for the others; the indexes of those."""
    for future in futures:
        future.cancel()
    started = [index for index, future in enumerate(futures) if not future.cancelled()]
    for index in started:
        futures[index].exception()
    return started

"""Deletions Swift carries out later (X-Delete-At): scheduled, cancelled and
looked up for an object and, for a large object, its nested manifests and
leaf segments."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from .large_objects import LargeObjects
from .objects import DELETION_MARK, StoredObject, deletion_mark, is_large, without_deletion_mark
from .posts import head_headers, post_keeping
from .transport import Transport


class DeletionSchedule:
    """The scheduled deletions of the objects of *container* (and of their
    nested manifests and segments, found through *large_objects*)."""

    def __init__(self, transport: Transport, large_objects: LargeObjects,
                 container: str) -> None:
        self.transport = transport
        self.large_objects = large_objects
        self.container = container

    def schedule(self, name: str, after: float, *,
                 container: str | None = None) -> int | None:
        """As :meth:`.SwiftContainer.schedule_deletion`."""
        container = container or self.container
        at = math.ceil(time.time() + after)
        headers = self._head_in(container, name)
        if headers.get("x-delete-at"):
            return int(headers["x-delete-at"])
        self._post_deletion(container, name, headers, at)
        if is_large(headers):
            for segment_container, segment in self.large_objects.segment_paths(name):
                segment_headers = self._head_in(segment_container, segment)
                if not segment_headers.get("x-delete-at"):
                    self._post_deletion(segment_container, segment, segment_headers, at)
        return None

    def cancel(self, name: str) -> bool:
        """As :meth:`.SwiftContainer.cancel_deletion`."""
        headers = self._head_in(self.container, name)
        cancelled = False
        if is_large(headers):  # leaf segments first, nested manifests after
            for container, segment in reversed(self.large_objects.segment_paths(name)):
                segment_headers = self._head_in(container, segment)
                if segment_headers.get("x-delete-at"):
                    self._post_deletion(container, segment, segment_headers, None)
                    cancelled = True
        if headers.get("x-delete-at") or deletion_mark(headers.get("content-type")):
            self._post_deletion(self.container, name, headers, None)
            cancelled = True
        return cancelled

    def scheduled(self, name: str) -> int | None:
        """As :meth:`.SwiftContainer.deletion_scheduled`."""
        headers = self._head_in(self.container, name)
        times = [int(headers["x-delete-at"])] if headers.get("x-delete-at") else []
        if is_large(headers):
            for container, segment in self.large_objects.segment_paths(name):
                segment_headers = self._head_in(container, segment)
                if segment_headers.get("x-delete-at"):
                    times.append(int(segment_headers["x-delete-at"]))
        return min(times, default=None)

    def unschedule_copy(self, source: StoredObject, copy: str) -> None:
        """Cancel the deletion schedule that object *copy* got from *source*."""
        if source.delete_at is not None or source.marked_for_deletion is not None:
            self.cancel(copy)

    def _head_in(self, container: str, name: str) -> Mapping[str, str]:
        return head_headers(self.transport, container, name)

    def _post_deletion(self, container: str, name: str, headers: Mapping[str, str],
                       at: int | None) -> None:
        """Schedule the deletion of an object at *at* (None: cancel it) with a
        POST that keeps what its *headers* (of a HEAD) say."""
        content_type = without_deletion_mark(headers.get("content-type")
                                              or "application/octet-stream")
        if at is None:
            changes = {"x-delete-at": None, "x-remove-delete-at": "1",
                       "content-type": content_type}
        else:
            changes = {"x-delete-at": str(at),
                       "content-type": f"{content_type};{DELETION_MARK}={at}"}
        post_keeping(self.transport, container, name, headers, changes,
                     operation="deletion schedule")

"""Static Large Object manifests read back, nested manifests expanded: every
reader of a large object sees its leaf segments, in order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from swiftclient import client as swift

from .errors import NotFoundError, PermanentSwiftError
from .transport import TimeBudget, Transport

MAX_NESTING = 10  # Swift's limit on manifests within manifests


@dataclass
class Manifest:
    """A large object's manifest with its nested manifests expanded.

    ``segments`` are the leaf entries as Swift lists them (``name``: the
    path ``/<container>/<object>``, ``hash``, ``bytes``, and ``range`` when
    only part of the segment is used), in the order of the content.
    ``nested`` holds the path and the GET response headers of each nested
    manifest read, outermost first; ``missing`` the paths of those not found
    (their segments are not in ``segments`` then).
    """

    segments: list[dict] = field(default_factory=list)
    nested: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def complete(self, name: str, operation: str) -> Manifest:
        """This manifest; NotFoundError naming the first missing nested manifest
        of large object *name*, if any."""
        if self.missing:
            raise NotFoundError(f"its nested manifest {self.missing[0]} is missing",
                                operation=operation, name=name, status=404)
        return self


def split_path(path: str) -> tuple[str, str]:
    """(container, object name) of a manifest entry's ``/<container>/<object>``."""
    container, _, name = path.lstrip("/").partition("/")
    return container, name


def get_manifest(transport: Transport, container: str, name: str, *, operation: str,
                 budget: TimeBudget) -> tuple[Mapping[str, str], list[dict]]:
    """The headers and the entries of the manifest of large object *name*
    (NotFoundError when there is no such object)."""
    headers, body = transport.call(operation, name, lambda u, t, h: swift.get_object(
        u, t, container, name, query_string="multipart-manifest=get", http_conn=h),
        budget=budget)
    return headers, json.loads(body)


def expand(transport: Transport, entries: list[dict], *, name: str, operation: str,
           budget: TimeBudget) -> Manifest:
    """The manifest of large object *name* whose top-level *entries* are given:
    each nested manifest (an entry with ``sub_slo``) read from its container
    and replaced by its leaf segments, recursively, in order."""
    manifest = Manifest()
    _expand_into(manifest, transport, entries, name, operation, budget, 1)
    return manifest


def _expand_into(manifest: Manifest, transport: Transport, entries: list[dict], name: str,
                 operation: str, budget: TimeBudget, depth: int) -> None:
    for entry in entries:
        if not entry.get("sub_slo"):
            manifest.segments.append(entry)
            continue
        if depth >= MAX_NESTING:
            raise PermanentSwiftError(f"its manifests are nested more than {MAX_NESTING} "
                                      "deep", operation=operation, name=name)
        container, inner = split_path(entry["name"])
        try:
            headers, inner_entries = get_manifest(transport, container, inner,
                                                  operation=operation, budget=budget)
        except NotFoundError:
            manifest.missing.append(entry["name"])
            continue
        manifest.nested.append((entry["name"], headers))
        inner_manifest = Manifest()
        _expand_into(inner_manifest, transport, inner_entries, name, operation, budget,
                     depth + 1)
        leaves = inner_manifest.segments
        if "range" in entry:
            leaves = _clipped(leaves, *range_bounds(entry["range"]))
        manifest.segments += leaves
        manifest.nested += inner_manifest.nested
        manifest.missing += inner_manifest.missing


def range_bounds(text: str) -> tuple[int, int]:
    """First and last byte of a manifest entry's ``range`` (``"first-last"``)."""
    first, _, last = text.partition("-")
    return int(first), int(last)


def segment_bounds(segment: dict) -> tuple[int, int]:
    """First and last byte of its segment object that a leaf entry uses."""
    if "range" in segment:
        return range_bounds(segment["range"])
    return 0, int(segment["bytes"]) - 1


def segment_length(segment: dict) -> int:
    """How many bytes of the content a leaf entry gives."""
    first, last = segment_bounds(segment)
    return last - first + 1


def segment_md5(segment: dict) -> str | None:
    """The MD5 that the bytes a leaf entry gives must have; None when the
    manifest does not tell it (only a range of the segment is used)."""
    return None if "range" in segment else segment["hash"]


def _clipped(segments: list[dict], first: int, last: int) -> list[dict]:
    """The leaf entries giving bytes *first* to *last* of the content of *segments*."""
    clipped, start = [], 0
    for segment in segments:
        low, high = segment_bounds(segment)
        end = start + high - low
        taken_first, taken_last = max(first, start), min(last, end)
        if taken_first <= taken_last:
            piece = dict(segment)
            if (taken_first, taken_last) != (start, end):
                piece["range"] = f"{low + taken_first - start}-{low + taken_last - start}"
            clipped.append(piece)
        start = end + 1
    return clipped

"""POSTs that change part of an object's metadata and keep the rest.

Swift's POST replaces all of an object's X-Object-Meta-* headers and some
others, and drops its scheduled deletion (X-Delete-At) unless it is sent
again: whatever a HEAD of the object showed is sent again with the change.
"""

from __future__ import annotations

from collections.abc import Mapping

from swiftclient import client as swift

from .transport import Transport

# Headers an object POST replaces besides X-Object-Meta-*: sent again with it.
POST_REPLACED_HEADERS = ("content-disposition", "content-encoding", "content-language",
                         "cache-control", "expires", "x-robots-tag")
KEPT_HEADERS = (*POST_REPLACED_HEADERS, "content-type", "x-delete-at")


def head_headers(transport: Transport, container: str, name: str) -> Mapping[str, str]:
    """The headers of a HEAD of object *name* of *container* (lower-case names)."""
    return transport.call("head", name, lambda u, t, h: swift.head_object(
        u, t, container, name, http_conn=h))


def post_keeping(transport: Transport, container: str, name: str,
                 headers: Mapping[str, str], changes: Mapping[str, str | None], *,
                 operation: str) -> None:
    """POST *changes* (header names in lower case; a None value drops that
    header) to object *name* of *container*, keeping what its *headers* (of
    a HEAD) say: its metadata, content type, scheduled deletion and the other
    headers a POST replaces."""
    post = {key.lower(): value for key, value in headers.items()
            if key.lower().startswith("x-object-meta-") or key.lower() in KEPT_HEADERS}
    post = {key: value for key, value in {**post, **changes}.items() if value is not None}
    transport.call(operation, name, lambda u, t, h: swift.post_object(
        u, t, container, name, headers=post, http_conn=h))

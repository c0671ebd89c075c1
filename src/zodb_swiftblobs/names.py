"""Container and object names that reach Swift exactly as they are written.

Object names travel in request paths.  Percent-encoding keeps ``?``, ``#``,
``%``, spaces and non-ASCII letters intact, but not ``.`` and ``..`` path
segments: the HTTP stack removes them (RFC 3986 dot-segment removal), so
``c/../victim/x`` would address container ``victim``.  Names with such
segments, with empty segments, or with control characters are refused
before any request is made.
"""

from __future__ import annotations

import unicodedata

MAX_CONTAINER_NAME = 256  # bytes: Swift's default max_container_name_length
MAX_OBJECT_NAME = 1024  # bytes: Swift's default max_object_name_length
SEGMENT_CONTAINER_SUFFIX = "_segments"
# The longest object name this package makes under a prefix: a segment of a
# pending upload, commits/<token>/<oid>/<upload id>/<index> (8+16+1+16+1+32+1+8).
LONGEST_NAME_UNDER_PREFIX = 83


def check_container(name: str) -> None:
    """ValueError unless Swift stores objects in container *name* (and in its
    segment container) under exactly that name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid container name {name!r}: it must be a non-empty text")
    if "/" in name:
        raise ValueError(f"invalid container name {name!r}: it must not contain '/'")
    if name in (".", ".."):
        raise ValueError(f"invalid container name {name!r}: HTTP rewrites the paths of "
                         "'.' and '..', so Swift would never see this name")
    _check_characters("container name", name)
    limit = MAX_CONTAINER_NAME - len(SEGMENT_CONTAINER_SUFFIX)
    if len(name.encode()) > limit:
        raise ValueError(f"invalid container name {name!r}: at most {limit} bytes (Swift "
                         f"allows {MAX_CONTAINER_NAME}, and large objects go to "
                         f"'<container>{SEGMENT_CONTAINER_SUFFIX}')")


def check_prefix(prefix: str) -> None:
    """ValueError unless every object name under *prefix* reaches Swift exactly:
    empty, or segments ending in ``/``, none empty, ``.`` or ``..``."""
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a text, not {type(prefix).__name__}")
    if not prefix:
        return
    if not prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r} must be empty or end with '/'")
    _check_characters("prefix", prefix)
    problem = rewritten_segment(prefix[:-1])
    if problem:
        raise ValueError(f"prefix {prefix!r} {problem}")
    limit = MAX_OBJECT_NAME - LONGEST_NAME_UNDER_PREFIX
    if len(prefix.encode()) > limit:
        raise ValueError(f"prefix {prefix!r} is too long: at most {limit} bytes, so that "
                         f"object names stay within Swift's {MAX_OBJECT_NAME}")


def rewritten_segment(path: str) -> str | None:
    """Why HTTP or Swift would not keep the ``/``-separated *path* as it is
    (None when it would)."""
    if has_dot_segment(path):
        return ("has a '.' or '..' segment: HTTP rewrites such paths, so the objects "
                "would land under another name (or in another container)")
    if "" in path.split("/"):
        return "has an empty segment (a leading '/' or '//'): Swift would read it otherwise"
    return None


def has_dot_segment(path: str) -> bool:
    """Whether the ``/``-separated *path* has a ``.`` or ``..`` segment."""
    return any(segment in (".", "..") for segment in path.split("/"))


def _check_characters(what: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"invalid {what} {name!r}: it is not valid Unicode text") from None
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ValueError(f"invalid {what} {name!r}: it contains the control character "
                         f"{control!r}")

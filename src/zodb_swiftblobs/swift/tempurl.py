"""Temporary URLs: the TempURL key, and signed GET and HEAD URLs of objects."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlencode, urlparse, urlunparse

from swiftclient import client as swift
from swiftclient.utils import generate_temp_url

from .transport import Transport

TEMP_URL_METHODS = ("GET", "HEAD")  # blob revisions are immutable: no signed writes
TEMP_URL_KEY_HEADERS = ("x-container-meta-temp-url-key", "x-container-meta-temp-url-key-2")
ACCOUNT_TEMP_URL_KEY_HEADERS = ("x-account-meta-temp-url-key", "x-account-meta-temp-url-key-2")


def temp_url_key(transport: Transport, container: str) -> str | None:
    """The account's TempURL key, else *container*'s; None when neither is set.

    The account's comes first: it also reaches a large object's segments,
    in another container (with a container's key, Swift answers 409)."""
    headers = transport.call("account check", "", lambda u, t, h:
                             swift.head_account(u, t, http_conn=h))
    for header in ACCOUNT_TEMP_URL_KEY_HEADERS:
        if headers.get(header):
            return headers[header]
    headers = transport.call("container check", container, lambda u, t, h:
                             swift.head_container(u, t, container, http_conn=h))
    for header in TEMP_URL_KEY_HEADERS:
        if headers.get(header):
            return headers[header]
    return None


def temp_url_method(method: str) -> str:
    """*method* in capitals; ValueError unless temporary URLs are signed for it."""
    method = method.upper()
    if method not in TEMP_URL_METHODS:
        raise ValueError(f"temporary URLs are for {' and '.join(TEMP_URL_METHODS)} "
                         f"only, not {method}: stored blob revisions never change")
    return method


def temp_url(transport: Transport, container: str, name: str, *, key: str, method: str,
             seconds: int, filename: str | None) -> str:
    """An absolute TempURL giving *method* access to object *name* of
    *container* for *seconds*, signed with *key*; with *filename*, Swift
    answers with ``Content-Disposition: attachment`` under that name."""
    if not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"a temporary URL needs a positive number of seconds, "
                         f"not {seconds!r}")
    url, _ = transport.call("authentication", "", lambda u, t, h: (u, t))
    parsed = urlparse(url)
    # Swift signs the path as it reads it, unquoted; the URL carries it quoted.
    path = f"{unquote(parsed.path).rstrip('/')}/{container}/{name}"
    query = generate_temp_url(path, seconds, key, method, digest="sha256")[len(path):]
    if filename:
        query += "&" + urlencode({"filename": filename})
    return urlunparse((parsed.scheme, parsed.netloc, "", "", "", "")) + quote(path) + query

"""Requests to Swift: time budgets, per-thread connections, and the retry loop
that classifies each failure as worth retrying or not."""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from swiftclient import client as swift
from swiftclient.exceptions import ClientException

from ..names import has_dot_segment
from .auth import Credentials, TokenSource, hide_url_passwords
from .errors import (AuthenticationError, AuthServiceUnreachable, ChecksumMismatchError,
                     DownloadRestart, LocalFileFailure, NotFoundError, NotLargeObject,
                     PermanentSwiftError, SendTimeUp, SwiftError, SwiftUnavailableError,
                     is_retryable_status)
from .swiftclient_log import configure_swiftclient_log

log = logging.getLogger(__name__)
# What an operation waits for while Swift fails to answer: one INFO record per
# wait, at most one a NOTE_INTERVAL per SwiftContainer (the command line shows them).
WAITING_LOGGER = "zodb_swiftblobs.swift.waiting"
waiting_log = logging.getLogger(WAITING_LOGGER)
NOTE_INTERVAL = 1.0
configure_swiftclient_log()

CHUNK_SIZE = 1 << 20
MIB = 1 << 20
# No request waits less for its answer than this (or than the timeout, when
# shorter), however little of its time is left: a client that gives up
# sooner abandons requests that Swift still carries out after it has left.
MIN_REQUEST_WAIT = 1.0
TLS_VERIFICATION = ("certificate verify", "hostname", "CERTIFICATE", "X509", "PEM", " crl ")
# Network failures only: local file errors (a full disk) are not retried.  An
# invalid URL is a RequestException too, but a permanent one (caught first).
INVALID_REQUEST_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    ValueError,
)
TRANSPORT_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)
# What the retry loop judges (anything else is raised as it is).
JUDGED_ERRORS = (ClientException, AuthServiceUnreachable, LocalFileFailure, SendTimeUp,
                 DownloadRestart) + TRANSPORT_ERRORS + INVALID_REQUEST_ERRORS

# The system's reason in a network error's text: "[Errno 111] Connection refused".
SYSTEM_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"()]+)")
# A connection or an answer not there within the timeout (whose text is urllib3's).
TIMEOUT_ERRORS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)

# request(url, token, (parsed url, connection)): one attempt of an operation.
Request = Callable[[str, str, tuple], Any]


class TimeBudget:
    """The time an operation may still take: *seconds* from its start, which
    transfers may extend.  (A *deadline* is always a number of seconds.)"""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends_at = time.monotonic() + seconds

    def extend(self, seconds: float) -> None:
        """Allow *seconds* more."""
        self.seconds += seconds
        self.ends_at += seconds

    def remaining(self) -> float:
        """Seconds left (negative once the time is up)."""
        return self.ends_at - time.monotonic()


@dataclass
class _Attempts:
    """What the retry loop knows of an operation's attempts so far."""

    count: int = 0
    reauthenticated: bool = False
    last: str = "no attempt made"
    last_txn: str | None = None
    wait: float = 0.0  # what the last answer asked to wait (Retry-After)
    where: str = ""  # the URL the last attempt addressed
    doing: str = ""  # what it did there: authenticating, or the operation


class _ThreadConnection:
    """One thread's HTTP connection; closed when the thread's local data goes."""

    __slots__ = ("url", "parsed", "conn", "__weakref__")

    def __init__(self, url: str, parsed, conn) -> None:
        self.url, self.parsed, self.conn = url, parsed, conn
        weakref.finalize(self, conn.close)


class Transport:
    """Requests for one account: the shared token, one HTTP connection per
    thread, and retries with exponential backoff and jitter within a
    deadline.  *timeout* bounds each socket operation."""

    def __init__(self, credentials: Credentials, *, deadline: float, timeout: float,
                 initial_backoff: float, max_backoff: float, cacert: str | None,
                 insecure: bool) -> None:
        self.credentials = credentials
        self.deadline = deadline
        self.timeout = timeout
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.tls = {"cacert": cacert, "insecure": insecure}
        self.tokens = TokenSource(credentials, self.tls, timeout)
        self._local = threading.local()
        self._connections: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._noted_at = float("-inf")  # when a wait was last noted

    def budget(self, deadline: float | None = None, size: int = 0) -> TimeBudget:
        """The time of an operation: *deadline* seconds, by default the
        transport's deadline plus one second per MiB of *size* transferred."""
        return TimeBudget(self.deadline + size / MIB if deadline is None else deadline)

    def _http(self, url: str) -> tuple:
        held = getattr(self._local, "connection", None)
        if held is None or held.url != url:
            if held is not None:
                held.conn.close()
            parsed, conn = swift.http_connection(url, timeout=self.timeout, **self.tls)
            _tune(conn, url)
            held = self._local.connection = _ThreadConnection(url, parsed, conn)
            with self._lock:
                self._connections.add(held)
        return held.parsed, held.conn

    def drop_connection(self) -> None:
        """Close this thread's connection (the next request opens another)."""
        held = getattr(self._local, "connection", None)
        self._local.connection = None
        if held is not None:
            held.conn.close()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections = list(self._connections)
        for held in connections:
            held.conn.close()
        self._local = threading.local()

    def redact(self, text: str) -> str:
        """*text* with every secret, token and URL password replaced by ``***``."""
        for secret in self.credentials.secrets() + self.tokens.secrets():
            text = text.replace(secret, "***")
        return hide_url_passwords(text)

    def call(self, operation: str, name: str, request: Request, *,
             deadline: float | None = None, budget: TimeBudget | None = None,
             timeout: float | None = None) -> Any:
        """Run *request* with retries within *budget* (a running one), else
        within *deadline* seconds (by default the transport's); *timeout* (by
        default the transport's) bounds each attempt.

        Errors are raised outside ``except`` blocks: a chained exception could
        carry the request, and with it a key or token.
        """
        if budget is None:
            budget = self.budget(deadline)
        timeout = timeout or self.timeout
        shortest_wait = min(timeout, MIN_REQUEST_WAIT)
        attempts = _Attempts()
        while True:
            attempts.count += 1
            wait_for_answer = min(timeout, max(budget.remaining(), shortest_wait))
            token = None
            attempts.where = self.credentials.auth_url or self.credentials.preauth_url or ""
            attempts.doing = "authenticating"
            try:
                url, token = self.tokens.current(wait_for_answer)
                attempts.where = url
                attempts.doing = f"{operation} of {name!r}" if name else operation
                parsed, conn = self._http(url)
                conn.requests_args["timeout"] = wait_for_answer
                return request(url, token, (parsed, conn))
            except JUDGED_ERRORS as exc:
                failure, again_now = self._judge(exc, token, attempts, operation, name, budget)
            if failure is not None:
                raise failure
            if again_now:
                continue
            delay = min(self.max_backoff, self.initial_backoff * 2 ** (attempts.count - 1))
            delay = max(delay * random.uniform(0.5, 1.0), attempts.wait)
            if delay + shortest_wait > budget.remaining():
                raise SwiftUnavailableError(
                    f"gave up after {attempts.count} attempt(s) within the "
                    f"{budget.seconds:.0f}s deadline; last error ({attempts.doing} at "
                    f"{self.redact(attempts.where)}): {attempts.last}",
                    operation=operation, name=name, transaction_id=attempts.last_txn)
            log.debug("Swift %s of %r failed (%s); retry %d in %.2fs",
                      operation, name, attempts.last, attempts.count, delay)
            self._note_wait(attempts, budget)
            time.sleep(delay)

    def _note_wait(self, attempts: _Attempts, budget: TimeBudget) -> None:
        """Say what is being waited for (at most once a NOTE_INTERVAL)."""
        now = time.monotonic()
        with self._lock:
            if now - self._noted_at < NOTE_INTERVAL:
                return
            self._noted_at = now
        waiting_log.info("waiting for Swift at %s (%s): %s; retrying, %.0f s left",
                         self.redact(attempts.where), attempts.doing, attempts.last,
                         budget.remaining())

    def _judge(self, exc: Exception, token: str | None, attempts: _Attempts, operation: str,
               name: str, budget: TimeBudget) -> tuple[BaseException | None, bool]:
        """The error to raise for a failed attempt (None: retry), and whether
        to retry at once (without backing off)."""
        attempts.wait = 0.0
        if isinstance(exc, ClientException):
            return self._judge_status(exc, token, attempts, operation, name)
        if isinstance(exc, DownloadRestart):
            attempts.last, attempts.last_txn = "the object changed during the download", None
            return None, True
        if isinstance(exc, AuthServiceUnreachable):
            attempts.last = self.redact(f"authentication service unreachable: {_reason(exc)}")
            attempts.last_txn = None
            return None, False
        if isinstance(exc, INVALID_REQUEST_ERRORS) \
                and not isinstance(exc, requests.exceptions.SSLError):
            return PermanentSwiftError(
                self.redact(f"invalid request or response: {type(exc).__name__}: "
                            f"{exc}")[:300], operation=operation, name=name), False
        self.drop_connection()
        if isinstance(exc, LocalFileFailure):
            return exc.error, False
        if isinstance(exc, SendTimeUp):
            return SwiftUnavailableError(
                f"deadline of {budget.seconds:.0f}s exceeded while sending the body",
                operation=operation, name=name), False
        attempts.last = self.redact(f"{type(exc).__name__}: {_reason(exc)}")[:300]
        attempts.last_txn = None
        if isinstance(exc, requests.exceptions.SSLError):
            attempts.last = self.redact(f"SSLError: {exc}")[:300]
            if any(marker in str(exc) for marker in TLS_VERIFICATION):
                return PermanentSwiftError(f"TLS verification failed (check cacert): "
                                           f"{attempts.last}", operation=operation,
                                           name=name), False
        return None, False

    def _judge_status(self, exc: ClientException, token: str | None, attempts: _Attempts,
                      operation: str, name: str) -> tuple[BaseException | None, bool]:
        """:meth:`_judge` for an HTTP failure."""
        status, attempts.last_txn = exc.http_status, exc.transaction_id
        attempts.last = f"status {status} {exc.http_reason or ''}".strip()
        unavailable = unavailable_segments(exc) if status == 400 else []
        if unavailable:
            attempts.last += f": segments unavailable ({', '.join(unavailable)})"
        if status == 401 and token is not None and not attempts.reauthenticated \
                and self.tokens.invalidate(token):
            attempts.reauthenticated = True
            return None, True
        failure = self._status_failure(exc, operation, name)
        attempts.wait = _retry_after(exc)
        if status == 408:
            self.drop_connection()
        return failure, False

    def _status_failure(self, exc: ClientException, operation: str,
                        name: str) -> SwiftError | None:
        """The error for an HTTP failure, or None when it is worth retrying."""
        status, txn = exc.http_status, exc.transaction_id
        if status == 404:
            return NotFoundError("not found", operation=operation, name=name, status=404,
                                 transaction_id=txn)
        if status == 401:
            reason = ("the pre-authenticated token was rejected (expired or revoked); "
                      "supply a new token or credentials"
                      if not self.credentials.can_authenticate
                      else "a freshly issued token was rejected")
            return AuthenticationError(reason, operation=operation, name=name, status=401,
                                       transaction_id=txn)
        if status == 422:
            return ChecksumMismatchError("Swift rejected the body: it does not match its MD5",
                                         operation=operation, name=name, status=422,
                                         transaction_id=txn)
        if is_retryable_status(status):
            return None
        if status == 400 and unavailable_segments(exc):
            return None  # a large object's manifest whose segments could not be checked
        reason = exc.http_reason or exc.msg
        content = exc.http_response_content
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        if content and "<" not in content:  # Swift's one-line explanations, not HTML pages
            reason = f"{reason}: {' '.join(content.split())}"
        return PermanentSwiftError(self.redact(reason)[:300], operation=operation, name=name,
                                   status=status, transaction_id=txn)


def unavailable_segments(exc: ClientException) -> list[str]:
    """The statuses of the segments that a Static Large Object's manifest PUT
    could not check, when that is all that is wrong with it.

    Swift checks (HEAD) every segment of a manifest it is given, and answers
    400 listing each segment with a problem after ``Errors:`` (or, asked
    for JSON, under ``"Errors"``): its status, such as ``503 Service
    Unavailable`` when an object server is down, or a mismatch.  Empty when
    the response is no such list or any problem is permanent (a segment
    missing, or not what the manifest says).
    """
    content = exc.http_response_content
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if not content:
        return []
    try:
        problems = json.loads(content).get("Errors")
    except (ValueError, AttributeError):
        _, found, listed = content.partition("Errors:")
        problems = [line.rsplit(", ", 1) for line in listed.splitlines() if line.strip()] \
            if found else None
    if not isinstance(problems, list) or not problems:
        return []
    statuses = []
    for problem in problems:
        if not isinstance(problem, list) or len(problem) != 2:
            return []
        code = str(problem[1]).split(" ", 1)[0]
        if not code.isdigit() or not is_retryable_status(int(code)):
            return []
        statuses.append(str(problem[1]))
    return sorted(set(statuses))


def _reason(exc: Exception) -> str:
    """A network error's reason: ``timed out`` for a timeout, the system's
    (``Connection refused``) when its text names one, else the whole text."""
    if isinstance(exc, TIMEOUT_ERRORS):
        return "timed out"
    found = SYSTEM_REASON.search(str(exc))
    return found.group(1).strip() if found else str(exc)


def _retry_after(exc: ClientException) -> float:
    """Seconds a 429/503 asks the client to wait (Retry-After), else 0."""
    headers = exc.http_response_headers or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def raise_for_bulk_result(response: Any) -> dict:
    """Turn a bulk-middleware response (HTTP status and JSON body) into errors.

    Failures are raised as ClientException, which the retry loop classifies;
    objects that were already absent count as deleted.
    """
    txn = response.getheader("x-trans-id")
    text = response.read().decode("utf-8", "replace")
    response.close()
    if response.status == 404:
        raise ClientException("not found", http_status=404,
                              http_response_headers={"x-trans-id": txn})
    if response.status >= 300:
        raise ClientException(text[:200], http_status=response.status,
                              http_reason=response.reason,
                              http_response_headers={"x-trans-id": txn})
    result = json.loads(text or "{}")
    status = int((result.get("Response Status") or "200").split()[0])
    errors = [e for e in result.get("Errors", []) if not str(e[1]).startswith("404")]
    if any("Not an SLO manifest" in str(e[1]) for e in errors):
        raise NotLargeObject()
    if status == 404:
        raise ClientException("not found", http_status=404,
                              http_response_headers={"x-trans-id": txn})
    if status >= 300 or errors:
        statuses = sorted({str(e[1]) for e in errors})
        raise ClientException(f"{len(errors)} failed: {', '.join(statuses)[:200]}",
                              http_status=status if status >= 300 else 500,
                              http_reason=result.get("Response Body", "")[:200],
                              http_response_headers={"x-trans-id": txn})
    return result


def _tune(conn, url: str) -> None:
    """Make one of swiftclient's HTTP connections cheaper per request.

    Bodies are sent in large blocks, and the environment's proxy and CA
    bundle settings are read once here instead of by ``requests`` on every
    request (which scans the whole environment and looks for ``~/.netrc``).
    A request whose path has a ``.`` or ``..`` segment is refused (ValueError)
    before it is sent: the HTTP stack would remove the segment and address
    another object (see :mod:`.names`).
    """
    for scheme in ("http://", "https://"):
        conn.request_session.mount(scheme, _LargeBlockAdapter())
    send = conn.request

    def request(method: str, full_path: str, *args, **kwargs):
        path = full_path.partition("?")[0]
        if has_dot_segment(path):
            raise ValueError(f"the path {path!r} has a '.' or '..' segment, which HTTP "
                             "rewrites: its names cannot be sent exactly")
        return send(method, full_path, *args, **kwargs)
    conn.request = request
    session = conn.request_session
    session.trust_env = False
    proxies = requests.utils.get_environ_proxies(url)
    if proxies and "proxies" not in conn.requests_args:
        conn.requests_args["proxies"] = proxies
    if conn.requests_args.get("verify") is True:
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            conn.requests_args["verify"] = bundle


class _LargeBlockAdapter(requests.adapters.HTTPAdapter):
    """Sends request bodies in CHUNK_SIZE blocks (urllib3 reads file bodies in
    16 KiB blocks by default: many more system calls for the same bytes)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["blocksize"] = CHUNK_SIZE
        super().init_poolmanager(*args, **kwargs)

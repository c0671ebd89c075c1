"""Fault injection for the embedded Swift: a proxy middleware driven by a file.

Some failures cannot be produced by stopping, pausing or killing servers:
Swift never answers 429 itself (its rate limiter answers 498), and bytes are
never damaged between a client and the proxy.  A cluster started with
``DevSwift(faults=True)`` has this middleware in its proxy pipeline, just
before the proxy application; it does nothing until
:meth:`zodb_swiftblobs.testing.devswift.DevSwift.inject_faults` writes rules into the
cluster's ``faults.json``.  Each rule matches requests by method and a piece
of their path, and applies to the next *times* of them:

- ``{"status": 429, "retry_after": 1}`` answers with that status (and a
  ``Retry-After`` header) instead of passing the request on;
- ``{"flip_body": true}`` inverts one byte in the middle of the request body
  on its way to the object server, which then stores (and hashes) the damaged
  bytes;
- ``{"hold_until": "/some/file"}`` holds the request until that file exists
  (at most HOLD_LIMIT seconds), then passes it on: a test can change the
  cluster (stop a server, say) at exactly that point of a client's operation.
- ``{"hold_body": "/some/release"}`` holds the request body back when the
  proxy starts reading it (it has looked the container up and reached the
  object server by then) until the file ``/some/release`` exists; each held
  request first adds a line to ``/some/release.held``.  A test can so stop a
  server in the middle of a request, at a known point.

The file is read again whenever it changes; rewriting it restarts the counts.
Rules see requests as the proxy application gets them: a bulk delete arrives
as one DELETE per object, a large object's download as its segments' GETs,
the check of a large object's manifest as one HEAD per segment.

Every use of a rule is appended to ``faults.log`` beside the rules, as a JSON
line (``time``, ``method``, ``path``, ``rule``: its index), before the request
is answered or passed on: once a client has its answer, the line is there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

RULES_FILE = "faults.json"
RECORD_FILE = "faults.log"
HOLD_LIMIT = 300.0  # seconds


class FaultMiddleware:
    """WSGI middleware applying the rules of *rules_path* to matching requests."""

    def __init__(self, app, rules_path: str) -> None:
        self.app = app
        self.rules_path = rules_path
        self._version: tuple[int, int] | None = None
        self._rules: list[dict] = []

    def __call__(self, environ: dict, start_response):
        """Answer with the fault of the first matching rule, or pass the request on."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        rule = self._take(method, path)
        if rule is None:
            return self.app(environ, start_response)
        self._record(method, path, rule)
        if rule.get("hold_until"):
            _hold_until(rule["hold_until"])
        if "status" in rule:
            headers = [("Content-Type", "text/plain"), ("Content-Length", "0")]
            if rule.get("retry_after") is not None:
                headers.append(("Retry-After", str(rule["retry_after"])))
            start_response(f"{rule['status']} Injected Fault", headers)
            return [b""]
        if rule.get("flip_body"):
            environ["wsgi.input"] = _FlippingReader(
                environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0) // 2)
        if rule.get("hold_body"):
            environ["wsgi.input"] = _HeldReader(environ["wsgi.input"], rule["hold_body"])
        return self.app(environ, start_response)

    def _take(self, method: str, path: str) -> dict | None:
        """The first rule matching this request that has uses left (one is used)."""
        try:
            status = os.stat(self.rules_path)
        except FileNotFoundError:
            return None
        version = (status.st_ino, status.st_mtime_ns)
        if version != self._version:
            with open(self.rules_path, encoding="utf-8") as f:
                self._rules = json.load(f)
            self._version = version
        for index, rule in enumerate(self._rules):
            if rule.get("times", 1) <= 0:
                continue
            if rule.get("method", method) == method and rule.get("path", "") in path:
                rule["times"] = rule.get("times", 1) - 1
                return {**rule, "index": index}
        return None

    def _record(self, method: str, path: str, rule: dict) -> None:
        line = json.dumps({"time": time.time(), "method": method, "path": path,
                           "rule": rule["index"]})
        with open(os.path.join(os.path.dirname(self.rules_path), RECORD_FILE), "a",
                  encoding="utf-8") as f:
            f.write(line + "\n")


def _hold_until(release_path: str) -> None:
    """Wait (letting the proxy's other requests run) until *release_path* exists."""
    import eventlet  # only in the proxy's process, which runs on eventlet

    give_up = time.monotonic() + HOLD_LIMIT
    while not os.path.exists(release_path) and time.monotonic() < give_up:
        eventlet.sleep(0.05)


class _FlippingReader:
    """A request body whose byte at *offset* arrives inverted."""

    def __init__(self, body, offset: int) -> None:
        self._body, self._offset, self._position = body, offset, 0

    def read(self, *args) -> bytes:
        return self._flip(self._body.read(*args))

    def readline(self, *args) -> bytes:
        return self._flip(self._body.readline(*args))

    def _flip(self, data: bytes) -> bytes:
        start = self._position
        self._position += len(data)
        if start <= self._offset < self._position:
            index = self._offset - start
            data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1:]
        return data


class _HeldReader:
    """A request body held back, from its first read, until *release* exists."""

    def __init__(self, body, release: str) -> None:
        self._body, self._release, self._held = body, release, False

    def read(self, *args) -> bytes:
        self._hold()
        return self._body.read(*args)

    def readline(self, *args) -> bytes:
        self._hold()
        return self._body.readline(*args)

    def _hold(self) -> None:
        if self._held:
            return
        self._held = True
        with open(f"{self._release}.held", "a", encoding="utf-8") as f:
            f.write("held\n")
        _hold_until(self._release)


def filter_factory(global_conf: dict, **local_conf: str) -> Callable:
    """The paste.deploy entry point: ``rules_path`` names the rules file."""
    def make(app):
        return FaultMiddleware(app, local_conf["rules_path"])
    return make

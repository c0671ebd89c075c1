"""What the cluster allows (``/info``), and the containers known to exist."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlparse, urlunparse

from swiftclient import client as swift

from .errors import NotFoundError, PermanentSwiftError
from .transport import Transport

log = logging.getLogger(__name__)

GIB = 1 << 30


class Cluster:
    """The capabilities of the cluster behind *transport*, and its containers:
    created (with *storage_policy*) when missing.  Files larger than
    *large_object_threshold* (by default 1 GiB) become large objects."""

    def __init__(self, transport: Transport, *, storage_policy: str | None,
                 large_object_threshold: int | None) -> None:
        self.transport = transport
        self.storage_policy = storage_policy
        self._large_object_threshold = large_object_threshold
        self._info: dict | None = None
        self._containers_ready: set[str] = set()

    def info(self) -> dict:
        """The cluster's capabilities (``GET /info``), fetched once; empty when the
        cluster does not publish them (Swift's defaults are assumed then)."""
        if self._info is None:
            def get(url, token, http):
                parsed = urlparse(url)
                root = re.sub(r"/v1(/.*)?$", "", parsed.path)
                info_url = urlunparse((parsed.scheme, parsed.netloc, f"{root}/info", "", "", ""))
                return swift.get_capabilities((urlparse(info_url), http[1]))
            try:
                self._info = self.transport.call("info", "", get)
            except PermanentSwiftError as exc:
                if exc.status not in (403, 404):
                    raise
                log.warning("the Swift cluster does not publish /info; assuming its defaults")
                self._info = {}
            except NotFoundError:
                log.warning("the Swift cluster does not publish /info; assuming its defaults")
                self._info = {}
        return self._info

    @property
    def max_file_size(self) -> int:
        """The largest object the cluster stores in one piece."""
        return int(self.info().get("swift", {}).get("max_file_size", 5 * GIB + 2))

    @property
    def supports_slo(self) -> bool:
        """Whether the cluster stores Static Large Objects (assumed when it
        does not publish its capabilities)."""
        info = self.info()
        return not info or "slo" in info

    @property
    def large_object_threshold(self) -> int:
        """Files larger than this are uploaded as Static Large Objects."""
        limit = self.max_file_size
        if not self.supports_slo:
            return limit
        return min(self._large_object_threshold or GIB, limit)

    def ensure_container(self, container: str, *, create: bool = True) -> None:
        """Create *container* (with the storage policy) unless it exists;
        with *create* false, raise NotFoundError if it does not."""
        if container in self._containers_ready:
            return
        try:
            headers = self.transport.call(
                "container check", container,
                lambda u, t, h: swift.head_container(u, t, container, http_conn=h))
            policy = headers.get("x-storage-policy")
            if self.storage_policy and policy and policy != self.storage_policy:
                log.warning("container %r uses storage policy %r, not the configured %r",
                            container, policy, self.storage_policy)
        except NotFoundError:
            if not create:
                raise
            headers = {"X-Storage-Policy": self.storage_policy} if self.storage_policy else {}
            self.transport.call(
                "container create", container,
                lambda u, t, h: swift.put_container(u, t, container, headers=headers,
                                                    http_conn=h))
            log.info("created Swift container %r", container)
        self._containers_ready.add(container)

    def forget_container(self, container: str) -> None:
        """*container* turned out missing: check it again before its next use."""
        self._containers_ready.discard(container)

"""Many objects at once: listings page by page, and bulk deletes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import quote

from swiftclient import client as swift

from .cluster import Cluster
from .errors import NotFoundError
from .objects import StoredObject
from .transport import Transport, raise_for_bulk_result

BULK_TIMEOUT = 60.0  # above the bulk middleware's 10 s keep-alive interval


def list_objects(transport: Transport, cluster: Cluster, container: str, prefix: str,
                 marker: str, page_size: int | None) -> Iterator[StoredObject]:
    """The objects of *container* whose names start with *prefix*, after
    *marker*, in name order, *page_size* (by default the cluster's limit) a
    page.  ``md5`` is None for large objects (their listed hash is not the
    content's)."""
    limit = page_size or int(cluster.info().get("swift", {}).get(
        "container_listing_limit", 10000))
    while True:
        _, page = transport.call("list", prefix or container, lambda u, t, h, marker=marker: (
            swift.get_container(u, t, container, marker=marker, limit=limit,
                                prefix=prefix or None, http_conn=h)))
        if not page:
            return
        for entry in page:
            large = "slo_etag" in entry
            yield StoredObject(entry["name"], int(entry["bytes"]),
                               None if large else entry.get("hash"), large,
                               entry.get("last_modified"),
                               content_type=entry.get("content_type"))
        marker = page[-1]["name"]


class BulkDeleter:
    """Deletes plain objects by name: in bulk requests where the cluster
    allows, else one by one."""

    def __init__(self, transport: Transport, cluster: Cluster) -> None:
        self.transport = transport
        self.cluster = cluster

    def delete(self, container: str, names: Iterable[str],
               deadline: float | None = None) -> int:
        """Delete objects *names* of *container* (absent ones count as deleted);
        how many.  *deadline* bounds each request."""
        bulk = self.cluster.info().get("bulk_delete")
        batch_size = min(int(bulk.get("max_deletes_per_request", 10000)), 1000) if bulk else 0
        done, batch = 0, []
        for name in names:
            if not batch_size:
                self.delete_one(container, name, deadline)
                done += 1
                continue
            batch.append(name)
            if len(batch) >= batch_size:
                done += self._bulk_delete(container, batch, deadline)
                batch = []
        if batch:
            done += self._bulk_delete(container, batch, deadline)
        return done

    def delete_one(self, container: str, name: str, deadline: float | None) -> None:
        """Delete plain object *name* of *container* unless it is absent."""
        try:
            self.transport.call("delete", name, lambda u, t, h: swift.delete_object(
                u, t, container, name, http_conn=h), deadline=deadline)
        except NotFoundError:
            pass

    def _bulk_delete(self, container: str, names: list[str],
                     deadline: float | None = None) -> int:
        body = "\n".join(f"/{quote(container)}/{quote(n)}" for n in names).encode()

        def post(url, token, http):
            http[1].request("POST", f"{http[0].path}?bulk-delete", data=body, headers={
                "X-Auth-Token": token, "Content-Type": "text/plain",
                "Accept": "application/json"})
            raise_for_bulk_result(http[1].getresponse())
        self.transport.call("bulk delete", f"{len(names)} objects", post,
                            deadline=deadline or self.transport.deadline + len(names) * 0.05,
                            timeout=max(self.transport.timeout, BULK_TIMEOUT))
        return len(names)

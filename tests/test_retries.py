"""The README's retry promises, against the real embedded Swift: a fault
middleware in its proxy answers 408, 401 or 503 on demand and records each
request it answered (see zodb_swiftblobs.testing.devfaults)."""

import logging
import re

import pytest
import transaction
import ZODB
from ZODB.blob import Blob
from ZODB.MappingStorage import MappingStorage

from conftest import (credentials_for, in_background, logged, mint_token, swift_storage,
                      wait_for_logged)
from zodb_swiftblobs import SwiftTransientError
from zodb_swiftblobs.swift import (AuthenticationError, Credentials, NotFoundError,
                                   SwiftContainer, SwiftUnavailableError)


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster of this module's own with fault injection in its proxy."""
    cluster = start_cluster("retries", faults=True)
    yield cluster
    cluster.stop()


@pytest.fixture
def faults(cluster):
    """Inject fault rules for the test; cleared afterwards."""
    yield cluster.inject_faults
    cluster.inject_faults()


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"retried" * 1000)
    return str(path)


def applied(cluster, container, method):
    """The uses of fault rules on the objects of *container* by *method* requests."""
    return [record for record in cluster.faults_applied()
            if record["method"] == method and f"/{container}/" in record["path"]]


def open_container(cluster, container_name, credentials=None, **options):
    container = SwiftContainer(credentials or credentials_for(cluster), container_name,
                               **{"deadline": 30, "timeout": 10, **options})
    container.ensure_container()
    return container


def test_408_is_retried(cluster, container_name, faults, blob):
    container = open_container(cluster, container_name)
    faults({"method": "PUT", "path": f"/{container_name}/", "status": 408, "times": 2})
    stored = container.upload("x", blob)
    assert len(applied(cluster, container_name, "PUT")) == 2, "two 408s, then stored"
    assert container.head("x").md5 == stored.md5
    container.close()


def test_backoff_is_exponential_with_jitter(cluster, container_name, faults, caplog):
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.swift")
    container = open_container(cluster, container_name, initial_backoff=0.2, max_backoff=1.6)
    container.put_bytes("x", b"x")
    failures = 6
    faults({"method": "HEAD", "path": f"/{container_name}/x", "status": 503,
            "times": failures})
    assert container.head("x").size == 1
    delays = [float(match.group(1)) for match in (
        re.search(r"of 'x' failed \(status 503.*\); retry \d+ in ([\d.]+)s", r.getMessage())
        for r in caplog.records) if match]
    assert len(delays) == failures
    bounds = [min(1.6, 0.2 * 2 ** attempt) for attempt in range(failures)]
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 - 0.01 <= delay <= bound + 0.01, (delays, bounds)
    ratios = {round(delay / bound, 2) for delay, bound in zip(delays, bounds, strict=True)}
    assert len(ratios) > 1, f"no jitter: {delays}"
    arrivals = [record["time"] for record in applied(cluster, container_name, "HEAD")]
    for before, after, delay in zip(arrivals, arrivals[1:], delays, strict=False):
        assert after - before >= delay - 0.01, "the client waited before trying again"
    container.close()


def test_401_is_retried_once_with_a_new_token(cluster, container_name, faults, blob):
    container = open_container(cluster, container_name)
    auths = len(logged(cluster, "GET /auth/v1.0"))
    faults({"method": "PUT", "path": f"/{container_name}/", "status": 401, "times": 1})
    container.upload("renewed", blob)
    assert len(applied(cluster, container_name, "PUT")) == 1
    assert len(wait_for_logged(cluster, "GET /auth/v1.0", count=auths + 1)) == auths + 1

    faults({"method": "PUT", "path": f"/{container_name}/", "status": 401, "times": 2})
    with pytest.raises(AuthenticationError, match="a freshly issued token was rejected"):
        container.upload("refused", blob)
    assert len(applied(cluster, container_name, "PUT")) == 1 + 2, "retried once only"
    container.close()


def test_401_with_a_preauthenticated_token_alone_is_not_retried(cluster, container_name,
                                                                faults, blob):
    container = open_container(cluster, container_name, Credentials(
        preauth_url=cluster.settings().storage_url, preauth_token=mint_token(cluster)))
    faults({"method": "PUT", "path": f"/{container_name}/", "status": 401, "times": 1})
    with pytest.raises(AuthenticationError, match="pre-authenticated token was rejected"):
        container.upload("refused", blob)
    assert len(applied(cluster, container_name, "PUT")) == 1
    container.close()


def test_swift_trouble_is_retried_by_transaction_retry_loops(cluster, tmp_path,
                                                            container_name, faults):
    """SwiftTransientError is a transaction TransientError: the transaction
    package's retry loop commits again, and the second attempt succeeds."""
    assert issubclass(SwiftTransientError, transaction.interfaces.TransientError)
    db = ZODB.DB(swift_storage(cluster, MappingStorage(), container_name, tmp_path / "cache",
                               deadline=2, timeout=1))
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    # One refusal asking to wait far beyond the deadline: the first commit
    # gives up at once, transiently.
    faults({"method": "PUT", "path": f"/{container_name}/", "status": 503,
            "retry_after": 600, "times": 1})
    tries = []

    def store():
        tries.append(1)
        connection.root()["blob"] = Blob(b"committed on the second try")

    manager.run(store, tries=3)
    assert len(tries) == 2
    assert len(applied(cluster, container_name, "PUT")) == 1
    connection.close()
    connection = db.open()
    with connection.root()["blob"].open() as f:
        assert f.read() == b"committed on the second try"
    connection.close()
    db.close()


def test_a_publish_whose_answer_is_lost_is_found_stored(cluster, container_name, faults,
                                                       blob, tmp_path):
    """The manifest PUT's first attempt is held until the client has given up
    on it, then stored; every later attempt is refused (503)."""
    container = open_container(cluster, container_name, deadline=4, timeout=1,
                               initial_backoff=0.1, max_backoff=0.2)
    pending = container.upload_pending("commits/0123456789abcdef/0000000000000001", blob)
    refused = {"method": "PUT", "path": f"/{container_name}/final", "status": 503,
               "times": 1000}
    faults(refused)
    with pytest.raises(SwiftUnavailableError):
        container.publish("final", pending)
    with pytest.raises(NotFoundError):
        container.head("final")

    release = tmp_path / "release"
    before = len(applied(cluster, container_name, "PUT"))
    faults({"method": "PUT", "path": f"/{container_name}/final", "hold_until": str(release),
            "times": 1}, refused)
    _, join = in_background(release.touch, delay=1.5)
    stored = container.publish("final", pending)
    join()
    assert len(applied(cluster, container_name, "PUT")) > before + 1, "held, then refused"
    assert stored.large and container.head("final").size == pending.size
    container.close()

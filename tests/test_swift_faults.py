"""The access layer under real faults: servers stopped, paused and killed."""

import logging
import os
import re
import time

import pytest

from conftest import (credentials_for, download_cut_mid_stream, in_background, logged,
                      wait_for_logged)
from zodb_swiftblobs.swift import SwiftContainer, SwiftUnavailableError, file_md5


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """A cluster of this module's own, so that its faults touch no other test."""
    cluster = start_cluster("faults")
    yield cluster
    cluster.stop()


@pytest.fixture
def container(cluster, container_name):
    container = SwiftContainer(credentials_for(cluster), container_name, deadline=3,
                               timeout=1, initial_backoff=0.1)
    container.ensure_container()
    yield container
    container.close()


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(100_000))
    return str(path)


def assert_no_secret(cluster, text):
    assert cluster.settings().key not in text


def test_proxy_down_fails_within_the_deadline_then_recovers(cluster, container, blob,
                                                            tmp_path):
    container.upload("before", blob)
    cluster.stop_server("proxy")
    try:
        for operation in (lambda: container.upload("x", blob),
                          lambda: container.download("before", str(tmp_path / "out")),
                          lambda: container.head("before")):
            started = time.monotonic()
            with pytest.raises(SwiftUnavailableError) as info:
                operation()
            elapsed = time.monotonic() - started
            assert elapsed < 4.5, f"gave up after {elapsed:.1f}s, deadline 3s"
            assert "ConnectionError" in str(info.value)
            assert int(re.search(r"gave up after (\d+) attempt", str(info.value)).group(1)) > 1
            assert_no_secret(cluster, str(info.value))
        assert not (tmp_path / "out").exists()
    finally:
        cluster.start_server("proxy")
    container.upload("after", blob)
    assert container.head("after").size == 100_000


def test_paused_proxy_times_out_within_the_deadline(cluster, container, blob):
    container.upload("x", blob)
    cluster.pause_server("proxy")
    try:
        started = time.monotonic()
        with pytest.raises(SwiftUnavailableError) as info:
            container.head("x")
        elapsed = time.monotonic() - started
        assert elapsed < 4.5, f"gave up after {elapsed:.1f}s, deadline 3s"
        assert "Timeout" in str(info.value)
    finally:
        cluster.resume_server("proxy")
    assert container.head("x").size == 100_000


def test_object_server_down_is_a_transient_503(cluster, container, blob):
    cluster.stop_server("object")
    try:
        with pytest.raises(SwiftUnavailableError) as info:
            container.upload("x", blob)
        assert "status 503" in str(info.value)
    finally:
        cluster.start_server("object")


def test_upload_retries_until_the_object_server_returns(cluster, credentials_container,
                                                        blob):
    container = credentials_container
    cluster.stop_server("object")
    _, join = in_background(cluster.start_server, "object", delay=1.5)
    try:
        started = time.monotonic()
        stored = container.upload("patient", blob)
        elapsed = time.monotonic() - started
    finally:
        join()
    assert elapsed > 1.5 and stored.size == 100_000
    assert container.head("patient").md5 == stored.md5


@pytest.fixture
def credentials_container(cluster, container_name):
    container = SwiftContainer(credentials_for(cluster), container_name, deadline=30,
                               timeout=2, initial_backoff=0.1, max_backoff=0.5)
    container.ensure_container()
    yield container
    container.close()


def test_download_cut_mid_stream_resumes_with_range(cluster, credentials_container,
                                                    tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.swift")
    container = credentials_container
    size = 128 << 20
    with open(tmp_path / "big", "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    container.upload("big", str(tmp_path / "big"))
    target = tmp_path / "copy"
    cut_at = download_cut_mid_stream(cluster, container, "big", target)
    assert cut_at is not None and cut_at < size, "the download finished before the cut"
    assert file_md5(str(target)) == file_md5(str(tmp_path / "big"))
    resumed = [r.getMessage() for r in caplog.records if "resuming download" in r.getMessage()]
    assert resumed and int(resumed[0].rsplit(" ", 1)[1]) >= 8 << 20


def test_rate_limited_requests_are_retried(start_cluster, tmp_path):
    """Swift's ratelimit middleware answers 498 above 2 container writes a second."""
    cluster = start_cluster("ratelimit", rate_limit=2)
    try:
        if not cluster.state["ports"].get("memcached"):
            pytest.skip("Swift's rate limiting needs memcached (apt-get install memcached)")
        names = [f"limited-{i}" for i in range(8)]
        started = time.monotonic()
        for name in names:
            container = SwiftContainer(credentials_for(cluster), name, deadline=30,
                                       initial_backoff=0.1, max_backoff=1)
            container.ensure_container()
            container.close()
        elapsed = time.monotonic() - started
        created = wait_for_logged(cluster, "PUT /v1/AUTH_test/limited-", " 201 ",
                                  count=len(names))
        assert len(created) == len(names)
        limited = logged(cluster, "PUT /v1/AUTH_test/limited-", " 498 ")
        assert limited, "the cluster did not rate-limit: the test proves nothing"
        assert elapsed > 2, f"8 container PUTs at 2/s took {elapsed:.1f}s"
    finally:
        cluster.stop()

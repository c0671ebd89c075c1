"""Commit leases against the real embedded Swift (real time: no clock is mocked)."""

import json
import logging
import time

import pytest
import requests
from ZODB.utils import p64

from conftest import wait_for, wait_for_logged
from test_swift_container import raw_session
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.leases import (LEASE, CommitLeases, LeaseBroken, PublishedAlready,
                                    lease_time_left, read_marker, read_record, write_record)
from zodb_swiftblobs.swift import NotFoundError, SwiftUnavailableError

FINAL = "db/0000000000000001/03d5a2b1c4e6f708.blob"


@pytest.fixture
def leases(swift_container):
    leases = CommitLeases(swift_container, ObjectLayout("db/"))
    yield leases
    leases.close()


def marker_puts(container, lease):
    return f"PUT /v1/AUTH_test/{container.segment_container}/{lease.marker}"


def test_a_started_lease_has_a_marker_until_released(leases, swift_container):
    lease = leases.start()
    assert len(lease.token) == 16 and lease.marker == f"db/commits/{lease.token}"
    assert lease.pending_name(p64(1)) == f"db/commits/{lease.token}/0000000000000001"
    small = swift_container.read_small(lease.marker,
                                       container=swift_container.segment_container)
    assert json.loads(small.data) == {"lease": LEASE}
    lease_seconds, age, broken = read_marker(swift_container, lease.marker)
    assert lease_seconds == LEASE and 0 <= age <= 5 and not broken
    assert leases.start().token != lease.token
    lease.check()

    layout = leases.layout
    assert read_record(swift_container, layout, lease.token) == {}
    lease.record({p64(1): FINAL})
    assert read_record(swift_container, layout, lease.token) == {"0000000000000001": FINAL}
    lease.release(delete_marker=True)
    with pytest.raises(NotFoundError):
        read_marker(swift_container, lease.marker)
    assert read_record(swift_container, layout, lease.token) == {}, "deleted with the marker"


def test_a_lease_released_without_deleting_keeps_its_marker(leases, swift_container):
    lease = leases.start()
    lease.record({p64(1): FINAL})
    lease.release(delete_marker=False)
    assert read_marker(swift_container, lease.marker)[0] == LEASE
    assert read_record(swift_container, leases.layout, lease.token) == {
        "0000000000000001": FINAL}


def test_a_lease_that_stopped_refreshing_writes_its_marker_no_more(swift_container, devswift):
    leases = CommitLeases(swift_container, ObjectLayout(), lease=4)
    try:
        lease = leases.start()
        wait_for_logged(devswift, marker_puts(swift_container, lease), count=2)
        lease.stop_refreshing()
        lease.check()
        age = read_marker(swift_container, lease.marker).age
        time.sleep(3)
        assert read_marker(swift_container, lease.marker)[1] >= age + 2, "not refreshed"
        with pytest.raises(LeaseBroken):
            lease.check()
    finally:
        leases.close()


def test_another_process_learns_how_long_a_lease_holds(leases, swift_container):
    lease = leases.start()
    left = lease_time_left(swift_container, leases.layout, lease.token)
    assert LEASE / 2 - 5 <= left <= LEASE / 2
    lease.release(delete_marker=True)
    with pytest.raises(LeaseBroken) as info:
        lease_time_left(swift_container, leases.layout, lease.token)
    assert "gone" in str(info.value)


def test_a_lease_half_gone_by_swifts_clock_holds_no_time(swift_container):
    layout = ObjectLayout()
    swift_container.put_bytes(layout.commit_marker("0123456789abcdef"), b'{"lease": 2}',
                              container=swift_container.segment_container)
    time.sleep(2)
    with pytest.raises(LeaseBroken) as info:
        lease_time_left(swift_container, layout, "0123456789abcdef")
    assert "allows less than 1s" in str(info.value)


def test_the_keeper_keeps_markers_fresh(swift_container, devswift, caplog):
    leases = CommitLeases(swift_container, ObjectLayout(), lease=4)
    try:
        lease, other = leases.start(), leases.start()
        lease.record({p64(1): FINAL})
        caplog.set_level(logging.DEBUG)
        time.sleep(6)
        assert not [r for r in caplog.records if r.levelno >= logging.INFO]
        for each in (lease, other):
            wait_for_logged(devswift, marker_puts(swift_container, each), count=4)
            lease_seconds, age, _ = read_marker(swift_container, each.marker)
            assert age < 3, "refreshed every second"
        assert lease_seconds == 4
        assert read_record(swift_container, leases.layout, lease.token) == {
            "0000000000000001": FINAL}, "no refresh touches the record"
        lease.release(delete_marker=True)
        time.sleep(2)
        with pytest.raises(NotFoundError):
            read_marker(swift_container, lease.marker)
    finally:
        leases.close()


def test_a_gap_between_refreshes_breaks_the_lease_for_good(swift_container, devswift):
    leases = CommitLeases(swift_container, ObjectLayout(), lease=4)
    try:
        lease = leases.start()
        lease.check()
        leases.close()  # no refresh from now on
        time.sleep(3)
        with pytest.raises(LeaseBroken) as info:
            lease.check()
        assert isinstance(info.value, SwiftUnavailableError)
        assert lease.marker in str(info.value) and "without a refresh" in str(info.value)

        leases.start()  # a keeper again, which refreshes the first lease too
        wait_for_logged(devswift, marker_puts(swift_container, lease), count=2)
        with pytest.raises(LeaseBroken):
            lease.check()
        wait_for(lambda: read_marker(swift_container, lease.marker).broken,
                 "the next refresh marks the lease broken, for other processes too")
        with pytest.raises(LeaseBroken, match="without refreshing"):
            lease_time_left(swift_container, leases.layout, lease.token)
    finally:
        leases.close()


def test_failing_refreshes_warn_once_and_break_the_lease(swift_container, devswift, caplog):
    leases = CommitLeases(swift_container, ObjectLayout(), lease=4)
    try:
        lease = leases.start()
        raw = raw_session(devswift)
        requests.post(f"{raw.url}/{swift_container.segment_container}",
                      headers={**raw.headers, "X-Container-Meta-Quota-Bytes": "1"}
                      ).raise_for_status()
        wait_for_logged(devswift, marker_puts(swift_container, lease), "413", count=3)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and lease.token in warnings[0]
        time.sleep(2)
        with pytest.raises(LeaseBroken):
            lease.check()
    finally:
        leases.close()


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"lease": -1}', b'{"lease": "x"}',
                                  b'{"lease": Infinity}', b'{"objects": {}}'])
def test_a_marker_that_does_not_parse_counts_as_the_default_lease(swift_container, data):
    swift_container.put_bytes("commits/0123456789abcdef", data,
                              container=swift_container.segment_container)
    lease, age, broken = read_marker(swift_container, "commits/0123456789abcdef")
    assert lease == LEASE and age >= 0 and not broken


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"0000000000000001": 1}'])
def test_an_unreadable_record_is_told_from_none(swift_container, data):
    layout = ObjectLayout()
    assert read_record(swift_container, layout, "0123456789abcdef") == {}
    swift_container.put_bytes(layout.commit_record("0123456789abcdef"), data,
                              container=swift_container.segment_container)
    assert read_record(swift_container, layout, "0123456789abcdef") is None
    swift_container.delete(layout.commit_record("0123456789abcdef"), large=False,
                           container=swift_container.segment_container)
    write_record(swift_container, layout, "0123456789abcdef", {p64(1): FINAL})
    assert read_record(swift_container, layout, "0123456789abcdef") == {
        "0000000000000001": FINAL}


def test_a_record_is_written_once(swift_container):
    layout = ObjectLayout()
    write_record(swift_container, layout, "0123456789abcdef", {p64(1): FINAL})
    write_record(swift_container, layout, "0123456789abcdef", {p64(1): FINAL})  # a retry
    with pytest.raises(PublishedAlready):
        write_record(swift_container, layout, "0123456789abcdef", {p64(2): FINAL})
    assert read_record(swift_container, layout, "0123456789abcdef") == {
        "0000000000000001": FINAL}


@pytest.mark.parametrize("lease", [0, -1, float("inf"), float("nan")])
def test_a_lease_is_a_positive_number_of_seconds(swift_container, lease):
    with pytest.raises(ValueError):
        CommitLeases(swift_container, ObjectLayout(), lease=lease)

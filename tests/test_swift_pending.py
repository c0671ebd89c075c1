"""Pending objects and small control objects against the real embedded Swift."""

import base64
import io
import time
from dataclasses import replace

import pytest
import requests

from conftest import credentials_for, with_checksum
from test_swift_container import raw_session, write_file
from zodb_swiftblobs.encryption import Keyring
from zodb_swiftblobs.swift import (NotFoundError, PendingObject, PermanentSwiftError,
                                   SwiftContainer)
from zodb_swiftblobs.testing.devswift import DevSwift

PENDING = "commits/0123456789abcdef/0000000000000001"
KEY = base64.b64encode(bytes(range(32))).decode()


def raw_get(devswift, container, name, query=""):
    raw = raw_session(devswift)
    response = requests.get(f"{raw.url}/{container}/{name}{query}", headers=raw.headers)
    response.raise_for_status()
    return response


def names_in(container, which):
    return [o.name for o in container.list(container=which)]


def test_a_published_pending_object_holds_the_bytes(swift_container, tmp_path, devswift):
    swift_container.ensure_container()
    data = write_file(tmp_path / "big", (3 << 20) + 5)
    pending = swift_container.upload_pending(PENDING, str(tmp_path / "big"),
                                             metadata={"k": "v"})
    assert (pending.name, pending.size, pending.headers) == (
        PENDING, len(data), {"X-Object-Meta-k": "v", "X-Object-Meta-Swiftblobs-Checksum":
                             with_checksum(data)["swiftblobs-checksum"]})
    segments = names_in(swift_container, swift_container.segment_container)
    assert segments[0] == PENDING and len(segments) == 5, "a manifest and 4 segments"
    assert all(name.startswith(f"{PENDING}/") for name in segments[1:])
    assert list(swift_container.list()) == []

    stored = swift_container.publish("final", pending)
    assert (stored.name, stored.size, stored.large, stored.metadata) == (
        "final", len(data), True, with_checksum(data, k="v"))
    assert raw_get(devswift, swift_container.container, "final").content == data
    swift_container.download("final", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == data
    manifest = raw_get(devswift, swift_container.container, "final",
                       "?multipart-manifest=get").json()
    assert [(e["name"], e["bytes"], e["hash"], e.get("sub_slo")) for e in manifest] == [
        (f"/{swift_container.segment_container}/{PENDING}", len(data), pending.etag, True)]
    head = swift_container.head("final")
    assert (head.size, head.large, head.metadata) == (len(data), True,
                                                      with_checksum(data, k="v"))

    assert swift_container.delete("final") is True
    assert names_in(swift_container, swift_container.segment_container) == []
    assert list(swift_container.list()) == []


@pytest.mark.parametrize("size, objects", [(0, 2), (10, 1)])
def test_a_pending_object_of_one_part_is_that_part(swift_container, tmp_path, devswift, size,
                                                   objects):
    """One segment is itself the pending object (an empty file: a large object
    of one empty segment)."""
    data = write_file(tmp_path / "small", size)
    pending = swift_container.upload_pending(PENDING, str(tmp_path / "small"))
    assert len(names_in(swift_container, swift_container.segment_container)) == objects
    assert swift_container.publish("final", pending).size == size
    assert raw_get(devswift, swift_container.container, "final").content == data
    assert swift_container.delete("final", large=True)
    assert names_in(swift_container, swift_container.segment_container) == []


def test_an_encrypted_pending_object_round_trips(credentials, container_name, tmp_path,
                                                 devswift):
    container = SwiftContainer(credentials, container_name, segment_size=1 << 20,
                               encryption=Keyring.from_text(KEY))
    try:
        data = write_file(tmp_path / "big", (2 << 20) + 3)
        pending = container.upload_pending(PENDING, str(tmp_path / "big"))
        assert pending.size == container.encryption.new_cipher().ciphertext_size(len(data))
        assert list(pending.headers) == ["X-Object-Meta-Swiftblobs-Encryption",
                                         "X-Object-Meta-Swiftblobs-Checksum"]
        recorded = pending.headers["X-Object-Meta-Swiftblobs-Checksum"]
        assert recorded.startswith("hmac-sha256:"), "keyed: it tells nothing of the plaintext"
        assert recorded.split(":")[1] != with_checksum(data)["swiftblobs-checksum"][7:]
        container.publish("final", pending)
        raw = raw_get(devswift, container_name, "final")
        assert len(raw.content) == pending.size and data not in raw.content
        metadata = container.head("final").metadata
        plaintext = io.BytesIO()
        writer = container.cipher_of("final", metadata).writer(plaintext)
        writer.write(raw.content)
        writer.finish()
        assert plaintext.getvalue() == data
    finally:
        container.close()


def test_publishing_what_is_not_in_place_is_refused(swift_container, tmp_path):
    swift_container.ensure_container()
    write_file(tmp_path / "f", (1 << 20) + 1)
    pending = swift_container.upload_pending(PENDING, str(tmp_path / "f"))
    for wrong in (replace(pending, etag="0" * 32), replace(pending, size=pending.size + 1)):
        with pytest.raises(PermanentSwiftError) as info:
            swift_container.publish("final", wrong)
        assert info.value.status == 400
    assert swift_container.delete_pending(PENDING) is True
    with pytest.raises(PermanentSwiftError) as info:
        swift_container.publish("final", pending)
    assert info.value.status == 400 and "404" in str(info.value)
    assert list(swift_container.list()) == []


def test_delete_pending_removes_its_segments(swift_container, tmp_path):
    write_file(tmp_path / "f", (2 << 20) + 1)
    swift_container.upload_pending(PENDING, str(tmp_path / "f"))
    assert len(names_in(swift_container, swift_container.segment_container)) == 4
    assert swift_container.delete_pending(PENDING) is True
    assert names_in(swift_container, swift_container.segment_container) == []
    assert swift_container.delete_pending(PENDING) is False


def test_small_objects_of_another_container_and_their_age(swift_container):
    swift_container.ensure_container()
    other = swift_container.segment_container
    swift_container.put_bytes("marker", b'{"x": 1}', container=other)
    assert list(swift_container.list()) == [], "not in the main container"
    first = swift_container.read_small("marker", container=other)
    assert first.data == b'{"x": 1}' and 0 <= first.age <= 5
    time.sleep(3)
    later = swift_container.read_small("marker", container=other)
    assert later.age >= first.age + 1, "Swift's clock, to the second"
    with pytest.raises(NotFoundError):
        swift_container.read_small("marker")
    with pytest.raises(NotFoundError):
        swift_container.read_small("absent", container=other)


def test_the_embedded_swift_supports_pending_objects(swift_container):
    assert swift_container.supports_pending


def test_a_cluster_without_slo_does_not_support_pending_objects(tmp_path, container_name):
    """Such a cluster would store a manifest as a plain object: refused."""
    write_file(tmp_path / "f", 10)
    cluster = DevSwift(str(tmp_path / "swift"), without_middleware=("slo",))
    cluster.start()
    try:
        container = SwiftContainer(credentials_for(cluster), container_name)
        info = container.info()
        assert info and "slo" not in info and "bulk_delete" in info
        assert not container.supports_pending
        assert container.large_object_threshold == container.max_file_size
        with pytest.raises(PermanentSwiftError, match="no Static Large Objects"):
            container.upload_pending(PENDING, str(tmp_path / "f"))
        pending = PendingObject(PENDING, 10, "0" * 32, {})
        with pytest.raises(PermanentSwiftError, match="no Static Large Objects"):
            container.publish("final", pending)
        with pytest.raises(NotFoundError):
            container.ensure_container(container.segment_container, create=False)
        container.close()
    finally:
        cluster.stop()


def test_a_pending_manifest_is_json_listing_its_segments(swift_container, tmp_path, devswift):
    write_file(tmp_path / "f", (1 << 20) + 1)
    pending = swift_container.upload_pending(PENDING, str(tmp_path / "f"))
    manifest = raw_get(devswift, swift_container.segment_container, PENDING,
                       "?multipart-manifest=get").json()
    assert [entry["bytes"] for entry in manifest] == [1 << 20, 1]
    assert manifest[0]["name"].startswith(
        f"/{swift_container.segment_container}/{PENDING}/")
    assert pending.etag == raw_get(devswift, swift_container.segment_container,
                                   PENDING).headers["Etag"].strip('"')


def test_a_record_whose_pending_object_the_listing_misses_is_kept(swift_container, tmp_path):
    """A container listing may lag behind: the sweep keeps a lapsed commit's
    record and marker while a published object it names refers to a pending
    object, whether or not the listing shows it."""
    from ZODB.utils import p64

    from zodb_swiftblobs.layout import ObjectLayout
    from zodb_swiftblobs.leases import write_record
    from zodb_swiftblobs.pending_sweep import PendingReport, _judge, _Token

    layout, token = ObjectLayout(), "0123456789abcdef"
    swift_container.ensure_container()
    write_file(tmp_path / "blob", 1000)
    pending = swift_container.upload_pending(PENDING, str(tmp_path / "blob"))
    final = layout.object_name(p64(1), p64(2))
    swift_container.publish(final, pending)
    write_record(swift_container, layout, token, {p64(1): final})
    swift_container.put_bytes(layout.commit_marker(token), b'{"lease": 1}',
                              container=swift_container.segment_container)
    time.sleep(2)  # the lease lapsed
    lagging = _Token(token, record=layout.commit_record(token))  # no pending object listed
    assert _judge(swift_container, layout, lagging, PendingReport(), min_age=0,
                  now=time.time()) == []
    swift_container.delete(final)  # with its pending object: now the record may go
    assert sorted(_judge(swift_container, layout, lagging, PendingReport(), min_age=0,
                         now=time.time())) == [(layout.commit_marker(token), False),
                                               (layout.commit_record(token), False)]

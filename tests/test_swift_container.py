"""The Swift access layer against the real embedded Swift."""

import gc
import io
import logging
import os
import tarfile
import threading
import time
import types

import pytest
import requests

from conftest import (assert_secret_free, corrupt_on_disk, credentials_for, logged,
                      mint_token, proxy_log, read, wait_for_logged, with_checksum)
from zodb_swiftblobs.swift import (
    AuthenticationError, ChecksumMismatchError, Credentials, NotFoundError,
    PermanentSwiftError, StoredObject, SwiftContainer, file_md5)


def write_file(path, size):
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def raw_session(devswift):
    """A plain HTTP view of the cluster, to check what really is in Swift."""
    settings = devswift.settings()
    response = requests.get(settings.auth_url, headers={
        "X-Auth-User": settings.user, "X-Auth-Key": settings.key})
    response.raise_for_status()
    return types.SimpleNamespace(url=response.headers["X-Storage-Url"],
                                 headers={"X-Auth-Token": response.headers["X-Auth-Token"]})


def test_upload_download_roundtrip_with_metadata(swift_container, tmp_path, devswift):
    data = write_file(tmp_path / "blob", 300_000)
    stored = swift_container.upload("blobs/one", str(tmp_path / "blob"),
                                    metadata={"oid": "0x01"})
    assert stored.size == 300_000 and stored.md5 == file_md5(str(tmp_path / "blob"))
    assert not stored.large

    fetched = swift_container.download("blobs/one", str(tmp_path / "copy"))
    assert read(tmp_path / "copy") == data
    assert fetched.md5 == stored.md5 and fetched.metadata == with_checksum(data, oid="0x01")
    head = swift_container.head("blobs/one")
    assert (head.size, head.md5, head.metadata) == (300_000, stored.md5,
                                                    with_checksum(data, oid="0x01"))

    raw = raw_session(devswift)
    response = requests.get(f"{raw.url}/{swift_container.container}/blobs/one",
                            headers=raw.headers)
    assert response.content == data and response.headers["ETag"] == stored.md5


def test_empty_file_roundtrip(swift_container, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    swift_container.upload("empty", str(tmp_path / "empty"))
    swift_container.download("empty", str(tmp_path / "back"))
    assert read(tmp_path / "back") == b""


def test_missing_object_is_not_found(swift_container, tmp_path):
    swift_container.ensure_container()
    with pytest.raises(NotFoundError) as info:
        swift_container.download("absent", str(tmp_path / "out"))
    assert info.value.status == 404 and info.value.transaction_id
    assert "absent" in str(info.value) and info.value.transaction_id in str(info.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(NotFoundError):
        swift_container.head("absent")
    assert swift_container.delete("absent") is False
    assert swift_container.delete("absent", large=False) is False


def test_plain_object_deleted_when_its_kind_is_unknown(swift_container, tmp_path):
    write_file(tmp_path / "f", 10)
    swift_container.upload("plain", str(tmp_path / "f"))
    assert swift_container.delete("plain") is True
    assert list(swift_container.list()) == []


def test_local_errors_are_raised_at_once_not_retried(swift_container, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.swift")
    write_file(tmp_path / "f", 10)
    swift_container.upload("x", str(tmp_path / "f"))
    with pytest.raises(FileNotFoundError):
        swift_container.download("x", str(tmp_path / "no-such-dir" / "out"))
    with pytest.raises(FileNotFoundError):
        swift_container.upload("y", str(tmp_path / "no-such-file"))
    assert not [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


def test_download_replaces_the_target_only_when_verified(swift_container, tmp_path):
    write_file(tmp_path / "f", 1000)
    swift_container.upload("x", str(tmp_path / "f"))
    (tmp_path / "target").write_bytes(b"previous")
    with pytest.raises(NotFoundError):
        swift_container.download("absent", str(tmp_path / "target"))
    assert (tmp_path / "target").read_bytes() == b"previous"
    swift_container.download("x", str(tmp_path / "target"))
    assert (tmp_path / "target").read_bytes() == (tmp_path / "f").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "target"]


def test_metadata_is_validated_before_anything_is_sent(swift_container, tmp_path):
    write_file(tmp_path / "f", 10)
    with pytest.raises(ValueError, match="metadata key"):
        swift_container.upload("x", str(tmp_path / "f"), metadata={"bad key": "v"})
    with pytest.raises(ValueError, match="ASCII"):
        swift_container.upload("x", str(tmp_path / "f"), metadata={"k": "caf\u00e9"})


def test_container_created_on_first_use_with_storage_policy(credentials, container_name,
                                                            tmp_path, devswift):
    container = SwiftContainer(credentials, container_name, storage_policy="silver")
    write_file(tmp_path / "f", 10)
    container.upload("x", str(tmp_path / "f"))
    raw = raw_session(devswift)
    response = requests.head(f"{raw.url}/{container_name}", headers=raw.headers)
    assert response.status_code == 204
    assert response.headers["X-Storage-Policy"] == "silver"
    container.ensure_container()
    container.close()


def test_listing_is_paged_lazily_by_marker(swift_container, tmp_path, devswift):
    write_file(tmp_path / "f", 100)
    names = [f"p/{i:03d}" for i in range(23)]
    for name in names:
        swift_container.upload(name, str(tmp_path / "f"))
    swift_container.upload("q/other", str(tmp_path / "f"))

    pages = (f"GET /v1/AUTH_test/{swift_container.container}%3Fformat", "prefix%3Dp%252F")
    listing = swift_container.list("p/", page_size=5)
    first = [next(listing).name for _ in range(3)]
    assert first == names[:3]
    assert len(wait_for_logged(devswift, *pages)) == 1, \
        "only the first page is fetched for the first items"
    rest = [o.name for o in listing]
    assert first + rest == names
    # 5 full pages (the last has 3) and one empty page
    assert len(wait_for_logged(devswift, *pages, count=6)) == 6
    assert [o.name for o in swift_container.list()] == names + ["q/other"]


def test_large_object_uploads_in_parallel_segments(swift_container, tmp_path, devswift):
    data = write_file(tmp_path / "big", 9 * (1 << 20) + 12345)
    stored = swift_container.upload("big", str(tmp_path / "big"), metadata={"k": "v"})
    assert stored.large and stored.md5 is None, "a large object's ETag is not its MD5"
    segments = list(swift_container.list(container=swift_container.segment_container))
    assert len(segments) == 10 and all(s.name.startswith("big/") for s in segments)
    listed = list(swift_container.list())
    assert [(o.name, o.size, o.large) for o in listed] == [("big", len(data), True)]

    fetched = swift_container.download("big", str(tmp_path / "copy"))
    assert read(tmp_path / "copy") == data
    assert fetched.large and fetched.metadata == with_checksum(data, k="v")

    assert swift_container.delete("big") is True, "unknown kind: tried as a large object"
    assert list(swift_container.list(container=swift_container.segment_container)) == []
    assert list(swift_container.list()) == []
    assert swift_container.delete("big", large=True) is False


def test_failed_large_upload_removes_its_segments(swift_container, tmp_path, devswift):
    """The manifest PUT is refused (a 1-byte quota) after every segment was written."""
    swift_container.ensure_container()
    raw = raw_session(devswift)
    requests.post(f"{raw.url}/{swift_container.container}",
                  headers={**raw.headers, "X-Container-Meta-Quota-Bytes": "1"}
                  ).raise_for_status()
    write_file(tmp_path / "big", 8 << 20)
    with pytest.raises(PermanentSwiftError) as info:
        swift_container.upload("big", str(tmp_path / "big"))
    assert info.value.status == 413
    assert len(wait_for_logged(devswift, f"PUT /v1/AUTH_test/{swift_container.segment_container}"
                                         "/big/", count=8)) == 8
    assert list(swift_container.list(container=swift_container.segment_container)) == []
    assert list(swift_container.list()) == []


def test_default_large_object_threshold_is_below_max_file_size(credentials, container_name):
    container = SwiftContainer(credentials, container_name)
    assert container.max_file_size == 5 * (1 << 30) + 2
    assert container.large_object_threshold == 1 << 30
    huge = SwiftContainer(credentials, container_name, large_object_threshold=10 << 30)
    assert huge.large_object_threshold == container.max_file_size


def test_threshold_follows_the_clusters_max_file_size(small_swift, container_name, tmp_path):
    container = SwiftContainer(credentials_for(small_swift), container_name,
                               segment_size=4 << 20)
    assert container.large_object_threshold == 8 << 20
    data = write_file(tmp_path / "f", (8 << 20) + 1)
    assert container.upload("over", str(tmp_path / "f")).large
    container.download("over", str(tmp_path / "back"))
    assert read(tmp_path / "back") == data
    container.close()


def _bulk_create(cluster, container, names):
    """Create many objects in one request (the bulk middleware's extract-archive)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    raw = raw_session(cluster)
    requests.put(f"{raw.url}/{container}", headers=raw.headers).raise_for_status()
    response = requests.put(f"{raw.url}/{container}?extract-archive=tar",
                            headers={**raw.headers, "Accept": "application/json"},
                            data=buffer.getvalue())
    response.raise_for_status()
    assert response.json()["Number Files Created"] == len(names), response.text


def test_bulk_delete_of_thousands_within_the_clusters_limit(small_swift, container_name):
    names = [f"gc/{i:05d}" for i in range(2000)]
    _bulk_create(small_swift, container_name, names)
    container = SwiftContainer(credentials_for(small_swift), container_name)
    listed = list(container.list("gc/"))
    assert len(listed) == 2000
    deletes = (f"DELETE /v1/AUTH_test/{container_name}/gc/", "BulkDelete")
    started = time.monotonic()
    done = container.delete_many(listed + [StoredObject("gc/never-existed", 0)])
    elapsed = time.monotonic() - started
    assert done == 2001
    assert list(container.list()) == []
    logged_deletes = wait_for_logged(small_swift, *deletes, count=2001)
    transactions = {line.split(" tx", 1)[1].split()[0] for line in logged_deletes}
    assert len(logged_deletes) == 2001
    assert len(transactions) == 6, f"{len(transactions)} bulk requests for 2001 names, " \
                                   "400 at most each"
    print(f"bulk-deleted 2001 names in {elapsed:.1f}s")
    container.close()


def test_delete_many_removes_large_objects_with_their_segments(swift_container, tmp_path):
    write_file(tmp_path / "big", 6 << 20)
    write_file(tmp_path / "small", 10)
    swift_container.upload("big", str(tmp_path / "big"))
    swift_container.upload("small", str(tmp_path / "small"))
    assert swift_container.delete_many(list(swift_container.list())) == 2
    assert list(swift_container.list()) == []
    assert list(swift_container.list(container=swift_container.segment_container)) == []


def test_corrupted_download_is_detected_by_checksum(swift_container, tmp_path, devswift):
    data = write_file(tmp_path / "blob", 200_000)
    swift_container.upload("victim", str(tmp_path / "blob"))
    corrupt_on_disk(devswift, data)
    with pytest.raises(ChecksumMismatchError) as info:
        swift_container.download("victim", str(tmp_path / "out"))
    assert "MD5" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_corrupted_large_object_is_detected_by_segment_checksums(swift_container, tmp_path,
                                                                devswift):
    data = write_file(tmp_path / "big", 6 << 20)
    swift_container.upload("big", str(tmp_path / "big"))
    corrupt_on_disk(devswift, data[1 << 20:2 << 20])
    with pytest.raises(ChecksumMismatchError) as info:
        swift_container.download("big", str(tmp_path / "out"))
    assert "segment 2 of 6" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_downloads_send_no_head_request(swift_container, tmp_path, devswift):
    small = write_file(tmp_path / "small", 1000)
    big = write_file(tmp_path / "big", (5 << 20) + 3)
    swift_container.upload("small", str(tmp_path / "small"))
    swift_container.upload("big", str(tmp_path / "big"))
    swift_container.download("small", str(tmp_path / "small-back"))
    swift_container.download("big", str(tmp_path / "big-back"))
    assert read(tmp_path / "small-back") == small and read(tmp_path / "big-back") == big
    gets = wait_for_logged(devswift, f" GET /v1/AUTH_test/{swift_container.container}/",
                           count=2)
    assert len(gets) == 2, "one GET for the plain object, one for the large one's manifest"
    segment_gets = wait_for_logged(
        devswift, f" GET /v1/AUTH_test/{swift_container.segment_container}/big/", count=6)
    assert len(segment_gets) == 6, "then one GET for each of its segments"
    assert not logged(devswift, f" HEAD /v1/AUTH_test/{swift_container.container}/")


def test_holds_file_compares_every_segment_of_a_large_object(swift_container, tmp_path):
    data = write_file(tmp_path / "big", (5 << 20) + 3)
    swift_container.upload("big", str(tmp_path / "big"))
    assert swift_container.holds_file("big", str(tmp_path / "big"))
    changed = bytearray(data)
    changed[(3 << 20) + 5] ^= 0xFF
    (tmp_path / "changed").write_bytes(bytes(changed))
    assert not swift_container.holds_file("big", str(tmp_path / "changed"))
    (tmp_path / "longer").write_bytes(data + b"x")
    assert not swift_container.holds_file("big", str(tmp_path / "longer"))
    segment = next(iter(swift_container.list(container=swift_container.segment_container)))
    swift_container.delete_many([segment.name], container=swift_container.segment_container)
    assert not swift_container.holds_file("big", str(tmp_path / "big"))


def established_connections(port):
    """This process's established TCP connections to 127.0.0.1:*port*.

    Garbage is collected first: swiftclient's get_auth leaves its own
    connection to the collector.
    """
    gc.collect()
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                count += 1
    return count


def test_threads_get_their_own_connections_and_share_one_token(credentials, container_name,
                                                              tmp_path, devswift):
    port = int(devswift.settings().auth_url.split(":")[2].split("/")[0])
    container = SwiftContainer(credentials, container_name)
    container.ensure_container()
    auths_before = proxy_log(devswift).count("GET /auth/v1.0")
    payloads = {i: os.urandom(50_000 + i) for i in range(8)}
    barrier = threading.Barrier(9)
    errors = []

    def work(i):
        try:
            src, dst = tmp_path / f"in{i}", tmp_path / f"out{i}"
            for round_ in range(5):
                src.write_bytes(payloads[i])
                container.upload(f"t/{i}/{round_}", str(src))
                container.download(f"t/{i}/{round_}", str(dst))
                assert dst.read_bytes() == payloads[i]
        except Exception as exc:  # reported below
            errors.append(exc)
        barrier.wait(timeout=60)
        barrier.wait(timeout=60)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=60)
    during = established_connections(port)
    barrier.wait(timeout=60)
    for thread in threads:
        thread.join()
    assert errors == []
    assert during == 9, f"{during} connections for 8 threads and the main thread"
    assert established_connections(port) == 1, "finished threads' connections are closed"
    assert len(list(container.list("t/"))) == 40
    assert len(wait_for_logged(devswift, f"PUT /v1/AUTH_test/{container_name}/t/",
                               count=40)) == 40
    assert proxy_log(devswift).count("GET /auth/v1.0") - auths_before <= 1
    container.close()
    assert established_connections(port) == 0


def test_wrong_key_is_an_authentication_error_without_the_key(devswift, container_name,
                                                              caplog):
    caplog.set_level(logging.DEBUG)
    settings = devswift.settings()
    wrong = "Wr0ng-Key-Value-42"
    container = SwiftContainer(Credentials(auth_url=settings.auth_url, user=settings.user,
                                           key=wrong), container_name)
    with pytest.raises(AuthenticationError) as info:
        container.ensure_container()
    assert "rejected" in str(info.value) and settings.user in str(info.value)
    assert_secret_free(info.value, wrong)
    assert wrong not in repr(container) and wrong not in caplog.text


def test_no_credentials_at_all_is_a_clear_error(container_name):
    with pytest.raises(AuthenticationError, match="no usable credentials"):
        SwiftContainer(Credentials(), container_name)


def test_preauthenticated_token(devswift, container_name, tmp_path):
    settings = devswift.settings()
    creds = Credentials(preauth_url=settings.storage_url, preauth_token=mint_token(devswift))
    container = SwiftContainer(creds, container_name)
    write_file(tmp_path / "f", 1000)
    container.upload("x", str(tmp_path / "f"))
    assert [o.name for o in container.list()] == ["x"]
    container.close()


def test_expired_preauthenticated_token_says_so(devswift, container_name, caplog):
    caplog.set_level(logging.DEBUG)
    settings = devswift.settings()
    expired = mint_token(devswift, age=devswift.token_life + 60)
    container = SwiftContainer(Credentials(preauth_url=settings.storage_url,
                                           preauth_token=expired), container_name)
    with pytest.raises(AuthenticationError) as info:
        container.ensure_container()
    message = str(info.value)
    assert "expired" in message and info.value.status == 401
    assert_secret_free(info.value, expired, expired[8:24])
    assert expired[8:24] not in caplog.text


def test_expired_token_is_renewed_from_credentials(devswift, container_name, tmp_path):
    settings = devswift.settings()
    expired = mint_token(devswift, age=devswift.token_life + 60)
    creds = Credentials(auth_url=settings.auth_url, user=settings.user, key=settings.key,
                        preauth_url=settings.storage_url, preauth_token=expired)
    container = SwiftContainer(creds, container_name)
    auths_before = proxy_log(devswift).count("GET /auth/v1.0")
    write_file(tmp_path / "f", 10)
    container.upload("x", str(tmp_path / "f"))
    assert len(wait_for_logged(devswift, "GET /auth/v1.0", count=auths_before + 1)) \
        == auths_before + 1
    container.close()


def test_credentials_from_environment(devswift, container_name, tmp_path, monkeypatch):
    for name, value in devswift.settings().environ().items():
        monkeypatch.setenv(name, value)
    container = SwiftContainer(Credentials().or_environ(), container_name)
    write_file(tmp_path / "f", 10)
    container.upload("x", str(tmp_path / "f"))
    assert container.head("x").size == 10
    container.close()


def test_cluster_without_info_falls_back_to_defaults(start_cluster, container_name, tmp_path):
    cluster = start_cluster("noinfo", expose_info=False)
    container = SwiftContainer(credentials_for(cluster), container_name,
                               large_object_threshold=2 << 20, segment_size=1 << 20)
    assert container.info() == {}
    assert container.max_file_size == 5 * (1 << 30) + 2
    data = write_file(tmp_path / "big", 3 << 20)
    assert container.upload("big", str(tmp_path / "big")).large, "SLO assumed available"
    container.download("big", str(tmp_path / "back"))
    assert read(tmp_path / "back") == data
    write_file(tmp_path / "small", 10)
    for i in range(3):
        container.upload(f"small/{i}", str(tmp_path / "small"))
    assert container.delete_many(container.list()) == 4
    assert len(wait_for_logged(cluster, f"DELETE /v1/AUTH_test/{container_name}/small/",
                               count=3)) == 3
    assert not logged(cluster, "bulk-delete"), "no bulk delete assumed"
    assert list(container.list()) == []
    assert list(container.list(container=container.segment_container)) == []
    container.close()


def test_copy_inside_swift_plain_and_large(swift_container, tmp_path):
    small = write_file(tmp_path / "small", 5000)
    big = write_file(tmp_path / "big", (6 << 20) + 7)
    swift_container.upload("small", str(tmp_path / "small"), metadata={"k": "v"})
    swift_container.upload("big", str(tmp_path / "big"), metadata={"k": "w"})
    assert swift_container.copy("small", "small-copy").size == 5000
    copied = swift_container.copy("big", "big-copy")
    assert copied.large and copied.size == len(big)
    segments = list(swift_container.list(container=swift_container.segment_container))
    assert len(segments) == 14, "the copy has segments of its own"

    assert swift_container.delete("big") and swift_container.delete("small")
    swift_container.download("big-copy", str(tmp_path / "out-big"))
    swift_container.download("small-copy", str(tmp_path / "out-small"))
    assert read(tmp_path / "out-big") == big and read(tmp_path / "out-small") == small
    assert swift_container.head("big-copy").metadata == with_checksum(big, k="w")
    assert swift_container.head("small-copy").metadata == with_checksum(small, k="v")
    with pytest.raises(NotFoundError):
        swift_container.copy("absent", "anything")


@pytest.mark.parametrize("body, unavailable", [
    (b"Errors:\n/c_segments/a/00000000, 503 Service Unavailable\n"
     b"/c_segments/a/00000001, 503 Service Unavailable\n", ["503 Service Unavailable"]),
    (b'{"Errors": [["/c_segments/a/00000000", "507 Insufficient Storage"]]}',
     ["507 Insufficient Storage"]),
    (b"Errors:\n/c_segments/a/00000000, 503 Service Unavailable\n"
     b"/c_segments/a/00000001, Etag Mismatch\n", []),
    (b"Errors:\n/c_segments/a/00000000, 404 Not Found\n", []),
    (b"Errors:\n/c_segments/a/00000000, Size Mismatch\n", []),
    (b"Manifest must be valid JSON.\n", []),
    (b"", []),
])
def test_a_manifest_refused_for_unavailable_segments_only_is_transient(body, unavailable):
    """Swift's 400 to a manifest PUT lists each segment whose check failed: only
    segments that could not be checked (5xx) make it worth sending again."""
    from swiftclient.exceptions import ClientException

    from zodb_swiftblobs.swift.transport import unavailable_segments

    error = ClientException("Object PUT failed", http_status=400, http_response_content=body)
    assert unavailable_segments(error) == unavailable

"""Client-side encryption at rest, against the real embedded Swift."""

import base64
import io
import json
import logging
import os
import random
import subprocess
import sys
import textwrap

import pytest
import requests
import transaction
import ZODB
import ZODB.config
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from conftest import (assert_secret_free, blob_objects, child_environment, corrupt_on_disk,
                      credentials_for, download_cut_mid_stream, swift_config,
                      swift_storage)
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.encryption import (CHUNK_SIZE, ENVIRONMENT_VARIABLE, DecryptionFailed,
                                        Keyring, key_id, parse_key)
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.ownership import EncryptionRequiredError
from zodb_swiftblobs import SwiftStorageError
from zodb_swiftblobs.swift import MissingKeyError, SwiftContainer, file_md5

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = bytes(range(100, 132)).hex()
ENCRYPTION_HEADER = "x-object-meta-swiftblobs-encryption"


@pytest.fixture(autouse=True)
def no_environment_keys(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)


def raw_get(cluster, container, name):
    """(headers, bytes) of an object as Swift holds it, read with plain HTTP."""
    settings = cluster.settings()
    auth = requests.get(settings.auth_url, headers={"X-Auth-User": settings.user,
                                                    "X-Auth-Key": settings.key})
    response = requests.get(f"{auth.headers['X-Storage-Url']}/{container}/{name}",
                            headers={"X-Auth-Token": auth.headers["X-Auth-Token"]})
    response.raise_for_status()
    return {k.lower(): v for k, v in response.headers.items()}, response.content


def raw_post_metadata(cluster, container, name, metadata):
    settings = cluster.settings()
    auth = requests.get(settings.auth_url, headers={"X-Auth-User": settings.user,
                                                    "X-Auth-Key": settings.key})
    response = requests.post(f"{auth.headers['X-Storage-Url']}/{container}/{name}",
                             headers={"X-Auth-Token": auth.headers["X-Auth-Token"],
                                      **metadata})
    response.raise_for_status()


def open_db(cluster, container, cache_dir, *, read_only=False, **options):
    """A database on the FileStorage beside *cache_dir*, its blobs in *container*
    (opened *read_only*: a process without the key of an encrypting database
    may only read)."""
    base = FileStorage(os.path.join(os.path.dirname(cache_dir), "Data.fs"),
                       read_only=read_only)
    return ZODB.DB(swift_storage(cluster, base, container, cache_dir, **options))


def write_blobs(db, blobs):
    """Commit each of *blobs* ({root key: bytes}); return {root key: (oid, tid)}."""
    with db.transaction() as conn:
        for name, data in blobs.items():
            conn.root()[name] = Blob(data)
    with db.transaction() as conn:
        stored = {name: conn.root()[name] for name in blobs}
        for blob in stored.values():
            blob._p_activate()
        return {name: (blob._p_oid, blob._p_serial) for name, blob in stored.items()}


def read_blob(db, name):
    with db.transaction() as conn:
        with conn.root()[name].open() as f:
            return f.read()


def cached_blob_files(cache_dir):
    return [os.path.join(root, name) for root, _, names in os.walk(cache_dir)
            for name in names if ".blob" in name]


# -- the format ---------------------------------------------------------------------

def test_keys_are_parsed_from_base64_urlsafe_base64_and_hex_never_echoed():
    key = os.urandom(32)
    assert parse_key(base64.b64encode(key).decode()) == key
    assert parse_key(base64.urlsafe_b64encode(key).decode()) == key
    assert parse_key(key.hex()) == key
    keyring = Keyring.from_text(f" {KEY_B},\n{KEY_A} ")
    assert keyring.key_ids == [key_id(parse_key(KEY_B)), key_id(parse_key(KEY_A))]
    assert KEY_A not in repr(keyring) and KEY_B not in repr(keyring)
    for bad in ("secret-but-not-a-key", base64.b64encode(os.urandom(16)).decode(),
                key.hex()[:-1] + "g", ""):
        with pytest.raises(ValueError) as info:
            Keyring.from_text(bad)
        if bad:
            assert bad not in str(info.value)


def test_ciphertext_arriving_in_pieces_in_any_order_is_decrypted_at_its_offsets():
    cipher = Keyring.from_text(KEY_A).new_cipher()
    for size in (0, CHUNK_SIZE, 5 * CHUNK_SIZE + 7):
        data = os.urandom(size)
        whole = cipher.reader(io.BytesIO(data), size).read()
        pieces = [(offset, whole[offset:offset + 30_001])
                  for offset in range(0, len(whole), 30_001)]
        random.shuffle(pieces)
        out = bytearray(size)

        def write_at(plaintext, offset, out=out):
            out[offset:offset + len(plaintext)] = plaintext
        decryptor = cipher.scattered_writer(len(whole), write_at)
        for offset, piece in pieces[:-1]:
            decryptor.write_at(piece, offset)
        with pytest.raises(DecryptionFailed, match="cut short"):
            decryptor.finish()
        decryptor.write_at(pieces[-1][1], pieces[-1][0])
        decryptor.finish()
        assert out == data
    flipped = bytearray(whole)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionFailed):
        cipher.scattered_writer(len(whole), write_at).write_at(bytes(flipped), 0)
    with pytest.raises(DecryptionFailed, match="more ciphertext"):
        cipher.scattered_writer(len(whole), write_at).write_at(b"x", len(whole))


def test_any_ciphertext_range_is_the_same_bytes_and_tampering_fails():
    cipher = Keyring.from_text(KEY_A).new_cipher()
    for size in (0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 7):
        data = os.urandom(size)
        whole = cipher.reader(io.BytesIO(data), size).read()
        assert len(whole) == cipher.ciphertext_size(size)
        assert size < 16 or data[:16] not in whole
        reader = cipher.reader(io.BytesIO(data), size)
        for offset in (0, 5, CHUNK_SIZE + 3, len(whole) - 1):
            reader.seek(offset)
            assert reader.read(CHUNK_SIZE + 40) == whole[offset:offset + CHUNK_SIZE + 40]
        same_salt = Keyring.from_text(KEY_A).cipher_for(cipher.header)
        assert same_salt.reader(io.BytesIO(data), size).read() == whole
        out = io.BytesIO()
        writer = cipher.writer(out)
        for offset in range(0, len(whole), 1000):
            writer.write(whole[offset:offset + 1000])
        writer.finish()
        assert out.getvalue() == data
    step = CHUNK_SIZE + 16
    reordered = whole[step:2 * step] + whole[:step] + whole[2 * step:]
    flipped = bytearray(whole)
    flipped[10] ^= 1
    for bad in (whole[:step], whole[:-1], whole + whole[-step:], reordered, bytes(flipped)):
        writer = cipher.writer(io.BytesIO())
        with pytest.raises(DecryptionFailed, match="authentication failed at chunk"):
            writer.write(bad)
            writer.finish()


# -- through the storage ------------------------------------------------------------

def test_swift_holds_ciphertext_and_the_storage_reads_plaintext(
        devswift, tmp_path, container_name):
    blobs = {"small": os.urandom(300_000), "large": os.urandom((3 << 20) + 5),
             "empty": b""}
    db = open_db(devswift, container_name, tmp_path / "cache", encryption_keys=KEY_A,
                 large_object_threshold=1 << 20, segment_size=512 << 10)
    try:
        revisions = write_blobs(db, blobs)
        for name, (oid, tid) in revisions.items():
            object_name = ObjectLayout().object_name(oid, tid)
            headers, stored = raw_get(devswift, container_name, object_name)
            assert headers[ENCRYPTION_HEADER].split()[:2] == ["v1", key_id(parse_key(KEY_A))]
            assert len(stored) == Keyring.from_text(KEY_A).new_cipher().ciphertext_size(
                len(blobs[name]))
            if blobs[name]:
                assert blobs[name][1000:1100] not in stored
            assert (headers.get("x-static-large-object") == "True") == (name == "large")
    finally:
        db.close()
    fresh = open_db(devswift, container_name, tmp_path / "fresh", encryption_keys=KEY_A)
    try:
        for name, data in blobs.items():
            assert read_blob(fresh, name) == data
        assert fresh.storage.cache_stats()["misses"] == len(blobs)
    finally:
        fresh.close()


MEMORY_CHILD = """
import os, sys, time
from zodb_swiftblobs.encryption import Keyring
from zodb_swiftblobs.swift import Credentials, SwiftContainer, file_md5

def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM"))

auth_url, user, key, container, work, size, threshold = sys.argv[1:]
source = os.path.join(work, "source")
with open(source, "wb") as f:
    for _ in range(int(size) >> 20):
        f.write(os.urandom(1 << 20))
swift = SwiftContainer(Credentials(auth_url=auth_url, user=user, key=key), container,
                       large_object_threshold=int(threshold), segment_size=8 << 20,
                       segment_concurrency=2, deadline=120,
                       encryption=Keyring.from_text(%(key)r))
swift.ensure_container()
swift.info()
before = peak()
stored = swift.upload("big", source)
swift.download("big", os.path.join(work, "back"))
swift.check("big")
assert file_md5(source) == file_md5(os.path.join(work, "back"))
print(stored.large, peak() - before)
"""


@pytest.mark.parametrize("large", [False, True], ids=["plain", "large"])
def test_memory_stays_flat_whatever_the_blob_size(devswift, tmp_path, container_name,
                                                  large):
    size = 160 << 20
    settings = devswift.settings()
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD % {"key": KEY_A}, settings.auth_url,
         settings.user, settings.key, container_name, str(tmp_path), str(size),
         str(32 << 20 if large else 1 << 30)],
        env=child_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    was_large, growth = result.stdout.split()
    assert was_large == str(large)
    assert int(growth) < 48 << 20, f"peak memory grew by {int(growth) >> 20} MiB"


def test_key_rotation_reads_old_objects_and_encrypts_with_the_first_key(
        devswift, tmp_path, container_name):
    old = open_db(devswift, container_name, tmp_path / "cache-a", encryption_keys=KEY_A)
    try:
        write_blobs(old, {"old": b"written under A" * 5000})
    finally:
        old.close()
    rotated = open_db(devswift, container_name, tmp_path / "cache-ba",
                      encryption_keys=[KEY_B, KEY_A])
    try:
        assert read_blob(rotated, "old") == b"written under A" * 5000
        (new_oid, new_tid), = write_blobs(rotated, {"new": b"written under B"}).values()
        assert read_blob(rotated, "new") == b"written under B"
    finally:
        rotated.close()
    container = SwiftContainer(credentials_for(devswift), container_name)
    try:
        header = container.head(ObjectLayout().object_name(new_oid, new_tid)).metadata
        assert header["swiftblobs-encryption"].split()[1] == key_id(parse_key(KEY_B))
    finally:
        container.close()

    only_b = open_db(devswift, container_name, tmp_path / "cache-b", encryption_keys=KEY_B)
    try:
        assert read_blob(only_b, "new") == b"written under B"
        with pytest.raises(SwiftStorageError) as info:
            read_blob(only_b, "old")
        message = str(info.value)
        assert f"encrypted with key id {key_id(parse_key(KEY_A))}" in message
        assert f"configured key ids: {key_id(parse_key(KEY_B))}" in message
        assert [os.path.basename(p) for p in cached_blob_files(tmp_path / "cache-b")] == \
            [f"{new_tid.hex()}.blob"], "no file (nor partial file) for the unreadable blob"
    finally:
        only_b.close()

    no_key = open_db(devswift, container_name, tmp_path / "cache-none", read_only=True)
    try:
        with pytest.raises(SwiftStorageError, match="no encryption key is configured"):
            read_blob(no_key, "old")
        assert cached_blob_files(tmp_path / "cache-none") == []
    finally:
        no_key.close()


def test_tampered_objects_and_swapped_metadata_give_errors_never_bytes(
        devswift, tmp_path, container_name):
    blobs = {"one": os.urandom(200_000), "two": os.urandom(200_000)}
    db = open_db(devswift, container_name, tmp_path / "cache", encryption_keys=KEY_A)
    try:
        revisions = write_blobs(db, blobs)
    finally:
        db.close()
    one, two = (ObjectLayout().object_name(*revisions[name]) for name in ("one", "two"))
    headers_one, ciphertext_one = raw_get(devswift, container_name, one)
    headers_two, _ = raw_get(devswift, container_name, two)
    corrupt_on_disk(devswift, ciphertext_one)
    raw_post_metadata(devswift, container_name, two,
                      {"X-Object-Meta-Swiftblobs-Encryption": headers_one[ENCRYPTION_HEADER]})
    fresh = open_db(devswift, container_name, tmp_path / "fresh", encryption_keys=KEY_A)
    try:
        for name in ("one", "two"):
            with pytest.raises(SwiftStorageError, match="authentication failed at chunk"):
                read_blob(fresh, name)
        assert cached_blob_files(tmp_path / "fresh") == []
    finally:
        fresh.close()


@pytest.mark.parametrize("size", [100_000, (2 << 20) + 1], ids=["plain", "large"])
def test_undo_brings_back_an_encrypted_blob(devswift, tmp_path, container_name, size):
    options = dict(encryption_keys=KEY_A, large_object_threshold=1 << 20,
                   segment_size=512 << 10)
    first, second = os.urandom(size), os.urandom(size)
    db = open_db(devswift, container_name, tmp_path / "cache", **options)
    try:
        with db.transaction() as conn:
            conn.root.blob = Blob(first)
        with db.transaction() as conn:
            with conn.root.blob.open("w") as f:
                f.write(second)
        db.undo(db.undoLog(0, 1)[0]["id"])
        transaction.commit()
        with db.transaction() as conn:
            conn.root.blob._p_activate()
            oid, tid = conn.root.blob._p_oid, conn.root.blob._p_serial
    finally:
        db.close()
    headers, stored = raw_get(devswift, container_name, ObjectLayout().object_name(oid, tid))
    assert headers[ENCRYPTION_HEADER].split()[1] == key_id(parse_key(KEY_A))
    assert first[:100] not in stored
    fresh = open_db(devswift, container_name, tmp_path / "fresh", **options)
    try:
        assert read_blob(fresh, "blob") == first
    finally:
        fresh.close()


def test_a_temporary_url_is_refused_for_an_encrypted_blob(devswift, tmp_path,
                                                          container_name):
    db = open_db(devswift, container_name, tmp_path / "cache", encryption_keys=KEY_A,
                 temp_url_key="url-signing-key")
    try:
        (oid, _), = write_blobs(db, {"blob": b"secret document"}).values()
        with pytest.raises(SwiftStorageError, match="encrypted"):
            db.storage.blob_url(oid)
    finally:
        db.close()


def test_the_key_comes_from_the_environment_when_none_is_configured(
        devswift, tmp_path, container_name, monkeypatch):
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, f"{KEY_B} {KEY_A}")
    db = open_db(devswift, container_name, tmp_path / "cache")
    try:
        assert db.storage.swift_container.encryption.key_ids[0] == key_id(parse_key(KEY_B))
        (oid, tid), = write_blobs(db, {"blob": b"from the environment"}).values()
    finally:
        db.close()
    headers, stored = raw_get(devswift, container_name, ObjectLayout().object_name(oid, tid))
    assert headers[ENCRYPTION_HEADER].split()[1] == key_id(parse_key(KEY_B))
    assert b"from the environment" not in stored


def test_a_bad_key_fails_at_open_without_quoting_it(devswift, tmp_path, container_name,
                                                    monkeypatch):
    bad = "Zm9vYmFy-not-a-real-key-but-secret"
    with pytest.raises(ValueError, match="encryption key #2") as info:
        open_db(devswift, container_name, tmp_path / "cache", encryption_keys=[KEY_A, bad])
    assert_secret_free(info.value, bad, KEY_A)
    monkeypatch.setenv(ENVIRONMENT_VARIABLE, bad)
    with pytest.raises(ValueError, match="encryption key #1") as info:
        open_db(devswift, container_name, tmp_path / "cache")
    assert_secret_free(info.value, bad)


def test_without_cryptography_only_encryption_fails(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["cryptography"] = None
        import zodb_swiftblobs.storage, zodb_swiftblobs.cli
        from zodb_swiftblobs.encryption import Keyring
        try:
            Keyring.from_text({KEY_A!r})
        except ImportError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=child_environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install zodb-swiftblobs[encryption]" in result.stdout


# -- migrate and verify, through the command line -------------------------------------------

def make_blob_directory(directory, blobs):
    """A FileStorage with a ZODB blob directory holding *blobs* ({root key: bytes})."""
    from ZODB.blob import BlobStorage
    os.makedirs(directory / "blobs")
    db = ZODB.DB(BlobStorage(str(directory / "blobs"), FileStorage(str(directory / "Data.fs"))))
    try:
        with db.transaction() as conn:
            for name, data in blobs.items():
                conn.root()[name] = Blob(data)
    finally:
        db.close()
    return sorted(os.path.join(root, name) for root, _, names in os.walk(directory / "blobs")
                  for name in names if name.endswith(".blob"))


def run(capsys, *argv):
    status = main([*argv, "--json"])
    output = capsys.readouterr().out
    return status, json.loads(output), output


def write_config(path, cluster, container, cache_dir, data_fs, *keys):
    extra = "\n    ".join(f"encryption-key {key}" for key in keys)
    path.write_text(swift_config(cluster, container, cache_dir,
                                 f"<filestorage>\npath {data_fs}\n</filestorage>",
                                 extra=extra + "\n    large-object-threshold 1MB"
                                 "\n    segment-size 512KB"))
    return str(path)


def test_migrate_encrypts_skips_what_swift_holds_and_verify_decrypts(
        devswift, tmp_path, container_name, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    blobs = {"small": os.urandom(50_000), "large": os.urandom((2 << 20) + 3)}
    files = make_blob_directory(tmp_path, blobs)
    data_fs = tmp_path / "Data.fs"
    config_a = write_config(tmp_path / "a.conf", devswift, container_name,
                            tmp_path / "cache-a", data_fs, KEY_A)
    outputs = []

    status, report, output = run(capsys, "migrate", config_a, "--blob-dir",
                                 str(tmp_path / "blobs"))
    outputs.append(output)
    assert (status, report["uploaded"], report["skipped"]) == (0, 2, 0)
    container = SwiftContainer(credentials_for(devswift), container_name)
    try:
        listed = blob_objects(container)
        assert len(listed) == 2
        for stored in listed:
            headers, ciphertext = raw_get(devswift, container_name, stored.name)
            assert headers[ENCRYPTION_HEADER].split()[1] == key_id(parse_key(KEY_A))
            assert not any(data[:64] in ciphertext for data in blobs.values())
    finally:
        container.close()

    status, again, output = run(capsys, "migrate", config_a, "--blob-dir",
                                str(tmp_path / "blobs"))
    outputs.append(output)
    assert (status, again["uploaded"], again["skipped"]) == (0, 0, 2)

    config_ba = write_config(tmp_path / "ba.conf", devswift, container_name,
                             tmp_path / "cache-ba", data_fs, KEY_B, KEY_A)
    status, rotated, output = run(capsys, "migrate", config_ba, "--blob-dir",
                                  str(tmp_path / "blobs"))
    outputs.append(output)
    assert (status, rotated["uploaded"], rotated["skipped"]) == (0, 0, 2), \
        "objects under an older key still configured hold the same files"

    changed = files[0]
    os.chmod(changed, 0o644)
    with open(changed, "r+b") as f:
        f.write(b"changed!")
    status, repaired, output = run(capsys, "migrate", config_ba, "--blob-dir",
                                   str(tmp_path / "blobs"))
    outputs.append(output)
    assert (status, repaired["uploaded"], repaired["skipped"]) == (0, 1, 1)

    for config in (config_a, config_ba):
        status, verified, output = run(capsys, "verify", config, "--deep")
        outputs.append(output)
        expected_ok = config == config_ba  # the re-uploaded object is under B
        assert (status == 0, verified["ok"]) == (expected_ok, expected_ok), verified
        if not expected_ok:
            assert len(verified["unchecked"]) == 1 and "configured key ids" in \
                verified["unchecked"][0]

    config_wrong = write_config(tmp_path / "wrong.conf", devswift, container_name,
                                tmp_path / "cache-wrong", data_fs,
                                base64.b64encode(os.urandom(32)).decode())
    status, wrong, output = run(capsys, "verify", config_wrong)
    outputs.append(output)
    assert status == 0 and wrong["ok"], "a shallow verification reads no content"
    status, wrong, output = run(capsys, "verify", config_wrong, "--deep")
    outputs.append(output)
    assert status == 1 and len(wrong["unchecked"]) == 2 and not wrong["corrupt"]

    # Another object's encryption parameters: the MD5 matches, authentication fails.
    small = next(stored.name for stored in listed if not stored.large)
    large = next(stored.name for stored in listed if stored.large)
    raw_post_metadata(devswift, container_name, small, {
        "X-Object-Meta-Swiftblobs-Encryption":
            raw_get(devswift, container_name, large)[0][ENCRYPTION_HEADER]})
    status, tampered, output = run(capsys, "verify", config_ba, "--deep")
    outputs.append(output)
    assert status == 1 and len(tampered["corrupt"]) == 1
    assert "authentication failed" in tampered["corrupt"][0]

    logged = "\n".join(record.getMessage() for record in caplog.records)
    for key in (KEY_A, KEY_B):
        assert key not in logged and all(key not in text for text in outputs)


def test_no_key_in_logs_errors_or_reprs(devswift, tmp_path, container_name, caplog,
                                        capsys):
    caplog.set_level(logging.DEBUG)
    seen = []
    db = open_db(devswift, container_name, tmp_path / "cache",
                 encryption_keys=[KEY_B, KEY_A], large_object_threshold=1 << 20,
                 segment_size=512 << 10)
    try:
        write_blobs(db, {"small": b"x" * 1000, "large": os.urandom(3 << 20)})
        storage = db.storage
        seen += [repr(storage), repr(storage.swift_container),
                 repr(storage.swift_container.encryption), repr(db)]
    finally:
        db.close()
    for keys in ([KEY_A], None):
        other = open_db(devswift, container_name, tmp_path / f"cache-{bool(keys)}",
                        encryption_keys=keys, read_only=True)
        try:
            with pytest.raises(SwiftStorageError) as info:
                read_blob(other, "small")
            assert_secret_free(info.value, KEY_A, KEY_B)
            seen.append(str(info.value))
        finally:
            other.close()
    for keyring in (Keyring.from_text(KEY_A), None):
        container = SwiftContainer(credentials_for(devswift), container_name,
                                   encryption=keyring)
        try:
            for stored in blob_objects(container):
                with pytest.raises(MissingKeyError) as info:
                    container.download(stored.name, str(tmp_path / "out"))
                assert_secret_free(info.value, KEY_A, KEY_B)
                seen.append(str(info.value))
        finally:
            container.close()
    assert not os.path.exists(tmp_path / "out")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "nothing was logged"
    for key in (KEY_A, KEY_B, parse_key(KEY_A).hex(), base64.b64encode(parse_key(KEY_B))
                .decode(), repr(parse_key(KEY_A)), repr(parse_key(KEY_B))):
        assert key not in logged
        assert all(key not in text for text in seen)


def test_a_download_cut_mid_stream_resumes_inside_a_chunk(start_cluster, tmp_path,
                                                         container_name, caplog):
    caplog.set_level(logging.DEBUG, logger="zodb_swiftblobs.swift")
    cluster = start_cluster("encryption-faults")
    container = SwiftContainer(credentials_for(cluster), container_name, deadline=30,
                               timeout=2, initial_backoff=0.1, max_backoff=0.5,
                               encryption=Keyring.from_text(KEY_A))
    try:
        size = 96 << 20
        with open(tmp_path / "big", "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
        container.upload("big", str(tmp_path / "big"))
        cut_at = download_cut_mid_stream(cluster, container, "big", tmp_path / "copy")
        assert cut_at is not None, "the download finished before the cut"
        assert file_md5(str(tmp_path / "copy")) == file_md5(str(tmp_path / "big"))
        resumed = [int(r.getMessage().rsplit(" ", 1)[1]) for r in caplog.records
                   if "resuming download" in r.getMessage()]
        assert resumed and resumed[0] >= 8 << 20
        assert resumed[0] % (CHUNK_SIZE + 16), "resumed at a chunk boundary: try again"
    finally:
        container.close()
        cluster.stop()


def test_a_process_without_the_key_may_not_write_plaintext_into_an_encrypting_database(
        devswift, tmp_path, container_name, capsys):
    db = open_db(devswift, container_name, tmp_path / "cache", encryption_keys=[KEY_A])
    write_blobs(db, {"blob": b"secret"})
    db.close()
    base = FileStorage(str(tmp_path / "Data.fs"))
    try:
        with pytest.raises(EncryptionRequiredError, match="no encryption key is configured"):
            swift_storage(devswift, base, container_name, tmp_path / "cache")
    finally:
        base.close()
    reader = swift_storage(devswift, FileStorage(str(tmp_path / "Data.fs"), read_only=True),
                           container_name, tmp_path / "cache")
    reader.close()  # reading needs no promise: encrypted blobs fail to read, clearly
    config = tmp_path / "plain.conf"
    write_config(config, devswift, container_name, tmp_path / "cache", tmp_path / "Data.fs")
    status, result, _ = run(capsys, "claim", str(config))
    assert status == 0 and result["encrypted"] is False
    db = open_db(devswift, container_name, tmp_path / "cache")  # stopped on purpose
    write_blobs(db, {"plain": b"no longer encrypted"})
    db.close()

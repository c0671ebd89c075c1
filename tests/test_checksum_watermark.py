"""The checksum watermark of the ownership marker: objects of revisions after
it without a recorded checksum are corrupt for ``verify --deep``, which with
``--repair`` adopts their content; against the real embedded Swift."""

import json
import os
import shutil

import pytest
import transaction

from conftest import credentials_for
from test_cli import commit_blobs, run, wrapped_db
from test_recorded_checksums import (CHECKSUM_HEADER, ENCRYPTION_HEADER, KEY, RawSwift,
                                     corrupt_reasons, object_names)
from zodb_swiftblobs import ForeignPrefixError
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.encryption import keyring_from
from zodb_swiftblobs.layout import ObjectLayout
from zodb_swiftblobs.swift import SwiftContainer
from zodb_swiftblobs.swift.adoption import adopt_content

MARKER = ObjectLayout().marker
UNRECORDED = "no checksum recorded, though written after checksums were"
RECORD = CHECKSUM_HEADER.lower()
ENCRYPTION = ENCRYPTION_HEADER.lower()


def marker(raw):
    return json.loads(raw.get(MARKER))


def assert_unrecorded_corrupt(capsys, config, names):
    status, report = run(capsys, "verify", str(config), "--deep")
    reasons = corrupt_reasons(report)
    assert (status, sorted(reasons)) == (1, sorted(names))
    assert all(reason.startswith(UNRECORDED) for reason in reasons.values()), reasons
    return report


def assert_verified(capsys, config, without_checksum=0):
    status, report = run(capsys, "verify", str(config), "--deep")
    assert (status, report["corrupt"], report["without_checksum"]) == (0, [], without_checksum)


def test_a_blob_replaced_by_a_plain_put_of_other_bytes_of_its_size_is_corrupt(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    raw = RawSwift(devswift, container_name)
    assert marker(raw)["checksums_from"] == "00" * 8, "a new database: every blob has one"
    blobs = {"replaced": os.urandom(3000), "kept": os.urandom(3000)}
    names = object_names(commit_blobs(db, blobs))
    db.close()
    assert_verified(capsys, config)

    other = os.urandom(3000)
    raw.put(names["replaced"], other, {})  # as `swift upload` does: no metadata
    report = assert_unrecorded_corrupt(capsys, config, [names["replaced"]])
    assert report["without_checksum"] == 0
    assert main(["verify", str(config), "--deep"]) == 1
    assert "its content was replaced, or a process of an earlier release wrote it" in \
        capsys.readouterr().out

    shutil.rmtree(tmp_path / "cache")
    config, db = wrapped_db(devswift, tmp_path, container_name)
    try:
        with db.transaction() as conn:
            assert conn.root()["replaced"].open().read() == other, \
                "reads do not look at the watermark"
    finally:
        db.close()


def test_a_marker_of_an_earlier_release_gains_the_watermark_from_the_first_writer(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    raw = RawSwift(devswift, container_name)
    ids = commit_blobs(db, {"a": os.urandom(2000), "b": os.urandom(2500)})
    db.close()
    old_names = object_names(ids)
    # What an earlier release leaves: a marker without the watermark, objects without a record.
    legacy = raw.as_earlier_release()
    for name in old_names.values():
        raw.post(name, {})
    assert_verified(capsys, config, without_checksum=2)
    assert "checksums_from" not in marker(raw), "verify opens the storage read-only"

    config, db = wrapped_db(devswift, tmp_path, container_name)
    last_tid = ids["a"][1]
    assert marker(raw)["checksums_from"] == last_tid.hex()
    assert marker(raw)["owner"] == legacy["owner"]
    new_names = object_names(commit_blobs(db, {"c": os.urandom(1500), "d": os.urandom(1500)}))
    db.close()
    assert_verified(capsys, config, without_checksum=2)

    # A process of the earlier release still writing: its objects carry no record.
    raw.post(new_names["c"], {})
    assert_unrecorded_corrupt(capsys, config, [new_names["c"]])
    status, report = run(capsys, "verify", str(config), "--deep", "--repair")
    assert (status, report["adopted"]) == (1, [])  # repairing alone adopts nothing
    assert list(corrupt_reasons(report)) == [new_names["c"]]
    status, report = run(capsys, "verify", str(config), "--deep", "--adopt-unrecorded")
    assert (status, report["adopted"], report["corrupt"]) == (0, [new_names["c"]], [])
    assert CHECKSUM_HEADER.lower() in raw.metadata(new_names["c"])
    assert_verified(capsys, config, without_checksum=2)

    config, db = wrapped_db(devswift, tmp_path, container_name)
    db.close()
    assert run(capsys, "claim", str(config))[0] == 0
    assert marker(raw)["checksums_from"] == last_tid.hex(), "the watermark never moves"


def test_claim_sets_the_watermark_to_the_last_transaction(devswift, tmp_path,
                                                         container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    ids = commit_blobs(db, {"a": os.urandom(2000)})
    db.close()
    raw = RawSwift(devswift, container_name)
    raw.delete(MARKER)
    assert run(capsys, "claim", str(config))[0] == 0
    assert marker(raw)["checksums_from"] == ids["a"][1].hex()


def test_repair_keeps_encryption_parameters_and_deletion_schedules(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name, encryption_key=KEY,
                            large_object_threshold="1MB", segment_size="512KB")
    names = object_names(commit_blobs(db, {"small": os.urandom(4000),
                                           "big": os.urandom((2 << 20) + 3)}))
    db.close()
    raw = RawSwift(devswift, container_name)
    uploaded = {name: raw.metadata(name) for name in names.values()}
    for name, metadata in uploaded.items():  # as an earlier release wrote them
        raw.post(name, {ENCRYPTION_HEADER: metadata[ENCRYPTION]})
    assert_unrecorded_corrupt(capsys, config, names.values())

    view = SwiftContainer(credentials_for(devswift), container_name,
                          encryption=keyring_from(KEY))
    try:
        small, big = names["small"], names["big"]
        view.schedule_deletion(small, 3600)
        scheduled = raw.head(small)
        assert adopt_content(view, small) == uploaded[small][RECORD]
        adopted = raw.head(small)
        for header in ("x-delete-at", "content-type", ENCRYPTION):
            assert adopted[header] == scheduled[header], header
        assert adopted[RECORD] == uploaded[small][RECORD]

        status, report = run(capsys, "verify", str(config), "--deep", "--repair",
                             "--adopt-unrecorded")
        assert (status, report["adopted"], report["repaired"]) == (0, [big], [small])
        assert raw.metadata(big) == uploaded[big], "encryption kept, the same keyed record"
        assert view.head(big).large
    finally:
        view.close()
    assert_verified(capsys, config)


def test_a_marker_with_a_watermark_that_is_no_transaction_id_is_unreadable(
        devswift, tmp_path, container_name):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    db.close()
    raw = RawSwift(devswift, container_name)
    raw.put(MARKER, json.dumps({**marker(raw), "checksums_from": "yesterday"}), {})
    with pytest.raises(ForeignPrefixError, match="unreadable ownership marker"):
        wrapped_db(devswift, tmp_path, container_name)


def rewrite_and_undo(db, key):
    """Commit new bytes for blob *key*, then undo that; the undo's tid."""
    with db.transaction() as conn:
        with conn.root()[key].open("w") as f:
            f.write(os.urandom(1000))
    db.undo(db.undoLog(0, 1)[0]["id"])
    transaction.commit()
    return db.lastTransaction()


def test_undoing_back_to_a_revision_of_an_earlier_release_records_its_checksum(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    raw = RawSwift(devswift, container_name)
    old = os.urandom(2000)
    old_name = object_names(commit_blobs(db, {"a": old}))["a"]
    db.close()
    raw.as_earlier_release()
    raw.post(old_name, {})

    config, db = wrapped_db(devswift, tmp_path, container_name)  # sets the watermark
    try:
        rewrite_and_undo(db, "a")
        with db.transaction() as conn:
            assert conn.root()["a"].open().read() == old
    finally:
        db.close()
    assert_verified(capsys, config, without_checksum=1)


def test_undoing_back_to_a_replaced_revision_does_not_adopt_it(
        devswift, tmp_path, container_name, capsys):
    config, db = wrapped_db(devswift, tmp_path, container_name)
    raw = RawSwift(devswift, container_name)
    replaced_name = object_names(commit_blobs(db, {"a": os.urandom(2000)}))["a"]
    raw.put(replaced_name, os.urandom(2000), {})  # after the watermark, without a record
    try:
        undone_tid = rewrite_and_undo(db, "a")
    finally:
        db.close()
    undone_name = replaced_name.rsplit("/", 1)[0] + f"/{undone_tid.hex()}.blob"
    assert_unrecorded_corrupt(capsys, config, [replaced_name, undone_name])

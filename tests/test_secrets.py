"""No secret anywhere: every log record (all loggers, DEBUG), exception,
repr and --json output of a session that uses every kind of secret, through
successes and failures, is searched for each of them."""

import base64
import io
import json
import logging
import os
from contextlib import redirect_stderr, redirect_stdout

import pytest
import ZODB
import ZODB.config
import ZODB.MappingStorage
from ZODB.blob import Blob

from conftest import assert_secret_free, mint_token, swift_config
from zodb_swiftblobs.cli import main
from zodb_swiftblobs import (SwiftAuthenticationError, SwiftBlobStorage, SwiftTransientError)
from zodb_swiftblobs.swift import AuthenticationError, Credentials, SwiftContainer

ENCRYPTION_KEY = base64.b64encode(b"k" * 16 + os.urandom(16)).decode()
TEMP_URL_KEY = "temp-url-key-that-is-secret-" + os.urandom(6).hex()


@pytest.fixture(scope="module")
def cluster(start_cluster):
    cluster = start_cluster("secrets")
    yield cluster
    cluster.stop()


def config_text(cluster, container, directory, *, key=None):
    text = swift_config(cluster, container, directory / "cache",
                        f"<filestorage>\npath {directory / 'Data.fs'}\n</filestorage>",
                        extra=f"temp-url-key {TEMP_URL_KEY}\nencryption-key {ENCRYPTION_KEY}\n"
                              "deadline 3\ntimeout 1")
    settings = cluster.settings()
    return text.replace(f"key {settings.key}\n", f"key {key or settings.key}\n")


def run_cli(*argv):
    """(status, stdout, stderr) of the command run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_no_secret_in_logs_errors_reprs_or_json(cluster, tmp_path, container_name, caplog):
    caplog.set_level(logging.DEBUG)
    settings = cluster.settings()
    token = mint_token(cluster)
    secrets = [settings.key, token, token[8:24], ENCRYPTION_KEY, TEMP_URL_KEY]
    texts, errors = [], []

    def failing(expected, match, operation):
        """Run *operation*, which must fail with *expected* (its message
        matching *match*); keep the error, searched for secrets below."""
        with pytest.raises(expected, match=match) as raised:
            operation()
        assert type(raised.value) is expected, f"{type(raised.value).__name__}: {raised.value}"
        errors.append(raised.value)

    config = tmp_path / "zodb.conf"
    config.write_text(config_text(cluster, container_name, tmp_path))
    db = ZODB.config.databaseFromString(config.read_text())
    storage = db.storage
    with db.transaction() as conn:
        conn.root()["small"] = Blob(b"small" * 100)
        conn.root()["large"] = Blob(os.urandom(3 << 20))
    with db.transaction() as conn:
        blob = conn.root()["small"]
        blob._p_activate()
        oid = blob._p_oid
    storage.cache.clear()
    with db.transaction() as conn:
        conn.root()["small"].open().close()
    texts += [repr(storage), repr(storage.swift_container),
              repr(storage.swift_container.credentials), repr(storage.object_layout),
              repr(storage.swift_container.encryption), str(storage.cache_stats())]
    cluster.stop_server("proxy")
    try:
        serial = storage.load(oid)[1]
        storage.cache.discard(oid, serial)  # read just now: clear() would spare it
        failing(SwiftTransientError, "download .* gave up",
                lambda: storage.loadBlob(oid, serial))
        def commit():
            with db.transaction() as conn:
                conn.root()["small"] = Blob(b"never")
        failing(SwiftTransientError, "upload .* gave up", commit)
    finally:
        cluster.start_server("proxy")
    db.close()

    (tmp_path / "blobs").mkdir()
    for command, *options in (["verify", "--deep"], ["gc", "--min-age", "0"], ["cache"],
                              ["claim"], ["url", f"0x{oid.hex()}"],
                              ["migrate", "--blob-dir", str(tmp_path / "blobs")]):
        status, out, err = run_cli(command, str(config), *options, "--json")
        texts += [out, err]
        json.loads(out)

    wrong = tmp_path / "wrong.conf"
    wrong.write_text(config_text(cluster, container_name, tmp_path, key="wrong-" + settings.key))
    status, out, err = run_cli("verify", str(wrong), "--json")
    assert status == 2 and "rejected" in out  # wrong credentials: a configuration error
    texts += [out, err]
    failing(SwiftAuthenticationError, "credentials rejected",
            lambda: ZODB.config.databaseFromString(wrong.read_text()))

    preauthenticated = Credentials(preauth_url=settings.storage_url, preauth_token=token)
    container = SwiftContainer(preauthenticated, container_name, deadline=2, timeout=1)
    texts += [repr(preauthenticated), repr(container),
              str(container.head(next(iter(container.list())).name))]
    container.close()
    expired = mint_token(cluster, age=cluster.token_life + 60)
    stale = SwiftContainer(Credentials(preauth_url=settings.storage_url,
                                       preauth_token=expired), container_name)
    failing(AuthenticationError, "pre-authenticated token was rejected",
            lambda: list(stale.list()))
    stale.close()
    secrets += [expired, expired[8:24]]
    failing(ValueError, "encryption key", lambda: SwiftBlobStorage(
        ZODB.MappingStorage.MappingStorage(), container=container_name,
        cache_dir=str(tmp_path / "other"), auth_url=settings.auth_url, user=settings.user,
        key=settings.key, encryption_keys="not-a-key-" + ENCRYPTION_KEY[:20]))
    secrets.append("not-a-key-" + ENCRYPTION_KEY[:20])

    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    loggers = {record.name for record in caplog.records}
    assert "zodb_swiftblobs.waiting" in loggers and \
        any(name.startswith("zodb_swiftblobs.swift.") for name in loggers), \
        "the session logged too little"
    for secret in secrets:
        assert secret not in logged, "a secret was logged"
        for text in texts:
            assert secret not in text, "a secret in a repr or an output"
    for error in errors:
        assert_secret_free(error, *secrets)
    assert len(errors) == 5

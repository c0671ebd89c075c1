"""Keystone v3 against a real Keystone (SQLite) in front of the embedded Swift."""

import logging
import time

import pytest

from conftest import assert_secret_free
from zodb_swiftblobs.swift import (
    AuthenticationError, Credentials, SwiftContainer, SwiftUnavailableError)


@pytest.fixture(scope="module")
def keystone_swift(start_cluster):
    cluster = start_cluster("keystone", keystone=True)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def keystone(keystone_swift):
    return keystone_swift.keystone_settings()


def password_credentials(keystone, **changes):
    values = dict(auth_url=keystone.auth_url, user=keystone.user, key=keystone.password,
                  project_name=keystone.project_name, user_domain_name=keystone.domain_name,
                  project_domain_name=keystone.domain_name, region_name=keystone.region_name)
    values.update(changes)
    return Credentials(**values)


def roundtrip(credentials, container_name, tmp_path, **options):
    container = SwiftContainer(credentials, container_name, **options)
    (tmp_path / "f").write_bytes(b"keystone")
    container.upload("k", str(tmp_path / "f"))
    container.download("k", str(tmp_path / "back"))
    assert (tmp_path / "back").read_bytes() == b"keystone"
    names = [o.name for o in container.list()]
    container.close()
    return names


def test_password(keystone, container_name, tmp_path):
    assert roundtrip(password_credentials(keystone), container_name, tmp_path) == ["k"]


def test_password_from_os_environment_with_internal_interface(keystone, container_name,
                                                              tmp_path):
    credentials = Credentials.from_environ({**keystone.environ(), "OS_INTERFACE": "internal"})
    assert credentials.keystone and credentials.interface == "internal"
    assert roundtrip(credentials, container_name, tmp_path) == ["k"]


def test_application_credential(keystone, container_name, tmp_path):
    credentials = Credentials.from_environ({
        "OS_AUTH_URL": keystone.auth_url, "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_APPLICATION_CREDENTIAL_ID": keystone.application_credential_id,
        "OS_APPLICATION_CREDENTIAL_SECRET": keystone.application_credential_secret})
    assert roundtrip(credentials, container_name, tmp_path) == ["k"]


def test_password_and_application_credential_reach_the_same_project(keystone,
                                                                    container_name, tmp_path):
    roundtrip(password_credentials(keystone), container_name, tmp_path)
    by_credential = SwiftContainer(Credentials(
        auth_url=keystone.auth_url,
        application_credential_id=keystone.application_credential_id,
        application_credential_secret=keystone.application_credential_secret),
        container_name)
    assert [o.name for o in by_credential.list()] == ["k"]
    by_credential.close()


def test_wrong_password_is_rejected_without_leaking_it(keystone, container_name, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "NotThePassword-123"
    container = SwiftContainer(password_credentials(keystone, key=wrong), container_name)
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        container.ensure_container()
    assert time.monotonic() - started < 10
    assert "rejected" in str(info.value) and "Keystone v3" in str(info.value)
    assert_secret_free(info.value, wrong)
    assert wrong not in caplog.text


def test_wrong_application_credential_secret_is_rejected(keystone, container_name):
    container = SwiftContainer(Credentials(
        auth_url=keystone.auth_url, application_credential_id=keystone.application_credential_id,
        application_credential_secret="wrong-secret"), container_name)
    with pytest.raises(AuthenticationError) as info:
        container.ensure_container()
    assert_secret_free(info.value, "wrong-secret")


def test_unknown_region_names_the_region(keystone, container_name):
    container = SwiftContainer(password_credentials(keystone, region_name="Mars"),
                               container_name)
    with pytest.raises(AuthenticationError, match="no object-store endpoint for region Mars"):
        container.ensure_container()


def test_keystone_down_is_transient_and_recovers(keystone_swift, keystone, container_name,
                                                 tmp_path):
    keystone_swift.stop_server("keystone")
    try:
        container = SwiftContainer(password_credentials(keystone), container_name,
                                   deadline=3, timeout=1, initial_backoff=0.1)
        started = time.monotonic()
        with pytest.raises(SwiftUnavailableError) as info:
            container.ensure_container()
        assert time.monotonic() - started < 5
        assert "authentication service unreachable" in str(info.value)
        assert keystone.password not in str(info.value)
    finally:
        keystone_swift.start_server("keystone")
    assert roundtrip(password_credentials(keystone), container_name, tmp_path) == ["k"]


def test_devswift_env_prints_working_os_variables(keystone_swift, container_name, tmp_path):
    from test_devswift import parse_exports, run

    exports = parse_exports(run("devswift", "env", "--keystone",
                                "--dir", keystone_swift.directory).stdout)
    assert exports["OS_AUTH_URL"].endswith("/v3") and exports["OS_IDENTITY_API_VERSION"] == "3"
    assert roundtrip(Credentials.from_environ(exports), container_name, tmp_path) == ["k"]

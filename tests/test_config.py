"""The <swiftblobstorage> ZConfig section."""

import dataclasses
import inspect
import io
import math
import os
import subprocess
import sys

import pytest
import ZConfig
import ZODB.config
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import StorageError

from conftest import child_environment
from zodb_swiftblobs import SwiftBlobStorage, SwiftStorageError, options
from zodb_swiftblobs.options import NAMES as OPTIONS
from zodb_swiftblobs.swift import Credentials, SwiftContainer

PACKAGE = os.path.dirname(options.__file__)
README = os.path.join(PACKAGE, os.pardir, os.pardir, "README.rst")


def section_values(text):
    """The values ZConfig computes for a <swiftblobstorage> section, unopened."""
    config, _ = ZConfig.loadConfigFile(ZODB.config.getStorageSchema(), io.StringIO(text))
    return config.storage.config


def test_every_keyword_argument_is_a_key_with_the_same_default():
    values = section_values("""
        %import zodb_swiftblobs
        <swiftblobstorage>
          cache-dir /tmp/unused
          <mappingstorage/>
        </swiftblobstorage>
    """)
    parameters = inspect.signature(SwiftBlobStorage.__init__).parameters
    assert OPTIONS and set(OPTIONS) == {
        name for name in parameters if name not in ("self", "base")}
    for name in OPTIONS:
        expected = parameters[name].default
        if name == "cache_dir":
            expected = "/tmp/unused"
        if name == "encryption_keys":
            expected = []  # a multikey given no value; SwiftBlobStorage takes it as None
        assert getattr(values, name) == expected, name


def test_the_shipped_component_is_the_one_the_options_make():
    with open(os.path.join(PACKAGE, "component.xml"), encoding="utf-8") as f:
        shipped = f.read()
    assert shipped == options.component_xml(), \
        f"component.xml is out of date: regenerate it with {options.REGENERATE}"


def test_the_storage_spells_out_the_signature_the_options_make():
    """For type checkers: SwiftBlobStorage.__init__ is written out in full."""
    with open(inspect.getsourcefile(SwiftBlobStorage), encoding="utf-8") as f:
        assert options.signature_source() in f.read(), \
            "rewrite its def line: python -m zodb_swiftblobs.options --signature"
    assert inspect.signature(SwiftBlobStorage.__init__) == options.signature()


def test_the_readme_lists_every_option():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    listed = text[text.index(options.README_START) + len(options.README_START):
                  text.index(options.README_END)].strip()
    assert listed == options.readme_list(), \
        "regenerate the README's option list: python -m zodb_swiftblobs.options --readme"
    for name in OPTIONS:
        assert f"``{name}``" in listed, name


def test_the_options_are_those_of_the_swift_layer():
    credentials = {item.name for item in dataclasses.fields(Credentials)}
    container = set(inspect.signature(SwiftContainer.__init__).parameters)
    for option in options.OPTIONS:
        if option.group == options.CREDENTIAL:
            assert option.name in credentials, option.name
        elif option.group == options.CONTAINER and option.name not in (
                "container", "encryption_keys"):
            assert option.name in container, option.name
    assert credentials <= set(OPTIONS)


def test_the_signature_shows_every_option_and_refuses_others(tmp_path):
    text = str(inspect.signature(SwiftBlobStorage))
    assert text.startswith("(base: 'Any', container: 'str' = 'zodb-blobs', cache_dir")
    assert "segment_concurrency: 'int' = 4" in text
    assert all(name in SwiftBlobStorage.__init__.__doc__ for name in OPTIONS)
    with pytest.raises(TypeError, match="unexpected keyword argument 'cache_directory'"):
        SwiftBlobStorage(MappingStorage(), cache_directory=str(tmp_path))
    with pytest.raises(TypeError, match="multiple values"):
        SwiftBlobStorage(MappingStorage(), "c", container="c")


def test_values_are_converted():
    values = section_values("""
        %import zodb_swiftblobs
        <swiftblobstorage>
          cache-dir /var/cache/x
          cache-size 2GB
          insecure true
          deadline 2.5
          upload-concurrency 3
          large-object-threshold 100MB
          initial-backoff 0.5
          max-backoff 30
          segment-concurrency 2
          <mappingstorage/>
        </swiftblobstorage>
    """)
    assert (values.cache_size, values.insecure, values.deadline, values.upload_concurrency,
            values.large_object_threshold) == (2 << 30, True, 2.5, 3, 100 << 20)
    assert (values.initial_backoff, values.max_backoff, values.segment_concurrency) \
        == (0.5, 30.0, 2)


def test_cache_dir_and_base_are_required():
    with pytest.raises(ZConfig.ConfigurationError, match="cache-dir"):
        section_values("%import zodb_swiftblobs\n<swiftblobstorage>\n<mappingstorage/>\n"
                       "</swiftblobstorage>\n")
    with pytest.raises(ZConfig.ConfigurationError):
        section_values("%import zodb_swiftblobs\n<swiftblobstorage>\ncache-dir /x\n"
                       "</swiftblobstorage>\n")


# The README's zope.conf section; ZODB's own schema calls Zope's <zodb_db> <zodb>.
ZOPE_CONF = """
%import zodb_swiftblobs
<zodb main>
  <swiftblobstorage>
    container {container}
    cache-dir {cache}
    cache-size 10GB
    auth-url $(ST_AUTH)
    user $(ST_USER)
    key $(ST_KEY)
    <filestorage>
      path {path}
    </filestorage>
  </swiftblobstorage>
</zodb>
"""


def test_the_documented_zope_conf_opens_a_working_database(devswift, tmp_path,
                                                           container_name, monkeypatch):
    for name, value in devswift.settings().environ().items():
        monkeypatch.setenv(name, value)
    db = ZODB.config.databaseFromString(ZOPE_CONF.format(
        container=container_name, cache=tmp_path / "cache", path=tmp_path / "Data.fs"))
    try:
        assert isinstance(db.storage, SwiftBlobStorage)
        with db.transaction() as conn:
            conn.root.blob = Blob(b"configured")
        with db.transaction() as conn:
            with conn.root.blob.open() as f:
                assert f.read() == b"configured"
        assert db.storage.temporaryDirectory() == str(tmp_path / "cache" / "tmp")
    finally:
        db.close()


def test_wrong_credentials_fail_at_open_without_the_secret(devswift, tmp_path,
                                                           container_name, monkeypatch):
    settings = devswift.settings()
    with pytest.raises(SwiftStorageError, match="rejected") as info:
        ZODB.config.databaseFromString(f"""
            %import zodb_swiftblobs
            <zodb main>
              <swiftblobstorage>
                container {container_name}
                cache-dir {tmp_path / "cache"}
                auth-url {settings.auth_url}
                user {settings.user}
                key secret-but-wrong-42
                <filestorage>
                  path {tmp_path / "Data.fs"}
                </filestorage>
              </swiftblobstorage>
            </zodb>
        """)
    assert "secret-but-wrong-42" not in str(info.value)
    FileStorage(str(tmp_path / "Data.fs")).close()  # the base was closed: its lock is free


def open_with(devswift, tmp_path, container_name, setting):
    """Open a database whose <swiftblobstorage> has *setting* (a line), which
    replaces the working setting of the same key if there is one."""
    settings = devswift.settings()
    lines = {"container": container_name, "cache-dir": tmp_path / "cache",
             "auth-url": settings.auth_url, "user": settings.user, "key": settings.key}
    name, _, value = setting.partition(" ")
    lines[name] = value
    text = "\n".join(f"            {name} {value}" for name, value in lines.items())
    return ZODB.config.databaseFromString(f"""
        %import zodb_swiftblobs
        <zodb main>
          <swiftblobstorage>
{text}
            <filestorage>
              path {tmp_path / "Data.fs"}
            </filestorage>
          </swiftblobstorage>
        </zodb>
    """)


# Each key with a value of the wrong type (rejected by ZConfig while reading)
# or out of range (rejected when the storage opens); the error names the key
# or quotes the value.
BAD_SETTINGS = [
    ("cache-size 0", "cache_size"),
    ("cache-size lots", "lots"),
    ("container a/b", "container"),
    ("prefix no-slash", "prefix"),
    ("auth-url not-a-url", "auth_url"),
    ("auth-version 7", "auth_version"),
    ("interface sideways", "interface"),
    ("preauth-url ftp://example.org/v1/AUTH_x", "preauth_url"),
    ("cacert /nonexistent/ca.pem", "cacert"),
    ("insecure maybe", "maybe"),
    ("deadline -1", "deadline"),
    ("deadline soon", "soon"),
    ("timeout 0", "timeout"),
    ("initial-backoff 0", "initial_backoff"),
    ("max-backoff inf", "max_backoff"),
    ("max-backoff 0.1", "initial_backoff <= max_backoff"),
    ("segment-concurrency 0", "segment_concurrency"),
    ("upload-concurrency 0", "upload_concurrency"),
    ("upload-concurrency 2.5", "2.5"),
    ("early-upload-threshold 0", "early_upload_threshold"),
    ("commit-lease 0", "commit_lease"),
    ("large-object-threshold 0", "large_object_threshold"),
    ("segment-size 0", "segment_size"),
    ("segment-size big", "big"),
    ("create-container perhaps", "perhaps"),
    ("storage-policy no-such-policy", "no-such-policy"),
    ("encryption-key not-a-key", "encryption key"),
    ("gc-grace-period -1", "grace period"),
    ("gc-grace-period later", "later"),
]


@pytest.mark.parametrize("setting, named", BAD_SETTINGS, ids=[s for s, _ in BAD_SETTINGS])
def test_every_bad_setting_fails_at_open_and_says_which(devswift, tmp_path, container_name,
                                                        setting, named):
    with pytest.raises((ZConfig.ConfigurationError, ValueError, StorageError)) as info:
        open_with(devswift, tmp_path, container_name, setting)
    assert named in str(info.value)
    assert devswift.settings().key not in str(info.value)
    FileStorage(str(tmp_path / "Data.fs")).close()  # the base was closed: its lock is free


def test_every_key_is_covered_by_a_bad_setting():
    """A new option needs a case above, or a reason to be left out here."""
    covered = {setting.split()[0].replace("-", "_") for setting, _ in BAD_SETTINGS}
    free_text = {  # checked by the server (see the tests of wrong credentials)
        "user", "key", "project_name", "project_id", "project_domain_name",
        "project_domain_id", "user_domain_name", "user_domain_id", "region_name",
        "application_credential_id", "application_credential_secret", "preauth_token",
        "temp_url_key"}  # any non-empty text (see the test of Python types)
    elsewhere = {"cache_dir": "the tests of unusable cache directories",
                 "encryption_keys": "'encryption-key' above, a multikey"}
    assert set(OPTIONS) - covered - free_text - set(elsewhere) == set()


def test_wrong_types_from_python_fail_clearly(devswift, tmp_path, container_name):
    credentials = devswift.settings()
    base = {"container": container_name, "cache_dir": str(tmp_path / "cache"),
            "auth_url": credentials.auth_url, "user": credentials.user,
            "key": credentials.key}
    for option, value, message in [
            ("deadline", "60", "deadline must be a positive finite number"),
            ("cache_size", "10GB", "cache_size must be a positive whole number"),
            ("insecure", "no", "insecure must be true or false"),
            ("user", 42, "user must be text"),
            ("key", 42, "key must be text, not int (a secret)"),
            ("create_container", "yes", "create_container must be true or false"),
            ("temp_url_key", "", "temp_url_key must be a non-empty text"),
            ("gc_grace_period", float("inf"), "grace period must be a number of seconds"),
            ("gc_grace_period", "7d", "grace period must be a number of seconds")]:
        with pytest.raises(ValueError) as info:
            SwiftBlobStorage(MappingStorage(), **{**base, option: value})
        assert message in str(info.value), option


@pytest.mark.parametrize("option, value", [
    ("deadline", math.inf), ("deadline", math.nan), ("deadline", -1.0), ("deadline", 0),
    ("timeout", math.inf), ("timeout", math.nan), ("timeout", 0.0)])
def test_durations_must_be_positive_and_finite(tmp_path, option, value):
    with pytest.raises(ValueError, match=f"{option} must be a positive finite number"):
        SwiftBlobStorage(MappingStorage(), cache_dir=str(tmp_path / "cache"), **{option: value})
    assert not (tmp_path / "cache").exists(), "refused before anything was made"


def test_an_unknown_container_without_auto_creation(devswift, tmp_path, container_name):
    with pytest.raises(SwiftStorageError, match="does not exist.*create-container is off"):
        open_with(devswift, tmp_path, container_name, "create-container false")
    FileStorage(str(tmp_path / "Data.fs")).close()


def test_retry_and_segment_settings_reach_the_container(devswift, tmp_path, container_name):
    db = open_with(devswift, tmp_path, container_name, "segment-concurrency 2")
    try:
        assert db.storage.swift_container.large_objects.segment_concurrency == 2
    finally:
        db.close()
    settings = devswift.settings()
    storage = SwiftBlobStorage(MappingStorage(), container_name, str(tmp_path / "cache2"),
                               prefix="other/", initial_backoff=0.5, max_backoff=3.0,
                               auth_url=settings.auth_url, user=settings.user,
                               key=settings.key)
    try:
        transport = storage.swift_container.transport
        assert (transport.initial_backoff, transport.max_backoff) == (0.5, 3.0)
    finally:
        storage.close()


def test_the_package_exports_the_wrapper_and_its_errors_without_loading_zodb():
    script = ("import sys, zodb_swiftblobs; loaded = 'ZODB' in sys.modules; "
              "names = [getattr(zodb_swiftblobs, name).__name__ "
              "for name in zodb_swiftblobs.__all__]; print(loaded, *names)")
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=child_environment(), timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.split() == ["False", "SwiftBlobStorage", "SwiftTransientError",
                                      "SwiftStorageError", "SwiftAuthenticationError",
                                      "BlobCacheError", "ForeignPrefixError",
                                      "EncryptionRequiredError"]

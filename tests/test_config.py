"""The <swiftblobstorage> ZConfig section."""

import inspect
import io

import pytest
import ZConfig
import ZODB.config
from ZODB.blob import Blob
from ZODB.FileStorage import FileStorage

from zodb_swiftblobs.config import OPTIONS
from zodb_swiftblobs.storage import SwiftBlobStorage, SwiftStorageError


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
        name for name in parameters if name not in ("self", "base", "_shared")}
    for name in OPTIONS:
        expected = parameters[name].default
        if name == "cache_dir":
            expected = "/tmp/unused"
        if name == "encryption_keys":
            expected = []  # a multikey given no value; SwiftBlobStorage takes it as None
        assert getattr(values, name) == expected, name


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
          <mappingstorage/>
        </swiftblobstorage>
    """)
    assert (values.cache_size, values.insecure, values.deadline, values.upload_concurrency,
            values.large_object_threshold) == (2 << 30, True, 2.5, 3, 100 << 20)


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

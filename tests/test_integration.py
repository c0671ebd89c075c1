"""Zope, Plone and ZODB tools opening <swiftblobstorage>: zope.conf as
plone.recipe.zope2instance writes it, RelStorage's zodbconvert, zodburi."""

import configparser
import json
import os
import subprocess
import sys
import textwrap

import pytest
import ZODB
import ZODB.config
import zodburi
from ZODB.blob import Blob

from conftest import blob_objects, child_environment, swift_config
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.config import ConfigurationError, storage_section, swift_section
from zodb_swiftblobs.swift import SwiftContainer

# The zope.conf plone.recipe.zope2instance 9 writes (its wsgi template, blank
# lines removed, no final newline), for the [instance] part of buildout.cfg.
PLONE_ZOPE_CONF = """\
%import zodb_swiftblobs
%define INSTANCEHOME {home}/parts/instance
instancehome $INSTANCEHOME
%define CLIENTHOME {home}/var/instance
clienthome $CLIENTHOME
debug-mode off
security-policy-implementation C
verbose-security off
default-zpublisher-encoding utf-8
<environment>
    CHAMELEON_CACHE {home}/var/cache
</environment>
<zodb_db main>
    # Main database
    cache-size 30000
{storage}
    mount-point /
</zodb_db>
python-check-interval 1000"""
FILE_STORAGE_SNIPPET = """\
    # FileStorage database
    <filestorage>
      path {home}/var/filestorage/Data.fs
    </filestorage>"""


def recipe_storage(home):
    """The storage the recipe writes for buildout.cfg's [instance]: the file
    storage without blob-dir (blob-storage is empty), put in storage-wrapper's
    %s, indented by four spaces."""
    buildout = configparser.ConfigParser(interpolation=None)
    buildout.read(os.path.join(os.path.dirname(__file__), os.pardir, "buildout.cfg"))
    instance = buildout["instance"]
    assert instance["recipe"] == "plone.recipe.zope2instance"
    assert instance["zope-conf-imports"] == "zodb_swiftblobs" and not instance["blob-storage"]
    wrapper = instance["storage-wrapper"].replace("${buildout:directory}", str(home))
    return textwrap.indent(wrapper.strip() % FILE_STORAGE_SNIPPET.format(home=home), "    ")


@pytest.fixture
def swift_environment(devswift, container_name, monkeypatch):
    settings = devswift.settings()
    for name, value in (("ST_AUTH", settings.auth_url), ("ST_USER", settings.user),
                        ("ST_KEY", settings.key)):
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def view(credentials, container_name):
    container = SwiftContainer(credentials, container_name)
    yield container
    container.close()


def test_a_plone_recipe_zope_conf_round_trips_blobs(tmp_path, swift_environment, credentials,
                                                     capsys):
    from Zope2.Startup.options import ZopeWSGIOptions

    for directory in ("parts/instance", "var/instance", "var/filestorage", "var/cache"):
        os.makedirs(tmp_path / directory)
    zope_conf = tmp_path / "parts/instance/etc/zope.conf"
    os.makedirs(zope_conf.parent)
    zope_conf.write_text(PLONE_ZOPE_CONF.format(home=tmp_path,
                                                storage=recipe_storage(tmp_path)))

    def open_database():  # as Zope's startup does
        return ZopeWSGIOptions(str(zope_conf))().configroot.dbtab.getDatabase("/", is_root=1)

    db = open_database()
    assert type(db.storage).__name__ == "SwiftBlobStorage"
    assert db.storage.temporaryDirectory() == str(tmp_path / "var/blobcache/tmp")
    with db.transaction() as conn:
        conn.root()["image"] = Blob(b"\x89PNG plone image")
    db.close()
    view = SwiftContainer(credentials, "plone-blobs")
    try:
        assert len(blob_objects(view)) == 1  # credentials came from $(ST_AUTH) and friends
        db = open_database()
        with db.transaction() as conn, conn.root()["image"].open() as f:
            assert f.read() == b"\x89PNG plone image"
        db.close()
        assert main(["verify", str(zope_conf), "--json"]) == 0  # the command reads it too
        assert json.loads(capsys.readouterr().out)["present"] == 1
    finally:
        view.delete_many(view.list())
        view.close()


def test_zodbconvert_migrates_a_filestorage_and_its_blobs(devswift, tmp_path, container_name,
                                                           view, capsys):
    source = ZODB.DB(ZODB.config.storageFromString(
        f"<filestorage>\npath {tmp_path / 'old.fs'}\nblob-dir {tmp_path / 'old-blobs'}\n"
        "</filestorage>"))
    expected = {}
    for round_ in range(3):
        with source.transaction() as conn:
            for index in range(round_ + 1):
                expected[f"f{index}"] = f"file {index} revision {round_}".encode()
                conn.root()[f"f{index}"] = Blob(expected[f"f{index}"])
    source.close()
    config = tmp_path / "convert.conf"
    settings = devswift.settings()
    config.write_text(f"""%import zodb_swiftblobs
<filestorage source>
  path {tmp_path / 'old.fs'}
  blob-dir {tmp_path / 'old-blobs'}
</filestorage>
<swiftblobstorage destination>
  container {container_name}
  cache-dir {tmp_path / 'cache'}
  auth-url {settings.auth_url}
  user {settings.user}
  key {settings.key}
  <filestorage>
    path {tmp_path / 'new.fs'}
  </filestorage>
</swiftblobstorage>
""")
    subprocess.run([sys.executable, "-c", "from relstorage.zodbconvert import main; main()",
                    str(config)], check=True, capture_output=True, timeout=300,
                   env=child_environment())

    assert len(blob_objects(view)) == 6  # every revision: 1 + 2 + 3 blobs
    destination = swift_section(str(config), "destination").open()
    db = ZODB.DB(destination)
    with db.transaction() as conn:
        for name, data in expected.items():
            with conn.root()[name].open() as f:
                assert f.read() == data
    db.close()
    assert main(["verify", str(config), "--database", "destination", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["referenced"] == 6


def test_a_zodburi_zconfig_uri_opens_the_database(devswift, tmp_path, container_name, view):
    config = tmp_path / "db.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                                   database="catalog"))
    factory, dbkw = zodburi.resolve_uri(f"zconfig://{config}#catalog")
    db = ZODB.DB(factory(), **dbkw)
    assert type(db.storage).__name__ == "SwiftBlobStorage"
    with db.transaction() as conn:
        conn.root()["doc"] = Blob(b"opened through zodburi")
    db.close()
    assert len(blob_objects(view)) == 1
    factory, dbkw = zodburi.resolve_uri(f"zconfig://{config}#catalog")
    db = ZODB.DB(factory(), **dbkw)
    with db.transaction() as conn, conn.root()["doc"].open() as f:
        assert f.read() == b"opened through zodburi"
    db.close()


def test_configuration_files_name_their_databases(tmp_path):
    config = tmp_path / "two.conf"
    config.write_text("""%import zodb_swiftblobs
<zodb main>
  <swiftblobstorage>
    cache-dir /tmp/unused
    <mappingstorage/>
  </swiftblobstorage>
</zodb>
<zodb catalog>
  <mappingstorage/>
</zodb>
""")
    assert swift_section(str(config)).config.cache_dir == "/tmp/unused"  # main by default
    assert type(storage_section(str(config), "catalog")).__name__ == "MappingStorage"
    with pytest.raises(ConfigurationError, match="no <swiftblobstorage>"):
        swift_section(str(config), "catalog")
    with pytest.raises(ConfigurationError, match="no database 'other'.*'main', 'catalog'"):
        storage_section(str(config), "other")
    single = tmp_path / "one.conf"
    single.write_text("<zodb other>\n<mappingstorage/>\n</zodb>\n")
    assert type(storage_section(str(single))).__name__ == "MappingStorage"
    broken = tmp_path / "broken.conf"
    broken.write_text("<zodb>\n<unknownstorage/>\n</zodb>\n")
    with pytest.raises(ConfigurationError, match="unknownstorage"):
        storage_section(str(broken))
    with pytest.raises(ConfigurationError, match="cannot read"):
        storage_section(str(tmp_path / "absent.conf"))

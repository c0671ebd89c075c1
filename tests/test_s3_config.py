"""zodb-s3blobs' <s3blobstorage> sections: reading them, and converting them into
<swiftblobstorage> ones (pure functions: nothing is opened or contacted)."""

import io
import os
import subprocess
import sys
import textwrap

import pytest
import ZConfig

from conftest import child_environment
from test_integration import PLONE_ZOPE_CONF
from zodb_swiftblobs.cli import main
from zodb_swiftblobs.config import DATABASES_SCHEMA, ConfigurationError, swift_section
from zodb_swiftblobs.config_conversion import convert_s3_config
from zodb_swiftblobs.s3_config import S3Settings, s3_section, s3_sections

ZOPE_CONF = """\
%define INSTANCE /srv/site
%import zodb_s3blobs

<zodb_db main>
    # the site's database
    <s3blobstorage>
        bucket-name my-zodb-blobs
        s3-prefix site1/
        s3-endpoint-url http://swift.example:8080
        s3-access-key $(S3_ACCESS_KEY)
        s3-secret-key $(S3_SECRET_KEY)
        cache-dir $INSTANCE/var/s3cache
        <filestorage>
            path $INSTANCE/var/Data.fs
            pack-keep-old false
        </filestorage>
    </s3blobstorage>
    mount-point /
</zodb_db>
"""

CONVERTED = """\
%define INSTANCE /srv/site
%import zodb_swiftblobs

<zodb_db main>
    # the site's database
    <swiftblobstorage>
        # converted from <s3blobstorage> by zodb-swiftblobs convert-config
        container my-zodb-blobs
        prefix site1/
        cache-dir $INSTANCE/var/s3cache-swift
        cache-size 1GB
        # Swift's credentials are to be added: auth-url, user and key (or leave them \
out and set the ST_* or OS_* environment variables, as for the swift command)
        # if http://swift.example:8080 is Swift's own S3 API (s3api) with TempAuth: \
auth-url http://swift.example:8080/auth/v1.0, user is the S3 access key (account:user), \
key the S3 secret key
        # no equivalent, left out: s3-endpoint-url, s3-access-key, s3-secret-key
        # the cache gets a directory of its own, $INSTANCE/var/s3cache-swift: zodb-s3blobs \
removes every .blob file under $INSTANCE/var/s3cache, so the two must not share one; \
delete it once the old site is stopped
        <filestorage>
            path $INSTANCE/var/Data.fs
            pack-keep-old false
        </filestorage>
    </swiftblobstorage>
    mount-point /
</zodb_db>
"""


def test_a_zope_conf_is_converted_around_the_same_storage_section():
    converted = convert_s3_config(ZOPE_CONF)
    assert converted.text == CONVERTED
    assert converted.notes[0].startswith("database 'main': Swift's credentials")
    assert len(converted.notes) == 4
    assert not any("$(S3" in note for note in converted.notes)  # no secret, no reference


def test_every_key_is_mapped_or_said_to_have_no_equivalent():
    text = """<zodb>
  <S3BlobStorage Blobs>
    Bucket-Name b
    s3-prefix /a/b//
    s3-region eu-west-1
    s3-use-ssl false
    s3-addressing-style path
    s3-sse-customer-key ${ssekey}
    s3-unknown 1
    cache-dir /var/cache/
    cache-size 2GB
    <mappingstorage/>
  </S3BlobStorage>
</zodb>
"""
    converted = convert_s3_config(text)
    section = converted.text.splitlines()
    assert section[0] == "%import zodb_swiftblobs"  # added: the file had no %import
    assert section[2] == "  <swiftblobstorage Blobs>"
    assert section[4:9] == ["    container b", "    prefix a/b/", "    cache-dir /var/cache-swift",
                            "    cache-size 2GB", "    encryption-key ${ssekey}"]
    assert "    <mappingstorage/>" in section and section[-2] == "  </swiftblobstorage>"
    notes = " | ".join(converted.notes)
    assert ("no equivalent, left out: s3-region, s3-use-ssl, s3-addressing-style" in notes
            and "not keys of <s3blobstorage>, left out: s3-unknown" in notes
            and "the SSE-C key became the encryption key" in notes
            and "is Swift's own S3 API" not in notes)  # no endpoint named


def test_the_converted_file_is_valid_for_zodb_swiftblobs():
    text = ("%import zodb_s3blobs\n<zodb main>\n<s3blobstorage>\nbucket-name b\n"
            "cache-dir /tmp/c\n<mappingstorage/>\n</s3blobstorage>\n</zodb>\n"
            "<zodb other>\n<s3blobstorage>\nbucket-name o\ns3-prefix other\ncache-dir /tmp/o\n"
            "<mappingstorage/>\n</s3blobstorage>\n</zodb>\n%import zodb_s3blobs\n")
    converted = convert_s3_config(text)
    assert converted.text.count("%import") == 1  # the second import went with the first
    schema = ZConfig.loadSchemaFile(io.StringIO(DATABASES_SCHEMA))
    config, _ = ZConfig.loadConfigFile(schema, io.StringIO(converted.text))
    settings = {database.name: database.config.storage.config
                for database in config.databases}
    assert (settings["main"].container, settings["main"].prefix,
            settings["main"].cache_size) == ("b", "", 1 << 30)
    assert (settings["other"].container, settings["other"].prefix) == ("o", "other/")
    assert type(settings["main"].base).__name__ == "MappingStorage"


@pytest.mark.parametrize("text, error", [
    ("<zodb>\n<mappingstorage/>\n</zodb>\n", "no <s3blobstorage> section"),
    ("<s3blobstorage>\ncache-dir /c\n<mappingstorage/>\n</s3blobstorage>\n", "no bucket-name"),
    ("<s3blobstorage>\nbucket-name b\n<mappingstorage/>\n</s3blobstorage>\n", "no cache-dir"),
    ("<zodb>\n<s3blobstorage>\n</zodb>\n", "unbalanced section end"),
    ("<zodb>\n<s3blobstorage>\n", "is not closed"),
    ("<s3blobstorage/>\n", "wraps no storage"),
])
def test_what_cannot_be_converted_is_a_configuration_error(text, error):
    with pytest.raises(ConfigurationError, match=error):
        convert_s3_config(text)


def test_settings_are_read_as_zconfig_and_zodb_s3blobs_read_them(monkeypatch):
    monkeypatch.setenv("S3_SECRET_KEY", "from the environment")
    text = ("%define KEYID abc\n<zodb main>\n<s3blobstorage>\nbucket-name b\n"
            "s3-prefix p/\ns3-access-key ${KEYID}-$keyid\ns3-secret-key $(S3_SECRET_KEY)\n"
            "s3-use-ssl off\ncache-dir /c\n<filestorage>\npath /x\n</filestorage>\n"
            "</s3blobstorage>\n</zodb>\n")
    settings = S3Settings.from_section(s3_section(text))
    assert settings == S3Settings(bucket="b", prefix="p", access_key="abc-abc",
                                  secret_key="from the environment", use_ssl=False)
    assert settings.blobs_prefix == "p/blobs/" and "environment" not in repr(settings)
    assert S3Settings(bucket="b").blobs_prefix == "blobs/"
    monkeypatch.delenv("S3_SECRET_KEY")
    with pytest.raises(ConfigurationError, match="s3-secret-key"):
        S3Settings.from_section(s3_section(text))


def test_the_section_of_a_database_is_chosen_by_name():
    one = "<s3blobstorage {}>\nbucket-name {}\ncache-dir /c\n<mappingstorage/>\n</s3blobstorage>\n"
    storages = one.format("source", "s") + one.format("destination", "d")
    assert [section.database for section in s3_sections(storages)] == ["source", "destination"]
    assert s3_section(storages, "Destination").keys["bucket-name"] == "d"
    with pytest.raises(ConfigurationError, match="of database 'main'.*'source', 'destination'"):
        s3_section(storages)
    databases = "<zodb_db main>\n" + one.format("", "m") + "</zodb_db>\n<zodb_db catalog>\n" \
        + one.format("", "c") + "</zodb_db>\n"
    assert s3_section(databases).keys["bucket-name"] == "m"
    assert s3_section(databases, "catalog").keys["bucket-name"] == "c"


def test_a_converted_zope_conf_reads_as_zope_reads_it(tmp_path):
    s3_storage = textwrap.indent(textwrap.dedent("""\
        <s3blobstorage>
          bucket-name plone-blobs
          s3-prefix site1
          cache-dir $CLIENTHOME/s3cache
          cache-size 2GB
          <filestorage>
            path $CLIENTHOME/Data.fs
          </filestorage>
        </s3blobstorage>"""), "    ")
    zope_conf = PLONE_ZOPE_CONF.format(home=tmp_path, storage=s3_storage).replace(
        "%import zodb_swiftblobs", "%import zodb_s3blobs")
    path = tmp_path / "zope.conf"
    path.write_text(convert_s3_config(zope_conf).text)
    for directory in ("parts/instance", "var/instance"):  # Zope wants them to exist
        (tmp_path / directory).mkdir(parents=True)
    section = swift_section(str(path))
    assert (section.config.container, section.config.prefix, section.config.cache_dir,
            section.config.cache_size) == ("plone-blobs", "site1/",
                                           f"{tmp_path}/var/instance/s3cache-swift", 2 << 30)
    assert section.config.base.config.path == f"{tmp_path}/var/instance/Data.fs"


def test_a_file_that_is_not_utf8_is_a_configuration_error(tmp_path, capsys):
    path = tmp_path / "zope.conf"  # Latin-1, which ZConfig does not read either
    path.write_bytes("<zodb main>\n<s3blobstorage>\nbucket-name b\ncache-dir /caché\n"
                     "<mappingstorage/>\n</s3blobstorage>\n</zodb>\n".encode("latin-1"))
    assert main(["convert-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"zodb-swiftblobs convert-config: {path}: not UTF-8 text " \
                                "(line 4: byte 0xe9)\n"


def test_a_prefix_zodb_s3blobs_takes_becomes_one_swiftblobstorage_takes():
    """zodb-s3blobs takes any slashes (/site1 makes the keys /site1/blobs/...);
    the Swift prefix is made of the same segments."""
    schema = ZConfig.loadSchemaFile(io.StringIO(DATABASES_SCHEMA))
    for written, prefix in (("/site1", "site1/"), ("/sites//one/", "sites/one/"),
                            ("site1//", "site1/"), ("/", "")):
        text = ("<zodb main>\n<s3blobstorage>\nbucket-name b\ncache-dir /tmp/c\n"
                f"s3-prefix {written}\n<mappingstorage/>\n</s3blobstorage>\n</zodb>\n")
        config, _ = ZConfig.loadConfigFile(schema, io.StringIO(convert_s3_config(text).text))
        assert config.databases[0].config.storage.config.prefix == prefix, written


def test_a_reader_of_stdout_that_goes_away_ends_the_command_quietly(tmp_path):
    """``zodb-swiftblobs convert-config OLD | head -1``: the pipe closed
    before the command writes ends it with status 1, saying nothing more."""
    old = tmp_path / "zope.conf"
    old.write_text(ZOPE_CONF)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "zodb_swiftblobs.cli", "convert-config", str(old)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, env=child_environment(),
            timeout=120)
    finally:
        os.close(write_end)
    assert (process.returncode, process.stderr) == (1, "")


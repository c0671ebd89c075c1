"""ZConfig support: the ``<swiftblobstorage>`` section of zope.conf and ZODB
configuration files (``%import zodb_swiftblobs``; see component.xml), and
finding that section in a configuration file for the command line."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from typing import Any

import ZConfig
import ZODB.config

from . import options, resources
from .cache import BlobCache
from .layout import ObjectLayout
from .storage import SwiftBlobStorage
from .swift import SwiftContainer

# Files of <zodb> sections (zodbpack's form) and files of storage sections
# (a single storage, or zodbconvert's <... source> and <... destination>).
DATABASES_SCHEMA = """<schema>
  <import package="ZODB"/>
  <multisection type="ZODB.database" name="*" attribute="databases"/>
</schema>"""
STORAGES_SCHEMA = """<schema>
  <import package="ZODB"/>
  <multisection type="ZODB.storage" name="*" attribute="storages"/>
</schema>"""
ZOPE_DATABASE_SECTION = re.compile(r"^\s*<zodb_db\b", re.MULTILINE)
ZEO_SECTION = re.compile(r"^\s*<zeo\b", re.MULTILINE)
DATABASE_SECTION = re.compile(r"^\s*<zodb\b", re.MULTILINE)


class ConfigurationError(Exception):
    """A configuration file could not be read, or lacks what was asked for."""


class SwiftBlobStorageFactory(ZODB.config.BaseConfig):
    """Opens the contained storage and wraps it in a SwiftBlobStorage."""

    def open(self) -> SwiftBlobStorage:
        base = self.config.base.open()
        try:
            return SwiftBlobStorage(base, **self.options())
        except BaseException:
            base.close()
            raise

    def options(self) -> dict:
        """The keyword arguments of SwiftBlobStorage this section gives."""
        return {name: getattr(self.config, name) for name in options.NAMES}

    def check(self, path: str) -> None:
        """ConfigurationError for a setting SwiftBlobStorage would refuse, before
        anything is opened (*path* is the configuration file's, for the message)."""
        try:
            options.check(self.options())
        except ValueError as exc:
            raise ConfigurationError(f"{path}: {exc}") from None

    def open_container(self) -> SwiftContainer:
        """The Swift container, without opening the wrapped storage."""
        return resources.open_container(self.options())

    def open_base(self) -> Any:
        """The wrapped storage alone, opened read-only (where it can be)."""
        return _open(self.config.base, read_only=True)

    def object_layout(self) -> ObjectLayout:
        return resources.object_layout(self.options())

    def open_cache(self) -> BlobCache:
        """The local blob cache, without opening Swift or the wrapped storage."""
        return resources.open_cache(self.options())


def storage_section(path: str, database: str | None = None, *,
                    default: str | None = None) -> ZODB.config.BaseConfig:
    """The storage section (not opened) of *database* in the file at *path*.

    The file is a zope.conf (read with Zope's own schema, which needs Zope
    installed), a ZEO server's zeo.conf, a ZODB configuration file of
    ``<zodb>`` sections, or one of storage sections (such as zodbconvert's).
    *database* is a section name; it may be left out when the file has one
    database, or one named *default* (by default ``main``).
    """
    text = read_text(path)
    failure = None
    try:
        if ZOPE_DATABASE_SECTION.search(text):
            storages = {db.name: db.config.storage for db in _zope_databases(path)}
        elif ZEO_SECTION.search(text):
            storages = {storage.name: storage for storage in
                        _load(_zeo_schema(), path).storages}
        elif DATABASE_SECTION.search(text):
            storages = {db.name: db.config.storage
                        for db in _load(ZConfig.loadSchemaFile(io.StringIO(DATABASES_SCHEMA)),
                                        path).databases}
        else:
            storages = {storage.name: storage for storage in
                        _load(ZConfig.loadSchemaFile(io.StringIO(STORAGES_SCHEMA)), path).storages}
    except (ZConfig.ConfigurationError, ImportError) as exc:
        failure = ConfigurationError(f"{path}: {exc}")
    if failure is not None:
        raise failure
    if not storages:
        raise ConfigurationError(f"{path} configures no storage")
    if database is None:
        if len(storages) == 1:
            return next(iter(storages.values()))
        database = default or "main"
    if database not in storages:
        named = ", ".join(repr(name) for name in storages)
        raise ConfigurationError(f"{path} has no database {database!r} (it has {named}); "
                                 "choose one with --database")
    return storages[database]


def read_text(path: str) -> str:
    """The text of the configuration file at *path* (ConfigurationError if
    it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # as ZConfig decodes it
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(f"{path}: not UTF-8 text (line {line}: byte "
                                 f"0x{exc.object[exc.start]:02x})") from None


def swift_section(path: str, database: str | None = None, *,
                  overrides: Mapping[str, Any] | None = None) -> SwiftBlobStorageFactory:
    """The ``<swiftblobstorage>`` section of *database* in the file at *path*
    (the database's storage, or a storage that it wraps), with the settings
    *overrides* gives (option names and values) instead of the file's."""
    return _swift_within(storage_section(path, database), path, database, overrides)


def open_swift_storage(path: str, database: str | None = None, *, read_only: bool = False,
                       overrides: Mapping[str, Any] | None = None
                       ) -> tuple[object, SwiftBlobStorage]:
    """Open the storage of *database* in the file at *path*: the outermost
    storage (to close) and its SwiftBlobStorage (the storage itself, or one
    that wrappers around it reach through ``base``), with the settings
    *overrides* gives instead of the file's.

    With *read_only*, every storage of the chain that can be opened read-only
    is (tools that only read the database run beside a live site so).
    """
    section = storage_section(path, database)
    _swift_within(section, path, database, overrides)  # say so before opening anything
    storage = _open(section, read_only)
    inner = storage
    while not isinstance(inner, SwiftBlobStorage):
        inner = inner.base
    return storage, inner


def open_storage(path: str, database: str | None = None, *, default: str | None = None,
                 read_only: bool = False) -> Any:
    """Open the storage of *database* (see :func:`storage_section`, and
    *default*) in the file at *path* (read-only: every storage of its chain
    that can be)."""
    return _open(storage_section(path, database, default=default), read_only)


def _swift_within(section: ZODB.config.BaseConfig, path: str, database: str | None,
                  overrides: Mapping[str, Any] | None = None) -> SwiftBlobStorageFactory:
    while not isinstance(section, SwiftBlobStorageFactory):
        section = getattr(section.config, "base", None)
        if section is None:
            raise ConfigurationError(
                f"{path}: the storage of database {database or 'main'!r} has no "
                "<swiftblobstorage> section (add '%import zodb_swiftblobs' and wrap it)")
    for name, value in (overrides or {}).items():
        setattr(section.config, name, value)
    section.check(path)
    return section


def _open(section: ZODB.config.BaseConfig, read_only: bool):
    if read_only:
        _make_read_only(section)
    return section.open()


def _make_read_only(section: ZODB.config.BaseConfig) -> None:
    values = section.config
    while values is not None:
        if hasattr(values, "read_only"):
            values.read_only = True
        if hasattr(values, "create"):
            values.create = False
        values = getattr(getattr(values, "base", None), "config", None)


def _load(schema, path: str):
    config, _ = ZConfig.loadConfig(schema, path)
    return config


def _zeo_schema():
    try:
        import ZEO
    except ImportError:
        raise ImportError("this is a zeo.conf, and ZEO is not installed here: run the "
                          "command with the Python of the ZEO server") from None
    return ZConfig.loadSchema(os.path.join(os.path.dirname(ZEO.__file__), "schema.xml"))


def _zope_databases(path: str) -> list:
    """The ``<zodb_db>`` sections of a zope.conf, read as Zope itself reads it."""
    try:
        from Zope2.Startup.options import ZopeWSGIOptions
    except ImportError:
        raise ImportError("this is a zope.conf, and Zope is not installed here: run the "
                          "command with the Python of the Zope instance") from None
    return ZopeWSGIOptions(path)().configroot.databases

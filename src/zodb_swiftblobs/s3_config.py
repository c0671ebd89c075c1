"""zodb-s3blobs' ``<s3blobstorage>`` sections, read from a configuration
file's text without zodb-s3blobs installed (``%import zodb_s3blobs`` would
need it): where each section is, what it says, and the S3 settings it gives.

The text is read as ZConfig reads it: one directive, key or section line at a
time, section types and names and keys in any case, ``%define`` names
substituted as ``$name`` or ``${name}`` and environment variables as
``$(NAME)``.  Files named by ``%include`` are not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import ZConfig
from ZConfig.datatypes import Registry
from ZConfig.substitution import substitute

from .config import ConfigurationError, read_text

SECTION_TYPE = "s3blobstorage"
DATABASE_TYPES = ("zodb_db", "zodb")  # zope.conf's and ZODB configuration files'
SECTION_START = re.compile(r"<([^\s()</>]+)(?:\s+([^\s()<>]+))?\s*(/?)>")
SECTION_END = re.compile(r"</([^\s()<>]+)\s*>")
KEY_VALUE = re.compile(r"([^\s()]+)\s*(\S.*)?")
# zodb-s3blobs' component.xml: every key of <s3blobstorage>, with its default.
DEFAULTS: dict[str, str | None] = {
    "bucket-name": None,  # required
    "s3-prefix": "",
    "s3-endpoint-url": None,
    "s3-region": None,
    "s3-access-key": None,
    "s3-secret-key": None,
    "s3-use-ssl": "true",
    "s3-addressing-style": "auto",
    "s3-sse-customer-key": None,
    "cache-dir": None,  # required
    "cache-size": "1GB",
}
_DATATYPES = Registry()


@dataclass
class S3BlobSection:
    """One ``<s3blobstorage>`` section: its lines (indexes into the file's
    lines), its keys as written, and the ``%define`` names in force there."""

    name: str | None
    database: str | None  # the database section around it; else its own name
    start: int  # the line of <s3blobstorage>
    end: int  # the line of </s3blobstorage>
    key_lines: list[int] = field(default_factory=list)  # its own keys' lines
    keys: dict[str, str] = field(default_factory=dict)  # lowercase key: text as written
    defines: dict[str, str] = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        """The setting *key* as zodb-s3blobs reads it: substituted, or its default."""
        text = self.keys.get(key)
        if text is None:
            return DEFAULTS[key]
        try:
            return substitute(text, self.defines)
        except ZConfig.ConfigurationError as exc:
            raise ConfigurationError(f"<{SECTION_TYPE}> key {key}: {exc}") from None


@dataclass(frozen=True)
class S3Settings:
    """Where a zodb-s3blobs deployment keeps its blobs, and how it reaches
    them: the keyword arguments of zodb-s3blobs' S3Client.  *prefix* is kept
    as zodb-s3blobs keeps it, without a trailing slash."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    use_ssl: bool = True
    addressing_style: str = "auto"
    sse_customer_key: str | None = field(default=None, repr=False)

    @property
    def blobs_prefix(self) -> str:
        """The common start of the keys of every blob revision."""
        return f"{self.prefix}/blobs/" if self.prefix else "blobs/"

    @classmethod
    def from_section(cls, section: S3BlobSection) -> S3Settings:
        """The settings of *section*, checked as zodb-s3blobs checks them."""
        bucket = section.value("bucket-name")
        if not bucket:
            raise ConfigurationError(f"<{SECTION_TYPE}> has no bucket-name")
        try:
            use_ssl = _DATATYPES.get("boolean")(section.value("s3-use-ssl"))
        except ValueError as exc:
            raise ConfigurationError(f"<{SECTION_TYPE}> key s3-use-ssl: {exc}") from None
        return cls(bucket=bucket, prefix=(section.value("s3-prefix") or "").rstrip("/"),
                   endpoint_url=section.value("s3-endpoint-url"),
                   region=section.value("s3-region"),
                   access_key=section.value("s3-access-key"),
                   secret_key=section.value("s3-secret-key"), use_ssl=use_ssl,
                   addressing_style=section.value("s3-addressing-style") or "auto",
                   sse_customer_key=section.value("s3-sse-customer-key"))


def read_s3_settings(path: str, database: str | None = None, *,
                     default: str | None = None) -> S3Settings:
    """The S3 settings of *database* (see :func:`s3_section`, and *default*)
    in the configuration file at *path*."""
    text = read_text(path)
    try:
        return S3Settings.from_section(s3_section(text, database, default=default))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def s3_sections(text: str) -> list[S3BlobSection]:
    """Every ``<s3blobstorage>`` section of a configuration file's *text*
    (ConfigurationError for a line ZConfig would not read)."""
    sections: list[S3BlobSection] = []
    defines: dict[str, str] = {}
    # The open sections: type, name, and the S3BlobSection of an <s3blobstorage>.
    stack: list[tuple[str, str | None, S3BlobSection | None]] = []
    for index, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        start, end = SECTION_START.fullmatch(line), SECTION_END.fullmatch(line)
        if line.startswith("</") and end:
            if not stack or stack[-1][0] != end.group(1).lower():
                raise ConfigurationError(f"line {index + 1}: unbalanced section end {line}")
            closed = stack.pop()[2]
            if closed is not None:
                closed.end = index
                sections.append(closed)
        elif line.startswith("<") and start:
            _open_section(stack, start, index, defines)
        elif line.startswith("%"):
            _directive(line[1:], defines, index)
        elif not (match := KEY_VALUE.fullmatch(line)):
            raise ConfigurationError(f"line {index + 1}: not a key, section or directive")
        elif stack and stack[-1][2] is not None:
            section = stack[-1][2]
            section.keys[match.group(1).lower()] = match.group(2) or ""
            section.key_lines.append(index)
    if stack:
        raise ConfigurationError(f"section <{stack[-1][0]}> is not closed")
    return sections


def s3_section(text: str, database: str | None = None, *,
               default: str | None = None) -> S3BlobSection:
    """The ``<s3blobstorage>`` section of *database* in *text*: a database
    section's name (or the section's own); it may be left out when there is
    one section, or one of database *default* (by default ``main``)."""
    sections = s3_sections(text)
    if not sections:
        raise ConfigurationError(f"no <{SECTION_TYPE}> section (files named by %include "
                                 "are not read: give the one that has it)")
    if database is None:
        if len(sections) == 1:
            return sections[0]
        database = default or "main"
    for section in sections:
        if section.database == database.lower():
            return section
    named = ", ".join(repr(section.database) for section in sections)
    raise ConfigurationError(f"no <{SECTION_TYPE}> section of database {database!r} "
                             f"(there are those of {named})")


def _open_section(stack: list, start: re.Match, index: int, defines: dict[str, str]) -> None:
    kind, name, empty = start.group(1).lower(), start.group(2), start.group(3)
    name = name.lower() if name else None
    section = None
    if kind == SECTION_TYPE:
        if empty:
            raise ConfigurationError(f"line {index + 1}: an empty <{SECTION_TYPE}/> wraps "
                                     "no storage")
        around = [item[1] for item in stack if item[0] in DATABASE_TYPES]
        section = S3BlobSection(name=name, database=around[-1] if around else name,
                                start=index, end=index, defines=dict(defines))
    if not empty:
        stack.append((kind, name, section))


def _directive(rest: str, defines: dict[str, str], index: int) -> None:
    match = KEY_VALUE.fullmatch(rest)
    if match is None:
        raise ConfigurationError(f"line {index + 1}: a directive without a name")
    if match.group(1).lower() == "define":
        name, value = ((match.group(2) or "").split(None, 1) + ["", ""])[:2]
        try:
            defines[name.lower()] = substitute(value, defines)
        except ZConfig.ConfigurationError as exc:
            raise ConfigurationError(f"line {index + 1}: {exc}") from None

"""Converting a zodb-s3blobs configuration into a zodb-swiftblobs one.

Each ``<s3blobstorage>`` section becomes the equivalent ``<swiftblobstorage>``
around the same storage section, whose text is kept as it is written; so is
everything around it, but ``%import zodb_s3blobs``, which becomes ``%import
zodb_swiftblobs``.  Values are copied as written (``$name`` and ``$(NAME)``
references stay references, so no secret is expanded into the new file).
What has no equivalent is said in comments in the new section, and in the
notes returned.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigurationError
from .s3_config import DEFAULTS, SECTION_START, SECTION_TYPE, S3BlobSection, s3_sections

CONVERTED = "converted from <s3blobstorage> by zodb-swiftblobs convert-config"
# Keys of <s3blobstorage> for reaching S3, which Swift's settings do not mirror.
NO_EQUIVALENT = ("s3-endpoint-url", "s3-region", "s3-access-key", "s3-secret-key",
                 "s3-use-ssl", "s3-addressing-style")
CACHE_SUFFIX = "-swift"


@dataclass(frozen=True)
class ConvertedConfig:
    """The converted configuration file's text, and what the operator must know."""

    text: str
    notes: list[str]


def convert_s3_config(text: str) -> ConvertedConfig:
    """The configuration file *text* with every ``<s3blobstorage>`` section
    made a ``<swiftblobstorage>`` (ConfigurationError when it has none)."""
    sections = s3_sections(text)
    if not sections:
        raise ConfigurationError(f"no <{SECTION_TYPE}> section to convert (files named by "
                                 "%include are not read: convert the one that has it)")
    lines = text.splitlines(keepends=True)
    notes: list[str] = []
    replaced: dict[int, str] = {}
    for section in sections:
        keys = _swift_keys(section)
        section_notes = _section_notes(section)
        notes += [f"{_describe(section)}: {note}" for note in section_notes]
        replaced.update(_replacement(section, lines, keys + [f"# {note}"
                                                             for note in section_notes]))
    imported = False
    for index, line in enumerate(lines):
        if line.split() == ["%import", "zodb_s3blobs"]:
            replaced[index] = "" if imported else line.replace("zodb_s3blobs",
                                                               "zodb_swiftblobs")
            imported = True
        elif line.split() == ["%import", "zodb_swiftblobs"]:
            imported = True
    converted = "".join(replaced.get(index, line) for index, line in enumerate(lines))
    if not imported:
        converted = "%import zodb_swiftblobs\n" + converted
    return ConvertedConfig(converted, notes)


def _swift_keys(section: S3BlobSection) -> list[str]:
    """The key lines of the ``<swiftblobstorage>`` equivalent to *section*:
    the bucket's name for the container, the prefix of the same segments, a
    new cache directory of the same size, the SSE-C key as the encryption
    key."""
    keys = section.keys
    for required in ("bucket-name", "cache-dir"):
        if not keys.get(required):
            raise ConfigurationError(f"{_describe(section)}: <{SECTION_TYPE}> has no "
                                     f"{required}")
    lines = [f"container {keys['bucket-name']}"]
    prefix = _swift_prefix(keys.get("s3-prefix", ""))
    if prefix:
        lines.append(f"prefix {prefix}")
    lines.append(f"cache-dir {_swift_cache_dir(keys['cache-dir'])}")
    lines.append(f"cache-size {keys.get('cache-size') or DEFAULTS['cache-size']}")
    if keys.get("s3-sse-customer-key"):
        lines.append(f"encryption-key {keys['s3-sse-customer-key']}")
    return lines


def _section_notes(section: S3BlobSection) -> list[str]:
    keys = section.keys
    notes = ["Swift's credentials are to be added: auth-url, user and key (or leave them "
             "out and set the ST_* or OS_* environment variables, as for the swift command)"]
    endpoint = keys.get("s3-endpoint-url")
    if endpoint:
        notes.append(f"if {endpoint} is Swift's own S3 API (s3api) with TempAuth: auth-url "
                     f"{endpoint.rstrip('/')}/auth/v1.0, user is the S3 access key "
                     "(account:user), key the S3 secret key")
    absent = [key for key in NO_EQUIVALENT if key in keys]
    if absent:
        notes.append(f"no equivalent, left out: {', '.join(absent)}")
    unknown = [key for key in keys if key not in DEFAULTS]
    if unknown:
        notes.append(f"not keys of <{SECTION_TYPE}>, left out: {', '.join(unknown)}")
    cache_dir = keys.get("cache-dir", "")
    notes.append(f"the cache gets a directory of its own, {_swift_cache_dir(cache_dir)}: "
                 f"zodb-s3blobs removes every .blob file under {cache_dir}, so the two must "
                 "not share one; delete it once the old site is stopped")
    if keys.get("s3-sse-customer-key"):
        notes.append("the SSE-C key became the encryption key: zodb-swiftblobs encrypts the "
                     "blobs with it before they reach Swift (the encryption extra)")
    return notes


def _replacement(section: S3BlobSection, lines: list[str], body: list[str]) -> dict[int, str]:
    """The new text of the lines of *section* that change (by line index):
    its start line followed by the lines of *body*, its end, its keys gone."""
    start = lines[section.start]
    indent = start[:len(start) - len(start.lstrip())]
    inner = indent + "  "
    if section.key_lines:
        first = lines[section.key_lines[0]]
        inner = first[:len(first) - len(first.lstrip())]
    name = SECTION_START.fullmatch(start.strip()).group(2)
    body = [f"# {CONVERTED}", *body]
    replaced = {index: "" for index in section.key_lines}
    replaced[section.start] = (f"{indent}<swiftblobstorage{' ' + name if name else ''}>\n"
                               + "".join(f"{inner}{line}\n" for line in body))
    replaced[section.end] = f"{indent}</swiftblobstorage>\n"
    return replaced


def _swift_prefix(s3_prefix: str) -> str:
    """The Swift prefix of the same segments as *s3_prefix* (zodb-s3blobs
    takes empty ones: ``/site1``), ending with a slash; empty for none."""
    segments = [segment for segment in s3_prefix.split("/") if segment]
    return "/".join(segments) + "/" if segments else ""


def _swift_cache_dir(cache_dir: str) -> str:
    return cache_dir.rstrip("/") + CACHE_SUFFIX


def _describe(section: S3BlobSection) -> str:
    return f"database {section.database!r}" if section.database else f"<{SECTION_TYPE}>"

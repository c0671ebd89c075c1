"""Every setting of SwiftBlobStorage, declared once.

Each :class:`Option` has a name, a kind (its type, and how ZConfig reads it),
a default, its validation and one line of documentation.  From :data:`OPTIONS`
come SwiftBlobStorage's keyword arguments (:func:`signature`; its
``__init__`` is written out, for type checkers, as :func:`signature_source`
makes it), their validation (:func:`check`), the keys of ``component.xml``
and the README's option list.  ``component.xml`` is a static file, as ZConfig
wants; after changing an option, regenerate it and paste the others where the
tests say::

    python -m zodb_swiftblobs.options > src/zodb_swiftblobs/component.xml
    python -m zodb_swiftblobs.options --readme      # the README's option list
    python -m zodb_swiftblobs.options --signature   # SwiftBlobStorage.__init__
"""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .names import check_prefix
from .swift import SwiftContainer, container_arguments, require_positive

GIB = 1 << 30
STORAGE, CREDENTIAL, CONTAINER = "storage", "credential", "container"
POSITIONAL = ("container", "cache_dir", "cache_size", "prefix")  # after *base*
REGENERATE = "python -m zodb_swiftblobs.options > src/zodb_swiftblobs/component.xml"
README_START, README_END = ".. options-start", ".. options-end"


@dataclass(frozen=True)
class Kind:
    """A type of setting: its Python annotation, its ZConfig datatype (None:
    text) and how its default is written in a configuration file."""

    annotation: str
    datatype: str | None
    write: Callable[[Any], str]


def _size(value: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def _interval(value: float) -> str:
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if value % seconds == 0:
            return f"{int(value // seconds)}{unit}"
    return f"{value:g}"


TEXT = Kind("str", None, str)
SIZE = Kind("int", "byte-size", _size)
COUNT = Kind("int", "integer", str)
SECONDS = Kind("float", "float", lambda value: f"{value:g}")
INTERVAL = Kind("float", "time-interval", _interval)
FLAG = Kind("bool", "boolean", lambda value: "true" if value else "false")
KEYS = Kind("str | Sequence[str]", None, str)  # a multikey: one key per line


@dataclass(frozen=True)
class Option:
    """One setting: a keyword argument of SwiftBlobStorage and a zope.conf key.

    *group* says who takes it: the storage itself, the :class:`Credentials`,
    or the :class:`SwiftContainer` (which checks its own settings); *check*
    raises ValueError for a value the storage refuses (given name and value).
    """

    name: str
    kind: Kind
    default: Any
    doc: str
    group: str = STORAGE
    check: Callable[[str, Any], None] | None = None
    required: bool = False  # in a configuration file
    zconfig_name: str = ""  # the zope.conf key, when not the name with dashes

    @property
    def zconfig_key(self) -> str:
        return self.zconfig_name or self.name.replace("_", "-")

    @property
    def annotation(self) -> str:
        return self.kind.annotation + (" | None" if self.default is None else "")


def require_grace_period(seconds: float) -> None:
    """ValueError unless *seconds* is a grace period: a finite number, 0 or more."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"the gc grace period must be a number of seconds, 0 or more "
                         f"(0: delete at once), not {seconds!r}")


def _cache_dir(name: str, value: Any) -> None:
    if not value:
        raise ValueError("SwiftBlobStorage needs a cache_dir")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")


def _nonempty_text(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        raise ValueError(f"{name} must be a non-empty text when given")


_CONTAINER_DEFAULTS = {name: parameter.default for name, parameter in
                       inspect.signature(SwiftContainer.__init__).parameters.items()}


def _credential(name: str, doc: str) -> Option:
    return Option(name, TEXT, None, doc, CREDENTIAL)


def _container(name: str, kind: Kind, doc: str) -> Option:
    """A setting of SwiftContainer, with its default."""
    return Option(name, kind, _CONTAINER_DEFAULTS[name], doc, CONTAINER)


OPTIONS: tuple[Option, ...] = (
    Option("container", TEXT, "zodb-blobs", "The Swift container of the blobs (created if "
           "missing, unless create-container is off).", CONTAINER),
    Option("cache_dir", TEXT, None, "The directory of the local read cache; its tmp "
           "directory holds uncommitted blobs.", check=_cache_dir, required=True),
    Option("cache_size", SIZE, 10 * GIB, "The size the cache is kept near, in bytes.",
           check=require_positive),
    Option("prefix", TEXT, "", "Empty, or ending in a slash: the start of this database's "
           "object names, for several databases to share a container.",
           check=lambda name, value: check_prefix(value)),
    _credential("auth_url", "The authentication URL (TempAuth v1 or Keystone v3)."),
    _credential("user", "The user name."),
    _credential("key", "The user's password or key."),
    _credential("auth_version", "1 (TempAuth) or 3 (Keystone v3)."),
    _credential("project_name", "Keystone: the project's name."),
    _credential("project_id", "Keystone: the project's id."),
    _credential("project_domain_name", "Keystone: the project's domain name."),
    _credential("project_domain_id", "Keystone: the project's domain id."),
    _credential("user_domain_name", "Keystone: the user's domain name."),
    _credential("user_domain_id", "Keystone: the user's domain id."),
    _credential("region_name", "Keystone: the region of the Swift endpoint."),
    _credential("interface", "Keystone: the endpoint interface (public, internal, admin)."),
    _credential("application_credential_id", "Keystone: an application credential's id."),
    _credential("application_credential_secret",
                "Keystone: that application credential's secret."),
    _credential("preauth_url", "A storage URL, with preauth-token: no authentication."),
    _credential("preauth_token", "The token for preauth-url."),
    _container("cacert", TEXT, "A CA bundle file to verify Swift's TLS certificate with."),
    _container("insecure", FLAG, "Do not verify Swift's TLS certificate."),
    _container("storage_policy", TEXT, "The storage policy of a container created here."),
    _container("deadline", SECONDS, "Seconds an operation may take, retries included "
               "(transfers get one more per MiB)."),
    _container("timeout", SECONDS, "Seconds each socket operation may take."),
    _container("initial_backoff", SECONDS, "Seconds to wait before the first retry; "
               "doubled at each retry, with jitter."),
    _container("max_backoff", SECONDS, "The longest wait between retries, in seconds "
               "(at least initial-backoff)."),
    Option("upload_concurrency", COUNT, 8, "How many blobs a commit uploads at a time.",
           check=require_positive),
    Option("early_upload_threshold", SIZE, 4 << 20, "Blobs of at least this size are "
           "uploaded while the transaction is still open, before the base storage's commit "
           "lock, which their commit then holds for one small request each (needs Swift's "
           "slo middleware); smaller blobs are uploaded under the lock.",
           check=require_positive),
    Option("commit_lease", INTERVAL, 600.0, "How long a commit's early uploads stay safe "
           "from garbage collection without their process renewing its lease (renewed every "
           "quarter of it; a commit whose lease lapses fails): a killed process's uploads "
           "are collected that long after.", check=lambda name, value: require_positive(
               name, value, number=True)),
    _container("large_object_threshold", SIZE, "Files larger than this are uploaded as "
               "Static Large Objects (default 1GB, at most the cluster's max_file_size)."),
    _container("segment_size", SIZE, "The size of a large object's segments (and of a "
               "big blob's, uploaded before the commit lock)."),
    _container("segment_concurrency", COUNT, "How many segments of a large object are "
               "uploaded, or downloaded, at a time."),
    Option("temp_url_key", TEXT, None, "The key of blob_url's TempURLs (default: the "
           "container's or the account's Temp-URL-Key).", check=_nonempty_text),
    Option("create_container", FLAG, True, "Create the container when it is missing; "
           "when off, a missing container is an error at open.", check=_flag),
    # A week: a nightly backup restored days after a mistake finds its blobs.
    Option("gc_grace_period", INTERVAL, 7 * 24 * 3600.0,
           "How long after garbage collection finds an orphaned blob revision Swift "
           "deletes it (90, 30m, 6h, 7d; 0 deletes at once): a database restored from a "
           "backup older than the pack finds its blobs within it.",
           check=lambda name, value: require_grace_period(value)),
    Option("encryption_keys", KEYS, None, "An encryption key (32 bytes in base64, or 64 hex "
           "digits); give the key once per line for several.  The first one encrypts new "
           "blobs, every one decrypts.  Without one, the keys of the "
           "ZODB_SWIFTBLOBS_ENCRYPTION_KEYS environment variable are used, if set.",
           CONTAINER, zconfig_name="encryption-key"),
)
NAMES = tuple(option.name for option in OPTIONS)
DEFAULTS = {option.name: option.default for option in OPTIONS}


def check(settings: Mapping[str, Any]) -> None:
    """ValueError for a setting SwiftBlobStorage would refuse (*settings* has
    every option); nothing is opened or contacted."""
    for option in OPTIONS:
        if option.check is not None:
            option.check(option.name, settings[option.name])
    container_arguments(settings["container"], **container_settings(settings))


def container_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`zodb_swiftblobs.swift.open_container`
    among *settings* (all but the container's name)."""
    return {option.name: settings[option.name] for option in OPTIONS
            if option.group != STORAGE and option.name != "container"}


def signature() -> inspect.Signature:
    """SwiftBlobStorage's ``__init__(self, base, ...)``: *base*, then every option."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter("self", positional),
                  inspect.Parameter("base", positional, annotation="Any")]
    parameters += [inspect.Parameter(option.name, positional if option.name in POSITIONAL
                                     else inspect.Parameter.KEYWORD_ONLY,
                                     default=option.default, annotation=option.annotation)
                   for option in OPTIONS]
    return inspect.Signature(parameters, return_annotation="None")


def signature_source() -> str:
    """The ``def`` line of SwiftBlobStorage's ``__init__`` with every option
    (as storage.py spells it out, between the markers it names)."""
    parameters, keyword_only = ["self", "base: Any"], False
    for option in OPTIONS:
        if option.name not in POSITIONAL and not keyword_only:
            parameters.append("*")
            keyword_only = True
        default = f'"{option.default}"' if isinstance(option.default, str) \
            else repr(option.default)
        parameters.append(f"{option.name}: {option.annotation} = {default}")
    lines, line = [], "    def __init__("
    for index, parameter in enumerate(parameters):
        text = parameter + (", " if index < len(parameters) - 1 else ") -> None:")
        if len(line) + len(text.rstrip()) > 100:
            lines.append(line.rstrip())
            line = " " * 17
        line += text
    return "\n".join([*lines, line])


def from_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value, from the arguments of SwiftBlobStorage's ``__init__``."""
    return {name: arguments[name] for name in NAMES}


def docstring() -> str:
    """The documentation of every option, for SwiftBlobStorage's ``__init__``."""
    lines = ["Wrap *base*; each option (also a zope.conf key, dashes for underscores):", ""]
    for option in OPTIONS:
        lines += textwrap.wrap(f"{option.name}: {option.doc}", 76,
                               subsequent_indent="    ")
    return "\n".join(lines)


def component_xml() -> str:
    """The text of ``component.xml``: the ``<swiftblobstorage>`` section type."""
    keys = "".join(_zconfig_key(option) for option in OPTIONS)
    return f"""<component prefix="zodb_swiftblobs.config">
  <!-- Generated by: {REGENERATE} -->

  <sectiontype name="swiftblobstorage" implements="ZODB.storage"
               datatype=".SwiftBlobStorageFactory">
    <description>
      Keeps the blobs of the storage it contains in an OpenStack Swift
      container, with a local cache for reads.  Each key has the name and
      the default of a SwiftBlobStorage keyword argument (dashes for
      underscores).  Credentials left out are read from the ST_* and OS_*
      environment variables, as the swift command-line client reads them.
    </description>
    <section type="ZODB.storage" name="*" attribute="base" required="yes">
      <description>
        The wrapped storage (without a blob directory; a zeoclient may keep
        its blob-dir, which is then unused).
      </description>
    </section>
{keys}  </sectiontype>

</component>
"""


def _zconfig_key(option: Option) -> str:
    attributes = f'name="{option.zconfig_key}"'
    if option.kind is KEYS:
        element = "multikey"
        attributes += f' attribute="{option.name}"'
    else:
        element = "key"
        if option.kind.datatype is not None:
            attributes += f' datatype="{option.kind.datatype}"'
        if option.required:
            attributes += ' required="yes"'
        elif option.default is not None:
            attributes += f' default="{option.kind.write(option.default)}"'
    description = textwrap.indent(textwrap.fill(option.doc, 66), " " * 8)
    return (f"    <{element} {attributes}>\n      <description>\n{description}\n"
            f"      </description>\n    </{element}>\n")


def readme_list() -> str:
    """The README's option list (between its options-start and -end comments)."""
    items = []
    for option in OPTIONS:
        written = "" if option.default is None else option.kind.write(option.default)
        default = f" (default ``{written}``)" if written else ""
        items.append(textwrap.fill(
            f"- ``{option.name}``, ``{option.zconfig_key}``{default}: {option.doc}", 79,
            subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(items)


def main(argv: list[str]) -> int:
    """``python -m zodb_swiftblobs.options [--readme | --signature]``: print
    component.xml (or the README's option list, or SwiftBlobStorage's
    ``__init__`` line)."""
    texts = {"--readme": lambda: readme_list() + "\n",
             "--signature": lambda: signature_source() + "\n"}
    sys.stdout.write(texts.get(argv[1] if argv[1:] else "", component_xml)())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

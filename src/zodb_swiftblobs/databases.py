"""What database server and database RelStorage's connection settings name.

Processes serving one database often reach it with different settings: the
same PostgreSQL DSN with its settings in another order, a value quoted, a
``connect_timeout`` or an ``application_name`` of their own.  The identities
made here keep only what tells databases apart (server, port, database) in a
normal form, and never a password or any other setting.
"""

from __future__ import annotations

import ast
import getpass
import os
import re
from collections.abc import Mapping
from urllib.parse import unquote

URI_SCHEMES = ("postgresql://", "postgres://")
DEFAULT_PORTS = {"postgresql": "5432", "mysql": "3306"}
_KEYWORD = re.compile(r"[^\s=]+")
_LEGACY_WORD = re.compile(r"^[A-Za-z_]+=[^'=]*$|^[A-Za-z_]+='[^']*'$")
_LEGACY_SETTING = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,]*)")


class DSNError(ValueError):
    """A PostgreSQL connection string libpq would not accept either."""


def parse_dsn(dsn: str) -> dict[str, str]:
    """The settings of a libpq connection string: ``key = value`` pairs (values
    optionally single-quoted, with backslash escapes) or a
    ``postgresql://user:password@host:port/dbname?key=value`` URI.  DSNError
    (which never quotes the string: it may hold a password) when malformed."""
    text = dsn.strip()
    if text.startswith(URI_SCHEMES):
        return _parse_uri(text)
    settings, position = {}, 0
    while True:
        position = _skip_spaces(text, position)
        if position == len(text):
            return _expanded(settings)
        match = _KEYWORD.match(text, position)
        if match is None:
            raise DSNError(f"a PostgreSQL DSN setting has no name (at character {position})")
        key, position = match.group(), _skip_spaces(text, match.end())
        if not text.startswith("=", position):
            raise DSNError(f"the PostgreSQL DSN setting {key!r} has no '='")
        settings[key], position = _value(text, _skip_spaces(text, position + 1), key)


def postgresql_identity(dsn: str, environ: Mapping[str, str] | None = None) -> str:
    """The PostgreSQL server(s), port(s) and database *dsn* reaches, with
    libpq's environment variables and defaults where it says nothing (host
    localhost, port 5432, database named as the user)."""
    env = os.environ if environ is None else environ
    settings = parse_dsn(dsn)

    def setting(key: str, variable: str) -> str:
        return settings.get(key) or env.get(variable, "")

    hosts = (setting("host", "PGHOST") or setting("hostaddr", "PGHOSTADDR")
             or "localhost").split(",")
    ports = setting("port", "PGPORT").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    user = setting("user", "PGUSER") or _login()
    database = setting("dbname", "PGDATABASE") or user
    servers = ",".join(_server(host, port or DEFAULT_PORTS["postgresql"])
                       for host, port in zip(hosts, ports, strict=False))
    service = setting("service", "PGSERVICE")
    return (f"PostgreSQL database {database!r} on {servers}"
            + (f" (service {service!r})" if service else ""))


def mysql_identity(params: Mapping[str, object]) -> str:
    """The MySQL server and database of RelStorage's MySQL connection *params*
    (those of MySQLdb.connect: host, port, unix_socket, db, ...)."""
    host = str(params.get("host") or "localhost")
    database = str(params.get("db") or "")
    if host == "localhost" and params.get("unix_socket"):
        server = f"socket {params['unix_socket']}"
    else:
        server = _server(host, str(params.get("port") or DEFAULT_PORTS["mysql"]))
    if params.get("read_default_file"):
        server += f" (options file {params['read_default_file']})"
    return f"MySQL database {database!r} on {server}"


def oracle_identity(dsn: str | None, user: str | None = None) -> str:
    """The Oracle schema of *user* (where RelStorage keeps one database's tables)
    in the database of a DSN (a TNS name, an Easy Connect string or a connect
    descriptor), without the credentials a connect string may carry."""
    text = "".join((dsn or "").split())
    if "@" in text and "(" not in text:
        text = text.rsplit("@", 1)[1]
    return f"Oracle schema {(user or '').upper()!r} in {text}"


def legacy_identity(owner: str, environ: Mapping[str, str] | None = None) -> str:
    """The identity of today's format for an ownership marker's *owner* written
    by versions that named a PostgreSQL, MySQL or Oracle database by its
    adapter's description (``RelStorage <PostgreSQLAdapter ... dsn='...'>``);
    other owners are returned as they are."""
    if owner.startswith("RelStorage <PostgreSQLAdapter"):
        settings = _legacy_settings(owner)
        if "dsn" in settings:
            return f"RelStorage {postgresql_identity(_legacy_dsn(settings['dsn']), environ)}"
    elif owner.startswith("RelStorage MySQLAdapter,"):
        return f"RelStorage {mysql_identity(_legacy_settings(owner))}"
    elif owner.startswith("RelStorage OracleAdapter,"):
        settings = _legacy_settings(owner)
        return f"RelStorage {oracle_identity(settings.get('dsn'), settings.get('user'))}"
    return owner


def _legacy_settings(owner: str) -> dict[str, object]:
    settings = {}
    for key, text in _LEGACY_SETTING.findall(owner):
        try:
            settings[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            settings[key] = text.strip()
    return settings


def _legacy_dsn(dsn: str) -> str:
    """A DSN as older versions recorded it: split at white space, without the
    words starting with 'password' (so a spaced or quoted password left parts
    behind).  Its well-formed ``key=value`` words are kept."""
    if dsn.startswith(URI_SCHEMES):
        return dsn
    try:
        parse_dsn(dsn)
        return dsn
    except DSNError:
        return " ".join(word for word in dsn.split() if _LEGACY_WORD.match(word))


def _skip_spaces(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _value(text: str, position: int, key: str) -> tuple[str, int]:
    quoted = text.startswith("'", position)
    position += quoted
    value = []
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text):
            value.append(text[position + 1])
            position += 2
            continue
        if (quoted and char == "'") or (not quoted and char.isspace()):
            break
        value.append(char)
        position += 1
    if quoted:
        if position >= len(text):
            raise DSNError(f"the quoted value of the PostgreSQL DSN setting {key!r} "
                           "is not closed")
        position += 1
    return "".join(value), position


def _parse_uri(uri: str) -> dict[str, str]:
    rest = uri.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    settings = {}
    if at:
        settings["user"] = unquote(userinfo.partition(":")[0])
    names, ports = [], []
    for spec in hosts.split(",") if hosts else []:
        match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?|([^:]*)(?::(.*))?", spec)
        names.append(unquote(match.group(1) or match.group(3) or ""))
        ports.append(match.group(2) or match.group(4) or "")
    if any(names):
        settings["host"] = ",".join(names)
    if any(ports):
        settings["port"] = ",".join(ports)
    if slash and path:
        settings["dbname"] = unquote(path)
    for pair in filter(None, query.split("&")):
        key, equals, value = pair.partition("=")
        if not equals:
            raise DSNError("a parameter of a PostgreSQL URI has no '='")
        settings[unquote(key)] = unquote(value)
    return settings


def _expanded(settings: dict[str, str]) -> dict[str, str]:
    """libpq reads a ``dbname`` holding '=' or a URI as a connection string."""
    dbname = settings.get("dbname", "")
    if "=" in dbname or dbname.startswith(URI_SCHEMES):
        inner = parse_dsn(dbname)
        settings = {**settings, **inner}
        if "dbname" not in inner:
            del settings["dbname"]
    return settings


def _server(host: str, port: str) -> str:
    if host.startswith(("/", "@")):  # a Unix socket directory (or abstract name)
        return f"{host}:{port}"
    host = host.lower().rstrip(".")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""

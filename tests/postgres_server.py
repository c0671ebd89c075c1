"""A private PostgreSQL server for the tests: a cluster made with initdb in a
temporary directory, listening on 127.0.0.1 (and a socket directory inside
it), started as a subprocess and stopped by its PID.

PostgreSQL refuses to run as root: as root, initdb and the server run as the
``postgres`` system user Debian's package creates.  Databases are made from
a template holding RelStorage's schema (one per history mode), and emptied
by RelStorage between tests.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

SYSTEM_USER = "postgres"
SUPERUSER = "postgres"


def in_ci() -> bool:
    """Whether the tests run in CI (``CI=true``), where nothing may be skipped for
    lack of PostgreSQL."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def find_bin_dir() -> str | None:
    """The directory of PostgreSQL's server programs: Debian's newest
    /usr/lib/postgresql/*/bin, else the one of ``initdb`` on the PATH."""
    debian = [os.path.dirname(path) for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if debian:
        return max(debian, key=lambda path: int(path.split("/")[-2].split(".")[0]))
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def unavailable_reason() -> str | None:
    """Why no server can be started here (None when one can)."""
    if find_bin_dir() is None:
        return "PostgreSQL's initdb was not found (apt-get install postgresql)"
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"as root, PostgreSQL needs the {SYSTEM_USER!r} system user to run as"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A PostgreSQL cluster of its own in a new temporary directory."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.directory = tempfile.mkdtemp(prefix="zodb-swiftblobs-postgres-")
        self.data_dir = os.path.join(self.directory, "data")
        self.socket_dir = os.path.join(self.directory, "sockets")
        self.log_path = os.path.join(self.directory, "server.log")
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.templates: dict[bool, str] = {}
        self.databases: set[str] = set()
        self.account: dict[str, Any] = {}
        if os.geteuid() == 0:  # the server's user owns its directory
            user = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
            self.account = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])

    def start(self, timeout: float = 60.0) -> None:
        """Create the cluster, start the server, wait until it answers."""
        os.mkdir(self.socket_dir)
        if self.account:
            os.chown(self.socket_dir, self.account["user"], self.account["group"])
        initdb = subprocess.run([os.path.join(self.bin_dir, "initdb"), "-D", self.data_dir,
                                 "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                                 "--locale=C", "--no-sync"],
                                capture_output=True, text=True, cwd=self.directory,
                                **self.account)
        if initdb.returncode:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [os.path.join(self.bin_dir, "postgres"), "-D", self.data_dir,
                 "-h", "127.0.0.1", "-p", str(self.port), "-k", self.socket_dir,
                 # a throw-away cluster: no durability, enough connections
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.directory, **self.account)
        self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        import psycopg2

        give_up = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn("postgres")).close()
                return
            except psycopg2.OperationalError:
                if self.process.poll() is not None or time.monotonic() > give_up:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def dsn(self, database: str) -> str:
        """The connection string of *database* (over TCP on the loopback)."""
        return f"dbname={database} user={SUPERUSER} host=127.0.0.1 port={self.port}"

    def execute(self, statement: str) -> None:
        """Run *statement* outside a transaction (CREATE DATABASE needs that)."""
        import psycopg2

        connection = psycopg2.connect(self.dsn("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def empty_database(self, name: str, keep_history: bool) -> str:
        """The connection string of database *name*, holding RelStorage's schema
        (history-preserving or history-free) and no data: copied from a
        template the first time, emptied by RelStorage after (ending first the
        server's connections to it that a failed test may have left open)."""
        if name not in self.databases:
            if keep_history not in self.templates:
                self.templates[keep_history] = self._schema_template(keep_history)
            self.execute(f"CREATE DATABASE {name} TEMPLATE {self.templates[keep_history]}")
            self.databases.add(name)
        else:
            self.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         f" WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            with self._adapter(name, keep_history) as adapter:
                adapter.schema.zap_all()
        return self.dsn(name)

    @contextlib.contextmanager
    def _adapter(self, name: str, keep_history: bool):
        """RelStorage's adapter to database *name*."""
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options

        options = Options(keep_history=keep_history)
        adapter = PostgreSQLAdapter(dsn=self.dsn(name), options=options)
        try:
            yield adapter
        finally:
            adapter.release()

    def _schema_template(self, keep_history: bool) -> str:
        """A database in which RelStorage created its schema, to copy."""
        name = "relstorage_hp" if keep_history else "relstorage_hf"
        self.execute(f"CREATE DATABASE {name}")
        with self._adapter(name, keep_history) as adapter:
            adapter.schema.prepare()
        return name

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server by its PID (a fast shutdown), remove the directory."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

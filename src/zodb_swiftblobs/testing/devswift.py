"""A real OpenStack Swift all-in-one on 127.0.0.1, for development and tests.

``DevSwift(directory).start()`` builds rings and configuration files under
*directory*, starts a proxy (with tempauth), an account, a container and an
object server (and memcached when it is installed) on free loopback ports, and
waits until an authenticated request succeeds.  Everything it starts is
recorded in ``state.json``; ``stop()`` ends exactly those processes, by PID.

The servers run in separate processes (Swift needs eventlet; this package's
client side never imports it), started through
:mod:`zodb_swiftblobs.testing.serve`; :mod:`zodb_swiftblobs.testing.swiftconf`
writes their configuration.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from . import devfaults, devkeystone
from .serve import SWIFT_MISSING
from .swiftconf import ACCOUNT, POLICIES, STORAGE_SERVERS, USER, SwiftConfig

log = logging.getLogger(__name__)

SERVERS = (*STORAGE_SERVERS, "proxy")
KEYSTONE_SERVERS = ("keystone", "proxy-keystone")
STATE_FILE = "state.json"
LAUNCH_MARKER = "zodb_swiftblobs.testing.serve"


class DevSwiftError(RuntimeError):
    """The embedded Swift could not be started or is not usable."""


class MissingPackageError(DevSwiftError):
    """A package the embedded Swift or Keystone needs cannot be imported here
    (OpenStack Swift: the ``devswift`` extra; Keystone: the ``test`` extra)."""


@dataclass(frozen=True)
class DevSwiftSettings:
    """How a client reaches a running embedded Swift."""

    auth_url: str
    user: str
    key: str = ""
    storage_url: str = ""

    def __repr__(self) -> str:
        return f"DevSwiftSettings(auth_url={self.auth_url!r}, user={self.user!r})"

    def exports(self) -> str:
        """Shell ``export`` lines for the ``swift`` command-line client."""
        return "".join(f"export {name}={shlex.quote(value)}\n"
                       for name, value in self.environ().items())

    def environ(self) -> dict[str, str]:
        return {"ST_AUTH": self.auth_url, "ST_USER": self.user, "ST_KEY": self.key}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class DevSwift:
    """A local Swift cluster rooted at one directory.

    *devices* puts object data elsewhere (a RAM disk, say).  *max_file_size*,
    *max_deletes_per_request* and *expose_info* set the cluster limits that
    clients read from ``/info``; *rate_limit* makes Swift's ratelimit
    middleware answer 498 above that many container writes a second (it needs
    memcached).  *keystone* adds a real Keystone and a proxy that uses it.
    *token_life* is the lifetime of TempAuth tokens in seconds.  *faults*
    puts :mod:`zodb_swiftblobs.testing.devfaults` in the proxy (see :meth:`inject_faults`).
    *without_middleware* leaves those middleware out of the proxy (``("slo",)``:
    a cluster without Static Large Objects).
    """

    def __init__(self, directory: str, *, devices: str | None = None,
                 max_file_size: int | None = None,
                 max_deletes_per_request: int | None = None, expose_info: bool = True,
                 rate_limit: float | None = None, keystone: bool = False,
                 token_life: int = 86400, faults: bool = False,
                 without_middleware: tuple[str, ...] = ()) -> None:
        self.directory = os.path.abspath(directory)
        self.devices = os.path.abspath(devices or os.path.join(self.directory, "devices"))
        self.keystone = keystone
        self._token_life = token_life
        self.faults = faults
        self.config = SwiftConfig(
            self.directory, self.devices, max_file_size=max_file_size,
            max_deletes_per_request=max_deletes_per_request, expose_info=expose_info,
            rate_limit=rate_limit, faults_path=self.faults_path if faults else None,
            without_middleware=tuple(without_middleware))
        self.etc = self.config.etc
        self.logs = os.path.join(self.directory, "log")
        self.state_path = os.path.join(self.directory, STATE_FILE)

    # -- state --------------------------------------------------------------

    def _load_state(self) -> dict | None:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _save_state(self, state: dict) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.state_path)

    @property
    def state(self) -> dict:
        state = self._load_state()
        if state is None:
            raise DevSwiftError(f"no embedded Swift has been set up in {self.directory}")
        return state

    def settings(self) -> DevSwiftSettings:
        """Connection settings of the cluster in this directory."""
        state = self.state
        return DevSwiftSettings(
            auth_url=f"http://127.0.0.1:{state['ports']['proxy']}/auth/v1.0",
            user=f"{ACCOUNT}:{USER}",
            key=state["key"],
            storage_url=f"http://127.0.0.1:{state['ports']['proxy']}/v1/AUTH_{ACCOUNT}",
        )

    def keystone_settings(self) -> devkeystone.KeystoneSettings:
        """Keystone v3 settings (a cluster started with ``keystone=True``)."""
        state = self.state
        keystone = state.get("keystone")
        if not keystone or not keystone.get("registered"):
            raise DevSwiftError("this embedded Swift was started without Keystone")
        return devkeystone.KeystoneSettings(
            auth_url=f"http://127.0.0.1:{state['ports']['keystone']}/v3",
            user=devkeystone.USER, password=keystone["user_password"],
            project_name=devkeystone.PROJECT,
            application_credential_id=keystone["registered"]["application_credential_id"],
            application_credential_secret=keystone["registered"][
                "application_credential_secret"])

    @property
    def fernet_key(self) -> bytes:
        """The key tempauth signs its tokens with (tests mint tokens with it)."""
        return self.state["fernet_key"].encode("ascii")

    @property
    def token_life(self) -> int:
        return int(self.state["token_life"])

    def running(self) -> bool:
        state = self._load_state()
        if not state:
            return False
        return all(self._owned_pid(state, name) for name in state["pids"])

    def _owned_pid(self, state: dict, name: str) -> int | None:
        """The PID of *name* if that process is alive and is the one we started."""
        pid = state["pids"].get(name)
        argv = state.get("argv", {}).get(name)
        if not pid or not argv or not _pid_alive(pid):
            return None
        return pid if _cmdline(pid) == " ".join(argv) + " " else None

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> DevSwiftSettings:
        """Start the cluster (idempotent) and return its settings."""
        if self.keystone and (missing := devkeystone.missing_packages()):
            raise MissingPackageError(
                f"the embedded Keystone needs {', '.join(missing)}, which cannot be "
                f"imported here: pip install {' '.join(missing)}")
        state = self._load_state()
        if state and self.running() and (state.get("keystone") or not self.keystone):
            self._wait_ready(state, timeout)
            return self.settings()
        if state:
            self.stop()
        try:
            state = self._configure(state)
            for name in self._process_names(state):
                self._spawn(state, name)
                self._save_state(state)
            self._wait_ready(state, timeout)
        except Exception as exc:
            self.stop()
            if isinstance(exc, DevSwiftError):
                raise
            raise DevSwiftError(f"the embedded Swift did not start: {exc}; "
                                f"see the logs in {self.logs}") from exc
        settings = self.settings()
        log.info("embedded Swift running at %s (directory %s)", settings.auth_url, self.directory)
        return settings

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every process this directory's cluster started."""
        state = self._load_state()
        if not state:
            return
        for name in list(state["pids"]):
            self.stop_server(name, timeout=timeout, state=state)
        self._save_state(state)

    def _process_names(self, state: dict) -> list[str]:
        names = list(SERVERS)
        if state["ports"].get("memcached"):
            names.insert(0, "memcached")
        if state.get("keystone"):
            names += KEYSTONE_SERVERS
        return names

    # -- fault injection ----------------------------------------------------

    def stop_server(self, name: str, *, timeout: float = 15.0, state: dict | None = None) -> None:
        """Stop one server (``proxy``, ``object`` ...) that this cluster started."""
        own_state = state is None
        state = state or self.state
        pid = self._owned_pid(state, name)
        if pid:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
            ends_at = time.monotonic() + timeout
            while _pid_alive(pid) and time.monotonic() < ends_at:
                time.sleep(0.05)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while _pid_alive(pid):
                    time.sleep(0.05)
        state["pids"][name] = None
        if own_state:
            self._save_state(state)

    def start_server(self, name: str, timeout: float = 30.0) -> None:
        """Start one stopped server again, on its old port."""
        state = self.state
        if self._owned_pid(state, name):
            return
        self._spawn(state, name)
        self._save_state(state)
        self._wait_port(state["ports"][name], timeout)
        if name != "memcached":
            self._wait_healthy(name, state["ports"][name], timeout)

    def kill_server(self, name: str) -> None:
        """End a server abruptly (SIGKILL), cutting its open connections."""
        pid = self._owned_pid(self.state, name)
        if pid:
            os.kill(pid, signal.SIGKILL)
            while _pid_alive(pid):
                time.sleep(0.02)
        self.stop_server(name)

    def pause_server(self, name: str) -> None:
        """Freeze a server with SIGSTOP: connections hang instead of failing."""
        self._signal(name, signal.SIGSTOP)

    def resume_server(self, name: str) -> None:
        """Undo pause_server."""
        self._signal(name, signal.SIGCONT)

    @property
    def faults_path(self) -> str:
        return os.path.join(self.directory, devfaults.RULES_FILE)

    def inject_faults(self, *rules: dict) -> None:
        """Replace the proxy's fault rules (a cluster started with ``faults=True``;
        see :mod:`zodb_swiftblobs.testing.devfaults`); no rules clears them."""
        if not self.faults:
            raise DevSwiftError("this cluster was not started with faults=True")
        temporary = f"{self.faults_path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(list(rules), f)
        os.replace(temporary, self.faults_path)

    def faults_applied(self) -> list[dict]:
        """Every use of a fault rule so far, oldest first (see
        :mod:`zodb_swiftblobs.testing.devfaults`): dicts of ``time``, ``method``,
        ``path`` and ``rule`` (the rule's index)."""
        try:
            with open(os.path.join(self.directory, devfaults.RECORD_FILE),
                      encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def _signal(self, name: str, signum: int) -> None:
        pid = self._owned_pid(self.state, name)
        if not pid:
            raise DevSwiftError(f"{name} server is not running")
        os.kill(pid, signum)

    # -- configuration --------------------------------------------------------

    def _configure(self, previous: dict | None) -> dict:
        """Write rings and configuration; keep ports and secrets of an earlier run."""
        for sub in ("etc", "log", "recon", "run"):
            os.makedirs(os.path.join(self.directory, sub), exist_ok=True)
        os.makedirs(os.path.join(self.devices, "d1"), exist_ok=True)
        os.chmod(self.directory, 0o700)
        if previous:
            state = previous
            ports = state["ports"]
            if "memcached" in ports and not shutil.which("memcached"):
                ports["memcached"] = None
        else:
            ports = {name: _free_port() for name in SERVERS}
            ports["memcached"] = _free_port() if shutil.which("memcached") else None
            state = {
                "ports": ports,
                "key": secrets.token_urlsafe(18),
                "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "hash_suffix": secrets.token_hex(16),
                "token_life": self._token_life,
            }
        state["pids"], state["argv"] = {}, {}
        if self.keystone and not state.get("keystone"):
            ports.update({name: _free_port() for name in KEYSTONE_SERVERS})
            state["keystone"] = {name: secrets.token_urlsafe(12) for name in
                                 ("admin_password", "service_password", "user_password")}
        self.config.write(state)
        self._run_helper("rings", self.etc, str(ports["account"]), str(ports["container"]),
                         str(ports["object"]), str(len(POLICIES)))
        keystone = state.get("keystone")
        if keystone:
            config = devkeystone.write_config(self.keystone_dir)
            if not keystone.get("initialized"):
                shutil.rmtree(self.keystone_dir, ignore_errors=True)
                config = devkeystone.write_config(self.keystone_dir)
                devkeystone.initialize(config, ports["keystone"], keystone["admin_password"],
                                       self._child_env())
                keystone["initialized"] = True
        return state

    @property
    def keystone_dir(self) -> str:
        return os.path.join(self.directory, "keystone")

    # -- processes ----------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env["PYTHONWARNINGS"] = "ignore"
        return env

    def _run_helper(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", LAUNCH_MARKER, *args],
            env=self._child_env(), capture_output=True, text=True, timeout=120,
        )
        if result.returncode == SWIFT_MISSING:
            raise MissingPackageError(
                f"the embedded Swift needs OpenStack Swift, and it cannot be imported here "
                f"({(result.stderr.strip().splitlines() or ['no message'])[-1]}): "
                f"pip install 'zodb-swiftblobs[devswift]'")
        if result.returncode:
            raise DevSwiftError(
                f"devswift {args[0]} failed (is the 'swift' package installed? "
                f"pip install 'zodb-swiftblobs[devswift]'):\n{result.stderr[-2000:]}")

    def _spawn(self, state: dict, name: str) -> None:
        port = state["ports"][name]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            pass
        else:
            raise DevSwiftError(f"port {port} of the {name} server is taken by another "
                                f"process; stop it, or remove {self.directory} to start afresh")
        logfile = open(os.path.join(self.logs, f"{name}.log"), "ab")
        if name == "memcached":
            argv = [shutil.which("memcached"), "-l", "127.0.0.1", "-U", "0",
                    "-p", str(state["ports"]["memcached"]), "-m", "64"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]
        elif name == "keystone":
            argv = [sys.executable, "-m", LAUNCH_MARKER, "serve-keystone", self.keystone_dir,
                    str(state["ports"]["keystone"])]
        else:
            conf = os.path.join(self.etc, f"{name}-server.conf")
            app = "proxy" if name.startswith("proxy") else name
            argv = [sys.executable, "-m", LAUNCH_MARKER, "serve", app, conf, self.etc]
        with logfile:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                env=self._child_env(), start_new_session=True, close_fds=True,
            )
        state["pids"][name] = proc.pid
        state["argv"][name] = argv

    def _wait_port(self, port: int, timeout: float) -> None:
        ends_at = time.monotonic() + timeout
        while time.monotonic() < ends_at:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise DevSwiftError(f"nothing listens on port {port} after {timeout:.0f}s; "
                            f"see the logs in {self.logs}")

    def _wait_healthy(self, name: str, port: int, timeout: float) -> None:
        path = "/v3" if name == "keystone" else "/healthcheck"
        ends_at = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > ends_at:
                raise DevSwiftError(f"server on port {port} is not healthy after "
                                    f"{timeout:.0f}s; see the logs in {self.logs}")
            time.sleep(0.1)

    def _wait_ready(self, state: dict, timeout: float) -> None:
        """Wait for every server, then for one authenticated request."""
        ends_at = time.monotonic() + timeout
        for name in self._process_names(state):
            if not self._owned_pid(state, name):
                raise DevSwiftError(f"{name} exited at start; see {self.logs}/{name}.log")
            self._wait_port(state["ports"][name], max(1.0, ends_at - time.monotonic()))
        for name in self._process_names(state):
            if name != "memcached":
                self._wait_healthy(name, state["ports"][name],
                                   max(1.0, ends_at - time.monotonic()))
        keystone = state.get("keystone")
        if keystone and not keystone.get("registered"):
            try:
                keystone["registered"] = devkeystone.register(
                    state["ports"]["keystone"], state["ports"]["proxy-keystone"],
                    keystone["admin_password"], keystone["service_password"],
                    keystone["user_password"])
            except Exception:
                keystone["initialized"] = False  # the next start begins Keystone afresh
                self._save_state(state)
                raise
            self._save_state(state)
        settings = self.settings()
        while True:
            try:
                request = urllib.request.Request(
                    settings.auth_url,
                    headers={"X-Auth-User": settings.user, "X-Auth-Key": settings.key})
                with urllib.request.urlopen(request, timeout=5) as r:
                    token = r.headers["X-Auth-Token"]
                    url = r.headers["X-Storage-Url"]
                with urllib.request.urlopen(
                        urllib.request.Request(url, method="HEAD",
                                               headers={"X-Auth-Token": token}), timeout=5):
                    return
            except (OSError, urllib.error.URLError) as exc:
                if time.monotonic() > ends_at:
                    raise DevSwiftError(f"embedded Swift does not answer authenticated "
                                        f"requests: {exc}; see {self.logs}") from None
                time.sleep(0.1)

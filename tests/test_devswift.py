"""The embedded Swift and the command line that drives it."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

from conftest import child_environment
from zodb_swiftblobs.swift import Credentials, SwiftContainer
from zodb_swiftblobs.testing.devswift import DevSwift

ENV = child_environment()


def run(*args, env=None, check=True):
    result = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", *args],
                            capture_output=True, text=True, env=env or ENV, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def parse_exports(text):
    values = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = value
    return values


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["zodb-swiftblobs"] == "zodb_swiftblobs.cli:main"


def test_start_env_stop_from_the_command_line(tmp_path):
    directory = str(tmp_path / "swift")
    started = run("devswift", "start", "--dir", directory)
    exports = parse_exports(started.stdout)
    assert set(exports) == {"ST_AUTH", "ST_USER", "ST_KEY"}
    assert exports["ST_AUTH"].startswith("http://127.0.0.1:")
    pids = dict(json.load(open(os.path.join(directory, "state.json")))["pids"])
    try:
        container = SwiftContainer(Credentials.from_environ(exports), "cli")
        (tmp_path / "f").write_bytes(b"hello")
        container.upload("hello", str(tmp_path / "f"))
        container.close()

        again = run("devswift", "start", "--dir", directory)
        assert again.stdout == started.stdout, "start is idempotent"
        assert json.load(open(os.path.join(directory, "state.json")))["pids"] == pids
        assert run("devswift", "env", "--dir", directory).stdout == started.stdout
    finally:
        run("devswift", "stop", "--dir", directory)
    for pid in pids.values():
        if pid:
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    missing = run("devswift", "env", "--dir", directory, check=False)
    assert missing.returncode == 1 and "no embedded Swift is running" in missing.stderr
    run("devswift", "stop", "--dir", directory)


def test_restart_keeps_ports_key_and_data(tmp_path):
    cluster = DevSwift(str(tmp_path / "swift"))
    first = cluster.start()
    try:
        container = SwiftContainer(Credentials(auth_url=first.auth_url, user=first.user,
                                               key=first.key), "keep")
        (tmp_path / "f").write_bytes(b"kept")
        container.upload("kept", str(tmp_path / "f"))
        container.close()
        cluster.stop()
        assert not cluster.running()
        second = cluster.start()
        assert (second.auth_url, second.key) == (first.auth_url, first.key)
        container = SwiftContainer(Credentials(auth_url=second.auth_url, user=second.user,
                                               key=second.key), "keep")
        container.download("kept", str(tmp_path / "back"))
        assert (tmp_path / "back").read_bytes() == b"kept"
        container.close()
    finally:
        cluster.stop()


def test_stop_ends_only_processes_it_started(tmp_path):
    """A recorded PID whose command line is not the recorded one is left alone."""
    decoy_argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    decoy = subprocess.Popen(decoy_argv)
    try:
        cluster = DevSwift(str(tmp_path / "swift"))
        os.makedirs(cluster.directory)
        server_argv = [sys.executable, "-m", "zodb_swiftblobs.testing.serve", "serve", "proxy",
                       os.path.join(cluster.etc, "proxy-server.conf"), cluster.etc]

        def record(argv):
            with open(cluster.state_path, "w") as f:
                json.dump({"ports": {"proxy": 1}, "pids": {"proxy": decoy.pid},
                           "argv": {"proxy": argv}}, f)

        record(server_argv)
        cluster.stop()
        assert decoy.poll() is None, "a process the cluster did not start was killed"
        record(decoy_argv)
        cluster.stop()
        assert decoy.wait(timeout=10) is not None, "the recorded process was not stopped"
    finally:
        if decoy.poll() is None:
            decoy.kill()
            decoy.wait()


def test_demo_runs_against_the_embedded_swift(tmp_path):
    env = {k: v for k, v in ENV.items() if not k.startswith(("ST_", "OS_"))}
    result = run("demo", "--dir", str(tmp_path / "swift"), "--objects", "5", env=env)
    out = result.stdout
    assert "embedded Swift started" in out
    assert "committed 6 blobs" in out and "Static Large Object" in out
    assert "read and verified 6 blobs through an empty cache" in out
    assert "undid the last transaction: 3 blobs" in out
    assert "garbage collection scheduled the deletion of 6 of 12 blob revisions" in out
    assert "misses 9" in out
    assert "removed the demo's 13 Swift objects" in out
    assert "embedded Swift stopped" in out
    assert not DevSwift(str(tmp_path / "swift")).running()


def test_demo_uses_the_cluster_named_by_the_environment(devswift, tmp_path):
    env = {**{k: v for k, v in ENV.items() if not k.startswith(("ST_", "OS_"))},
           **devswift.settings().environ()}
    result = run("demo", "--dir", str(tmp_path / "unused"), "--objects", "3",
                 "--container", "demo-env", env=env)
    assert "using the Swift named by the environment" in result.stdout
    assert devswift.settings().key not in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "unused")
    assert "removed the demo's 11 Swift objects" in result.stdout

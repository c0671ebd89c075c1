"""The command line as an operator meets it: help for every choice, --deadline
and what a command says while Swift does not answer, young orphans, and the
embedded Swift's commands without Swift installed."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import ZODB
from ZODB.FileStorage import FileStorage

from conftest import child_environment, swift_config
from test_cli import commit_blobs, run, wrapped_db
from zodb_swiftblobs.cli import build_parser, main
from zodb_swiftblobs.cli.output import progress_shown
from zodb_swiftblobs.swift import SwiftContainer

SWIFT_COMMANDS = [["verify"], ["gc"], ["claim"], ["url", "0x01"], ["migrate", "--blob-dir", "."]]


def command(*argv, cwd=None, env=None, timeout=120):
    """Run the command in a child process; (the process, seconds it took)."""
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "zodb_swiftblobs.cli", *argv], cwd=cwd,
                             capture_output=True, text=True, timeout=timeout,
                             env=env or child_environment())
    return process, time.monotonic() - started


def help_of(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_help_says_what_each_choice_does(capsys):
    text = help_of(capsys, "devswift")
    assert "start: set the cluster up in --dir" in text and "stop: stop the processes" in text
    assert "env: print the exports" in text
    text = help_of(capsys, "url")
    assert "GET (the default): the URL serves the blob's bytes" in text
    assert "HEAD: it answers only the headers" in text
    text = help_of(capsys, "gc")
    assert "read-only" not in text and "delete the Swift objects" in text
    assert "changes nothing in the database" in text
    assert "stats (the default)" in help_of(capsys, "cache")


def test_every_command_talking_to_swift_takes_a_deadline():
    parser = build_parser()
    for argv in [*SWIFT_COMMANDS, ["demo"]]:
        args = parser.parse_args([argv[0], *(["c"] if argv[0] != "demo" else []),
                                  *argv[1:], "--deadline", "2.5"])
        assert args.deadline == 2.5, argv
    for argv in (["cache", "c", "--deadline", "5"], ["verify", "c", "--deadline", "0"],
                 ["gc", "c", "--deadline", "soon"]):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2, argv


def test_quiet_draws_no_progress_line():
    parser = build_parser()
    assert progress_shown(parser.parse_args(["gc", "c"])) is None  # on a terminal only
    for argv in (["gc", "c", "-q"], ["-q", "verify", "c"], ["migrate", "c", "--quiet",
                                                              "--blob-dir", "."]):
        assert progress_shown(parser.parse_args(argv)) is False, argv


def free_port():
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("argv, authenticating", [
    (["verify", "--json"], True), (["gc"], True), (["url", "0x01", "--json"], False),
    (["claim", "-q"], True)])
def test_an_unreachable_swift_is_waited_for_out_loud_within_the_deadline(
        devswift, tmp_path, container_name, argv, authenticating):
    """The real Swift's credentials, at a port nobody listens on (for
    authentication, or as a pre-authenticated storage URL); the configured
    deadline is ten minutes, --deadline 5 overrides it."""
    port = free_port()
    text = swift_config(devswift, container_name, tmp_path / "cache",
                        f"<filestorage>\npath {tmp_path / 'Data.fs'}\n</filestorage>",
                        extra="deadline 600")
    auth_url = devswift.settings().auth_url
    if authenticating:
        where = auth_url.replace(auth_url.split("/")[2], f"127.0.0.1:{port}")
        text = text.replace(auth_url, where)
    else:
        where = f"http://127.0.0.1:{port}/v1/AUTH_test"
        text = text.replace(f"auth-url {auth_url}", f"preauth-url {where}\n"
                                                    "preauth-token AUTH_tk-expired-long-ago")
    config = tmp_path / "swift.conf"
    config.write_text(text)
    ZODB.DB(FileStorage(str(tmp_path / "Data.fs"))).close()  # which they open read-only
    process, seconds = command(argv[0], str(config), *argv[1:], "--deadline", "5")
    assert process.returncode == 1 and seconds < 60, process.stderr
    lines = process.stderr.splitlines()
    waiting = [line for line in lines if "waiting for Swift" in line]
    assert bool(waiting) is ("-q" not in argv) and "Traceback" not in process.stderr
    assert lines[-1].startswith(f"zodb-swiftblobs {argv[0]}: Swift ")
    assert "within the 5s deadline" in lines[-1] and where in lines[-1]
    assert "Connection refused" in lines[-1]
    attempts = int(re.search(r"gave up after (\d+) attempt", lines[-1]).group(1))
    assert len(waiting) < attempts and len(lines) == len(waiting) + 1  # a line per wait
    for line in waiting:
        assert line.startswith(f"zodb-swiftblobs {argv[0]}: waiting for Swift at {where} (")
        assert re.search(r"; retrying, \d+ s left$", line), line
        assert ("(authenticating)" in line) is authenticating, line
    if "--json" in argv:
        assert json.loads(process.stdout)["ok"] is False
    else:
        assert process.stdout == ""


def database_and_orphan(devswift, tmp_path, container_name):
    """A database with one blob, its configuration file, and the name of the
    object of a revision it does not reference (an orphan) to upload."""
    config, db = wrapped_db(devswift, tmp_path, container_name)
    ids = commit_blobs(db, {"kept": b"committed and referenced"})
    db.close()
    orphan = tmp_path / "orphan"
    orphan.write_bytes(b"left by a crashed commit")
    return config, str(orphan), f"{0xf1:016x}/{ids['kept'][1].hex()}.blob"


def test_verify_and_gc_report_young_orphans(devswift, credentials, tmp_path, container_name,
                                            capsys):
    config, orphan, name = database_and_orphan(devswift, tmp_path, container_name)
    view = SwiftContainer(credentials, container_name)
    before = time.time()
    view.upload(name, orphan)
    after = time.time()

    status, report = run(capsys, "verify", str(config))
    assert (status, report["orphans"], report["young_orphans"]) == (0, [name], [name])
    assert (report["collectable_orphans"], report["orphan_min_age"]) == ([], 3600)
    due = report["young_orphans_collectable"]
    assert due["first"] == due["last"] and before + 3599 <= due["first"] <= after + 3601
    assert main(["verify", str(config)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "1 orphans (1 younger than 1h)" in out
    assert "orphans younger than 1h (1):" in out and "old enough for gc" not in out
    assert re.search(r"1 orphans younger than 1h \(gc --min-age\) are kept by gc: old "
                     r"enough to collect at \S+ \S+ UTC \(in (59|60)m\)", out), out
    assert "'gc --min-age 0' collects them now" in out
    status, report = run(capsys, "verify", str(config), "--min-age", "0")
    assert (report["collectable_orphans"], report["young_orphans"]) == ([name], [])
    assert main(["verify", str(config), "--min-age", "0"]) == 0
    assert "orphans old enough for gc to remove (1):" in capsys.readouterr().out

    status, report = run(capsys, "gc", str(config))
    assert (status, report["orphans"], report["too_young"], report["deleted"]) == (0, 0, 1, 0)
    assert report["too_young_collectable"] == due
    assert main(["gc", str(config), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 orphans (0.0 MiB), would delete 0, 1 younger than 1h kept" in out
    assert "1 orphans younger than 1h (gc --min-age) are kept by gc" in out
    status, report = run(capsys, "gc", str(config), "--min-age", "0")
    assert (status, report["orphans"], report["too_young"], report["deleted"]) == (0, 1, 0, 1)
    assert report["too_young_collectable"] == {"first": None, "last": None}
    view.close()


def test_an_orphan_scheduled_for_deletion_is_no_young_orphan(devswift, credentials, tmp_path,
                                                             container_name, capsys):
    config, orphan, name = database_and_orphan(devswift, tmp_path, container_name)
    view = SwiftContainer(credentials, container_name)
    view.upload(name, orphan)
    view.close()
    status, report = run(capsys, "gc", str(config), "--min-age", "0", "--grace-period", "7d")
    assert (status, report["orphans"], report["scheduled"]) == (0, 1, 1)

    # scheduling its deletion modified it just now
    status, report = run(capsys, "gc", str(config), "--grace-period", "7d")
    assert (report["orphans"], report["already_scheduled"], report["too_young"]) == (1, 1, 0)
    status, report = run(capsys, "verify", str(config))
    assert (report["orphans"], report["young_orphans"]) == ([name], [])


def without_package_environment(tmp_path, package: str = "swift"):
    """A child's environment where ``import <package>`` fails as it does when
    it is not installed (a package of that name first on the path that raises
    ImportError), and no Swift is named (ST_*, OS_*)."""
    blocker = tmp_path / f"no-{package}" / package
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        f"raise ImportError('No module named {package} (not installed)')\n")
    env = {k: v for k, v in child_environment().items() if not k.startswith(("ST_", "OS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env["PYTHONPATH"]])
    return env


def test_without_swift_installed_devswift_and_demo_print_the_hint_alone(tmp_path):
    env = without_package_environment(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for argv in (["devswift", "start", "--dir", str(tmp_path / "swift")], ["demo"]):
        process, _ = command(*argv, cwd=cwd, env=env)
        assert process.returncode == 2, process.stderr
        assert process.stderr.startswith(f"zodb-swiftblobs {argv[0]}: the embedded Swift "
                                          "needs OpenStack Swift")
        assert "ImportError: No module named swift (not installed)" in process.stderr
        assert process.stderr.rstrip().endswith("pip install 'zodb-swiftblobs[devswift]'")
        assert len(process.stderr.splitlines()) == 1 and "Traceback" not in process.stderr
    assert os.listdir(cwd) == []


def test_without_keystone_installed_devswift_start_keystone_prints_the_hint_alone(tmp_path):
    env = without_package_environment(tmp_path, "keystonemiddleware")
    process, _ = command("devswift", "start", "--keystone", "--dir", str(tmp_path / "swift"),
                         env=env)
    assert process.returncode == 2, process.stderr
    assert process.stderr == ("zodb-swiftblobs devswift: the embedded Keystone needs "
                              "keystonemiddleware, which cannot be imported here: "
                              "pip install keystonemiddleware\n")
    assert not (tmp_path / "swift").exists()


def test_demo_leaves_nothing_behind(tmp_path):
    env = {k: v for k, v in child_environment().items() if not k.startswith(("ST_", "OS_"))}
    cwd, temporary = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temporary.mkdir()
    env["TMPDIR"] = str(temporary)
    process, _ = command("demo", "--objects", "2", cwd=cwd, env=env)
    assert process.returncode == 0, process.stderr
    assert "embedded Swift started" in process.stdout
    assert "(in a temporary directory)" in process.stdout
    assert "removed the demo's 10 Swift objects" in process.stdout
    assert "embedded Swift stopped\n" in process.stdout
    assert os.listdir(cwd) == [] and os.listdir(temporary) == []
    process, _ = command("demo", "--keep", cwd=cwd, env=env)
    assert process.returncode == 2 and "--keep leaves the embedded Swift running in --dir" \
        in process.stderr


def test_a_password_in_the_auth_url_is_never_shown(devswift, tmp_path, container_name):
    """Basic authentication in the URL (for a front proxy) is a secret too: not
    in the lines saying what is waited for, nor in the error."""
    auth_url = devswift.settings().auth_url
    where = f"http://operator:pass-in-url@127.0.0.1:{free_port()}/auth/v1.0"
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(devswift, container_name, tmp_path / "cache",
                                   "<mappingstorage/>").replace(auth_url, where))
    process, _ = command("verify", str(config), "--deadline", "3", "-v", "--json")
    assert process.returncode == 1 and "waiting for Swift at" in process.stderr
    assert "pass-in-url" not in process.stderr + process.stdout
    assert "http://operator:***@127.0.0.1:" in json.loads(process.stdout)["error"]
    rejected = devswift.settings().key
    config.write_text(config.read_text().replace(where, auth_url.replace(
        "http://", "http://operator:pass-in-url@")).replace(rejected, "wrong-key"))
    process, _ = command("verify", str(config), "--deadline", "3", "-v")
    assert process.returncode == 2 and "credentials rejected" in process.stderr
    assert "pass-in-url" not in process.stderr + process.stdout


def test_jobs_is_a_positive_whole_number(capsys):
    """--jobs 0 is a usage error (exit 2), not a thread pool's complaint (exit 1)."""
    for argv in (["verify", "c", "--jobs", "0"], ["migrate", "c", "--blob-dir", ".",
                                                   "--jobs", "-1"], ["verify", "c", "--jobs", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        assert f"argument --jobs: not a positive whole number: {argv[-1]!r}" \
            in capsys.readouterr().err


def test_a_swift_that_takes_connections_and_never_answers(start_cluster, tmp_path,
                                                          container_name):
    """Its proxy frozen: the command says it timed out, without urllib3's text."""
    frozen = start_cluster("never-answering")
    config = tmp_path / "swift.conf"
    config.write_text(swift_config(frozen, container_name, tmp_path / "cache",
                                   "<mappingstorage/>"))
    frozen.pause_server("proxy")
    try:
        process, seconds = command("verify", str(config), "--deadline", "3")
    finally:
        frozen.resume_server("proxy")
    assert process.returncode == 1 and seconds < 60, process.stderr
    last = process.stderr.splitlines()[-1]
    assert last.endswith("(authenticating at " f"{frozen.settings().auth_url}): ReadTimeout: "
                         "timed out"), last

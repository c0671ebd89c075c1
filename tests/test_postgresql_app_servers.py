"""Several app servers on one RelStorage on PostgreSQL (history-preserving),
wrapped by SwiftBlobStorage: separate processes, each with a cache directory
of its own, commit blobs and read each other's while one of them packs (with
garbage collection).  Nothing committed that the database still has is lost
(app_server.py runs each of them).  RelStorage's zodbpack packs and collects
from a maintenance host."""

import json
import os
import subprocess
import sys

import ZODB.config

from app_server import KEYS, initial_data, revision
from conftest import child_environment, store_blobs, swift_config
from zodb_swiftblobs.cli import main

HOSTS = 3
ROUNDS = 6
APP_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app_server.py")


def host_config(directory, cluster, container, dsn, cache, database="main"):
    """A host's configuration file: the shared database, its own cache directory
    (*database* None: the storage section alone, for zodbpack)."""
    path = directory / f"{cache}.conf"
    base = (f"<relstorage>\n    keep-history true\n    <postgresql>\n      dsn {dsn}\n"
            "    </postgresql>\n  </relstorage>")
    path.write_text("%import relstorage\n" + swift_config(
        cluster, container, directory / cache, base, extra="early-upload-threshold 65536",
        database=database))
    return str(path)


def run_app_servers(argvs):
    """Run app_server.py with each of *argvs* at once; their JSON outputs."""
    processes = [subprocess.Popen([sys.executable, APP_SERVER, *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=child_environment())
                 for argv in argvs]
    try:
        outputs = []
        for process in processes:
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, err[-3000:]
            outputs.append(json.loads(out))
        return outputs
    finally:
        for process in processes:  # after a failure, the others wait for it in vain
            if process.poll() is None:
                process.kill()
                process.wait()


def test_app_servers_commit_read_each_other_and_pack(devswift, postgresql, tmp_path,
                                                     container_name, capsys):
    dsn = postgresql.empty_database("app_servers", keep_history=True)
    configs = [host_config(tmp_path, devswift, container_name, dsn, f"host{host}-cache")
               for host in range(HOSTS)]
    db = ZODB.config.databaseFromURL(configs[0])
    with db.transaction() as conn:
        conn.root().update(initial_data(HOSTS))
    with db.transaction() as conn:
        revisions = [revision(conn.root()[f"host{host}"][key], host, key, 0)
                     for host in range(HOSTS) for key in KEYS]
    db.close()

    runs = run_app_servers([["run", configs[host], str(host), str(HOSTS), str(ROUNDS)]
                            + (["--pack"] if host == 0 else []) for host in range(HOSTS)])
    assert runs[0]["packs"] == ROUNDS
    for run in runs:
        assert run["read"] == len(KEYS) * (HOSTS - 1) * ROUNDS, "every round, each host " \
            "reads every other host's blobs"
        assert run["cache"]["misses"] > 0, "the others' blobs come from Swift"
        revisions += run["committed"]
    (tmp_path / "revisions.json").write_text(json.dumps(revisions))

    checks = run_app_servers([
        ["check", host_config(tmp_path, devswift, container_name, dsn, f"host{host}-cold"),
         str(tmp_path / "revisions.json")] for host in range(HOSTS)])
    packed = {tuple(revision) for revision in checks[0]["packed"]}
    current = {(oid, tid) for oid, tid, _, _, round_ in revisions if round_ == ROUNDS}
    assert packed and not packed & current, "the packs dropped old revisions, and only those"
    for check in checks:
        assert {tuple(revision) for revision in check["packed"]} == packed
        assert check["verified"] == len(revisions) - len(packed)
        assert check["cache"]["misses"] == check["verified"], "read from a cold cache"

    report = verified(configs[1], capsys)
    assert (report["referenced"], report["missing"], report["corrupt"]) == \
        (len(revisions) - len(packed), [], [])


def verified(config, capsys):
    """What ``zodb-swiftblobs verify`` reports of the database of *config*."""
    assert main(["verify", config, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_zodbpack_packs_and_collects_garbage(devswift, postgresql, tmp_path, container_name,
                                             capsys):
    dsn = postgresql.empty_database("zodbpack", keep_history=True)
    config = host_config(tmp_path, devswift, container_name, dsn, "app-cache")
    db = ZODB.config.databaseFromURL(config)
    store_blobs(db, blob=b"first")
    store_blobs(db, blob=b"second")
    db.close()
    before = verified(config, capsys)
    assert (before["referenced"], before["orphans"]) == (2, [])
    packing = subprocess.run(
        [sys.executable, "-m", "relstorage.zodbpack", "--days", "0",
         host_config(tmp_path, devswift, container_name, dsn, "maintenance-cache", None)],
        capture_output=True, text=True, env=child_environment(), timeout=300)
    assert packing.returncode == 0, packing.stderr[-3000:]
    report = verified(config, capsys)
    assert (report["referenced"], report["present"], report["orphans"]) == (1, 1, []), \
        "the pack dropped the first revision, and its object is gone"

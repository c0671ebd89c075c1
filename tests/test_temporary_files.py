"""The temporary files of storages sharing a cache directory: uncommitted blobs
and savepoints of killed processes are swept, a live process's never (real
processes killed with SIGKILL, the real local Swift)."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import ZODB
from ZODB.blob import Blob
from ZODB.MappingStorage import MappingStorage

from conftest import child_environment, credentials_for, swift_storage
import zodb_swiftblobs
from zodb_swiftblobs.staging import StagingArea

WAIT = 120  # seconds: the bound of every wait in these tests

WRITER = """
import json, os, sys, transaction, ZODB
from ZODB.blob import Blob
from ZODB.MappingStorage import MappingStorage
from zodb_swiftblobs.storage import SwiftBlobStorage

cache_dir, container, prefix, auth_url, user, key = sys.argv[1:]
storage = SwiftBlobStorage(MappingStorage(), container=container, cache_dir=cache_dir,
                           prefix=prefix, auth_url=auth_url, user=user, key=key)
db = ZODB.DB(storage)
conn = db.open()
root = conn.root()
for name in ("saved", "unsaved"):
    root[name] = Blob()
    conn.add(root[name])
    with root[name].open("w") as f:
        f.write(f"{prefix}{name}".encode())
    if name == "saved":
        transaction.savepoint()  # moves the blob into a savepoints directory
tmp = storage.temporaryDirectory()
paths = sorted(os.path.join(directory, name) for directory, directories, files in os.walk(tmp)
               for name in directories + files)
print(json.dumps({"tmp": tmp, "paths": paths}), flush=True)
sys.stdin.readline()  # the test says when to commit
transaction.commit()
with db.transaction() as conn:
    read = {}
    for name in ("saved", "unsaved"):
        with conn.root()[name].open() as f:
            read[name] = f.read().decode()
    print(json.dumps(read), flush=True)
db.close()
"""


class Writer:
    """A process with uncommitted blobs (one in a savepoint) in the cache's
    temporary files, waiting to commit them."""

    def __init__(self, cluster, cache_dir, container, prefix):
        credentials = credentials_for(cluster)
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(cache_dir), container, prefix,
             credentials.auth_url, credentials.user, credentials.key],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=child_environment())
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read()[-3000:]
        reported = json.loads(line)
        self.tmp, self.paths = reported["tmp"], reported["paths"]
        names = [os.path.basename(path) for path in self.paths]
        assert any(name.startswith("BUC") for name in names), self.paths
        assert any(name.startswith("savepoints") for name in names), self.paths

    def kill(self):
        self.process.kill()
        self.wait()
        assert self.process.returncode == -signal.SIGKILL

    def commit(self):
        self.process.stdin.write("commit\n")
        self.process.stdin.flush()
        read = json.loads(self.process.stdout.readline() or "null")
        self.wait()
        assert self.process.returncode == 0, self.process.stderr.read()[-3000:]
        return read

    def wait(self):
        self.process.wait(timeout=WAIT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


def existing(paths):
    return [path for path in paths if os.path.lexists(path)]


def test_killed_processes_temporary_files_are_swept_live_ones_kept(devswift, tmp_path,
                                                                   container_name):
    cache_dir = tmp_path / "cache"
    tmp = str(cache_dir / "tmp")
    writers = []
    try:
        first = Writer(devswift, cache_dir, container_name, "first/")
        writers.append(first)
        assert first.tmp == tmp, "the first storage uses tmp itself"
        second = Writer(devswift, cache_dir, container_name, "second/")
        writers.append(second)
        live = Writer(devswift, cache_dir, container_name, "live/")
        writers.append(live)
        for other in (second, live):
            assert os.path.dirname(other.tmp) == tmp and other.tmp != tmp
        assert existing(first.paths + second.paths) == first.paths + second.paths, \
            "opening a storage kept the live storages' files"

        first.kill()
        second.kill()
        storage = swift_storage(devswift, MappingStorage(), container_name, cache_dir,
                                prefix="sweeper/")
        db = ZODB.DB(storage)
        try:
            assert existing(first.paths + second.paths) == []
            assert not os.path.exists(second.tmp)
            assert existing(live.paths) == live.paths
            assert sorted(os.listdir(tmp)) == [os.path.basename(live.tmp)]
            assert storage.temporaryDirectory() == tmp, "the sweeper took tmp over"
            with db.transaction() as conn:
                conn.root()["blob"] = Blob(b"committed after the sweep")
            with db.transaction() as conn:
                with conn.root()["blob"].open() as f:
                    assert f.read() == b"committed after the sweep"
        finally:
            db.close()
        assert live.commit() == {"saved": "live/saved", "unsaved": "live/unsaved"}
        assert os.listdir(tmp) == [], "nothing left once every storage is closed"
    finally:
        for writer in writers:
            if writer.process.returncode is None:
                writer.kill()


def test_a_closed_storages_leftovers_are_swept_by_the_next_one(devswift, tmp_path,
                                                               container_name):
    cache_dir = tmp_path / "cache"
    first = swift_storage(devswift, MappingStorage(), container_name, cache_dir,
                          prefix="first/")
    second = swift_storage(devswift, MappingStorage(), container_name, cache_dir,
                           prefix="second/")
    leftovers = []
    for storage in (first, second):
        path = os.path.join(storage.temporaryDirectory(), "BUCleftover")
        with open(path, "wb") as f:
            f.write(b"an uncommitted blob of a transaction never ended")
        leftovers.append(path)
    assert first.temporaryDirectory() != second.temporaryDirectory()
    first.close()
    second.close()
    assert existing(leftovers) == leftovers
    third = swift_storage(devswift, MappingStorage(), container_name, cache_dir,
                          prefix="third/")
    try:
        assert existing(leftovers) == []
        assert os.listdir(third.temporaryDirectory()) == []
        assert [name for name in os.listdir(cache_dir) if name.startswith(".staging-")] == \
            [f".staging-{third._resources.staging.token}.lock"]
    finally:
        third.close()


STAGING = """
import json, logging, os, sys
from zodb_swiftblobs.staging import StagingArea
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
cache_dir = sys.argv[1]
area = StagingArea(os.path.join(cache_dir, "tmp"), cache_dir)
descriptor, path = area.new_file()
os.close(descriptor)
print(json.dumps({"directory": area.directory, "file": path}), flush=True)
if sys.argv[2] == "stay":
    sys.stdin.readline()
area.close()
"""
SITE_USER = 65534  # nobody


class StagingProcess:
    """A process with a staging area in *cache_dir* (as a storage opening it
    has), as root or as *user*; with *stay*, it stays until killed.  *user*
    may not read this checkout (a clone in a private directory): it runs the
    interpreter itself, isolated, on a copy of the package in *readable*."""

    def __init__(self, cache_dir, *, user=None, readable=None, stay=False):
        arguments = [str(cache_dir), "stay" if stay else "go"]
        if user is None:
            command = [sys.executable, "-c", STAGING, *arguments]
        else:
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                       os.path.realpath(sys.executable), "-I", "-S", "-c",
                       "import sys; sys.path.insert(0, sys.argv.pop(1))\n" + STAGING,
                       readable, *arguments]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True,
                                        env=child_environment())
        line = self.process.stdout.readline()
        if not stay:
            self.process.wait(timeout=WAIT)
        self.stderr = "" if stay else self.process.stderr.read()
        assert line, self.stderr[-3000:]
        reported = json.loads(line)
        self.directory, self.file = reported["directory"], reported["file"]

    def kill(self):
        self.process.kill()
        self.process.wait(timeout=WAIT)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="an operator's command runs as root")
def test_an_operators_command_run_as_root_leaves_files_the_site_can_use():
    """Lock files and directories root creates belong to the cache directory's
    owner; a lock file the site may not open (an earlier release's) is skipped."""
    base = tempfile.mkdtemp(prefix="root-staging-")
    operators = []
    try:
        os.chmod(base, 0o755)
        readable = os.path.join(base, "packages")
        shutil.copytree(os.path.dirname(zodb_swiftblobs.__file__),
                        os.path.join(readable, "zodb_swiftblobs"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        cache_dir = os.path.join(base, "cache")
        os.mkdir(cache_dir, 0o700)
        os.mkdir(os.path.join(cache_dir, "tmp"), 0o700)
        for path in (cache_dir, os.path.join(cache_dir, "tmp")):
            os.chown(path, SITE_USER, SITE_USER)
        operators = [StagingProcess(cache_dir, stay=True) for _ in range(2)]
        unopenable = os.path.join(cache_dir, ".staging-0123456789abcdef.lock")
        os.close(os.open(unopenable, os.O_RDONLY | os.O_CREAT, 0o600))
        assert operators[0].directory == os.path.join(cache_dir, "tmp")
        assert operators[1].directory != operators[0].directory

        site = StagingProcess(cache_dir, user=SITE_USER, readable=readable)
        assert [path for path in (operators[0].file, operators[1].file)
                if os.path.exists(path)] == [operators[0].file, operators[1].file]
        warnings = [line for line in site.stderr.splitlines() if line.startswith("WARNING")]
        assert len(warnings) == 1 and "cannot open 1 lock file" in warnings[0], site.stderr

        for operator in operators:
            operator.kill()
        site = StagingProcess(cache_dir, user=SITE_USER, readable=readable)
        assert site.directory == os.path.join(cache_dir, "tmp")
        assert not os.path.exists(operators[0].file)
        assert not os.path.exists(operators[1].directory)
        assert sorted(name for name in os.listdir(cache_dir) if name.startswith(".staging-")) \
            == [os.path.basename(unopenable)]
    finally:
        for operator in operators:
            if operator.process.returncode is None:
                operator.kill()
        shutil.rmtree(base)


def test_the_files_of_a_live_storage_of_an_earlier_release_are_kept(tmp_path):
    """A storage of an earlier release holds its lock file but keeps its
    staged files, uncommitted blobs and savepoints in tmp itself."""
    cache_dir, tmp = str(tmp_path), str(tmp_path / "tmp")
    os.mkdir(tmp, 0o700)

    def lock_file(token):
        return os.open(os.path.join(cache_dir, f".staging-{token}.lock"),
                       os.O_RDONLY | os.O_CREAT, 0o600)

    alive, dead = "0123456789abcdef", "fedcba9876543210"
    earlier_release = lock_file(alive)
    fcntl.flock(earlier_release, fcntl.LOCK_EX)
    os.close(lock_file(dead))
    two_hours_ago = time.time() - 7200
    for name, old in [(f"commit-{alive}-aaaa-0001.blob", True),
                      (f"commit-{dead}-bbbb-0001.blob", False), ("BUCyoung", False),
                      ("BUCold", True), ("savepointsYoung", False), ("savepointsOld", True)]:
        path = os.path.join(tmp, name)
        if name.startswith("savepoints"):
            os.mkdir(path)
        else:
            with open(path, "wb") as f:
                f.write(b"data")
        if old:
            os.utime(path, (two_hours_ago, two_hours_ago))
    try:
        StagingArea(tmp, cache_dir).close()
        assert sorted(os.listdir(tmp)) == sorted([
            f"commit-{alive}-aaaa-0001.blob", "BUCyoung", "savepointsYoung"])
    finally:
        os.close(earlier_release)
    StagingArea(tmp, cache_dir).close()
    assert os.listdir(tmp) == [], "once that storage is gone, all of it goes"

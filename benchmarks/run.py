"""Measure zodb-swiftblobs against the limits of its Swift cluster and local disk.

Starts an embedded Swift, then runs each workload (W1-W10, R1, Z1, Z2) several
times, interleaving three subjects in every repetition: python-swiftclient
alone (``raw``), ZODB's BlobStorage over FileStorage (``local``) and
SwiftBlobStorage over FileStorage (W9: also over RelStorage on SQLite; Z1 and
Z2: clients of a ZEO server, see ``zeo.py``).  Prints the median, min and max
of every measure, the ratios, and whether each target is met.

    python benchmarks/run.py               # the full run (about half an hour)
    python benchmarks/run.py --quick       # small sizes, one repetition (a smoke test)
    python benchmarks/run.py --readme README.rst   # also rewrite the README's table

``--only W1`` runs one workload (W1 also runs W3 and W4, which read its blobs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from report import SUBJECT_NAMES, plain, rst, table  # noqa: E402
from subjects import Databases, RawSwift  # noqa: E402
from concurrency import WORKLOADS as CONCURRENT_WORKLOADS  # noqa: E402
from reads import WORKLOADS as READ_WORKLOADS  # noqa: E402
from workloads import FULL, QUICK, Bench, close  # noqa: E402
from workloads import WORKLOADS as SINGLE_WRITER_WORKLOADS  # noqa: E402
from zeo import WORKLOADS as ZEO_WORKLOADS  # noqa: E402
from zodb_swiftblobs.testing.devswift import DevSwift  # noqa: E402

README_START = ".. benchmark-table-start"
README_END = ".. benchmark-table-end"
WORKLOADS = {**SINGLE_WRITER_WORKLOADS, **CONCURRENT_WORKLOADS, **READ_WORKLOADS,
             **ZEO_WORKLOADS}


def machine(devices: str) -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    filesystem = subprocess.run(["df", "--output=fstype", devices], capture_output=True,
                                text=True).stdout.split()[-1:] or ["?"]
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{memory:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": ", ".join(f"{name} {version(name)}" for name in (
            "swift", "python-swiftclient", "ZODB", "zodb-swiftblobs")),
        "swift": f"embedded, one replica, object data on {filesystem[0]}"
                 + (", memcached" if shutil.which("memcached") else ", no memcached"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one repetition (a smoke test)")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W6")
    parser.add_argument("--directory", help="where to work (default: a new temporary one)")
    parser.add_argument("--devices", help="where Swift keeps object data (default: inside "
                                          "the working directory)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--readme", help="rewrite the table in this README")
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    selected = [w.strip().upper() for w in args.only.split(",")] if args.only else \
        list(WORKLOADS)
    unknown = [w for w in selected if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(WORKLOADS)}")
    directory = tempfile.mkdtemp(prefix="zodb-swiftblobs-bench-", dir=args.directory)
    cluster = DevSwift(os.path.join(directory, "swift"), devices=args.devices)
    started = time.monotonic()
    try:
        settings = cluster.start()
        bench = Bench(directory, RawSwift(settings),
                      Databases(os.path.join(directory, "db"), settings,
                                sizes.large_object_threshold, sizes.segment_size), sizes,
                      [pid for pid in cluster.state["pids"].values() if pid])
        try:
            for repetition in range(repeats):
                for name in selected:
                    print(f"{name}, repetition {repetition + 1} of {repeats}",
                          file=sys.stderr, flush=True)
                    WORKLOADS[name](bench, repetition)
        finally:
            close(bench)
        about = machine(cluster.devices)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    minutes = (time.monotonic() - started) / 60
    lines = table(bench.rows, bench.targets)
    notes = [f"{row.key}: {row.note}" for row in bench.rows.values() if row.note]
    heading = (f"{'quick' if args.quick else 'full'} run, {repeats} repetition(s), "
               f"{minutes:.1f} minutes; median (min-max)")
    print(heading)
    print(plain(lines))
    for note in notes:
        print(note)
    for key, value in about.items():
        print(f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"heading": heading, "machine": about, "table": lines, "notes": notes,
                       "samples": {key: row.samples for key, row in bench.rows.items()}},
                      f, indent=2)
    if args.readme:
        rewrite_readme(args.readme, heading, rst(lines), notes, about)
    return 0


def rewrite_readme(path: str, heading: str, grid: str, notes: list[str],
                   about: dict[str, str]) -> None:
    """Replace the text between the README's benchmark markers."""
    with open(path) as f:
        text = f.read()
    start, end = text.index(README_START), text.index(README_END)
    subjects = "; ".join(f"{name}: {description}" for name, description in
                         SUBJECT_NAMES.items())
    block = "\n".join([
        README_START, "",
        f"Generated by ``python benchmarks/run.py --readme README.rst`` ({heading}).",
        f"Subjects: {subjects}.", "",
        grid, "",
        *[f"- {note}" for note in notes],
        *[f"- {key}: {value}" for key, value in about.items()],
        "", ""])
    with open(path, "w") as f:
        f.write(text[:start] + block + text[end:])


if __name__ == "__main__":
    sys.exit(main())

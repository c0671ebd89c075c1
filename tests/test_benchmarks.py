"""The benchmark program's quick mode (a smoke test: it must run every workload
and print every ratio; speed targets are judged by the full run, not here)."""

import json
import os
import subprocess
import sys

from conftest import child_environment

BENCHMARK = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "run.py")
WORKLOADS = {f"W{n}" for n in range(1, 11)} | {"R1", "Z1", "Z2"}
ZEO_ROWS = {"Z1", "Z1 worst", "Z1 plain", "Z1 plain worst", "Z1 bytes", "Z1 bytes plain",
            "Z2", "Z2 worst", "Z2 plain", "Z2 plain worst"}
QUICK_BLOB = 16 << 20  # Z1's blob with --quick


def processes_mentioning(text):
    """The ids of the processes whose command line contains *text*."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass  # gone meanwhile
    return found


def test_quick_run_reports_every_workload_with_its_ratio(tmp_path):
    readme = tmp_path / "README.rst"
    readme.write_text("Intro\n\n.. benchmark-table-start\nold table\n"
                      ".. benchmark-table-end\n\nAfter\n")
    result = subprocess.run(
        [sys.executable, BENCHMARK, "--quick", "--directory", str(tmp_path),
         "--json", str(tmp_path / "results.json"), "--readme", str(readme)],
        env=child_environment(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    table = results["table"]
    assert {line[0] for line in table if line[0]} == WORKLOADS
    targets = [line for line in table if line[6]]
    assert len(targets) >= 8 and all(line[5] not in ("", "-") for line in targets)
    assert all(line[7] in ("yes", "NO") for line in targets)
    for workload in WORKLOADS:
        assert workload in result.stdout
    text = readme.read_text()
    assert "old table" not in text and text.startswith("Intro") and text.endswith("After\n")
    assert "| W8" in text and "cpu:" in text
    assert [name for name in os.listdir(tmp_path) if name.startswith("zodb-swiftblobs-bench")] \
        == [], "the run removes its working directory"


def test_quick_zeo_run_reports_every_subject(tmp_path):
    result = subprocess.run(
        [sys.executable, BENCHMARK, "--quick", "--only", "Z1,Z2", "--directory", str(tmp_path),
         "--json", str(tmp_path / "results.json")],
        env=child_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    samples = results["samples"]
    assert set(samples) == ZEO_ROWS
    for key, values in samples.items():
        assert set(values) == ({"swiftblobs"} if "plain" in key else {"local", "swiftblobs"})
        assert all(value > 0 for subject in values.values() for value in subject)
    # Plain clients send the blob to the server and read it from there.
    assert samples["Z1 bytes"]["local"][0] >= 2 * QUICK_BLOB / (1 << 20)
    assert samples["Z1 bytes plain"]["swiftblobs"][0] >= 2 * QUICK_BLOB / (1 << 20)
    targets = [line for line in results["table"] if line[6]]
    assert [line[0] for line in targets] == ["Z1", "Z1", "Z2"]
    assert all(line[7] in ("yes", "NO") for line in targets)
    notes = {note.split(":")[0]: note for note in results["notes"]}
    assert set(notes) == {"Z1", "Z1 bytes", "Z2"}
    for note in notes.values():
        assert all(f"{subject}: " in note for subject in ("local", "plain", "swiftblobs"))
    assert processes_mentioning(str(tmp_path)) == [], "every ZEO server is stopped"
    assert os.listdir(tmp_path) == ["results.json"], "the run removes its working directory"

"""The benchmark program's quick mode (a smoke test: it must run every workload
and print every ratio; speed targets are judged by the full run, not here)."""

import json
import os
import subprocess
import sys

from conftest import child_environment

BENCHMARK = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "run.py")
WORKLOADS = {f"W{n}" for n in range(1, 11)} | {"R1"}


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

"""The project's own code passes its linter (configured in ruff.toml)."""

import os
import subprocess
import sys

from conftest import child_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                              "src", "tests", "benchmarks"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env=child_environment())
    assert checked.returncode == 0, checked.stdout[-5000:] + checked.stderr[-2000:]

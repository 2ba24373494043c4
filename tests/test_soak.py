"""The CI version of the soak benchmark: 30 s of steady load, no errors, memory flat after warm-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import REPO

pytestmark = pytest.mark.slow


def test_thirty_second_soak_has_no_errors_and_flat_memory():
    result = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--minutes", "0.5", "--warmup-minutes", "0.2",
                             "--rate", "20"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "soak: 0.5 min" in result.stdout, result.stderr[-2000:]
    assert "statuses {'200':" in result.stdout and "resident memory" in result.stdout
    assert result.returncode == 0, result.stdout  # exit 1: an error, or > 5 % RSS growth after warm-up

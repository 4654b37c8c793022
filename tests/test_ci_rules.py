"""The suite's own rule: under CI=true a skipped test is a failure."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run_skipping_test(tmp_path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_needs_root():\n    pytest.skip('no root')\n")
    env = dict(os.environ, CI=ci, PYTHONPATH=str(HERE))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_skips.py")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)


def test_skip_is_a_failure_under_ci(tmp_path):
    out = run_skipping_test(tmp_path, "true")
    assert out.returncode == 1, out.stdout
    assert "1 failed" in out.stdout and "skipped under CI=true" in out.stdout


def test_skip_is_a_skip_outside_ci(tmp_path):
    out = run_skipping_test(tmp_path, "")
    assert out.returncode == 0, out.stdout
    assert "1 skipped" in out.stdout

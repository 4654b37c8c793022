"""The suite's own rule: under CI=true a skipped test is a failure, whenever it is skipped."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


SKIP_IN_TEST = "import pytest\n\ndef test_needs_root():\n    pytest.skip('no root')\n"
SKIP_AT_IMPORT = ("import pytest\n\nno_such = pytest.importorskip('tunring_no_such_module')\n\n"
                  "def test_uses_it():\n    assert no_such\n")


def run_skipping_test(tmp_path, ci: str, source: str = SKIP_IN_TEST) -> subprocess.CompletedProcess:
    (tmp_path / "test_skips.py").write_text(source)
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


def test_skip_at_import_is_a_failure_under_ci(tmp_path):
    out = run_skipping_test(tmp_path, "true", SKIP_AT_IMPORT)
    assert out.returncode != 0, out.stdout
    assert "1 error" in out.stdout and "skipped under CI=true" in out.stdout
    assert "tunring_no_such_module" in out.stdout


def test_skip_at_import_is_a_skip_outside_ci(tmp_path):
    out = run_skipping_test(tmp_path, "", SKIP_AT_IMPORT)
    assert out.returncode == 5, out.stdout  # pytest's "no tests ran": the only module was skipped
    assert "1 skipped" in out.stdout

"""A short pass of every fuzz target of the native core (libFuzzer + ASan + UBSan; `make fuzz`
runs the long ones): each builds, replays its saved regressions, and runs a few thousand inputs
with no finding."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = 4000


@pytest.mark.path_independent  # C only: the same whichever Python path is active
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang is missing: sh scripts/bootstrap test")
def test_every_fuzz_target_runs_clean(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--runs", str(RUNS), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-5000:]
    rows = {fields[0]: fields for fields in map(str.split, proc.stdout.splitlines()[1:])}
    assert set(rows) == {p.stem for p in (ROOT / "fuzz").glob("*.c")}
    for target, (_, executions, _rate, _new, result) in rows.items():
        assert result == "ok" and int(executions) >= RUNS, (target, rows[target])

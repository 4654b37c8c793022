"""Every `tunring bench X --json` prints one object of the documented shape, peers included."""

import json
import os
import subprocess
import sys

import pytest

REQUIRED = {"case", "impl", "packet_size", "pps", "gbps"}


def bench(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "bench", *argv, "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["bench"] == argv[0]
    for row in doc["results"]:
        assert REQUIRED <= row.keys() and row["pps"] > 0, row
    return doc


def test_bench_esp_json():
    doc = bench("esp", "--packets", "256", "--sizes", "64", "--transform", "aes-gcm-128", "--repeat", "1")
    assert {r["impl"] for r in doc["results"]} == {"tunring", "copy", "cipher"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the TUN bench needs root (runs in CI, where a skip fails)")
def test_bench_tun_json():
    doc = bench("tun", "--packets", "2000", "--sizes", "100", "--tcp-seconds", "0", "--rounds", "1")
    assert {r["impl"] for r in doc["results"]} == {"tunring", "os", "pytun"}


@pytest.mark.skipif(os.geteuid() != 0, reason="the TUN bench needs root (runs in CI, where a skip fails)")
def test_bench_tun_without_pytun_skips_its_rows_and_says_why():
    # As if python-pytun were not installed: importing it fails.
    code = ("import sys; sys.modules['pytun'] = None\n"
            "from tunring.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    argv = ["bench", "tun", "--packets", "1000", "--sizes", "100", "--cases", "read,tcp", "--tcp-seconds", "1",
            "--rounds", "1", "--json"]
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["results"]
    skipped = [r for r in rows if r["impl"] == "pytun"]
    assert {r["case"] for r in skipped} == {"read", "tcp iperf3 via reflector"}
    assert all(r["pps"] == 0 and "pytun" in r["skipped"] for r in skipped)
    ran = [r for r in rows if r["impl"] != "pytun"]
    assert {r["impl"] for r in ran} == {"tunring", "tunring-tso", "tunring-plain", "os"}
    assert all(r["pps"] > 0 and "skipped" not in r for r in ran)

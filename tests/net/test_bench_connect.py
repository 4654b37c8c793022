"""`tunring bench connect --json`: both clients measured against one ocserv, in the documented shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.net


def test_bench_connect_json():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, TUN devices)")
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "bench", "connect", "--json", "--seconds", "1",
                          "--pings", "5", "--cases", "cstp,dtls"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["bench"] == "connect"
    rows = {(r["case"], r["impl"]): r for r in doc["results"]}
    assert set(rows) == {(f"{c}-{d}", i) for c in ("cstp", "dtls") for d in ("up", "down")
                         for i in ("tunring", "openconnect")}
    for r in rows.values():
        assert {"case", "impl", "packet_size", "pps", "gbps"} <= r.keys()
        assert r["pps"] > 0 and r["mbit_s"] > 0 and r["rtt_ms"] > 0 and r["packet_size"] > 1000, r

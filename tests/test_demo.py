import subprocess
import sys


def test_demo_runs_and_verifies_everything():
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "demo", "--ring", "--count", "5000"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every byte verified end to end" in out.stdout
    assert "server -> client -> ring -> adapter: 5000 packets" in out.stdout
    assert "adapter -> ring -> client -> server: 5000 packets" in out.stdout
    assert "copies made by tunring: 0" in out.stdout


def test_bench_ring_json_shape():
    import json

    out = subprocess.run([sys.executable, "-m", "tunring.cli", "bench", "ring", "--json", "--seconds", "0.02",
                          "--sizes", "64", "--procs", "1", "--rounds", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["bench"] == "ring"
    impls = {r["impl"] for r in doc["results"]}
    assert impls == {"tunring", "mp.Queue", "mp.Pipe", "socketpair"}
    for r in doc["results"]:
        assert {"case", "impl", "packet_size", "pps", "gbps"} <= r.keys() and r["pps"] > 0


def test_demo_fails_when_it_makes_a_copy(monkeypatch, capsys):
    """With no room for the CSTP header in the ring, every record must be moved and every reply
    built outside its packet: the demo counts each of those copies once and fails."""
    import argparse

    from tunring.apps import demo
    from tunring.proto.cisco import Cstp

    monkeypatch.setattr(demo, "LEAD", 0)
    monkeypatch.setattr(Cstp, "session_lead", classmethod(lambda cls: 0))
    assert demo.main(argparse.Namespace(count=300, ring=True)) == 1
    out = capsys.readouterr().out
    assert "every byte verified end to end" in out  # the traffic itself was fine
    assert "copies made by tunring: 600" in out and "FAILED: 600 packets were copied" in out

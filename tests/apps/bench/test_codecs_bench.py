"""`tunring bench codecs` runs both impls for every framing and reports pps and MB/s (no speed asserted)."""

import json

from tunring.cli import main
from tunring.proto import FRAMINGS


def test_bench_codecs_json(capsys):
    assert main(["bench", "codecs", "--json", "--packets", "300", "--repeat", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bench"] == "codecs"
    rows = out["results"]
    cases = {r["case"] for r in rows}
    assert set(FRAMINGS) <= cases
    for case in cases:
        assert sorted(r["impl"] for r in rows if r["case"] == case) == ["copy", "tunring"]
    assert all(r["pps"] > 0 and r["mbps"] > 0 for r in rows)

"""The operator's view: the status line and the --json-stats file."""

from __future__ import annotations

import io
import json

from tunring.apps.connect.session import Totals
from tunring.apps.connect.status import Reporter, snapshot, status_line


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_and_ratio():
    t = Totals(rx_packets=1200, rx_bytes=3_000_000, rx_wire_bytes=1_500_000, tx_packets=900, tx_bytes=1_000_000,
               tx_wire_bytes=1_000_000, reconnects=2)
    s = snapshot(t, None, started=0.0)
    assert s["rx_compression_ratio"] == 2.0 and s["tx_compression_ratio"] == 1.0
    assert status_line(s) == ("in 3.0 MB 1200 pkts | out 1.0 MB 900 pkts | compression none | copies 0 "
                              "| reconnects 2")


def test_reporter_writes_json_atomically_and_a_line_on_a_terminal(tmp_path):
    path = tmp_path / "stats.json"
    tty = Tty()
    r = Reporter(str(path), stream=tty)
    r.totals.rx_packets = 5
    r.tick()
    assert json.loads(path.read_text())["rx_packets"] == 5
    assert not (tmp_path / "stats.json.tmp").exists()
    assert tty.getvalue().startswith("\r\x1b[K") and "in 0 B 5 pkts" in tty.getvalue()
    quiet = io.StringIO()  # not a terminal: no status line
    Reporter(None, stream=quiet).tick()
    assert quiet.getvalue() == ""

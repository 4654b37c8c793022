"""What an operator sees: a one-line status on a terminal and ``--json-stats FILE`` every second.

Both read the same snapshot: bytes and packets each way, the compression ratio
(IP bytes over CSTP bytes on the wire, per direction), copies, drops and
reconnects.  The JSON file is replaced atomically (write, then rename), so a
monitor never reads half a file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TextIO

from .session import CstpSession, Totals
from .tunnel import TunnelConfig


def snapshot(totals: Totals, session: CstpSession | None, started: float,
             cfg: TunnelConfig | None = None) -> dict:
    """Counters so far: the finished sessions' totals plus the running one's; the tunnel's
    compression and MTU from ``cfg`` (default: the running session's)."""
    t = Totals(**vars(totals))
    if session is not None:
        t.add_session(session)
    out = dict(vars(t))
    out["rx_compression_ratio"] = round(t.rx_bytes / t.rx_wire_bytes, 3) if t.rx_wire_bytes else None
    out["tx_compression_ratio"] = round(t.tx_bytes / t.tx_wire_bytes, 3) if t.tx_wire_bytes else None
    out["uptime_s"] = round(time.monotonic() - started, 1)
    if cfg is None and session is not None:
        cfg = session.cfg
    out["compression"] = cfg.compression if cfg is not None else None
    out["dtls"] = session is not None and session.dtls is not None  # data over DTLS now
    out["dtls_compression"] = cfg.dtls.compression if cfg is not None and cfg.dtls is not None else None
    out["mtu"] = cfg.mtu if cfg is not None else None
    return out


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover - the loop returns


def status_line(s: dict) -> str:
    """One line: in, out, compression, copies, reconnects."""
    ratio = s["rx_compression_ratio"]
    comp = f"{s['compression']} x{ratio:.2f}" if s["compression"] and ratio else "none"
    return (f"in {_size(s['rx_bytes'])} {s['rx_packets']} pkts | out {_size(s['tx_bytes'])} {s['tx_packets']} pkts"
            f" | compression {comp} | copies {s['copies']} | reconnects {s['reconnects']}")


class Reporter:
    """Writes the status line (when ``stream`` is a terminal) and the JSON file, on ``tick()``."""

    def __init__(self, json_path: str | None, stream: TextIO | None = None, status: bool = True) -> None:
        self.json_path = json_path
        self.stream = stream if stream is not None else sys.stderr
        self.status = status and self.stream.isatty()
        self.started = time.monotonic()
        self.totals = Totals()
        self.session: CstpSession | None = None
        self.cfg: TunnelConfig | None = None  # the last session's, for the summary after it

    def tick(self) -> None:
        s = snapshot(self.totals, self.session, self.started, None if self.session else self.cfg)
        if self.json_path:
            tmp = f"{self.json_path}.tmp"
            with open(tmp, "w") as f:
                json.dump(s, f)
            os.replace(tmp, self.json_path)
        if self.status:
            self.stream.write("\r\x1b[K" + status_line(s))
            self.stream.flush()

    def end_session(self, session: CstpSession) -> None:
        """Fold a finished session's counters into the totals."""
        self.totals.add_session(session)
        self.cfg = session.cfg
        self.session = None

    def finish(self) -> dict:
        self.tick()
        if self.status:
            self.stream.write("\n")
        return snapshot(self.totals, None, self.started, self.cfg)

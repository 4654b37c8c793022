"""Dead-peer detection and keepalives for one channel (CSTP or DTLS), on the server's timers.

openconnect's rules: after ``dpd_s`` seconds with nothing received, send a DPD
request, again every ``dpd_s / 2``; after ``2 * dpd_s`` of silence the peer is
dead.  A keepalive goes out after ``keepalive_s`` seconds without sending.
Zero disables a timer.  Pure bookkeeping: the caller sends and reads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Due:
    """What :meth:`PeerTimers.check` found: the records to send, or the silence that killed it."""

    dpd: bool = False
    keepalive: bool = False
    dead_after_s: float = 0.0  # > 0: the peer is dead, silent this long


class PeerTimers:
    def __init__(self, dpd_s: int, keepalive_s: int, now: float) -> None:
        self.dpd_s = dpd_s
        self.keepalive_s = keepalive_s
        self.last_rx = self.last_tx = self.dpd_at = now
        self.dpd_sent = 0
        self.keepalives_sent = 0

    def next_due(self, now: float) -> float:
        """When :meth:`check` may have something to do (monotonic seconds)."""
        due = float("inf")
        dpd = self.dpd_s
        if dpd:
            if now - self.last_rx < dpd:
                due = self.last_rx + dpd
            else:  # probing: the next probe, or the moment the peer counts as dead
                due = min(self.dpd_at + dpd / 2, self.last_rx + 2 * dpd)
        if self.keepalive_s:
            due = min(due, self.last_tx + self.keepalive_s)
        return due

    def check(self, now: float) -> Due:
        """What is due at ``now``; counts the DPD requests and keepalives it asks for."""
        out = Due()
        dpd = self.dpd_s
        if dpd:
            silent = now - self.last_rx
            if silent >= 2 * dpd:
                out.dead_after_s = silent
                return out
            if silent >= dpd and now - self.dpd_at >= dpd / 2:
                self.dpd_at = now
                self.dpd_sent += 1
                out.dpd = True
        if self.keepalive_s and now - self.last_tx >= self.keepalive_s:
            self.keepalives_sent += 1
            self.last_tx = now
            out.keepalive = True
        return out

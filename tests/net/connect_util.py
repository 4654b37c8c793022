"""Helpers for the `tunring connect` tests against ocserv: a client process and what it reports.

The peer is ocserv (tunring.apps.connect.lab: its ping, route and echo helpers
are the checks), and the interface state comes from ``ip``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tunring.apps.connect.lab import Lab

UP_TIMEOUT_S = 20.0


def link_exists(lab: Lab, iface: str) -> bool:
    return subprocess.run(["ip", "-n", lab.client_ns, "link", "show", iface], capture_output=True).returncode == 0


def link_up(lab: Lab, iface: str) -> bool:
    out = subprocess.run(["ip", "-n", lab.client_ns, "-o", "addr", "show", "dev", iface],
                         capture_output=True, text=True).stdout
    return " inet " in out


def wait_for(predicate, timeout_s: float = UP_TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """A `tunring connect` process in the lab's client namespace, with --json-stats."""

    def __init__(self, lab: Lab, *extra: str, iface: str = "vpn0", password: str | None = None,
                 wait_up: bool = True) -> None:
        self.lab, self.iface = lab, iface
        self.stats_path = os.path.join(lab.dir, f"stats-{iface}.json")
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)  # an earlier client's, in the same lab
        argv = lab.tunring_argv("--json-stats", self.stats_path, *extra, iface=iface)
        self.proc = lab.start_client(argv, iface, password=password, wait=False, stdout=subprocess.PIPE)
        if wait_up:
            wait_for(lambda: link_up(lab, iface) or self.proc.poll() is not None, what=f"{iface} to come up")
            assert self.proc.poll() is None, self.finish()

    def stats(self) -> dict:
        """The client's --json-stats (waiting for its first tick)."""
        wait_for(lambda: os.path.exists(self.stats_path), what="the first --json-stats")
        with open(self.stats_path) as f:
            return json.load(f)

    def signal(self, sig: int) -> None:
        # `ip netns exec` execs the command: the pid is the client's own.
        os.kill(self.proc.pid, sig)

    def finish(self, timeout_s: float = 30) -> str:
        """Wait for the exit; stderr."""
        try:
            _, err = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"tunring connect did not exit within {timeout_s} s:\n{err}") from None
        return err

    def stop(self) -> tuple[int, str]:
        """SIGTERM, then the exit code and stderr."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        err = self.finish()
        return self.proc.returncode, err

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

"""Helpers for the `tunring connect` tests against ocserv: run the client, wait for it, move data.

The peer is ocserv (tunring.apps.connect.lab) and the checks are the kernel's:
interfaces and routes from ``ip``, pings, and TCP streams between sockets in
the two namespaces compared byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

from tunring.apps.connect.lab import Lab

UP_TIMEOUT_S = 20.0


def connect_argv(lab: Lab, *extra: str, iface: str = "vpn0") -> list[str]:
    assert lab.pki is not None
    return [sys.executable, "-m", "tunring.cli", "connect", "-u", lab.user, "--passwd-on-stdin",
            "--cafile", lab.pki.ca, "-i", iface, *extra, lab.url]


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
    """A `tunring connect` process in the lab's client namespace."""

    def __init__(self, lab: Lab, *extra: str, iface: str = "vpn0", password: str | None = None,
                 wait_up: bool = True) -> None:
        self.lab, self.iface = lab, iface
        self.stats_path = os.path.join(lab.dir, f"stats-{iface}.json")
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)  # an earlier client's, in the same lab
        self.proc = lab.client(connect_argv(lab, "--json-stats", self.stats_path, *extra, iface=iface),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write((lab.password if password is None else password) + "\n")
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not touch it again
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


def ping(lab: Lab, address: str, count: int = 3) -> subprocess.CompletedProcess:
    return lab.run_client(["ping", "-c", str(count), "-i", "0.2", "-W", "2", address], timeout_s=30)


def route_dev(lab: Lab, address: str) -> str:
    """The device the client namespace routes ``address`` through ('' if it has no route)."""
    out = lab.run_client(["ip", "-o", "route", "get", address])
    if out.returncode != 0:
        return ""
    words = out.stdout.split()
    return words[words.index("dev") + 1] if "dev" in words else ""


def payload(size: int, seed: int) -> bytes:
    """Text-like data (words from a small vocabulary, a random one now and then) that a
    per-packet compressor shrinks about twofold, and that no two runs repeat."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 5)).hex().encode() for _ in range(48)]
    out = bytearray()
    while len(out) < size:
        line = [rng.choice(words) for _ in range(16)]
        line[rng.randrange(16)] = rng.randbytes(4).hex().encode()
        out += b" ".join(line) + b"\n"
    return bytes(out[:size])


def echo_transfer(lab: Lab, address: str, size: int, port: int = 5999, timeout_s: float = 120) -> None:
    """Send ``size`` bytes from the client namespace to an echo server behind ocserv and check
    the echo byte for byte (both directions through the tunnel at once)."""
    data = payload(size, seed=size ^ port)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with lab.in_server():
        listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((address, port))
    listener.listen(1)
    listener.settimeout(timeout_s)
    server_digest: list[str] = []

    def echo():
        conn, _ = listener.accept()
        h = hashlib.sha256()
        with conn:
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
                conn.sendall(chunk)
        server_digest.append(h.hexdigest())

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    with lab.in_client():
        client = socket.socket(family, socket.SOCK_STREAM)
    received = bytearray()
    try:
        client.settimeout(timeout_s)
        client.connect((address, port))

        def send():
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        while chunk := client.recv(1 << 16):
            received += chunk
        sender.join(timeout_s)
    finally:
        client.close()
        server.join(timeout_s)
        listener.close()
    assert server_digest == [hashlib.sha256(data).hexdigest()], "the server received other bytes than were sent"
    assert len(received) == len(data) and received == data, "the echo differs from what was sent"


@contextlib.contextmanager
def iperf_server(lab: Lab, address: str, port: int = 5201):
    p = subprocess.Popen(["ip", "netns", "exec", lab.server_ns, "iperf3", "-s", "-B", address, "-p", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield port
    finally:
        p.terminate()
        p.wait(10)

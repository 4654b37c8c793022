"""Shared pieces of the `tunring serve` tests: the gateway process, client namespaces, TCP checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

from tunring.apps.serve import rig

POOL, POOL6, DNS = "10.9.0.0/24", "fd00:9::/64", "10.9.0.53"
GATEWAY4, GATEWAY6 = "10.9.0.1", "fd00:9::1"
PORT = 4443
USERS = {"alice": "correct horse", "bob": "battery staple", "carol": "s3cret"}
PROTOCOLS = {"f5": ("f5", []), "f5-hdlc": ("f5", ["--hdlc"]), "fortinet": ("fortinet", [])}


@contextlib.contextmanager
def serve_process(tmp_path, protocol: str, extra: list[str], clients: int = 2):
    """`tunring serve` in the test's namespace and ``clients`` client namespaces; yields
    (process, [ClientNamespace], pin, stderr path)."""
    namespaces = [rig.ClientNamespace(i + 1) for i in range(clients)]
    log_path = tmp_path / "serve.log"
    try:
        cert, key, users, pin = rig.credentials(str(tmp_path), USERS, namespaces[0].gateway_ip)
        args = [sys.executable, "-m", "tunring.cli", "-v", "serve", "--protocol", protocol,
                "--listen", f"0.0.0.0:{PORT}", "--cert", cert, "--key", key, "--users", users,
                "--pool", POOL, "--pool6", POOL6, "--dns", DNS, *extra]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(args, stderr=log)
        try:
            wait_for(lambda: "listening on" in log_path.read_text() or proc.poll() is not None, 20)
            assert proc.poll() is None, log_path.read_text()
            yield proc, namespaces, pin, log_path
        finally:
            for ns in namespaces:
                for client in ns.clients:
                    client.stop()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for ns in namespaces:
            ns.close()


def wait_for(condition, timeout_s: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def ping(ns: rig.ClientNamespace, address: str, count: int = 3) -> None:
    out = ns.run("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "3", address, timeout_s=30)
    assert out.returncode == 0 and f"{count} received" in out.stdout, out.stdout + out.stderr


def _pattern(nbytes: int, seed: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(nbytes)


def tcp_both_ways(ns: rig.ClientNamespace, server_ip: str, nbytes: int, family: int = socket.AF_INET) -> None:
    """``nbytes`` from the client namespace to a server at ``server_ip`` (in this namespace) and
    ``nbytes`` back, each checked byte for byte."""
    up, down = _pattern(nbytes, 1), _pattern(nbytes, 2)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((server_ip, 0))
        listener.listen(1)
        listener.settimeout(10)
        received = {}

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(60)
                received["up"] = _recv_exactly(conn, nbytes)
                conn.sendall(down)
                conn.shutdown(socket.SHUT_WR)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with ns.socket(family) as client:
            client.settimeout(60)
            client.connect((server_ip, listener.getsockname()[1]))
            client.sendall(up)
            got_down = _recv_exactly(client, nbytes)
        server.join(60)
    assert received.get("up") == up, "upload corrupted or incomplete"
    assert got_down == down, "download corrupted or incomplete"


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    have = 0
    while have < nbytes:
        n = sock.recv_into(view[have:])
        assert n, f"connection closed after {have} of {nbytes} bytes"
        have += n
    return bytes(buf)


def pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")

"""`tunring serve` with the stock openconnect client (Debian's), F5 plain, F5 HDLC and Fortinet.

The gateway runs as an operator would start it (the CLI, in the test's namespace); each client is
openconnect in a namespace of its own, joined by a veth pair.  Two clients log in at once and get
different addresses from the pool; ping (IPv4 and IPv6) and 20 MB of TCP each way pass byte for
byte; a client that is killed frees its address for the next one."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading

import pytest
from serve_support import (
    DNS,
    GATEWAY4,
    GATEWAY6,
    POOL,
    PORT,
    PROTOCOLS,
    USERS,
    ping,
    serve_process,
    tcp_both_ways,
    wait_for,
)

pytestmark = pytest.mark.net

TRANSFER_BYTES = 20 * 1024 * 1024


@pytest.mark.parametrize("variant", sorted(PROTOCOLS))
def test_openconnect_logs_in_and_moves_traffic(netns, tmp_path, variant):
    protocol, extra = PROTOCOLS[variant]
    with serve_process(tmp_path, protocol, extra) as (proc, (ns1, ns2), pin, log_path):
        alice = ns1.connect(protocol, "alice", USERS["alice"], pin, PORT)
        bob = ns2.connect(protocol, "bob", USERS["bob"], pin, PORT)
        addresses = {alice.address, bob.address}
        assert len(addresses) == 2 and all(ipaddress.ip_address(a) in ipaddress.ip_network(POOL) for a in addresses)
        assert GATEWAY4 not in addresses
        for client in (alice, bob):
            assert client.env["INTERNAL_IP4_DNS"] == DNS
            assert client.env["CISCO_SPLIT_INC_0_ADDR"] == "10.9.0.0"
            assert client.env["INTERNAL_IP6_ADDRESS"].startswith("fd00:9::")
        served = log_path.read_text()
        assert served.count("HDLC framing" if variant == "f5-hdlc" else "IPv4 open") >= 2, served
        for ns in (ns1, ns2):
            ping(ns, GATEWAY4)
            ping(ns, GATEWAY6)
        # 20 MB each way through alice's tunnel while bob's carries its own traffic.
        side = threading.Thread(target=tcp_both_ways, args=(ns2, GATEWAY4, 1 << 20))
        side.start()
        tcp_both_ways(ns1, GATEWAY4, TRANSFER_BYTES)
        side.join(60)
        tcp_both_ways(ns2, GATEWAY6, 1 << 20, socket.AF_INET6)
        # bob dies (no bye): his address goes back to the pool and carol gets it.
        bob_address = bob.address
        bob.stop(signal.SIGKILL)
        wait_for(lambda: log_path.read_text().count("tunnel closed") >= 1, 20, "the gateway to see bob go")
        carol = ns2.connect(protocol, "carol", USERS["carol"], pin, PORT)
        assert carol.address == bob_address
        ping(ns2, GATEWAY4)
        # alice says goodbye (SIGTERM: PPP Terminate-Request, then logout).
        assert alice.stop(signal.SIGTERM) == 0 or "Terminate" in alice.log()
        assert proc.poll() is None


def test_wrong_password_is_refused(netns, tmp_path):
    with serve_process(tmp_path, "f5", [], clients=1) as (proc, (ns,), pin, log_path):
        with pytest.raises(RuntimeError, match="did not connect"):
            ns.connect("f5", "alice", "wrong", pin, PORT)
        assert "login failed" in log_path.read_text()
        assert proc.poll() is None


def test_cli_usage_errors(tmp_path):
    import subprocess
    import sys

    base = [sys.executable, "-m", "tunring.cli", "serve", "--listen", "127.0.0.1:1", "--cert", "c", "--key", "k",
            "--users", str(tmp_path / "none"), "--pool", "10.9.0.0/24"]
    out = subprocess.run(base + ["--protocol", "fortinet", "--hdlc"], capture_output=True, text=True)
    assert out.returncode == 2 and "--hdlc" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(base + ["--protocol", "f5"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "users file" in out.stderr
    out = subprocess.run(base + ["--protocol", "gre"], capture_output=True, text=True)
    assert out.returncode == 2

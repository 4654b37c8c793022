"""`tunring connect` against ocserv (the open-source AnyConnect server) in network namespaces.

ocserv runs in one namespace, the client in another, a veth pair between them
(tunring.apps.connect.lab).  What is checked is what the kernel and the server
see: the interface and its routes, pings, and TCP streams compared byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from connect_util import Running, link_exists, link_up, wait_for

from tunring.apps.connect import errors
from tunring.apps.connect.lab import (
    DNS4,
    DOMAIN,
    INSIDE_IP4,
    INSIDE_IP6,
    OUTSIDE_IP4,
    SERVER_IP,
    Lab,
)

pytestmark = pytest.mark.net
TRANSFER_BYTES = 20 * 1024 * 1024


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces and TUN devices")
    for tool in ("ocserv", "ocpasswd", "ping", "ss"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (scripts/debian-test-packages)")


@pytest.fixture(scope="module")
def lab():
    _need_root()
    with Lab() as lab:
        yield lab


def _stopped_cleanly(run: Running) -> None:
    code, err = run.stop()
    assert code == errors.EXIT_OK, err
    assert not link_exists(run.lab, run.iface), "the interface outlived the client"


# -- the data path ------------------------------------------------------------------------
@pytest.mark.parametrize("compression, negotiated", [("off", None), ("oc-lz4", "lz4"), ("lzs", "lzs")])
def test_ping_and_20mb_each_way(lab, compression, negotiated):
    with Running(lab, "--compression", compression) as run:
        assert lab.ping(INSIDE_IP4).returncode == 0
        assert lab.ping(INSIDE_IP6).returncode == 0
        lab.echo(INSIDE_IP4, TRANSFER_BYTES)
        lab.echo(INSIDE_IP6, 2 * 1024 * 1024, port=6001)
        time.sleep(1.2)  # one more --json-stats tick
        stats = run.stats()
        assert stats["compression"] == negotiated
        assert stats["rx_bytes"] > TRANSFER_BYTES and stats["tx_bytes"] > TRANSFER_BYTES
        if negotiated:
            assert stats["rx_compression_ratio"] > 1.2 and stats["tx_compression_ratio"] > 1.2, stats
        else:
            # One TLS record per read, one CSTP record per TLS record: nothing was copied.
            assert stats["copies"] == 0 and stats["copy_bytes"] == 0, stats
        _stopped_cleanly(run)


def test_routes_split_include_and_exclude(lab):
    with Running(lab) as run:
        assert lab.route_dev(INSIDE_IP4) == "vpn0"  # split-include: through the tunnel
        assert lab.route_dev(INSIDE_IP6) == "vpn0"
        assert lab.route_dev(SERVER_IP) == lab.client_link  # the server itself: not through it
        assert lab.route_dev("198.19.7.200") == ""  # split-exclude inside the include: never the tunnel
        assert lab.route_dev(OUTSIDE_IP4) == ""  # pushed by no route: not reachable
        assert lab.ping(OUTSIDE_IP4, count=1).returncode != 0
        out = lab.run_client(["ip", "-o", "addr", "show", "dev", "vpn0"]).stdout
        assert "inet 198.19.0." in out and "/24" in out and "inet6 fd00:7475:6e72:" in out
        mtu = lab.run_client(["cat", "/sys/class/net/vpn0/mtu"]).stdout.strip()
        assert mtu == str(run.stats()["mtu"])  # the server's X-CSTP-MTU
        _stopped_cleanly(run)


# -- the vpnc-script contract ---------------------------------------------------------------
def _env(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        items = f.read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in items if b"=" in item)


def test_vpnc_script_contract_with_the_stock_script(lab):
    record = os.path.join(lab.dir, "env")
    # Record the environment, then hand over to Debian's vpnc-script, which configures the interface.
    script = f"env -0 > {record}.$reason; exec /usr/share/vpnc-scripts/vpnc-script"
    with Running(lab, "-s", script) as run:
        wait_for(lambda: lab.route_dev(INSIDE_IP4) == "vpn0", what="the stock script's routes")
        assert lab.ping(INSIDE_IP4).returncode == 0  # routes set by the stock script work
        env = _env(f"{record}.connect")
        assert env["reason"] == "connect" and env["TUNDEV"] == "vpn0" and env["VPNGATEWAY"] == SERVER_IP
        assert env["INTERNAL_IP4_ADDRESS"].startswith("198.19.0.") and env["INTERNAL_IP4_NETMASK"] == "255.255.255.0"
        assert env["INTERNAL_IP4_NETMASKLEN"] == "24" and env["INTERNAL_IP4_NETADDR"] == "198.19.0.0"
        assert env["INTERNAL_IP6_ADDRESS"].startswith("fd00:7475:6e72:")
        assert env["INTERNAL_IP6_NETMASK"] == env["INTERNAL_IP6_ADDRESS"] + "/64"
        assert env["INTERNAL_IP4_DNS"] == DNS4 and env["CISCO_DEF_DOMAIN"] == DOMAIN
        assert (env["CISCO_SPLIT_INC"], env["CISCO_SPLIT_INC_0_ADDR"], env["CISCO_SPLIT_INC_0_MASKLEN"],
                env["CISCO_SPLIT_INC_0_MASK"]) == ("1", "198.19.7.0", "24", "255.255.255.0")
        assert (env["CISCO_IPV6_SPLIT_INC"], env["CISCO_IPV6_SPLIT_INC_0_ADDR"],
                env["CISCO_IPV6_SPLIT_INC_0_MASKLEN"]) == ("1", "fd00:7475:6e72:7::", "64")
        assert (env["CISCO_SPLIT_EXC"], env["CISCO_SPLIT_EXC_0_ADDR"]) == ("1", "198.19.7.128")
        assert int(env["INTERNAL_IP4_MTU"]) > 1000 and env["VPNPID"] == str(run.proc.pid)
        pre = _env(f"{record}.pre-init")
        assert pre["reason"] == "pre-init" and "INTERNAL_IP4_ADDRESS" not in pre
        resolv = lab.run_client(["cat", "/etc/resolv.conf"]).stdout
        assert DNS4 in resolv  # the stock script set the DNS server (in the lab's resolv.conf)
        _stopped_cleanly(run)
    env = _env(f"{record}.disconnect")
    assert env["reason"] == "disconnect" and env["TUNDEV"] == "vpn0"
    assert env["INTERNAL_IP4_ADDRESS"].startswith("198.19.0.")


# -- refusals -------------------------------------------------------------------------------
def test_wrong_password(lab):
    with Running(lab, password="not the password", wait_up=False) as run:
        err = run.finish()
    assert run.proc.returncode == errors.EXIT_AUTH
    assert err.strip().splitlines()[-1].startswith("tunring connect: authentication failed"), err
    assert not link_exists(lab, "vpn0")


def test_untrusted_certificate(lab):
    out = lab.run_client(["sh", "-c", f"echo '{lab.password}' | {sys.executable} -m tunring.cli connect -q "
                          f"-u {lab.user} --passwd-on-stdin --authenticate {lab.url}"])
    assert out.returncode == errors.EXIT_CERT and "not trusted" in out.stderr


@pytest.mark.parametrize("right", [True, False])
def test_servercert_pin(lab, right):
    pin = lab.pki.pin_sha256 if right else "pin-sha256:" + "B" * 43 + "="
    argv = [sys.executable, "-m", "tunring.cli", "connect", "-q", "-u", lab.user, "--passwd-on-stdin",
            "--servercert", pin, "--authenticate", lab.url]
    out = lab.run_client(argv, input=lab.password + "\n")
    if right:
        assert out.returncode == 0, out.stderr
        assert "COOKIE='webvpn=" in out.stdout and f"FINGERPRINT='{lab.pki.pin_sha256}'" in out.stdout
    else:
        assert out.returncode == errors.EXIT_CERT and lab.pki.pin_sha256 in out.stderr


def test_cookie_from_authenticate_connects(lab):
    argv = [sys.executable, "-m", "tunring.cli", "connect", "-q", "-u", lab.user, "--passwd-on-stdin",
            "--cafile", lab.pki.ca, "--authenticate", lab.url]
    out = lab.run_client(argv, input=lab.password + "\n")
    cookie = out.stdout.split("COOKIE='", 1)[1].split("'", 1)[0]
    proc = lab.client([sys.executable, "-m", "tunring.cli", "connect", "-q", "--cookie-on-stdin", "--cafile",
                       lab.pki.ca, "-i", "vpnc", lab.url], stdin=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(cookie + "\n")
        proc.stdin.close()
        wait_for(lambda: lab.ping(INSIDE_IP4, count=1).returncode == 0, what="the cookie's tunnel")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert not link_exists(lab, "vpnc")


# -- staying up and going down ----------------------------------------------------------------
def test_sigusr2_forces_a_reconnect(lab):
    with Running(lab) as run:
        run.signal(signal.SIGUSR2)
        wait_for(lambda: run.stats()["reconnects"] == 1, what="the reconnect")
        wait_for(lambda: lab.ping(INSIDE_IP4, count=1).returncode == 0, what="traffic after the reconnect")
        _stopped_cleanly(run)


def test_background_and_pid_file(lab):
    pid_file = os.path.join(lab.dir, "bg.pid")
    run = Running(lab, "-b", "--pid-file", pid_file, iface="vpnbg", wait_up=False)
    err = run.finish()
    assert run.proc.returncode == 0, err  # the foreground process returns once the tunnel is up
    assert link_up(lab, "vpnbg")
    pid = int(open(pid_file).read())
    assert pid != run.proc.pid
    assert lab.ping(INSIDE_IP4, count=1).returncode == 0
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not link_exists(lab, "vpnbg"), what="the daemon to remove its interface")
    wait_for(lambda: not os.path.exists(pid_file), what="the pid file to go")


def test_worker_killed_then_reconnect():
    _need_root()
    with Lab() as lab, Running(lab, "--reconnect-timeout", "30") as run:
        assert lab.ping(INSIDE_IP4, count=1).returncode == 0
        workers = lab.worker_pids()
        assert workers, "no ocserv worker holds the connection"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # the TLS connection dies; the cookie lives on in sec-mod
        wait_for(lambda: run.stats()["reconnects"] == 1, timeout_s=40, what="the reconnect")
        wait_for(lambda: lab.ping(INSIDE_IP4, count=1).returncode == 0, what="traffic after the reconnect")
        _stopped_cleanly(run)


def test_server_stopped_ends_the_session():
    _need_root()
    with Lab() as lab, Running(lab, "--reconnect-timeout", "3") as run:
        # Stopping, ocserv's worker sends a CSTP disconnect (the client quits at once, as
        # openconnect does) or, when it dies first, just closes (the client tries to reconnect).
        lab.kill_ocserv(signal.SIGTERM)
        err = run.finish(timeout_s=30)
        assert run.proc.returncode == errors.EXIT_LOST, err
        last = err.strip().splitlines()[-1]
        assert "ended the session" in last or "reconnecting failed for 3 s" in last, err
        assert not link_exists(lab, "vpn0")


def test_server_killed_then_clean_failure():
    _need_root()
    with Lab() as lab, Running(lab, "--reconnect-timeout", "4") as run:
        lab.kill_ocserv(signal.SIGKILL)  # a crash: the connection just ends
        started = time.monotonic()
        err = run.finish(timeout_s=60)
        assert run.proc.returncode == errors.EXIT_LOST, err
        assert "reconnecting failed for 4 s (2 attempts)" in err.strip().splitlines()[-1], err
        assert time.monotonic() - started < 30
        assert not link_exists(lab, "vpn0")


# -- DTLS (PSK-NEGOTIATE) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def dtls_lab():
    _need_root()
    with Lab(dtls=True) as lab:
        yield lab


@pytest.mark.parametrize("compression, negotiated", [("off", None), ("oc-lz4", "lz4")])
def test_dtls_carries_the_data(dtls_lab, compression, negotiated):
    lab = dtls_lab
    with Running(lab, "--compression", compression) as run:
        assert lab.ping(INSIDE_IP4).returncode == 0 and lab.ping(INSIDE_IP6).returncode == 0
        lab.echo(INSIDE_IP4, TRANSFER_BYTES)
        time.sleep(1.2)
        stats = run.stats()
        assert stats["dtls"] and stats["dtls_compression"] == negotiated, stats
        # The data went over DTLS (CSTP only carried what came before the handshake and control).
        assert stats["dtls_rx_packets"] > 0.99 * stats["rx_packets"] > 0, stats
        assert stats["dtls_tx_packets"] > 0.99 * stats["tx_packets"] > 0, stats
        assert stats["rx_bytes"] > TRANSFER_BYTES, stats
        if negotiated is None:
            assert stats["copies"] == 0, stats  # one datagram per read, in place
        else:  # a compressed record costs one counted copy (liblz4 cannot decompress over itself)
            assert 0 < stats["copies"] <= stats["rx_packets"], stats
        mtu = lab.run_client(["cat", "/sys/class/net/vpn0/mtu"]).stdout.strip()
        assert mtu == str(stats["mtu"] and 1434)  # 1500 - IP 20 - UDP 8 - DTLS 37 - type 1, as openconnect
        _stopped_cleanly(run)


def test_no_dtls_stays_on_cstp(dtls_lab):
    with Running(dtls_lab, "--no-dtls") as run:
        assert dtls_lab.ping(INSIDE_IP4).returncode == 0
        stats = run.stats()
        assert not stats["dtls"] and stats["dtls_rx_packets"] == 0 and stats["rx_packets"] > 0
        _stopped_cleanly(run)


def test_dtls_failure_falls_back_to_cstp(dtls_lab):
    lab = dtls_lab
    with Running(lab, "--compression", "off") as run:
        wait_for(lambda: run.stats()["dtls"], what="DTLS to come up")
        # From now on the client's datagrams to the DTLS port are refused by its own kernel.
        assert lab.run_client(["ip", "rule", "add", "ipproto", "udp", "dport", "4443", "prohibit"]).returncode == 0
        try:
            lab.ping(INSIDE_IP4, count=5)  # the first of these meet the refusal
            wait_for(lambda: not run.stats()["dtls"], what="the fallback to CSTP")
            assert lab.ping(INSIDE_IP4).returncode == 0
            lab.echo(INSIDE_IP4, 2 * 1024 * 1024)
            time.sleep(1.2)
            stats = run.stats()
            assert stats["tx_packets"] - stats["dtls_tx_packets"] > 1000, stats  # the echo went over CSTP
            _stopped_cleanly(run)
        finally:
            lab.run_client(["ip", "rule", "del", "ipproto", "udp", "dport", "4443", "prohibit"])


def test_script_reasons_through_a_reconnect(lab):
    reasons = os.path.join(lab.dir, "reasons")
    script = f"echo $reason >> {reasons}; exec /usr/share/vpnc-scripts/vpnc-script"
    with Running(lab, "-s", script) as run:
        wait_for(lambda: lab.route_dev(INSIDE_IP4) == "vpn0", what="the stock script's routes")
        run.signal(signal.SIGUSR2)
        wait_for(lambda: run.stats()["reconnects"] == 1, what="the reconnect")
        wait_for(lambda: lab.ping(INSIDE_IP4, count=1).returncode == 0, what="traffic after the reconnect")
        _stopped_cleanly(run)
    with open(reasons) as f:
        assert f.read().split() == ["pre-init", "connect", "attempt-reconnect", "reconnect", "disconnect"]


def test_password_prompt_on_a_terminal(lab):
    """No --passwd-on-stdin, stdin a terminal: the password is asked for, without echo."""
    import pty

    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, "-m", "tunring.cli", "connect", "-q",
            "-u", lab.user, "--cafile", lab.pki.ca, "--authenticate", lab.url]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Password:" not in seen and time.monotonic() < deadline:
            seen += os.read(fd, 1024)
        os.write(fd, lab.password.encode() + b"\n")
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"COOKIE='webvpn=" in seen and lab.password.encode() not in seen  # not echoed

"""`tunring adapter`: a ring Session in one process bridged to a TUN interface by another."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from tunring.linux import netlink

from tun_traffic import ADDRESSES, LOCAL4, PEER4, PEER6, ping, tcp_echo, udp4, udp_exchange

pytestmark = pytest.mark.net


@pytest.fixture
def adapter(netns, tmp_path):
    """Start `tunring adapter` on a fresh socket; yields (process, socket path, interface name)."""
    path = str(tmp_path / "adapter.sock")
    name = "tra0"
    args = [sys.executable, "-m", "tunring.cli", "-v", "adapter", path, "--name", name]
    for a in ADDRESSES:
        args += ["--address", a]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        yield proc, path, name
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stderr.close()


def _reflecting_client(path: str, stop, ready) -> None:
    from tunring.apps import reflect
    from tunring.linux.bridge import connect

    session = connect(path, lead=16, trail=8)
    ready.set()
    reflect.serve(session, stop.is_set)
    session.close()


def test_exchange_through_adapter(adapter):
    proc, path, name = adapter
    ctx = multiprocessing.get_context("fork")
    stop, ready = ctx.Event(), ctx.Event()
    client = ctx.Process(target=_reflecting_client, args=(path, stop, ready))
    client.start()
    try:
        assert ready.wait(10), "the client did not attach"
        assert netlink.link_index(name) is not None
        ping(PEER4)
        ping(PEER6)
        udp_exchange(socket.AF_INET)
        udp_exchange(socket.AF_INET6)
        tcp_echo(socket.AF_INET, 1 << 20)
        tcp_echo(socket.AF_INET6, 1 << 20)
    finally:
        stop.set()
        client.join(10)
    # The client closed its session: the adapter removes the interface and exits cleanly.
    assert proc.wait(5) == 0
    assert netlink.link_index(name) is None


PATTERN_PORT = 7100


def _streaming_client(path: str, ready, go) -> None:
    """Send numbered UDP datagrams to the kernel as fast as possible, forever.

    Each is built in two steps inside an MTU-sized allocation (so a kill can
    land between them) and sent with shrink_and_send; the UDP checksum is 0 so
    the kernel would hand a corrupted datagram to the socket rather than drop it.
    """
    from tunring.errors import RingFull
    from tunring.linux.bridge import connect

    session = connect(path)
    src, dst = socket.inet_aton(PEER4), socket.inet_aton(LOCAL4)
    seq = 0
    ready.set()
    go.wait(10)
    while True:
        size = 64 + (seq * 37) % 1300
        try:
            p = session.allocate(session.mtu)
        except RingFull:
            session.wait_writable(session.mtu, 1.0)
            continue
        payload = struct.pack("!I", seq) * (size // 4)
        total = 28 + len(payload)
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, seq & 0xFFFF, 0, 64, 17, 0, src, dst))
        s = sum(struct.unpack("!10H", ip))
        s = (s & 0xFFFF) + (s >> 16)
        ip[10:12] = struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
        p.data[:28] = ip + struct.pack("!HHHH", 5555, PATTERN_PORT, 8 + len(payload), 0)
        p.data[28 : 28 + len(payload) // 2] = payload[: len(payload) // 2]
        p.data[28 + len(payload) // 2 : total] = payload[len(payload) // 2 :]
        session.shrink_and_send(p, total)
        seq += 1


@contextlib.contextmanager
def _flooding():
    """The kernel sends to the client all the while (it never reads: the adapter drops)."""
    flooding = threading.Event()
    flooding.set()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while flooding.is_set():
                try:
                    s.sendto(bytes(500), (PEER4, 9))
                except OSError:  # the interface went away
                    time.sleep(0.001)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        yield
    finally:
        flooding.clear()
        flooder.join(5)


def test_client_killed_midstream(adapter):
    proc, path, name = adapter
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    client = ctx.Process(target=_streaming_client, args=(path, ready, go))
    client.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        try:
            assert ready.wait(10)
            server.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE: root may exceed rmem_max
            server.bind((LOCAL4, PATTERN_PORT))
            server.settimeout(5)
            go.set()
            with _flooding():  # so the adapter is busy, not idle, when the client dies
                datagrams = [server.recv(65536) for _ in range(3000)]
                os.kill(client.pid, signal.SIGKILL)
                killed = time.monotonic()
                client.join(5)
                # The adapter notices within a second and the interface is gone with it.
                assert proc.wait(2) == 0
                deadline = killed + 1.0
                while netlink.link_index(name) is not None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert netlink.link_index(name) is None
                assert time.monotonic() - killed < 1.0
            server.settimeout(0.2)
            try:
                while True:
                    datagrams.append(server.recv(65536))
            except (TimeoutError, socket.timeout):
                pass
        finally:
            if client.is_alive():
                client.kill()
                client.join()
    # Every datagram that reached the kernel is whole: its length and its contents are its own.
    seqs = []
    for d in datagrams:
        seq = struct.unpack_from("!I", d)[0]
        assert len(d) == (64 + (seq * 37) % 1300) // 4 * 4
        assert d == struct.pack("!I", seq) * (len(d) // 4)
        seqs.append(seq)
    assert seqs == list(range(len(seqs)))  # nothing lost while the ring had room, in order


def test_adapter_reports_bad_arguments(netns, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "adapter", str(tmp_path / "s"),
                          "--address", "10.0.0.300/8"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "cannot parse interface address '10.0.0.300/8'" in out.stderr


def test_connect_without_adapter_is_a_clear_error(tmp_path):
    from tunring import DeviceError
    from tunring.linux.bridge import connect

    with pytest.raises(DeviceError, match="no tunring adapter is listening"):
        connect(str(tmp_path / "nobody.sock"), timeout_s=0.2)


def _idle_client(path: str, ready, bound, go, report) -> None:
    """Connect with the smallest ring, send one non-IP slot and one UDP packet, then read late."""
    from tunring.linux.bridge import connect

    session = connect(path, capacity=0x20000)
    ready.set()
    bound.wait(10)  # the kernel-side socket exists
    junk = session.allocate(40)
    junk.data[:] = bytes(40)  # IP version 0: the adapter must skip it and count a discard
    session.send(junk)
    session.write(udp4(PEER4, LOCAL4, 5555, PATTERN_PORT, b"after the junk"))
    go.wait(20)  # the kernel floods us meanwhile; we do not read
    got = 0
    while (p := session.receive()) is not None:
        got += 1
        session.release(p)
    report.put(got)
    session.close()


def test_adapter_counts_discards_and_drops_when_the_ring_is_full(adapter):
    proc, path, name = adapter
    ctx = multiprocessing.get_context("fork")
    ready, bound, go, report = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    client = ctx.Process(target=_idle_client, args=(path, ready, bound, go, report))
    client.start()
    try:
        assert ready.wait(10)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind((LOCAL4, PATTERN_PORT))
            server.settimeout(5)
            bound.set()
            assert server.recvfrom(100) == (b"after the junk", (PEER4, 5555))
            for i in range(1000):
                server.sendto(bytes(1000), (PEER4, 9))
                if i % 100 == 99:
                    time.sleep(0.01)  # let the adapter keep up with the kernel's queue
        time.sleep(0.2)
        go.set()
        got = report.get(timeout=10)
    finally:
        client.join(10)
        if client.is_alive():
            client.kill()
    assert proc.wait(5) == 0
    log = proc.stderr.read()
    tally = [line for line in log.splitlines() if "removed:" in line]
    assert tally, log
    counts = re.search(r"(\d+) to kernel, (\d+) to client, (\d+) discarded, (\d+) dropped", tally[0])
    to_kernel, to_client, discarded, dropped = (int(x) for x in counts.groups())
    # 128 KiB holds about 125 slots of 1028 bytes: the ring filled, the rest was dropped and counted.
    assert 50 < got < 200 and to_client >= got
    assert dropped > 500 and to_client + dropped <= 1000 + 20  # + the kernel's own chatter
    assert discarded == 1 and to_kernel == 1



def test_a_client_that_corrupts_its_ring_stops_the_bridge_as_a_failure(netns, tmp_path):
    """The bridge reports why it stopped: a corrupted ring is a failure (the command exits non-zero on it),
    a closed session is not."""
    from tunring.linux import TunDevice, bridge

    for corrupt in (True, False):
        path = str(tmp_path / f"corrupt-{corrupt}.sock")
        result = {}
        with TunDevice.create("trb0", addresses=ADDRESSES) as tun:
            server = threading.Thread(target=lambda path=path, result=result, tun=tun: result.update(
                why=bridge.serve(path, tun, accept_timeout_s=10)))
            server.start()
            session = bridge.connect(path)
            try:
                if corrupt:
                    ring = session.receive_ring
                    tail = struct.unpack_from("<I", ring, 4)[0]
                    struct.pack_into("<I", ring, 12 + tail, 0x10000)  # a Size no packet can have
                    struct.pack_into("<I", ring, 4, tail + 8)  # published, as a hostile client would
                    server.join(5)
            finally:
                session.close()
                server.join(5)
        why = result["why"]
        assert why.failed is corrupt
        assert why.cause is (bridge.Stop.CORRUPT if corrupt else bridge.Stop.CLOSED), why

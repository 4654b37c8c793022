"""Kernel-side traffic for the TUN tests: ping, a UDP exchange and a TCP echo through a reflector."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import struct
import subprocess
import threading

# The reflector's address plan (see tunring.apps.reflect): the kernel owns LOCAL,
# talks to PEER, and the reflected packets come from PEER's mirror image.
LOCAL4, PEER4, MIRROR4 = "10.0.0.1", "10.1.10.2", "10.2.10.1"
LOCAL6, PEER6, MIRROR6 = "fd00::1", "fd00::1:2", "fd00::2:1"
ADDRESSES = [f"{LOCAL4}/8", f"{LOCAL6}/64"]

TIMEOUT_S = 5.0


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet with a right header checksum and no UDP checksum, built without tunring."""
    total = 28 + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip[10:12] = struct.pack("!H", ~s & 0xFFFF)
    return bytes(ip) + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ping(address: str, count: int = 3) -> None:
    """Ping ``address`` with iputils ping; raise AssertionError with its output if any reply is missing."""
    out = subprocess.run(["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", address],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and f"{count} received" in out.stdout, out.stdout + out.stderr


def udp_exchange(family: int, sizes=(1, 100, 1000, 1400)) -> None:
    """Datagrams to the peer reach a server on the local address from the mirror and come back."""
    local, peer, mirror = (LOCAL4, PEER4, MIRROR4) if family == socket.AF_INET else (LOCAL6, PEER6, MIRROR6)
    with socket.socket(family, socket.SOCK_DGRAM) as server, socket.socket(family, socket.SOCK_DGRAM) as client:
        server.bind((local, 0))
        server.settimeout(TIMEOUT_S)
        client.settimeout(TIMEOUT_S)
        port = server.getsockname()[1]
        for size in sizes:
            payload = os.urandom(size)
            client.sendto(payload, (peer, port))
            data, addr = server.recvfrom(65536)
            assert data == payload and addr[0] == mirror
            server.sendto(data[::-1], addr)
            data, addr = client.recvfrom(65536)
            assert data == payload[::-1] and addr[0] == peer and addr[1] == port


def tcp_echo(family: int, nbytes: int) -> None:
    """Send ``nbytes`` of random data to the peer over TCP; a local echo server returns them intact."""
    local, peer = (LOCAL4, PEER4) if family == socket.AF_INET else (LOCAL6, PEER6)
    data = os.urandom(nbytes)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((local, 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT_S)
        with socket.create_connection((peer, listener.getsockname()[1]), timeout=TIMEOUT_S) as client:
            conn, _ = listener.accept()

            def echo() -> None:
                with conn:
                    conn.settimeout(30)
                    buf = bytearray(65536)
                    while n := conn.recv_into(buf):
                        conn.sendall(buf[:n])

            echoer = threading.Thread(target=echo, daemon=True)
            echoer.start()
            sender = threading.Thread(target=client.sendall, args=(data,), daemon=True)
            client.settimeout(30)
            sender.start()
            got = bytearray(nbytes)
            view = memoryview(got)
            have = 0
            while have < nbytes:
                n = client.recv_into(view[have:])
                assert n, f"connection closed after {have} of {nbytes} bytes"
                have += n
            sender.join()
            client.shutdown(socket.SHUT_WR)
            echoer.join(10)
    assert got == data


def bulk_tcp(family: int, nbytes: int) -> float:
    """One-way TCP transfer of ``nbytes`` random bytes to a local server via the peer; checks them."""
    import hashlib
    import time

    local, peer = (LOCAL4, PEER4) if family == socket.AF_INET else (LOCAL6, PEER6)
    data = os.urandom(nbytes)
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((local, 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT_S)
        with socket.create_connection((peer, listener.getsockname()[1]), timeout=TIMEOUT_S) as client:
            conn, _ = listener.accept()
            client.settimeout(60)
            conn.settimeout(60)
            start = time.monotonic()
            sender = threading.Thread(target=lambda: (client.sendall(data), client.shutdown(socket.SHUT_WR)),
                                      daemon=True)
            sender.start()
            got = hashlib.sha256()
            buf = bytearray(1 << 20)
            total = 0
            with conn:
                while n := conn.recv_into(buf):
                    got.update(memoryview(buf)[:n])
                    total += n
            seconds = time.monotonic() - start
            sender.join(10)
    assert total == nbytes and got.digest() == hashlib.sha256(data).digest(), f"{total} of {nbytes} bytes"
    return seconds


@contextlib.contextmanager
def reflecting(device, **kw):
    """Run tunring.apps.reflect.serve on ``device`` in a child process for the block.

    Yields a dict that, after the block, holds ``count`` (packets reflected),
    ``copies`` (the device's copy counters and the reflector's own) and
    ``stats`` (the device's counters in the child, if it has any).
    """
    from tunring.apps import reflect

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    done = ctx.Queue()

    def main() -> None:
        reflected = reflect.serve(device, stop.is_set, **kw)
        stats = getattr(device, "stats", None)
        copies = {"device": device.copies, "device_bytes": getattr(device, "copy_bytes", 0),
                  "reflector": reflected.packets, "reflector_bytes": reflected.copy_bytes}
        done.put({"count": reflected.packets, "copies": copies,
                  "stats": dict(vars(stats)) if stats is not None else {}})

    proc = ctx.Process(target=main, daemon=True)
    proc.start()
    result: dict = {}
    try:
        yield result
    finally:
        stop.set()
        try:
            result.update(done.get(timeout=10))
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()

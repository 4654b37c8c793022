"""The reflector's address swap: an involution that keeps every checksum valid (no root)."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from tunring.apps.reflect import peer_of, reflect
from tunring.loopback import LoopbackDevice


def _sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _udp4(src: bytes, dst: bytes, payload: bytes) -> bytearray:
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0, src, dst))
    ip[10:12] = struct.pack("!H", 0xFFFF - _sum(bytes(ip)))
    udp = bytearray(struct.pack("!HHHH", 1111, 2222, 8 + len(payload), 0)) + payload
    udp[6:8] = struct.pack("!H", 0xFFFF - _sum(src + dst + struct.pack("!HH", 17, len(udp)) + bytes(udp)))
    return ip + udp


@given(st.binary(min_size=4, max_size=4).filter(lambda a: a[0] < 224 and a[3] != 255 and a[0:2] != a[2:4]),
       st.binary(max_size=300))
def test_reflected_ipv4_udp_keeps_valid_checksums(dst, payload):
    src = socket.inet_aton("10.0.0.1")
    pkt = _udp4(src, dst, payload)
    assert reflect(memoryview(pkt))
    assert pkt[12:16] == peer_of(dst) and pkt[16:20] == src
    assert _sum(bytes(pkt[:20])) == 0xFFFF
    assert _sum(bytes(pkt[12:20]) + struct.pack("!HH", 17, len(pkt) - 20) + bytes(pkt[20:])) == 0xFFFF
    assert peer_of(peer_of(dst)) == dst


def test_multicast_broadcast_and_non_ip_are_left_alone():
    src = socket.inet_aton("10.0.0.1")
    for dst in ("224.0.0.1", "10.255.255.255"):
        assert not reflect(memoryview(_udp4(src, socket.inet_aton(dst), b"x")))
    v6 = bytearray(40)
    v6[0] = 0x60
    v6[24:40] = socket.inet_pton(socket.AF_INET6, "ff02::2")
    assert not reflect(memoryview(v6))
    assert not reflect(memoryview(bytearray(b"\x00" * 40)))
    # An address that is its own peer would loop: not reflected.
    assert not reflect(memoryview(_udp4(src, socket.inet_aton("10.1.10.1"), b"x")))


def test_serve_over_a_loopback_device_reflects_each_packet_once():
    from tunring.apps.reflect import serve

    with LoopbackDevice() as dev:
        src, dst = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.1.10.2")
        for i in range(5):
            dev.write(_udp4(src, dst, bytes([i]) * 10))
        rounds = iter([False, True])
        done = serve(dev, lambda: next(rounds))
        assert done.packets == 5 and done.copy_bytes == 5 * len(_udp4(src, dst, bytes(10)))
        back = dev.receive_many(10)
        assert [bytes(p.data[12:20]) for p in back] == [socket.inet_aton("10.2.10.1") + src] * 5
        assert [p.data[-1] for p in back] == list(range(5))
        dev.release_many(back)

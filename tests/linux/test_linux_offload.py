"""GSO split, GRO coalescing and checksums, against packets built independently here (no root)."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunring import PacketError
from tunring.linux import offload as O
from tunring.packet import RECEIVED
from tunring.pool import PacketPool

SRC4, DST4 = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.1.10.2")
SRC6, DST6 = socket.inet_pton(socket.AF_INET6, "fd00::1"), socket.inet_pton(socket.AF_INET6, "fd00::1:2")
TS_OPTION = b"\x01\x01\x08\x0a" + struct.pack("!II", 12345, 678)


def ref_sum(data: bytes) -> int:
    """RFC 1071 with a plain loop: the reference the fast code is checked against."""
    if len(data) % 2:
        data += b"\0"
    s = 0
    for (w,) in struct.iter_unpack("!H", data):
        s += w
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp(v6: bool, seq: int, payload: bytes, flags: int = O.TCP_ACK, ip_id: int = 7, options: bytes = TS_OPTION,
        ack: int = 99, window: int = 500, sport: int = 40000) -> bytes:
    """A TCP/IP packet with correct checksums, built the obvious way."""
    th = bytearray(struct.pack("!HHIIBBHHH", sport, 5001, seq, ack, (5 + len(options) // 4) << 4, flags,
                               window, 0, 0)) + options
    length = len(th) + len(payload)
    if v6:
        pseudo = SRC6 + DST6 + struct.pack("!IxxxB", length, 6)
    else:
        pseudo = SRC4 + DST4 + struct.pack("!xBH", 6, length)
    th[16:18] = struct.pack("!H", 0xFFFF - ref_sum(pseudo + bytes(th) + payload))
    if v6:
        ip = struct.pack("!IHBB16s16s", 0x60000000, length, 6, 64, SRC6, DST6)
    else:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, ip_id, 0x4000, 64, 6, 0, SRC4, DST4))
        ip[10:12] = struct.pack("!H", 0xFFFF - ref_sum(bytes(ip)))
    return bytes(ip) + bytes(th) + payload


def pool() -> PacketPool:
    return PacketPool(128, 2000, 16, 0, object())


def gso_packet(v6: bool, seq: int, payload: bytes, flags: int) -> bytearray:
    """What the kernel hands a TSO device: one big segment, TCP checksum left as the pseudo-header sum."""
    pkt = bytearray(tcp(v6, seq, payload, flags))
    hl = 40 if v6 else 20
    pseudo = (SRC6 + DST6 if v6 else SRC4 + DST4)
    pkt[hl + 16 : hl + 18] = struct.pack("!H", ref_sum(pseudo + struct.pack("!HH", 6, len(pkt) - hl)))
    return pkt


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_split_tcp_matches_segments_built_independently(v6):
    payload = bytes(range(256)) * 20 + b"end"  # 5123 bytes: 3 x 1400 + 923
    flags = O.TCP_ACK | O.TCP_PSH | O.TCP_CWR
    pkt = gso_packet(v6, 0xFFFFF000, payload, flags)
    p = pool()
    segs = O.split(memoryview(pkt), O.GSO_TCPV6 if v6 else O.GSO_TCPV4, 1400, 40 if v6 else 20,
                   lambda n: p.take(n, RECEIVED))
    chunks = [payload[i : i + 1400] for i in range(0, len(payload), 1400)]
    expected = []
    for i, chunk in enumerate(chunks):
        f = flags if i == len(chunks) - 1 else flags & ~O.TCP_PSH
        f = f if i == 0 else f & ~O.TCP_CWR
        expected.append(tcp(v6, (0xFFFFF000 + 1400 * i) & 0xFFFFFFFF, chunk, f, ip_id=7 + i))
    assert [bytes(s.data) for s in segs] == expected


def test_split_udp_gives_udp_lengths_and_checksums():
    payload = bytes(range(200)) * 10
    udp = bytearray(struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0)) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, SRC4, DST4))
    p = pool()
    segs = O.split(memoryview(ip + udp), O.GSO_UDP_L4, 600, 20, lambda n: p.take(n, RECEIVED))
    assert [len(s) for s in segs] == [628, 628, 628, 228]
    for i, s in enumerate(segs):
        d = bytes(s.data)
        assert ref_sum(d[:20]) == 0xFFFF and struct.unpack_from("!H", d, 4)[0] == 1 + i
        assert struct.unpack_from("!H", d, 24)[0] == len(d) - 20
        assert ref_sum(SRC4 + DST4 + struct.pack("!HH", 17, len(d) - 20) + d[20:]) == 0xFFFF
        assert d[28:] == payload[600 * i : 600 * (i + 1)]


@pytest.mark.parametrize("bad", [
    dict(gso_type=O.GSO_TCPV6),  # says IPv6, is IPv4
    dict(csum_start=24),  # transport header not after the IP header
    dict(gso_size=0),
    dict(gso_type=9),
    dict(gso_type=O.GSO_UDP),  # UFO is IP fragmentation, never enabled, refused
    dict(gso_type=O.GSO_UDP_L4),  # says UDP, is TCP
])
def test_split_refuses_inconsistent_gso(bad):
    pkt = gso_packet(False, 1, bytes(3000), O.TCP_ACK)
    args = dict(gso_type=O.GSO_TCPV4, gso_size=1400, csum_start=20) | bad
    with pytest.raises(PacketError):
        O.split(memoryview(pkt), args["gso_type"], args["gso_size"], args["csum_start"], pool().take)


def _packets(datas: list[bytes]):
    p = PacketPool(len(datas) + 1, 2000, 16, 0, object())
    out = []
    for d in datas:
        q = p.take(len(d), RECEIVED)
        q.data[:] = d
        out.append(q)
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesce_then_split_gives_back_the_segments(v6):
    chunks = [bytes([i]) * 1200 for i in range(5)] + [b"x" * 300]
    segs = [tcp(v6, 1000 + 1200 * i, c, O.TCP_ACK | (O.TCP_PSH if i == 5 else 0), ip_id=50 + i)
            for i, c in enumerate(chunks)]
    packets = _packets(segs)
    runs = O.coalesce(packets)
    assert [len(r) for r in runs] == [6]
    hdr = O.VNET_HDR.unpack(O.coalesced_header(runs[0]))
    hl = 40 if v6 else 20
    # No NEEDS_CSUM: the kernel is to verify the run's full checksum itself.
    assert hdr == (0, O.GSO_TCPV6 if v6 else O.GSO_TCPV4, hl + 32, 1200, 0, 0)
    head = packets[0].data
    big = bytes(head) + b"".join(bytes(p.data[hl + 32 :]) for p in packets[1:])
    # The head now describes the whole run, with a right checksum over all of it ...
    assert len(big) == (struct.unpack_from("!H", big, 4)[0] + 40 if v6 else struct.unpack_from("!H", big, 2)[0])
    assert _tcp_ok(big, v6)
    assert big[hl + 13] & O.TCP_PSH
    # ... and the kernel's segmentation of it gives the original segments (IP IDs counted from the head's).
    p = pool()
    again = O.split(memoryview(bytearray(big)), hdr[1], hdr[3], hl, lambda n: p.take(n, RECEIVED))
    assert [bytes(s.data) for s in again] == [tcp(v6, 1000 + 1200 * i, c, O.TCP_ACK | (O.TCP_PSH if i == 5 else 0),
                                                  ip_id=50 + i) for i, c in enumerate(chunks)]


def test_coalesce_keeps_apart_what_must_stay_apart():
    a = lambda seq, n=1000, **kw: tcp(False, seq, bytes(n), **kw)  # noqa: E731
    cases = {
        "gap in sequence": [a(0), a(1500)],
        "other flow": [a(0), a(1000, sport=40001)],
        "other ack": [a(0), a(1000, ack=100)],
        "other window": [a(0), a(1000, window=1)],
        "push ends a run": [a(0, flags=O.TCP_ACK | O.TCP_PSH), a(1000)],
        "bigger after smaller": [a(0, 500), a(500, 1000)],
        "syn": [a(0, flags=O.TCP_SYN | O.TCP_ACK), a(1000)],
        "fin": [a(0), a(1000, flags=O.TCP_FIN | O.TCP_ACK)],
        "options differ": [a(0), a(1000, options=b"\x01\x01\x01\x01")],
        "pure ack": [a(0, 0), a(0, 0)],
    }
    for why, datas in cases.items():
        runs = O.coalesce(_packets(datas))
        assert [len(r) for r in runs] == [1, 1], why
    # A non-TCP packet in the middle splits runs but keeps the order.
    udp = bytes(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, SRC4, DST4)) + bytes(8)
    packets = _packets([a(0), a(1000), udp, a(2000), a(3000)])
    assert [[packets.index(p) for p in r] for r in O.coalesce(packets)] == [[0, 1], [2], [3, 4]]


def test_coalesce_stops_at_64k():
    packets = _packets([tcp(False, 1400 * i, bytes(1400)) for i in range(60)])
    runs = O.coalesce(packets)
    assert all(sum(len(p) - 52 for p in r) + 52 <= 0xFFFF for r in runs)
    assert sum(len(r) for r in runs) == 60 and len(runs) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 0xFFFF))
def test_fast_checksum_is_rfc1071(data, initial):
    s = O.csum_sum(data, initial)
    ref = ref_sum(data + struct.pack("!H", initial) if len(data) % 2 == 0 else data + b"\0" + struct.pack("!H", initial))
    assert s % 0xFFFF == ref % 0xFFFF


def test_complete_checksum_finishes_a_partial_one():
    full = tcp(False, 5, b"hello world")
    partial = bytearray(full)
    partial[36:38] = struct.pack("!H", ref_sum(SRC4 + DST4 + struct.pack("!HH", 6, len(full) - 20)))
    O.complete_checksum(memoryview(partial), 20, 16)
    assert ref_sum(SRC4 + DST4 + struct.pack("!HH", 6, len(full) - 20) + bytes(partial[20:])) == 0xFFFF
    with pytest.raises(PacketError):
        O.complete_checksum(memoryview(partial), 20, 4000)


def _tcp_ok(pkt: bytes, v6: bool) -> bool:
    hl = 40 if v6 else 20
    pseudo = (pkt[8:40] if v6 else pkt[12:20]) + struct.pack("!HH", 6, len(pkt) - hl)
    return ref_sum(pseudo + pkt[hl:]) == 0xFFFF


@settings(max_examples=60, deadline=None)
@given(st.booleans(), st.integers(1, 1460), st.integers(1, 8), st.integers(0, 0xFFFFFFFF), st.data())
def test_coalesced_checksum_is_right_and_a_damaged_segment_spoils_it(v6, mss, count, seq, data):
    """Odd and even segment sizes, any sequence numbers; one flipped bit anywhere fails the check."""
    last = data.draw(st.integers(1, mss))
    sizes = [mss] * (count - 1) + [last]
    payloads = [bytes((i * 7 + j) & 0xFF for j in range(n)) for i, n in enumerate(sizes)]
    segs, at = [], seq
    for i, pl in enumerate(payloads):
        segs.append(tcp(v6, at & 0xFFFFFFFF, pl, O.TCP_ACK | (O.TCP_PSH if i == count - 1 else 0)))
        at += len(pl)
    damage = data.draw(st.none() | st.tuples(st.integers(0, count - 1), st.integers(0, 10**6)))
    if damage is not None:
        i, where = damage
        hl = 40 if v6 else 20
        bad = bytearray(segs[i])
        bad[hl + 32 + where % len(payloads[i])] ^= 0x10
        segs[i] = bytes(bad)
    packets = _packets(segs)
    runs = O.coalesce(packets)
    assert [len(r) for r in runs] == ([count] if count > 1 else [1])
    if count == 1:
        return
    O.coalesced_header(runs[0])
    hl = 40 if v6 else 20
    big = bytes(packets[0].data) + b"".join(bytes(p.data[hl + 32 :]) for p in packets[1:])
    assert _tcp_ok(big, v6) == (damage is None)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_coalesced_head_can_be_put_back_as_it_was(v6):
    """A GRO write that does not happen (EAGAIN) leaves the head as the segment it was, byte for byte."""
    segs = [tcp(v6, 1000 + 1000 * i, bytes([i]) * 1000, O.TCP_ACK | (O.TCP_PSH if i == 3 else 0)) for i in range(4)]
    packets = _packets(segs)
    [run] = O.coalesce(packets)
    head = packets[0].data
    fields = O.head_fields(head)
    O.coalesced_header(run)
    assert bytes(head) != segs[0]
    O.restore_head(head, fields)
    assert [bytes(p.data) for p in packets] == segs

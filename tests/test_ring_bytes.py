"""The raw ring bytes, read by a decoder written here from BACKGROUND §1 (not from the package).

With lead = trail = 0 this is the shipped Wintun format: a ring built by
tunring could be handed to the real driver.
"""

from __future__ import annotations

import struct

import pytest

from tunring import Adapter, Session

from ringutil import ipv4, ipv6


def decode_ring(raw: bytes, lead: int, trail: int) -> tuple[int, int, int, list[bytes]]:
    """Head, Tail, Alertable and the packets between Head and Tail of a raw Wintun ring."""
    head, tail, alertable = struct.unpack_from("<IIi", raw, 0)
    data = raw[12:]
    max_packet = (4 + lead + 0xFFFF + trail + 3) // 4 * 4
    capacity = len(data) - (max_packet - 4)
    assert capacity & (capacity - 1) == 0
    packets = []
    pos = head
    while pos != tail:
        (size,) = struct.unpack_from("<I", data, pos)
        assert size <= 0xFFFF
        packets.append(bytes(data[pos + 4 + lead : pos + 4 + lead + size]))
        pos = (pos + (4 + lead + size + trail + 3) // 4 * 4) % capacity
    return head, tail, alertable, packets


@pytest.mark.parametrize("lead,trail", [(0, 0), (8, 16), (1, 3), (24, 28)])
def test_session_writes_what_wintun_reads(lead, trail):
    s = Session.create(0x20000, lead, trail)
    a = Adapter.attach(s.handle())
    try:
        sent = [ipv4(20 + i * 37, i) for i in range(40)] + [ipv6(1280, 99)]
        for data in sent:
            p = s.allocate(len(data))
            p.data[:] = data
            s.send(p)
        raw = bytes(s.receive_ring)
        assert len(raw) == 12 + 0x20000 + (4 + lead + 0xFFFF + trail + 3) // 4 * 4 - 4
        head, tail, alertable, packets = decode_ring(raw, lead, trail)
        assert (head, alertable) == (0, 0)
        assert packets == sent
        # The other direction, written by the adapter, reads the same way.
        for data in sent[:5]:
            r = a.reserve(1500)
            r.data[: len(data)] = data
            a.commit(r, len(data))
        assert decode_ring(bytes(s.send_ring), lead, trail)[3] == sent[:5]
    finally:
        a.close()
        s.close()


def test_unpadded_layout_is_byte_exact():
    """Every byte of a small unpadded ring, spelled out."""
    send_ring = bytearray(12 + 0x20000 + 0x10000)
    receive_ring = bytearray(12 + 0x20000 + 0x10000)
    s = Session.over(send_ring, receive_ring)
    pkt = ipv4(21, 7)  # 21 bytes: slot = align4(4 + 21) = 28
    p = s.allocate(21)
    p.data[:] = pkt
    s.send(p)
    expected = struct.pack("<IIi", 0, 28, 0) + struct.pack("<I", 21) + pkt + b"\0\0\0"
    assert bytes(receive_ring[: len(expected)]) == expected


def test_wrap_point_packet_is_contiguous_past_capacity():
    """A slot that starts just before the end runs into the slack, as Wintun's does."""
    send_ring = bytearray(12 + 0x20000 + 0x10000)
    receive_ring = bytearray(12 + 0x20000 + 0x10000)
    s = Session.over(send_ring, receive_ring)
    a = Adapter.over(send_ring, receive_ring)
    crossed = 0
    for i in range(200):
        data = ipv4(1400, i)
        p = s.allocate(1400)
        p.data[:] = data
        s.send(p)
        q = a.receive()
        assert bytes(q.data) == data
        start = 12 + q.lo
        if q.hi > 0x20000:  # this slot crosses the wrap point
            crossed += 1
            assert bytes(receive_ring[start + 4 : start + 4 + 1400]) == data
        a.release(q)
    assert crossed == 2  # 200 slots of 1404 bytes wrap a 128 KiB ring twice
    assert struct.unpack_from("<I", receive_ring, 4)[0] == (200 * 1404) % 0x20000

"""Session and Adapter behaviour: both directions, shrink, out of order, errors."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from tunring import Adapter, PacketError, RingClosed, RingFull, Session
from tunring import layout as L

from ringutil import ipv4, ipv6, pair


def send(session, data: bytes):
    p = session.allocate(len(data))
    p.data[:] = data
    session.send(p)
    return p


@pytest.mark.parametrize("lead,trail", [(0, 0), (4, 0), (16, 32), (21, 7)])
def test_both_directions_with_padding(lead, trail):
    with pair(lead=lead, trail=trail) as (s, a):
        out = ipv4(100, 1)
        p = s.allocate(100)
        assert p.headroom == 4 + lead  # the Size field is headroom until send
        assert p.tailroom >= trail
        p.data[:] = out
        s.send(p)
        q = a.receive()
        assert bytes(q.data) == out and q.headroom == 4 + lead and q.tailroom >= trail
        a.release(q)
        r = a.reserve(1500)
        r.data[:100] = out
        a.commit(r, 100)
        got = s.receive()
        assert bytes(got.data) == out
        # A received packet can be wrapped in place: header in headroom, trailer in tailroom.
        got.push(4 + lead)[:] = b"H" * (4 + lead)
        got.put(trail)[:] = b"T" * trail
        assert bytes(got.data) == b"H" * (4 + lead) + out + b"T" * trail
        s.release(got)
        assert s.receive() is None and a.receive() is None
        assert a.stats.rx_packets == a.stats.tx_packets == 1


def test_nasty_trick_header_in_size_field_then_send():
    with pair() as (s, a):
        p = s.allocate(40)
        hdr = p.push(1)  # Cisco DTLS: 1 type byte lands in the Size field
        hdr[0] = 0
        p.data[1:] = ipv4(40)
        p.pull(1)
        s.send(p)
        assert bytes(a.receive().data) == ipv4(40)


def test_send_refuses_moved_data():
    with pair(lead=8) as (s, a):
        p = s.allocate(40)
        p.push(4)
        with pytest.raises(PacketError, match="headroom"):
            s.send(p)
        p.pull(4)
        p.data[:] = ipv4(40)
        s.send(p)
        assert a.receive() is not None


def test_send_refuses_short_packet_without_overallocation():
    with pair() as (s, a):
        p = s.allocate(100)
        p.trim(40)
        with pytest.raises(PacketError, match="shrink_and_send"):
            s.send(p)


def test_shrink_and_send_gives_space_back():
    with pair(lead=8, trail=8) as (s, a):
        p = s.allocate(1500)
        p.data[:60] = ipv4(60)
        s.shrink_and_send(p, 60)
        q = s.allocate(40)
        assert q.lo == p.lo + L.slot_size(60, 8, 8)  # the next slot starts right after the shrunk one
        q.data[:] = ipv4(40)
        s.send(q)
        assert len(a.receive()) == 60 and len(a.receive()) == 40


def test_shrink_rules_change_nothing_on_error():
    with pair() as (s, a):
        first = s.allocate(200)
        last = s.allocate(200)
        with pytest.raises(PacketError, match="last allocated"):
            s.shrink_and_send(first, 100)
        with pytest.raises(PacketError, match="only shrink"):
            s.shrink_and_send(last, 201)
        assert (len(first), len(last)) == (200, 200)
        first.data[:] = ipv4(200, 1)
        last.data[:] = ipv4(200, 2)
        s.shrink_and_send(last, 200)
        with pytest.raises(PacketError, match="already sent"):
            s.shrink_and_send(last, 100)
        # last is sent but first is not: nothing is visible yet (in-order publication).
        assert a.receive() is None
        s.send(first)
        assert [bytes(p.data) for p in a.receive_many(4)] == [ipv4(200, 1), ipv4(200, 2)]


def test_out_of_order_send_and_release():
    with pair() as (s, a):
        ps = [s.allocate(64) for _ in range(5)]
        for i, p in enumerate(ps):
            p.data[:] = ipv4(64, i)
        for i in (3, 1, 4):
            s.send(ps[i])
        assert a.receive() is None
        s.send(ps[0])
        got = a.receive_many(10)
        assert [bytes(p.data) for p in got] == [ipv4(64, 0), ipv4(64, 1)]
        s.send(ps[2])
        got += a.receive_many(10)
        assert [bytes(p.data) for p in got] == [ipv4(64, i) for i in range(5)]
        head = struct.unpack_from("<I", s.receive_ring, L.HEAD)[0]
        a.release(got[2])
        a.release(got[1])
        assert struct.unpack_from("<I", s.receive_ring, L.HEAD)[0] == head  # got[0] still held
        a.release(got[0])
        assert struct.unpack_from("<I", s.receive_ring, L.HEAD)[0] == got[2].hi


def test_ring_full_is_an_exception_and_allocates_nothing():
    with pair() as (s, a):
        held = []
        with pytest.raises(RingFull, match="ring full"):
            while True:
                held.append(s.allocate(0xFFFF))
        assert len(held) == 1  # two max slots do not fit 128 KiB
        tail = s._writer.tail
        with pytest.raises(RingFull):
            s.allocate(0xFFFF)
        assert s._writer.tail == tail
        s.allocate(1000)  # a smaller one still fits


def test_wait_writable_wakes_when_reader_releases():
    with pair() as (s, a):
        big = s.allocate(0xFFFF)
        big.data[:20] = ipv4(20)
        big.data[2:4] = (0xFFFF).to_bytes(2, "big")
        s.send(big)
        assert not s.wait_writable(0xFFFF, 0.01)
        a.release(a.receive())
        assert s.wait_writable(0xFFFF, 0.01)


def test_adapter_discards_non_ip_and_counts():
    with pair() as (s, a):
        for data in (b"\x00" * 40, ipv4(40)[:19], ipv6(60), b"\x45" + bytes(10), ipv4(28)):
            p = s.allocate(len(data))
            p.data[:] = data
            s.send(p)
        got = a.receive_many(10)
        assert [len(p) for p in got] == [60, 28]
        assert a.stats.discards == 3
        a.release_many(got)
        assert s._writer.refresh_head() == s._writer.published  # discarded slots were released too


def test_overallocation_takes_length_from_ip_header():
    with pair(overallocate=True) as (s, a):
        p = s.allocate(1500)
        p.data[:80] = ipv4(80)
        p.trim(1500 - 80)
        s.send(p)
        q = s.allocate(1500)
        q.data[:60] = ipv6(60)
        s.send(q)  # data longer than the IP packet: fine too
        got = a.receive_many(4)
        assert [len(x) for x in got] == [80, 60]
        # Claiming more than was written is refused at send.
        r = s.allocate(100)
        r.data[:20] = ipv4(20)
        r.data[2:4] = (500).to_bytes(2, "big")
        r.trim(80)
        with pytest.raises(PacketError, match="claims"):
            s.send(r)


def test_cancel_last_returns_space_and_earlier_is_discarded():
    with pair() as (s, a):
        a1 = s.allocate(100)
        b1 = s.allocate(100)
        tail = s._writer.tail
        s.cancel(b1)
        assert s._writer.tail == b1.lo != tail
        c1 = s.allocate(60)
        s.cancel(a1)  # not last: published as a slot the adapter skips
        c1.data[:] = ipv4(60)
        s.send(c1)
        got = a.receive_many(4)
        assert [len(p) for p in got] == [60] and a.stats.discards == 1


def test_close_is_seen_as_ring_closed_by_both_sides():
    s = Session.create(0x20000)
    a = Adapter.attach(s.handle())
    s.close()
    with pytest.raises(RingClosed):
        a.receive()
    with pytest.raises(RingClosed):
        a.reserve(100)
    a.close()
    s2 = Session.create(0x20000)
    a2 = Adapter.attach(s2.handle())
    a2.close()
    assert struct.unpack_from("<I", s2.receive_ring, L.HEAD)[0] == L.DEAD  # as the driver does
    with pytest.raises(RingClosed):
        s2.allocate(10)
    with pytest.raises(RingClosed):
        s2.receive()
    s2.close()
    s2.close()  # idempotent


def test_context_manager_and_fd_hygiene():
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with Session.create(0x20000) as s, Adapter.attach(s.handle()) as a:
            a.deliver(ipv4(40))
            assert s.wait(1.0)
            s.release(s.receive())
    assert len(os.listdir("/proc/self/fd")) == before


def test_wait_times_out_and_wakes():
    with pair() as (s, a):
        assert s.wait(0.01) is False
        a.deliver(ipv4(40))
        assert s.wait(0.01) is True


def test_session_over_plain_buffers_meets_adapter_over_the_same():
    send_ring = bytearray(L.ring_size(0x20000, 8, 4))
    receive_ring = bytearray(L.ring_size(0x20000, 8, 4))
    s = Session.over(send_ring, receive_ring, lead=8, trail=4)
    a = Adapter.over(send_ring, receive_ring, lead=8, trail=4)
    assert s.capacity == 0x20000
    assert s.send_ring.obj is send_ring or bytes(s.send_ring) == bytes(send_ring)
    send(s, ipv4(64, 9))
    assert bytes(a.receive().data) == ipv4(64, 9)
    a.deliver(ipv6(80))
    assert s.wait(0.5)
    assert bytes(s.receive().data) == ipv6(80)
    with pytest.raises(PacketError):
        s.fileno()


def test_async_iteration():
    async def main():
        with pair() as (s, a):
            loop = asyncio.get_running_loop()
            for i in range(3):
                loop.call_later(0.01 * (i + 1), a.deliver, ipv4(40, i))
            got = []
            async for p in s:
                got.append(bytes(p.data))
                s.release(p)
                if len(got) == 3:
                    break
            return got

    assert asyncio.run(asyncio.wait_for(main(), 5)) == [ipv4(40, i) for i in range(3)]


def test_close_in_either_order_and_use_after_close_is_an_error():
    for session_first in (True, False):
        s = Session.create(0x20000)
        a = Adapter.attach(s.handle())  # works on its own duplicates of the descriptors
        p = s.allocate(40)
        ends = (s, a) if session_first else (a, s)
        for end in ends:
            end.close()
        with pytest.raises(ValueError, match="released"):
            p.data  # the packet's memory is gone with the session, not silently reused


def test_ends_attach_to_rings_that_already_hold_packets():
    """A new writer and reader start where the ring stands, published packets included."""
    send_ring = bytearray(L.ring_size(0x20000))
    receive_ring = bytearray(L.ring_size(0x20000))
    first = Session.over(send_ring, receive_ring)
    for i in range(3):
        send(first, ipv4(100, i))
    second = Session.over(send_ring, receive_ring)  # e.g. the client restarted
    send(second, ipv4(100, 3))
    adapter = Adapter.over(send_ring, receive_ring)
    assert [bytes(p.data) for p in adapter.receive_many(10)] == [ipv4(100, i) for i in range(4)]

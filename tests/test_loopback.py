"""LoopbackDevice: the Device contract without root, zero-copy round trips."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunring import Device, PacketError, RingClosed, RingFull
from tunring.loopback import LoopbackDevice


def test_is_a_device_and_round_trips_without_copying():
    with LoopbackDevice(mtu=1400, headroom=24, tailroom=16) as dev:
        assert isinstance(dev, Device) and dev.mtu == 1400
        p = dev.allocate(100)
        assert p.headroom == 24 and p.tailroom >= 16 and len(p) == 100
        p.data[:] = bytes(range(100))
        buf, start = p.buf, p.start
        dev.send(p)
        q = dev.receive()
        assert q is p and q.buf is buf and q.start == start  # the same memory, not a copy
        assert bytes(q.data) == bytes(range(100)) and q.headroom == 24 and q.tailroom >= 16
        assert dev.receive() is None
        dev.release(q)
        assert dev.packets_out == 0


def test_rules_match_the_ring_session():
    with LoopbackDevice(packets=3) as dev:
        a, b = dev.allocate(50), dev.allocate(60)
        with pytest.raises(PacketError, match="last allocated"):
            dev.shrink_and_send(a, 10)
        with pytest.raises(PacketError, match="can only shrink"):
            dev.shrink_and_send(b, 61)
        b.push(4)
        with pytest.raises(PacketError, match="pull"):
            dev.send(b)
        b.pull(4)
        dev.shrink_and_send(b, 10)
        assert len(dev.receive()) == 10
        with pytest.raises(PacketError, match="already sent"):
            dev.send(b)
        c = dev.allocate(1)
        with pytest.raises(RingFull, match="pool exhausted"):
            dev.allocate(1)
        dev.cancel(c)
        with pytest.raises(PacketError, match="already sent, released or cancelled"):
            dev.release(c)
        with pytest.raises(PacketError, match="0 to 1500"):
            dev.allocate(1501)
        other = LoopbackDevice()
        with pytest.raises(PacketError, match="another"):
            other.send(a)
        other.close()
        dev.cancel(a)


def test_a_packet_in_flight_is_nobodys():
    with LoopbackDevice() as dev:
        p = dev.allocate(20)
        dev.send(p)
        with pytest.raises(PacketError):
            dev.release(p)  # sent, not yet received
        with pytest.raises(PacketError):
            dev.cancel(p)
        assert dev.receive() is p
        dev.release(p)


def test_wait_fileno_and_asyncio():
    with LoopbackDevice() as dev:
        assert dev.wait(0.01) is False
        dev.write(b"\x45" + bytes(19))
        assert dev.wait(0) is True
        import select

        assert select.select([dev.fileno()], [], [], 0)[0] == [dev.fileno()]
        p = dev.receive()
        assert select.select([dev.fileno()], [], [], 0)[0] == []
        dev.release(p)

        async def main():
            loop = asyncio.get_running_loop()
            loop.call_later(0.02, dev.write, b"late")
            got = await asyncio.wait_for(dev.areceive(), 2)
            data = bytes(got.data)
            dev.release(got)
            return data

        assert asyncio.run(main()) == b"late"


def test_closed_device_says_so():
    dev = LoopbackDevice()
    dev.close()
    with pytest.raises(RingClosed):
        dev.allocate(1)
    with pytest.raises(RingClosed):
        dev.receive()
    dev.close()  # twice is fine


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["send", "shrink", "cancel", "receive"]),
                          st.integers(0, 1500), st.integers(0, 1500)), max_size=60))
def test_random_use_keeps_order_and_accounting(ops):
    """Whatever the sequence, packets come back in send order with their bytes, and none leak."""
    with LoopbackDevice(packets=8) as dev:
        sent, got, held = [], [], []
        n = 0
        for op, size, cut in ops:
            if op == "receive":
                p = dev.receive()
                if p is not None:
                    got.append(bytes(p.data))
                    held.append(p)
                if len(held) > 3:
                    dev.release_many(held)
                    held = []
                continue
            try:
                p = dev.allocate(size)
            except RingFull:
                dev.release_many(held)
                held = []
                continue
            n += 1
            p.data[:] = bytes([n & 0xFF]) * size
            if op == "cancel":
                dev.cancel(p)
            elif op == "shrink":
                keep = min(cut, size)
                dev.shrink_and_send(p, keep)
                sent.append(bytes([n & 0xFF]) * keep)
            else:
                dev.send(p)
                sent.append(bytes([n & 0xFF]) * size)
        while (p := dev.receive()) is not None:
            got.append(bytes(p.data))
            held.append(p)
        dev.release_many(held)
        assert got == sent
        assert dev.packets_out == 0


def test_allocate_many_gives_what_the_pool_has():
    with LoopbackDevice(packets=5) as dev:
        ps = dev.allocate_many(100, 3)
        assert len(ps) == 3 and all(len(p) == 100 for p in ps)
        assert len(dev.allocate_many(10, 8)) == 2
        with pytest.raises(RingFull):
            dev.allocate_many(10, 1)
        dev.send_many(ps)
        assert dev.receive_many(8) == ps

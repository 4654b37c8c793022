"""A hostile peer writes anything into Head, Tail, sizes and data.

The other end must never crash, hang, hand out a packet outside its ring, or
accept a corrupt slot: every case ends in a packet that is within bounds, a
skipped-and-counted slot, RingFull, a typed RingCorrupt (after which the ring is
marked dead) or a clean RingClosed.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunring import Adapter, RingClosed, RingCorrupt, RingError, RingFull, Session
from tunring import layout as L
from tunring import shm

from ringutil import ipv4

CAP = 0x20000
TYPED = (RingCorrupt, RingClosed, RingFull)

# A hostile write: (where, value).  Header words, a word at a likely slot, or data bytes.
scribble = st.one_of(
    st.tuples(st.sampled_from(["head", "tail", "alertable"]),
              st.one_of(st.integers(0, 2**32 - 1), st.integers(0, CAP - 1), st.sampled_from([0, 4, CAP - 4, CAP, L.DEAD]))),
    st.tuples(st.just("word"), st.tuples(st.integers(0, CAP // 4 - 1).map(lambda x: x * 4), st.integers(0, 2**32 - 1))),
    st.tuples(st.just("bytes"), st.tuples(st.integers(0, CAP + 0x10000 - 64), st.binary(min_size=1, max_size=64))),
)


def hostile_write(ring: bytearray, action) -> None:
    where, value = action
    if where in ("head", "tail", "alertable"):
        struct.pack_into("<I", ring, {"head": 0, "tail": 4, "alertable": 8}[where], value)
    elif where == "word":
        struct.pack_into("<I", ring, 12 + value[0], value[1])
    else:
        ring[12 + value[0] : 12 + value[0] + len(value[1])] = value[1]


def in_bounds(p, data_len: int) -> bool:
    return 0 <= p.lo <= p.start <= p.end <= p.hi <= data_len and p.hi - p.lo <= L.max_slot(8, 8)


def rings():
    size = L.ring_size(CAP, 8, 8)
    return bytearray(size), bytearray(size)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(scribble, st.integers(1, 3000)), max_size=30))
def test_hostile_client_never_breaks_the_adapter(ops):
    send_ring, receive_ring = rings()
    client = Session.over(send_ring, receive_ring, 8, 8)
    adapter = Adapter.over(send_ring, receive_ring, 8, 8)
    data_len = len(receive_ring) - 12
    dead = False
    for op in ops:
        if isinstance(op, int):  # the client sends a genuine packet when it can
            try:
                p = client.allocate(op)
                p.data[: min(op, 28)] = ipv4(28)[: min(op, 28)]
                client.send(p)
            except RingError:
                pass
        else:
            hostile_write(receive_ring, op)
        try:
            for p in adapter.receive_many(8):
                assert not dead, "a packet was accepted after the ring was declared corrupt"
                assert in_bounds(p, data_len)
                assert len(p) >= 20 and p.data[0] >> 4 in (4, 6)  # non-IP slots are never handed out
                adapter.release(p)
        except RingCorrupt:
            assert struct.unpack_from("<I", receive_ring, 0)[0] == L.DEAD  # marked dead, as the driver does
            assert adapter.stats.errors >= 1
            dead = True
        except RingClosed:
            pass
    if dead:
        with pytest.raises(RingClosed):
            adapter.receive()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(scribble, st.integers(0, 3000)), max_size=30))
def test_hostile_adapter_never_breaks_the_client(ops):
    send_ring, receive_ring = rings()
    client = Session.over(send_ring, receive_ring, 8, 8)
    data_len = len(send_ring) - 12
    for op in ops:
        if isinstance(op, int):
            # A hostile adapter can also bump the send ring Tail over garbage sizes.
            struct.pack_into("<I", send_ring, 4, (struct.unpack_from("<I", send_ring, 4)[0] + op * 4) % CAP)
        else:
            hostile_write(send_ring, op)
        try:
            for p in client.receive_many(8):
                assert in_bounds(p, data_len)
                assert len(p) <= 0xFFFF
                client.release(p)
        except TYPED:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(scribble, st.integers(0, 0xFFFF)), max_size=30))
def test_hostile_reader_head_never_makes_the_writer_overlap_itself(ops):
    send_ring, receive_ring = rings()
    client = Session.over(send_ring, receive_ring, 8, 8)
    outstanding = []  # allocated, unsent: these must never overlap
    for op in ops:
        if isinstance(op, int):
            try:
                outstanding.append(client.allocate(op))
            except TYPED:
                continue
            # Logical ranges modulo the capacity (a slot past the wrap point also owns [0, hi - CAP)).
            pieces = []
            for p in outstanding:
                pieces += [(p.lo, p.hi)] if p.hi <= CAP else [(p.lo, CAP), (0, p.hi - CAP)]
            pieces.sort()
            for (_, a_hi), (b_lo, _) in zip(pieces, pieces[1:]):
                assert a_hi <= b_lo, "the writer handed out overlapping slots"
            if len(outstanding) > 3:
                p = outstanding.pop(0)
                try:
                    client.cancel(p)
                except TYPED:
                    pass
        else:
            hostile_write(receive_ring, op)
    for p in outstanding:
        assert in_bounds(p, len(receive_ring) - 12)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=24, max_size=24))
def test_hostile_control_block_is_refused_at_attach(garbage):
    """Magic and version intact, everything else (capacity, paddings, flags) hostile."""
    session = Session.create(CAP)
    mem = session._writer.mem
    mem[8:32] = garbage
    try:
        try:
            adapter = Adapter.attach(session.handle())
        except RingCorrupt:
            return
        # Garbage that happens to describe a valid geometry must fit the mapping.
        assert shm.Geometry(adapter.capacity, adapter.lead, adapter.trail, False).total <= os.fstat(
            session.handle().memfd).st_size
        adapter.close()
    finally:
        session.close()


def test_control_block_that_fits_is_accepted_and_one_that_does_not_is_refused():
    session = Session.create(CAP)
    mem = session._writer.mem
    try:
        struct.pack_into("<I", mem, 8, CAP * 2)  # claims a ring twice as large as the mapping holds
        with pytest.raises(RingCorrupt, match="geometry needs"):
            Adapter.attach(session.handle())
        struct.pack_into("<I", mem, 8, CAP)
        Adapter.attach(session.handle()).close()
    finally:
        session.close()

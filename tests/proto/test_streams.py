"""Stream framings: arbitrary cuts, zero-copy proof, aggregate copy counts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framing_ref as ref
from tunring.proto import FRAMINGS

STREAM_FRAMINGS = sorted(name for name, cls in FRAMINGS.items() if cls.stream_ok)


@st.composite
def ip_packets(draw, max_bytes: int = 1500):
    six = draw(st.booleans())
    size = draw(st.integers(0, max_bytes - (40 if six else 20)))
    payload = draw(st.binary(min_size=size, max_size=size))
    return ref.ipv6(payload) if six else ref.ipv4(payload, draw(st.integers(0, 0xFFFF)))


def encode_through_ring(name: str, ips: list[bytes]) -> bytes:
    """The real transmit path: packets the OS sent, framed in place by the codec."""
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session)
    out = []
    for ip in ips:
        p = ring.inject(ip)
        out.append(bytes(codec.encode(p)))
        ring.session.release(p)
    assert codec.stats.tx_copies == (len(ips) if "hdlc" in name else 0)
    return b"".join(out)


def read_in_chunks(name: str, stream: bytes, cuts: list[int], exact: bool = False):
    """Decode ``stream`` as a transport would deliver it: reads ending at ``cuts``,
    each read written straight into the codec's want() view (several views if the
    read is longer than one)."""
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session)
    events = []
    pos = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        while pos < cut:
            view = codec.want(exact=exact)
            k = min(len(view), cut - pos)
            view[:k] = stream[pos : pos + k]
            pos += k
            events += codec.received(k)
        ring.drain()
    events += codec.close()
    ring.drain()
    return ring, codec, events


@pytest.mark.parametrize("name", STREAM_FRAMINGS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_cut_anywhere_same_packets_in_order(name, data):
    ips = data.draw(st.lists(ip_packets(), min_size=1, max_size=8))
    stream = encode_through_ring(name, ips)
    assert stream == b"".join(
        ref.pulse(ip, seq=i) if name == "pulse" else ref.REFERENCE[name](ip) for i, ip in enumerate(ips))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    exact = data.draw(st.booleans())
    ring, codec, events = read_in_chunks(name, stream, cuts, exact)
    assert ring.got == ips
    assert events == []
    assert codec.stats.rx_packets == len(ips)
    assert ring.adapter.stats.discards == 0
    if exact and "hdlc" not in name:  # reads never run past a record: nothing copied
        assert codec.stats.rx_copies == 0 and codec.stats.rx_copy_bytes == 0


@pytest.mark.parametrize("name", STREAM_FRAMINGS)
def test_one_record_per_read_is_zero_copy(name):
    """Each read is one record (what a TLS transport returns): every decoded
    packet is the very ring slot its record was read into."""
    import random

    rng = random.Random(7)
    ips = [ref.random_ip(rng) for _ in range(40)]
    cls = FRAMINGS[name]
    enc = ref.REFERENCE[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session)
    read_into = []
    for ip in ips:
        record = enc(ip)
        view = codec.want()
        read_into.append(codec.packet.start)
        view[: len(record)] = record
        assert codec.received(len(record)) == []
        ring.drain()
    assert ring.got == ips
    assert ring.slots == read_into
    assert codec.stats.rx_copies == 0 and codec.stats.rx_copy_bytes == 0


@pytest.mark.parametrize("name", STREAM_FRAMINGS)
def test_aggregate_reads_copy_all_but_the_first(name):
    ips = [ref.ipv4(bytes([i]) * (100 + i)) for i in range(5)]
    enc = ref.REFERENCE[name]
    records = [enc(ip) for ip in ips]
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session)
    # Read 1: three whole records -> one in place, two copied.
    view = codec.want()
    first_slot = codec.packet.start
    blob = b"".join(records[:3]) + records[3][:5]  # and the start of the fourth
    view[: len(blob)] = blob
    codec.received(len(blob))
    ring.drain()
    assert ring.got == ips[:3]
    assert ring.slots[0] == first_slot
    assert codec.stats.rx_copies == 2
    # Read 2: the rest of the fourth lands in place behind its copied start (a
    # partly copied packet counts as a copy); the fifth is read alone, in place.
    view = codec.want()
    rest = records[3][5:]
    view[: len(rest)] = rest
    codec.received(len(rest))
    view = codec.want()
    fifth_slot = codec.packet.start
    view[: len(records[4])] = records[4]
    codec.received(len(records[4]))
    codec.close()
    ring.drain()
    assert ring.got == ips
    assert ring.slots[4] == fifth_slot
    assert codec.stats.rx_copies == 3


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_oncp_arbitrary_record_boundaries(data):
    """oNCP records may cut KMP messages anywhere: re-chunk the KMP stream at random."""
    ips = data.draw(st.lists(ip_packets(600).filter(lambda ip: ip[0] >> 4 == 4), min_size=1, max_size=6))
    # Some KMP 300 messages carry several packets back to back.
    groups, i = [], 0
    while i < len(ips):
        k = data.draw(st.integers(1, 3))
        groups.append(ips[i : i + k])
        i += k
    kmp_stream = b"".join(ref.kmp(b"".join(g)) for g in groups)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(kmp_stream) - 1), max_size=8))))
    bounds = [0, *cuts, len(kmp_stream)]
    stream = b"".join(ref.oncp_record(kmp_stream[a:b]) for a, b in zip(bounds, bounds[1:]))
    read_cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=8))
    ring, codec, events = read_in_chunks("oncp", stream, read_cuts)
    assert ring.got == ips
    assert events == []


@pytest.mark.parametrize("name", STREAM_FRAMINGS)
def test_ring_full_loses_nothing(name):
    """A tiny ring fills up while an aggregate is being copied out: want() raises
    RingFull, nothing is lost, and decoding resumes once the adapter drains."""
    import random

    from tunring.errors import RingFull

    rng = random.Random(5)
    ips = [ref.random_ip(rng, 1400) for _ in range(300)]
    stream = b"".join(ref.REFERENCE[name](ip) for ip in ips)
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, capacity=0x20000)
    codec = cls(ring.session, max_payload=8192)
    pos = fulls = 0
    while pos < len(stream):
        try:
            view = codec.want()
        except RingFull:
            fulls += 1
            ring.drain()
            continue
        k = min(len(view), len(stream) - pos)
        view[:k] = stream[pos : pos + k]
        pos += k
        codec.received(k)  # the adapter only drains when the ring is full
    while True:
        try:
            codec.close()
            break
        except RingFull:
            ring.drain()
    ring.drain()
    assert ring.got == ips
    assert fulls > 0


DATAGRAM_FRAMINGS = sorted(name for name, cls in FRAMINGS.items() if cls.datagram_ok)


@pytest.mark.parametrize("name", DATAGRAM_FRAMINGS)
def test_datagrams_are_decoded_in_the_slot_they_were_received_into(name):
    import random

    rng = random.Random(9)
    ips = [ref.random_ip(rng) for _ in range(40)]
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session, datagram=True)
    read_into = []
    for ip in ips:
        record = ref.REFERENCE[name](ip)
        view = codec.want()
        read_into.append(codec.packet.start)
        view[: len(record)] = record  # recvmsg/SSL_read of one datagram
        assert codec.received(len(record)) == []
    ring.drain()
    assert ring.got == ips
    assert ring.slots == read_into
    assert codec.stats.rx_copies == 0 and codec.stats.rx_copy_bytes == 0

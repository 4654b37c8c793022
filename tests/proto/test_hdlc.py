"""The HDLC stream codec: random ACCMs, arbitrary cuts, resynchronisation, in-place placement."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framing_ref as ref
from tunring.proto import Control, Dropped
from tunring.proto.hdlc import Hdlc

IP4 = ref.ipv4(b"\x00\x01\x7e\x7d\x11\x13 data with specials")
IP6 = ref.ipv6(b"\x7e" * 20)


def decode_reads(reads: list[bytes], **kwargs):
    ring = ref.Ring(Hdlc)
    codec = Hdlc(ring.session, **kwargs)
    events = []
    for data in reads:
        events += ref.recv_into(codec, data)
        ring.drain()
    events += codec.close()
    ring.drain()
    return ring, codec, events


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p % (len(stream) + 1) for p in points}), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    accm=st.integers(0, 0xFFFFFFFF),
    seed=st.integers(0, 2**32 - 1),
    leading=st.lists(st.booleans(), min_size=8, max_size=8),
    points=st.lists(st.integers(0, 20000), max_size=10),
)
def test_random_accm_random_cuts(accm, seed, leading, points):
    rng = random.Random(seed)
    ips = [ref.random_ip(rng, 700) for _ in range(rng.randint(1, 8))]
    # The first frame always opens with a flag; later ones may share the previous closing flag.
    stream = b"".join(ref.hdlc(ip, accm, leading=i == 0 or leading[i]) for i, ip in enumerate(ips))
    ring, codec, events = decode_reads(cut(stream, points), rx_accm=accm)
    assert ring.got == ips
    assert events == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), noise=st.lists(st.integers(0, 31), min_size=1, max_size=5))
def test_unescaped_characters_of_the_receive_accm_are_discarded(seed, noise):
    """RFC 1662 7.1: characters in the receive ACCM that arrive unescaped were
    inserted on the way and are discarded (OpenConnect does not do this)."""
    rng = random.Random(seed)
    ip = ref.random_ip(rng, 300)
    frame = bytearray(ref.hdlc(ip, 0xFFFFFFFF))
    for c in noise:
        at = rng.randrange(1, len(frame) - 1)
        if frame[at - 1] != 0x7D:  # not right after an escape
            frame[at:at] = bytes([c])
    ring, _, events = decode_reads([bytes(frame)], rx_accm=0xFFFFFFFF)
    assert ring.got == [ip] and events == []


def test_bad_fcs_garbage_and_oversize_are_dropped_neighbours_kept():
    good1, good2, good3 = ref.hdlc(IP4), ref.hdlc(IP6), ref.hdlc(IP4)
    bad_fcs = bytearray(ref.hdlc(ref.ipv4(b"corrupted")))
    bad_fcs[-4] ^= 0x01
    huge = ref.hdlc(ref.ipv4(bytes(3000)))
    stream = b"junk before any flag" + good1 + bytes(bad_fcs) + good2 + huge + good3
    ring, codec, events = decode_reads(cut(stream, [7, 50, 100, 333, 2000]), max_payload=1500)
    assert ring.got == [IP4, IP6, IP4]
    drops = [e for e in events if isinstance(e, Dropped)]
    junk = [d for d in drops if "before the first" in d.reason]  # one per read it spans
    assert junk[0].offset == 0 and sum(d.length for d in junk) == len(b"junk before any flag")
    assert any("FCS" in d.reason for d in drops)
    assert any("longer" in d.reason for d in drops)
    assert codec.stats.rx_drops == len(drops)


def test_lcp_frames_are_control_events():
    lcp = b"\xff\x03\xc0\x21\x09\x01\x00\x08\x12\x34\x56\x78"
    ring, _, events = decode_reads([ref.hdlc(IP4) + ref.hdlc_frame(lcp) + ref.hdlc(IP6)])
    assert ring.got == [IP4, IP6]
    assert events == [Control(0xC021, lcp[4:])]
    ring2 = ref.Ring(Hdlc)
    assert Hdlc(ring2.session).encode_control(Control(0xC021, lcp[4:])) == ref.hdlc_frame(lcp)


def test_one_frame_per_read_lands_in_place_whatever_the_flag_style():
    """Doubled flags (7E f 7E 7E f 7E) and shared flags (7E f 7E f 7E): after at most
    one learning move, every frame is un-HDLC'd in the very slot it was read into."""
    rng = random.Random(11)
    ips = [ref.random_ip(rng, 1400) for _ in range(30)]
    for leading, moves in ((True, 0), (False, 1)):
        ring = ref.Ring(Hdlc)
        codec = Hdlc(ring.session)
        slots = []
        for i, ip in enumerate(ips):
            frame = ref.hdlc(ip, leading=leading or i == 0)
            view = codec.want()
            slots.append(codec.packet.start)
            view[: len(frame)] = frame
            codec.received(len(frame))
            ring.drain()
        assert ring.got == ips
        assert codec.stats.rx_copies == moves
        assert ring.slots == slots  # a learning move stays inside its own slot


def test_encode_escapes_per_tx_accm():
    for accm in (0, 0xFFFFFFFF, 0x000A0000):
        ring = ref.Ring(Hdlc)
        codec = Hdlc(ring.session, tx_accm=accm)
        wires = []
        for ip in (IP4, IP6):
            p = ring.inject(ip)
            wires.append(bytes(codec.encode(p)))
            ring.session.release(p)
        assert wires == [ref.hdlc(IP4, accm), ref.hdlc(IP6, accm)]
        assert codec.stats.tx_copies == 2  # escaping cannot be done in place

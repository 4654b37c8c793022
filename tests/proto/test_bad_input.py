"""Bad input for every codec: typed FramingError or a counted drop, never a crash,
never a leaked allocation, never a lost good packet where the stream can resynchronise."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import framing_ref as ref
from tunring.errors import FramingError, TunringError
from tunring.proto import FRAMINGS, Dropped

IP4 = ref.ipv4(b"good packet")
IP6 = ref.ipv6(b"another good one")
STREAM = sorted(n for n, c in FRAMINGS.items() if c.stream_ok)
DATAGRAM = sorted(n for n, c in FRAMINGS.items() if c.datagram_ok)


def stream_codec(name, **kwargs):
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    return ring, cls(ring.session, datagram=False, **kwargs)


def assert_no_leak(ring):
    # Every packet the codec allocated was sent or cancelled.
    assert not ring.session._writer.slots


@pytest.mark.parametrize("name", STREAM)
def test_truncated_stream_is_an_error_at_close(name):
    record = ref.REFERENCE[name](IP4)
    first = 2 if "hdlc" in name else 1  # a lone HDLC flag is not a frame yet
    for cut in (first, 3, len(record) - 1):
        ring, codec = stream_codec(name)
        codec.feed(ref.REFERENCE[name](IP6) + record[:cut])
        with pytest.raises(FramingError, match="ends inside") as info:
            codec.close()
        # HDLC names the frame's first byte after its opening flag.
        assert info.value.offset == len(ref.REFERENCE[name](IP6)) + (first - 1)
        assert ring.drain() == [IP6]
        assert_no_leak(ring)


WRONG_MAGIC = {
    "cstp": lambda r: b"STF\x02" + r[4:],
    "gpst": lambda r: b"\x1a\x2b\x3c\x4e" + r[4:],
    "pulse": lambda r: b"\x00\x00\x0a\x4d" + r[4:],
    "f5": lambda r: b"\xf5\x01" + r[2:],
    "fortinet": lambda r: r[:2] + b"\x50\x51" + r[4:],
    "array": lambda r: b"\x55" + r[1:],
}


@pytest.mark.parametrize("name", sorted(WRONG_MAGIC))
def test_wrong_magic_stops_the_stream_with_offset(name):
    good = ref.REFERENCE[name](IP4)
    bad = WRONG_MAGIC[name](ref.REFERENCE[name](IP6))
    ring, codec = stream_codec(name)
    with pytest.raises(FramingError) as info:
        codec.feed(good + bad + good)
    assert info.value.offset == len(good)
    assert ring.drain() == [IP4]
    assert_no_leak(ring)
    with pytest.raises(FramingError):
        codec.want()


def test_oncp_garbage_instead_of_a_kmp_header():
    good = ref.oncp(IP4)
    ring, codec = stream_codec("oncp")
    with pytest.raises(FramingError, match="KMP") as info:
        codec.feed(good + ref.oncp_record(b"\x01garbage, not a KMP message") + good)
    assert info.value.offset == len(good)
    assert ring.drain() == [IP4]
    assert_no_leak(ring)


def test_gpst_wrong_tail():
    bad = ref.gpst(IP4)[:8] + b"\x02" + ref.gpst(IP4)[9:]
    ring, codec = stream_codec("gpst")
    with pytest.raises(FramingError, match="tail"):
        codec.feed(bad)


@pytest.mark.parametrize("name", ["cstp", "gpst", "pulse", "f5", "fortinet", "oncp"])
def test_length_beyond_maximum(name):
    ring, codec = stream_codec(name, max_payload=1000)
    big = ref.ipv4(bytes(1200))
    with pytest.raises(FramingError, match="exceeds the maximum"):
        codec.feed(ref.REFERENCE[name](IP4) + ref.REFERENCE[name](big))
    assert ring.drain() == [IP4]
    assert_no_leak(ring)


def test_pulse_length_shorter_than_header():
    bad = ref.pulse(IP4)[:8] + (15).to_bytes(4, "big") + ref.pulse(IP4)[12:]
    ring, codec = stream_codec("pulse")
    with pytest.raises(FramingError, match="shorter"):
        codec.feed(bad)


def test_array_ipv4_length_below_header():
    ring, codec = stream_codec("array")
    with pytest.raises(FramingError):
        codec.feed(IP4 + b"\x45\x00\x00\x10" + bytes(30))
    assert ring.drain() == [IP4]


UNKNOWN_TYPE = {
    "cstp": ref.cstp(b"??", kind=0x33),
    "gpst": ref.gpst(b"??", ethertype=0x1234),
    "f5": ref.f5(b"\xff\x05\x00\x21", raw_frame=True),  # bad control byte: the frame is dropped
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_TYPE))
def test_unknown_record_between_good_ones_is_dropped_and_counted(name):
    enc = ref.REFERENCE[name]
    stream = enc(IP4) + UNKNOWN_TYPE[name] + enc(IP6)
    ring, codec = stream_codec(name)
    try:
        events = codec.feed(stream) + codec.close()
    except FramingError as err:
        # A malformed PPP frame inside a well-framed F5 record stops the stream.
        assert name == "f5" and err.offset == len(enc(IP4))
        assert ring.drain() == [IP4]
        return
    assert ring.drain() == [IP4, IP6]
    assert [type(e) for e in events] == [Dropped]
    assert codec.stats.rx_drops == 1


@pytest.mark.parametrize("name", DATAGRAM)
def test_bad_datagrams_are_dropped_good_ones_kept(name):
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session, datagram=True)
    good = ref.REFERENCE[name](IP4)
    events = []
    for datagram in (good, b"", good[:1], b"\x99" * 7, good, b"\x00" * 70000):
        events += codec.feed(datagram)
    assert ring.drain() == [IP4, IP4]
    assert codec.stats.rx_drops == sum(isinstance(e, Dropped) for e in events) >= 2
    assert_no_leak(ring)


# -- fuzzing -------------------------------------------------------------------------
def run_fuzz(name: str, data: bytes, cuts: list[int], datagram: bool, compression: str | None = None) -> None:
    """Feed ``data`` to a decoder; only FramingError may come out; state stays sane."""
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, capacity=0x20000)
    codec = cls(ring.session, datagram=datagram, max_payload=2048, compression=compression)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    pos = 0
    try:
        for end in bounds:
            if datagram:
                codec.feed(data[pos:end])
                pos = end
            else:
                while pos < end:
                    view = codec.want()
                    k = min(len(view), end - pos)
                    view[:k] = data[pos:end][:k]
                    pos += k
                    codec.received(k)
            ring.drain()
        codec.close()
    except FramingError as err:
        assert isinstance(err.offset, int) and 0 <= err.offset <= len(data)
    except TunringError as err:  # anything else typed (RingFull, PacketError) is a bug here
        raise AssertionError(f"{type(err).__name__}: {err}") from err
    ring.drain()
    assert_no_leak(ring)
    stats = codec.stats
    # Every packet the codec counted reached the ring (non-IP garbage is discarded there).
    assert stats.rx_packets == len(ring.got) + ring.adapter.stats.discards


def compressed_record(name: str, compression: str, ip: bytes) -> bytes:
    from tunring.proto.compress import compressor

    payload = compressor(compression).compress(ip)
    return ref.cstp(payload, kind=8) if name == "cstp" else ref.dtls(payload, kind=8)


def mutate(rng: random.Random, name: str, compression: str | None = None) -> bytes:
    """A valid stream of this framing with a few bytes changed, cut or inserted."""
    enc = ref.REFERENCE[name]
    if compression is not None:
        enc = lambda ip: compressed_record(name, compression, ip)  # noqa: E731
    stream = bytearray(b"".join(enc(ref.random_ip(rng, 600)) for _ in range(rng.randint(1, 5))))
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        at = rng.randrange(len(stream) + 1)
        if op < 0.5 and at < len(stream):
            stream[at] = rng.randrange(256)
        elif op < 0.75:
            stream[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            del stream[at : at + rng.randint(1, 8)]
    return bytes(stream)


ALL_MODES = [(n, False) for n in STREAM] + [(n, True) for n in DATAGRAM]


@pytest.mark.parametrize("name,datagram", ALL_MODES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_fuzz_random_bytes(name, datagram, data, cuts):
    run_fuzz(name, data, cuts, datagram)


@pytest.mark.parametrize("name,datagram", ALL_MODES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_fuzz_mutated_streams(name, datagram, seed, cuts):
    run_fuzz(name, mutate(random.Random(seed), name), cuts, datagram)


# Compressed records: the decompressors see mutated and random input too (deflate's
# stream state makes a single record per input the useful case: datagram-like cuts).
COMPRESSED_MODES = [("cstp", False, "lzs"), ("cstp", False, "lz4"), ("cstp", False, "deflate"),
                    ("dtls", True, "lzs"), ("dtls", True, "lz4")]


@pytest.mark.parametrize("name,datagram,compression", COMPRESSED_MODES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 5000), max_size=4))
def test_fuzz_compressed_records(name, datagram, compression, seed, cuts):
    rng = random.Random(seed)
    run_fuzz(name, mutate(rng, name, compression), cuts if not datagram else [], datagram, compression)


@pytest.mark.slow
@pytest.mark.parametrize("name,datagram,compression", COMPRESSED_MODES)
@settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 5000), max_size=4))
def test_fuzz_compressed_long(name, datagram, compression, seed, cuts):
    rng = random.Random(seed)
    run_fuzz(name, mutate(rng, name, compression), cuts if not datagram else [], datagram, compression)


@pytest.mark.slow
@pytest.mark.parametrize("name,datagram", ALL_MODES)
@settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), raw=st.booleans(), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_fuzz_long(name, datagram, seed, raw, cuts):
    """The opt-in long run: 100,000 inputs per decoder (TUNRING_LONG=1)."""
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 3000)) if raw else mutate(rng, name)
    run_fuzz(name, data, cuts, datagram)


# -- writes stay inside the packets -------------------------------------------------
def _changed(before: bytes, after: bytes, chunk: int = 64) -> list[int]:
    """Offsets of the bytes that differ (chunked compare, then byte by byte)."""
    out = []
    for i in range(0, len(before), chunk):
        if before[i : i + chunk] != after[i : i + chunk]:
            out += [j for j in range(i, min(i + chunk, len(before))) if before[j] != after[j]]
    return out


@pytest.mark.parametrize("name,datagram", ALL_MODES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_decoders_write_only_inside_slots_they_allocated(name, datagram, seed, cuts):
    """Snapshot the ring the codec writes into around every call: every changed byte
    lies in a slot allocated to the codec (or the ring's Tail word)."""
    from tunring import layout as L

    rng = random.Random(seed)
    data = mutate(rng, name)
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, capacity=0x20000)
    session = ring.session
    slots: list[tuple[int, int]] = []
    allocate = session.allocate

    def recording_allocate(size):
        p = allocate(size)
        slots.append((p.lo, p.hi))
        return p

    session.allocate = recording_allocate
    codec = cls(session, datagram=datagram, max_payload=2048)
    ring_bytes = ring.receive_ring
    data_at = L.HEADER_SIZE

    def check(before: bytes) -> None:
        for off in _changed(before, bytes(ring_bytes)):
            if off < data_at:
                assert L.TAIL <= off < L.TAIL + 4, f"ring header byte {off} written"
                continue
            x = off - data_at
            assert any(lo <= x < hi for lo, hi in slots), f"byte {x} written outside every allocated slot"

    bounds = sorted({c % (len(data) + 1) for c in cuts} | {len(data)})
    pos = 0
    try:
        for end in bounds:
            while pos < end:
                before = bytes(ring_bytes)
                if datagram:
                    codec.feed(data[pos:end])
                    pos = end
                else:
                    view = codec.want()
                    k = min(len(view), end - pos)
                    view[:k] = data[pos:end][:k]
                    pos += k
                    codec.received(k)
                check(before)
                ring.drain()
                slots.clear()  # earlier slots were sent or cancelled: not ours any more
                if codec.packet is not None:
                    slots.append((codec.packet.lo, codec.packet.hi))
        codec.close()
    except FramingError:
        pass

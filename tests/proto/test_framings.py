"""Vectors for every framing, checked against the independent encoders in framing_ref."""

from __future__ import annotations

import random

import pytest

import framing_ref as ref
from tunring.errors import FramingError
from tunring.proto import FRAMINGS, Control, Disconnect, DpdRequest, DpdResponse, Dropped, Keepalive, Terminate
from tunring.proto.cisco import Cstp, Dtls
from tunring.proto.gpst import Gpst
from tunring.proto.oncp import Oncp
from tunring.proto.f5 import F5
from tunring.proto.fortinet import Fortinet
from tunring.proto.ppp import RawPpp
from tunring.proto.pulse import Pulse

IP4 = ref.ipv4(b"hello, ring")
IP6 = ref.ipv6(b"hello, six")


def decode(cls, records: list[bytes], **kwargs):
    """Read whole records into the codec as a transport would, one per read (datagram framings:
    one per datagram); return (packets, events, codec)."""
    ring = ref.Ring(cls)
    codec = cls(ring.session, **kwargs)
    events = []
    for record in records:
        events += ref.recv_into(codec, record)
        ring.drain()
    if not codec.datagram:
        events += codec.close()
    ring.drain()
    assert ring.adapter.stats.discards == 0
    return ring.got, events, codec


@pytest.mark.parametrize("name", sorted(FRAMINGS))
def test_data_vector_matches_reference(name):
    cls = FRAMINGS[name]
    enc = ref.REFERENCE[name]
    records = [enc(IP4), enc(IP6)]
    got, events, codec = decode(cls, records)
    assert got == [IP4, IP6]
    assert events == []
    assert codec.stats.rx_packets == 2 and codec.stats.rx_copies == 0


IN_PLACE_TX = sorted(n for n in FRAMINGS if "hdlc" not in n)  # escaping expands: HDLC cannot


@pytest.mark.parametrize("name", IN_PLACE_TX)
def test_encode_in_place_matches_reference(name):
    cls = FRAMINGS[name]
    ring = ref.Ring(cls)
    codec = cls(ring.session)
    for i, ip in enumerate((IP4, IP6)):
        p = ring.inject(ip)
        data_start = p.start
        wire = codec.encode(p)
        # The header went into the headroom: the IP bytes did not move.
        assert p.start == data_start - cls.headroom
        expected = ref.pulse(ip, seq=i) if name == "pulse" else ref.REFERENCE[name](ip)
        assert bytes(wire) == expected
        assert wire.obj is p.buf.obj  # a view into ring memory, not a copy
        ring.session.release(p)
    assert codec.stats.tx_copies == 0 and codec.stats.tx_packets == 2


@pytest.mark.parametrize("name", sorted(n for n, c in FRAMINGS.items() if c.headroom > 4))
def test_encode_without_headroom_copies_and_counts(name):
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, lead=0)  # the slot's 4-byte Size field is all the headroom
    codec = cls(ring.session)
    p = ring.inject(IP4)
    wire = codec.encode(p)
    assert codec.stats.tx_copies == 1
    assert bytes(wire) == ref.REFERENCE[name](IP4)


def test_decode_with_too_little_headroom_moves_and_counts():
    ring = ref.Ring(Gpst, lead=0)  # 4 bytes of headroom for a 16-byte header
    codec = Gpst(ring.session)
    codec.feed(ref.gpst(IP4) + ref.gpst(IP6))
    codec.close()
    assert ring.drain() == [IP4, IP6]
    assert codec.stats.rx_copies >= 2


CISCO_CONTROLS = [
    (3, b"\x01\x02", DpdRequest(b"\x01\x02")),
    (4, b"", DpdResponse(b"")),
    (5, b"\xb0bye", Disconnect(b"\xb0bye")),
    (7, b"", Keepalive(b"")),
    (9, b"", Terminate(b"")),
]


@pytest.mark.parametrize("kind,payload,event", CISCO_CONTROLS)
def test_cstp_controls(kind, payload, event):
    got, events, codec = decode(Cstp, [ref.cstp(IP4), ref.cstp(payload, kind), ref.cstp(IP6)])
    assert got == [IP4, IP6]
    assert events == [event]
    assert codec.stats.rx_control == 1
    assert Cstp(ref.Ring(Cstp).session).encode_control(event) == ref.cstp(payload, kind)


@pytest.mark.parametrize("kind,payload,event", CISCO_CONTROLS)
def test_dtls_controls(kind, payload, event):
    got, events, _ = decode(Dtls, [ref.dtls(IP4), ref.dtls(payload, kind), ref.dtls(IP6)])
    assert got == [IP4, IP6]
    assert events == [event]
    assert Dtls(ref.Ring(Dtls).session).encode_control(event) == ref.dtls(payload, kind)


def test_cstp_unknown_type_dropped_stream_continues():
    got, events, codec = decode(Cstp, [ref.cstp(IP4), ref.cstp(b"xyz", 0x42), ref.cstp(IP6)])
    assert got == [IP4, IP6]
    assert len(events) == 1 and isinstance(events[0], Dropped)
    assert events[0].offset == len(ref.cstp(IP4)) and events[0].length == 8 + 3
    assert codec.stats.rx_drops == 1


def test_gpst_keepalive_and_unknown_ethertype():
    records = [ref.gpst(b"", ethertype=0), ref.gpst(IP4), ref.gpst(b"arp!", ethertype=0x0806), ref.gpst(IP6)]
    got, events, codec = decode(Gpst, records)
    assert got == [IP4, IP6]
    assert events[0] == Keepalive(b"")
    assert isinstance(events[1], Dropped) and "0x0806" in events[1].reason
    assert Gpst(ref.Ring(Gpst).session).encode_control(Keepalive()) == ref.gpst(b"", ethertype=0)


def test_pulse_control_records_and_sequence():
    records = [ref.pulse(b"cfg", kind=0x96), ref.pulse(IP4, seq=7), ref.pulse(b"x", kind=1, vendor=0x5597)]
    got, events, _ = decode(Pulse, records)
    assert got == [IP4]
    assert events == [Control(0x96, b"cfg"), Control(1, b"x")]
    ring = ref.Ring(Pulse)
    codec = Pulse(ring.session)
    wires = []
    for ip in (IP4, IP6):
        p = ring.inject(ip)
        wires.append(bytes(codec.encode(p)))
        ring.session.release(p)
    assert wires == [ref.pulse(IP4, seq=0), ref.pulse(IP6, seq=1)]


def test_oncp_kmp_300_with_several_ipv4_packets():
    a, b, c = ref.ipv4(b"a" * 10), ref.ipv4(b"b" * 300), ref.ipv4(b"c")
    got, events, codec = decode(Oncp, [ref.oncp(a + b + c)])
    assert got == [a, b, c]
    assert codec.stats.rx_copies == 2  # the first in place, the rest copied


def test_oncp_kmp_messages_split_across_records():
    a, b = ref.ipv4(b"a" * 100), ref.ipv4(b"b" * 50)
    stream = ref.kmp(a) + ref.kmp(b"conf", kind=301) + ref.kmp(b)
    # Cut the KMP stream into records at arbitrary points, including inside headers.
    cuts = [0, 7, 30, 131, 140, 141, len(stream)]
    records = [ref.oncp_record(stream[x:y]) for x, y in zip(cuts, cuts[1:])]
    got, events, _ = decode(Oncp, records)
    assert got == [a, b]
    assert events == [Control(301, b"conf")]


def test_oncp_bad_ip_inside_kmp_is_dropped_rest_kept():
    a = ref.ipv4(b"a" * 10)
    got, events, codec = decode(Oncp, [ref.oncp(a + b"\x00garbage"), ref.oncp(a)])
    assert got == [a, a]
    assert len(events) == 1 and isinstance(events[0], Dropped)


@pytest.mark.parametrize("cls,enc", [(F5, ref.f5), (Fortinet, ref.fortinet)])
def test_ppp_control_frames_and_compressed_headers(cls, enc):
    lcp = b"\xc0\x21" + b"\x09\x01\x00\x08magc"
    records = [
        enc(b"\xff\x03" + lcp, raw_frame=True),
        enc(IP4),
        enc(b"\x00\x21" + IP4, raw_frame=True),  # ACFC
        enc(b"\x57" + IP6, raw_frame=True),  # ACFC + PFC
    ]
    got, events, codec = decode(cls, records)
    assert got == [IP4, IP4, IP6]
    assert events == [Control(0xC021, lcp[2:])]
    assert codec.stats.rx_copies == 2  # short headers: the packet is moved into place
    assert cls(ref.Ring(cls).session).encode_control(Control(0xC021, lcp[2:])) == enc(b"\xff\x03" + lcp, raw_frame=True)


def test_array_control_packets():
    from tunring.proto.array import Array

    control = bytes([0x45, 0, 0, 24, 0, 0, 0, 0, 64, 255, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9])
    got, events, _ = decode(Array, [IP4, control, IP6])
    assert got == [IP4, IP6]
    assert events == [Control(0x0102, control)]
    got, events, _ = decode(Array, [IP4, control], datagram=True)
    assert got == [IP4] and events == [Control(0x0102, control)]


def test_raw_ppp_datagrams():
    got, events, _ = decode(RawPpp, [ref.ppp(IP4), b"\x80\x21\x01\x01\x00\x04", ref.ppp(IP6)])
    assert got == [IP4, IP6]
    assert events == [Control(0x8021, b"\x01\x01\x00\x04")]


@pytest.mark.parametrize("name", sorted(FRAMINGS))
def test_session_lead_gives_the_headroom(name):
    cls = FRAMINGS[name]
    assert 4 + cls.session_lead() >= cls.headroom
    assert cls.session_lead() == 0 or 4 + cls.session_lead() == cls.headroom


def test_random_mixed_traffic_every_framing():
    rng = random.Random(3)
    for name, cls in FRAMINGS.items():
        ips = [ref.random_ip(rng) for _ in range(50)]
        got, _, codec = decode(cls, [ref.REFERENCE[name](ip) for ip in ips])
        assert got == ips, name


def test_datagram_errors_are_counted_drops():
    records = [b"", ref.dtls(IP4), ref.dtls(b"?", 0x55)]
    got, events, codec = decode(Dtls, records[1:])
    assert got == [IP4] and codec.stats.rx_drops == 1
    ring = ref.Ring(F5)
    codec = F5(ring.session, datagram=True)
    events = codec.feed(ref.f5(IP4)[:-1])  # length disagrees with the datagram
    events += codec.feed(b"\xf5\x01" + ref.f5(IP4)[2:])  # wrong magic
    events += codec.feed(b"\xf5")  # truncated header
    events += codec.feed(ref.f5(IP6))
    assert ring.drain() == [IP6]
    assert [type(e) for e in events] == [Dropped] * 3 and codec.stats.rx_drops == 3
    assert [e.offset for e in events] == [0, 1, 2]


def test_fortinet_lengths_disagree():
    bad = ref.fortinet(IP4)
    bad = (int.from_bytes(bad[:2], "big") + 1).to_bytes(2, "big") + bad[2:]
    ring = ref.Ring(Fortinet)
    codec = Fortinet(ring.session)
    codec.feed(ref.fortinet(IP6))
    with pytest.raises(FramingError, match="disagree") as info:
        codec.feed(bad)
    assert info.value.offset == len(ref.fortinet(IP6))
    assert ring.drain() == [IP6]  # the good packet before it is kept
    with pytest.raises(FramingError):  # and the codec stays failed
        codec.want()


# Control records written out by hand from the specifications (RFC 1661 for the PPP frames
# inside F5, Fortinet and raw PPP; BACKGROUND.md's header layouts for the rest), independent of
# both tunring's encoders and framing_ref's.
HAND_BUILT_CONTROLS = [
    # IF-T/TLS: vendor 0x0a4c, type 0x96, length 16 + 6, sequence 0, then the payload.
    ("pulse", "00000a4c 00000096 00000016 00000000" + b"config".hex(), Control(0x96, b"config")),
    # oNCP: LE u16 record length 32, then KMP: 6 zero bytes, type 301 (0x012d), the 10 bytes the
    # servers expect, payload length 12.
    ("oncp", "2000 000000000000 012d 01000000010000000000 000c" + b"kmp 301 body".hex(),
     Control(301, b"kmp 301 body")),
    # F5: 0xf500, frame length 12; PPP: FF 03, protocol LCP (C021), Echo-Request 9, id 1,
    # length 8, magic number "abcd".
    ("f5", "f500 000c ff03 c021 09 01 0008 61626364", Control(0xC021, b"\x09\x01\x00\x08abcd")),
    # Fortinet: total 8 + 6, 0x5050, frame length 8; PPP: FF 03, IPCP (8021), Configure-Request
    # id 1 length 4.
    ("fortinet", "000e 5050 0008 ff03 8021 01 01 0004", Control(0x8021, b"\x01\x01\x00\x04")),
    # Raw PPP: FF 03, IPV6CP (8057), Configure-Request id 1 length 4.
    ("ppp", "ff03 8057 01 01 0004", Control(0x8057, b"\x01\x01\x00\x04")),
    # GlobalProtect: magic, ethertype 0 (keepalive), length 0, then LE u32 1 and u32 0.
    ("gpst", "1a2b3c4d 0000 0000 01000000 00000000", Keepalive(b"")),
    # CSTP: "STF" 1, length 4, type 5 (disconnect), 0, reason byte 0xb0 and "bye".
    ("cstp", "53544601 0004 05 00 b0 627965", Disconnect(b"\xb0bye")),
    # DTLS: type 4 (DPD response), then the payload.
    ("dtls", "04 0001", DpdResponse(b"\x00\x01")),
]


@pytest.mark.parametrize("name,wire,event", HAND_BUILT_CONTROLS)
def test_control_records_round_trip(name, wire, event):
    cls = FRAMINGS[name]
    record = bytes.fromhex(wire)
    got, events, _ = decode(cls, [record, ref.REFERENCE[name](IP4)])
    assert events == [event] and got == [IP4]
    assert cls(ref.Ring(cls).session).encode_control(event) == record


def test_controls_a_framing_does_not_have():
    with pytest.raises(ValueError):
        Gpst(ref.Ring(Gpst).session).encode_control(DpdRequest())
    with pytest.raises(ValueError):
        Pulse(ref.Ring(Pulse).session).encode_control(Keepalive())

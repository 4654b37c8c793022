"""ESP receive/transmit rules: every kind of bad input is counted and dropped,
the ring never leaks a slot, good packets around bad ones still arrive."""

from __future__ import annotations

import struct

import pytest
try:
    from esp_support import DELIVERED, assert_ring_clean, drain, ipv4, ipv6, keys, outcome, ring_pair, seal, trailer
except ImportError:  # tests/proto became a package
    from .esp_support import (DELIVERED, assert_ring_clean, drain, ipv4, ipv6, keys, outcome, ring_pair, seal,
                              trailer)

from tunring.errors import FramingError, PacketError, RingFull, SequenceOverflow
from tunring.proto import esp
from tunring.proto.base import Control, Dropped, Keepalive

GCM = esp.AES_GCM_128
CBC = esp.AES_CBC_128_HMAC_SHA1_96
SPI = 0x1001


def make(transform, **kw):
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key, **kw)
    return sa, enc_key, auth_key


def good(transform, seq, inner=None):
    _, enc_key, auth_key = make(transform)
    inner = inner if inner is not None else ipv4(20, ident=seq)
    nh = 4 if inner[0] >> 4 == 4 else 41
    return seal(transform, enc_key, auth_key, SPI, seq, trailer(inner, nh, transform.block_bytes)), inner


def bad_datagrams(transform):
    """(reason, datagram) pairs; each authenticates unless the reason is about the ICV."""
    _, k, a = make(transform)
    block = transform.block_bytes
    inner = ipv4(20)

    def sealed(seq, plaintext):
        return seal(transform, k, a, SPI, seq, plaintext)

    ok, _ = good(transform, 50)
    yield esp.SHORT, b"\x00\x00\x10"
    yield esp.SHORT, ok[: transform.header_bytes + 1]
    yield esp.UNKNOWN_SPI, struct.pack(">I", SPI + 1) + ok[4:]
    yield esp.UNKNOWN_SPI, bytes(4) + ok[4:]  # SPI 0 without UDP encapsulation
    yield esp.BAD_ICV, ok[:-1] + bytes([ok[-1] ^ 1])
    yield esp.BAD_ICV, ok[: transform.header_bytes] + bytes([ok[transform.header_bytes] ^ 0x80]) + ok[transform.header_bytes + 1 :]
    yield esp.BAD_ICV, ok[:4] + struct.pack(">I", 51) + ok[8:]  # sequence number changed
    yield esp.BAD_LENGTH, ok[: len(ok) - transform.icv_bytes - 1] + ok[len(ok) - transform.icv_bytes :]
    yield esp.BAD_PADDING, sealed(60, trailer(inner, 4, block, pad_bytes=bytes(-(len(inner) + 2) % block or block)))
    yield esp.BAD_PADDING, sealed(61, inner[: len(inner) - len(inner) % block] + bytes(block - 2) + bytes([250, 4]))
    yield esp.NEXT_HEADER, sealed(62, trailer(inner, 17, block))
    yield esp.DUMMY, sealed(63, trailer(inner, 59, block))
    yield esp.BAD_INNER, sealed(64, trailer(inner, 41, block))  # says IPv6, is IPv4
    yield esp.BAD_INNER, sealed(65, trailer(ipv6(8), 4, block))  # says IPv4, is IPv6
    yield esp.BAD_INNER, sealed(66, trailer(inner[:2] + struct.pack(">H", 500) + inner[4:], 4, block))
    yield esp.BAD_INNER, sealed(67, trailer(inner[:10], 4, block))  # shorter than an IPv4 header


@pytest.mark.parametrize("transform", [GCM, CBC], ids=lambda t: t.name)
def test_every_bad_datagram_is_counted_dropped_and_leaves_no_trace(transform):
    sa, _, _ = make(transform)
    expected = dict.fromkeys(esp.DROP_REASONS, 0)
    delivered = []
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa])
        for i, (reason, datagram) in enumerate(bad_datagrams(transform)):
            assert inbound.feed(datagram) == [Dropped(2 * i, len(datagram), reason)]
            expected[reason] += 1
            assert inbound.stats.drops == expected
            assert_ring_clean(session)
            # A good packet right after the bad one still gets through.
            datagram, inner = good(transform, 100 + i)  # bad ones stay inside the window
            assert outcome(inbound.feed(datagram)) == DELIVERED
            delivered.append(inner)
        assert drain(adapter) == delivered
        assert_ring_clean(session)


@pytest.mark.parametrize("transform", [GCM, CBC], ids=lambda t: t.name)
def test_replayed_and_too_old_packets_are_dropped(transform):
    sa, _, _ = make(transform, replay_window=64)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa])
        for seq in (100, 100, 37, 36, 99, 99, 1):
            inbound.feed(good(transform, seq)[0])
        assert [p[4:6] for p in drain(adapter)] == [ipv4(20, seq)[4:6] for seq in (100, 37, 99)]
        assert_ring_clean(session)
    assert inbound.stats.drops[esp.REPLAY] == 2
    assert inbound.stats.drops[esp.TOO_OLD] == 2


def test_forged_packets_do_not_move_the_window():
    sa, _, _ = make(GCM)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa])
        inbound.feed(good(GCM, 5)[0])
        forged = bytearray(good(GCM, 10_000)[0])
        forged[-1] ^= 1
        assert outcome(inbound.feed(forged)) == esp.BAD_ICV
        assert sa.window.top == 5
        assert outcome(inbound.feed(good(GCM, 4)[0])) == DELIVERED
        assert len(drain(adapter)) == 2


def test_tfc_padding_inside_the_payload_is_cut_by_the_inner_length():
    sa, k, a = make(GCM)
    inner = ipv6(30)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa])
        datagram = seal(GCM, k, a, SPI, 1, trailer(inner + bytes(200), 41, 4))
        assert outcome(inbound.feed(datagram)) == DELIVERED
        assert drain(adapter) == [inner]


def test_udp_encapsulation_keepalive_and_non_esp_marker():
    sa, _, _ = make(GCM)
    ike = b"\x00\x00\x00\x00" + b"IKE message bytes"
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa], udp_encap=True)
        assert inbound.feed(b"\xff") == [Keepalive()]
        assert inbound.feed(ike) == [Control(esp.IKE_MESSAGE, b"IKE message bytes")]
        assert outcome(inbound.feed(b"\xfe")) == esp.SHORT
        assert outcome(inbound.feed(good(GCM, 1)[0])) == DELIVERED
        assert len(drain(adapter)) == 1
        assert_ring_clean(session)
    assert inbound.stats.rx_control == 2  # the keepalive and the IKE message
    assert inbound.stats.drops[esp.SHORT] == 1
    # Without UDP encapsulation the same bytes are just bad ESP.
    with ring_pair() as (session, adapter):
        plain = esp.SecurityAssociations(session, [make(GCM)[0]])
        assert outcome(plain.feed(b"\xff")) == esp.SHORT
        assert outcome(plain.feed(ike)) == esp.UNKNOWN_SPI
    assert plain.stats.drops[esp.SHORT] == 1 and plain.stats.drops[esp.UNKNOWN_SPI] == 1


@pytest.mark.parametrize("esn, last", [(False, 0xFFFFFFFF), (True, 0xFFFFFFFFFFFFFFFF)])
def test_sequence_overflow_stops_the_sa(esn, last):
    sa, _, _ = make(GCM, esn=esn, seq=last - 1)
    with ring_pair() as (session, adapter):
        adapter.deliver(ipv4(10))
        adapter.deliver(ipv4(10))
        first, second = session.receive(), session.receive()
        sa.encrypt(first)
        assert sa.seq == last
        before = (second.start, second.end, bytes(second.data))
        with pytest.raises(SequenceOverflow, match="rekey"):
            sa.encrypt(second)
        assert (second.start, second.end, bytes(second.data)) == before  # untouched
        sa.seq = 0  # a stopped SA stays stopped even if someone rewinds it
        with pytest.raises(SequenceOverflow):
            sa.encrypt(second)
        session.release_many([first, second])


def test_room_is_checked_before_anything_is_written():
    sa, _, _ = make(CBC)
    with ring_pair(lead=0, trail=0) as (session, adapter):
        adapter.deliver(ipv4(16))
        packet = session.receive()
        with pytest.raises(PacketError, match="headroom"):
            sa.encrypt(packet)
        assert bytes(packet.data) == ipv4(16) and sa.seq == 0
        session.release(packet)
        inbound = esp.SecurityAssociations(session, [sa])
        with pytest.raises(PacketError, match="lead"):
            inbound.want()
        assert_ring_clean(session)


def test_encrypt_refuses_what_is_not_ip():
    sa, _, _ = make(GCM)
    with ring_pair() as (session, adapter):
        adapter.deliver(ipv4(10))
        packet = session.receive()
        packet.buf[packet.start] = 0x15
        with pytest.raises(FramingError):
            sa.encrypt(packet)
        session.release(packet)


def test_configuration_errors():
    enc_key, auth_key = keys(CBC)
    with pytest.raises(ValueError, match="key"):
        esp.SecurityAssociation(SPI, CBC, enc_key[:-1], auth_key)
    with pytest.raises(ValueError, match="authentication key"):
        esp.SecurityAssociation(SPI, CBC, enc_key, b"")
    with pytest.raises(ValueError, match="SPI"):
        esp.SecurityAssociation(5, CBC, enc_key, auth_key)
    with pytest.raises(ValueError, match="unknown ESP transform"):
        esp.SecurityAssociation(SPI, "des", enc_key, auth_key)
    with pytest.raises(ValueError, match="replay window"):
        esp.SecurityAssociation(SPI, CBC, enc_key, auth_key, replay_window=esp.MAX_REPLAY_WINDOW + 1)
    assert esp.SecurityAssociation(SPI, CBC, enc_key, auth_key, replay_window=4096).window.size == 4096
    with ring_pair() as (session, _):
        inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(SPI, CBC, enc_key, auth_key)])
        gcm_sa = make(GCM)[0]
        gcm_sa.spi = SPI + 1
        with pytest.raises(ValueError, match="header"):
            inbound.add(gcm_sa)
        with pytest.raises(ValueError, match="already"):
            inbound.add(esp.SecurityAssociation(SPI, CBC, enc_key, auth_key))
        with pytest.raises(ValueError, match="add a SecurityAssociation first"):
            esp.SecurityAssociations(session).want()


def test_rekey_two_inbound_sas_side_by_side():
    old, k, a = make(GCM)
    new = esp.SecurityAssociation(0x2002, GCM, k, a)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [old, new])
        assert outcome(inbound.feed(good(GCM, 1)[0])) == DELIVERED
        assert outcome(inbound.feed(seal(GCM, k, a, 0x2002, 1, trailer(ipv4(3), 4, 4)))) == DELIVERED
        inbound.remove(SPI)
        assert outcome(inbound.feed(good(GCM, 2)[0])) == esp.UNKNOWN_SPI
        assert len(drain(adapter)) == 2
    assert inbound.stats.drops[esp.UNKNOWN_SPI] == 1


class Feed:
    """A datagram source with a socket's recv_into contract (BlockingIOError when empty)."""

    def __init__(self, datagrams):
        self.datagrams = list(datagrams)

    def recv_into(self, view):
        if not self.datagrams:
            raise BlockingIOError
        datagram = self.datagrams.pop(0)
        view[: len(datagram)] = datagram
        return len(datagram)


def test_receive_from_reads_until_the_source_is_empty_and_leaks_nothing():
    sa, k, a = make(GCM)
    inners = [ipv4(i * 50, ident=i) for i in range(5)]
    datagrams = [seal(GCM, k, a, SPI, i + 1, trailer(p, 4, 4)) for i, p in enumerate(inners)]
    datagrams.insert(2, b"\x01\x02")  # a bad one in the middle
    feed = Feed(datagrams)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa], max_datagram_bytes=1500)
        assert inbound.receive_from(feed.recv_into, max_count=4) == (4, [Dropped(2, 2, esp.SHORT)])
        assert inbound.receive_from(feed.recv_into) == (2, [])
        assert inbound.receive_from(feed.recv_into) == (0, [])
        assert drain(adapter) == inners
        assert_ring_clean(session)
    assert inbound.stats.drops[esp.SHORT] == 1
    assert inbound.stats.rx_copies == inbound.stats.rx_copy_bytes == 0  # read in place


def test_encrypt_many_round_trips():
    out, k, a = make(CBC)
    inners = [ipv4(10), ipv6(300), ipv4(1000)]
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [make(CBC)[0]])
        for inner in inners:
            adapter.deliver(inner)
        packets = session.receive_many(10)
        datagrams = [bytes(d) for d in out.encrypt_many(packets)]
        session.release_many(packets)
        for datagram in datagrams:
            assert outcome(inbound.feed(datagram)) == DELIVERED
        assert drain(adapter) == inners


def test_a_full_ring_cuts_a_batch_short_without_losing_its_events():
    sa, k, a = make(GCM)
    inner = ipv4(900)
    datagrams = [b"\xff"] + [seal(GCM, k, a, SPI, i + 1, trailer(inner, 4, 4)) for i in range(400)]
    feed = Feed(datagrams)
    with ring_pair() as (session, adapter):  # 128 KiB: far fewer than 400 packets of ~1 KiB fit
        inbound = esp.SecurityAssociations(session, [sa], udp_encap=True)
        count, events = inbound.receive_from(feed.recv_into, max_count=1000)
        assert 1 < count < len(datagrams) and events == [Keepalive()]
        assert len(feed.datagrams) == len(datagrams) - count  # nothing read was lost
        with pytest.raises(RingFull):
            inbound.receive_from(feed.recv_into)
        assert len(drain(adapter)) == count - 1
        assert inbound.receive_from(feed.recv_into, max_count=1) == (1, [])
        assert_ring_clean(session)

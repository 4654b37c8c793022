"""The PPP engine against packets built by hand from RFC 1661 (LCP), RFC 1332/1877 (IPCP) and
RFC 5072 (IPV6CP), on a fake clock.  Expected bytes are written out here, field by field, never
taken from the engine's own encoder."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from tunring.proto.base import Control
from tunring.proto.ppp_engine import (
    IPCP,
    IPV4,
    IPV6CP,
    LCP,
    LayerDown,
    LayerUp,
    LinkFinished,
    PppConfig,
    PppEngine,
)
from tunring.proto.ppp_fsm import ACK_SENT, OPENED, REQ_SENT, STOPPED, Timing

CCP = 0x80FD  # Compression Control Protocol: a protocol the engine does not run


def pkt(code: int, ident: int, data: bytes = b"") -> bytes:
    """RFC 1661 5: Code, Identifier, Length (of the whole packet), Data."""
    return bytes([code, ident]) + struct.pack(">H", 4 + len(data)) + data


def opt(kind: int, value: bytes = b"") -> bytes:
    """RFC 1661 6: Type, Length (of the whole option), Data."""
    return bytes([kind, 2 + len(value)]) + value


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def ip(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


GW = dict(local_ipv4="10.9.0.1", peer_ipv4="10.9.0.2", dns=("10.9.0.53", "10.9.0.54"))


def gateway(**kw) -> PppEngine:
    return PppEngine(PppConfig(**{**GW, **kw}), rng=random.Random(7))


def frames(out: list[Control], protocol: int | None = None) -> list[bytes]:
    return [c.payload for c in out if protocol is None or c.kind == protocol]


def open_lcp(engine: PppEngine, now: float = 0.0, peer_options: bytes = b"") -> list[Control]:
    """Start ``engine`` and play a peer that acks its request and asks for ``peer_options``."""
    if engine.phase == "Dead":
        engine.start(now)
    request = engine.lcp._request
    request = pkt(1, request[0], b"".join(opt(k, v) for k, v in request[1]))
    out = engine.receive(LCP, pkt(2, request[1], request[4:]), now)  # Configure-Ack of the request
    out += engine.receive(LCP, pkt(1, 0x42, peer_options), now)
    assert engine.lcp.state == OPENED
    return out


# -- LCP ------------------------------------------------------------------------------------
def test_first_lcp_request_is_sent_at_once_with_mru_accm_magic():
    e = gateway(mru=1400, hdlc=True, rx_accm=0)
    out = e.start(0.0)
    assert len(out) == 1 and out[0].kind == LCP
    magic = e.lcp_options.magic
    assert magic != 0
    assert out[0].payload == pkt(1, 1, opt(1, u16(1400)) + opt(2, u32(0)) + opt(5, u32(magic)))


def test_default_mru_is_not_requested_and_compression_on_request():
    e = gateway(request_compression=True, magic=False)
    assert frames(e.start(0.0)) == [pkt(1, 1, opt(7) + opt(8))]


def test_peer_request_acked_verbatim_and_recorded():
    e = gateway()
    e.start(0.0)
    options = opt(1, u16(1450)) + opt(2, u32(0x000A0000)) + opt(5, u32(0x11223344)) + opt(7) + opt(8)
    out = e.receive(LCP, pkt(1, 0x33, options), 0.0)
    assert frames(out) == [pkt(2, 0x33, options)]
    assert e.lcp.state == ACK_SENT
    o = e.lcp_options
    assert (o.peer_mru, o.peer_accm, o.peer_magic, o.tx_pfc, o.tx_acfc) == (1450, 0x000A0000, 0x11223344, True, True)


def test_unknown_and_unwanted_options_are_rejected_alone():
    e = gateway(accept_compression=False)
    e.start(0.0)
    pap = opt(3, u16(0xC023))
    quality = opt(4, u16(0xC025) + u32(100))
    options = opt(1, u16(1500)) + pap + opt(5, u32(9)) + quality + opt(7) + opt(8)
    out = e.receive(LCP, pkt(1, 5, options), 0.0)
    # RFC 1661 5.4: only the rejected options, in their order, unchanged
    assert frames(out) == [pkt(4, 5, pap + quality + opt(7) + opt(8))]
    assert e.lcp.state == REQ_SENT


def test_malformed_option_lengths_are_rejected_or_dropped():
    e = gateway()
    e.start(0.0)
    out = e.receive(LCP, pkt(1, 6, bytes([1, 3, 5])), 0.0)  # MRU with 1 data byte: a known option, bad length
    assert frames(out) == [pkt(4, 6, bytes([1, 3, 5]))]
    before = e.stats.rx_ignored
    assert e.receive(LCP, pkt(1, 7, bytes([1, 9, 0, 0])), 0.0) == []  # option runs past the packet
    assert e.stats.rx_ignored == before + 1


def test_small_mru_is_naked_once_then_accepted():
    e = gateway(min_peer_mru=1400)
    e.start(0.0)
    out = e.receive(LCP, pkt(1, 1, opt(1, u16(1300))), 0.0)
    assert frames(out) == [pkt(3, 1, opt(1, u16(1400)))]
    out = e.receive(LCP, pkt(1, 2, opt(1, u16(1300))), 0.0)  # it insists: its MRU is respected
    assert frames(out) == [pkt(2, 2, opt(1, u16(1300)))]
    assert e.lcp_options.peer_mru == 1300


def test_absurd_mru_is_always_naked():
    e = gateway()
    e.start(0.0)
    for ident in (1, 2):
        assert frames(e.receive(LCP, pkt(1, ident, opt(1, u16(20))), 0.0)) == [pkt(3, ident, opt(1, u16(1500)))]


def test_nak_of_our_mru_adopted_within_max_mru():
    e = gateway(mru=1400, max_mru=1500, magic=False)
    first = frames(e.start(0.0))[0]
    out = e.receive(LCP, pkt(3, first[1], opt(1, u16(1480))), 0.0)
    assert frames(out) == [pkt(1, 2, opt(1, u16(1480)))]  # new identifier, adopted value
    out = e.receive(LCP, pkt(3, 2, opt(1, u16(9000))), 0.0)
    assert frames(out) == [pkt(1, 3, opt(1, u16(1480)))]  # above max_mru: kept


def test_reject_of_magic_drops_it_and_stale_replies_are_ignored():
    e = gateway(mru=1400)
    first = frames(e.start(0.0))[0]
    magic = e.lcp_options.magic
    out = e.receive(LCP, pkt(4, first[1], opt(5, u32(magic))), 0.0)
    assert frames(out) == [pkt(1, 2, opt(1, u16(1400)))]
    # an Ack for the old identifier, or one whose options differ, is silently discarded
    assert e.receive(LCP, pkt(2, 1, first[4:]), 0.0) == []
    assert e.receive(LCP, pkt(2, 2, opt(1, u16(1500))), 0.0) == []
    assert e.lcp.state == REQ_SENT
    e.receive(LCP, pkt(2, 2, opt(1, u16(1400))), 0.0)
    assert e.lcp.state == 7  # Ack-Rcvd


def test_reject_of_an_option_never_sent_is_invalid():
    e = gateway(mru=1400, magic=False)
    first = frames(e.start(0.0))[0]
    assert e.receive(LCP, pkt(4, first[1], opt(7)), 0.0) == []
    assert e.lcp.state == REQ_SENT and e.stats.rx_ignored == 1


def test_loopback_detected_by_magic_number():
    e = gateway()
    request = frames(e.start(0.0))[0]
    magic = e.lcp_options.magic
    # Our own request comes back: RFC 1661 6.4, Nak with a different number, and pick a new one.
    out = e.receive(LCP, request, 0.0)
    naks = frames(out)
    assert len(naks) == 1 and naks[0][:6] == pkt(3, 1, opt(5, u32(0)))[:6]
    assert naks[0][6:10] != u32(magic) and e.lcp_options.magic != magic
    # A link that keeps looping our requests back is given up.
    t = 0.0
    for _ in range(20):
        t += 3.0
        for frame in frames(e.tick(t)) + naks:
            if frame[0] == 1:
                e.receive(LCP, frame, t)
        if e.finished:
            break
    finished = [ev for ev in e.take_events() if isinstance(ev, LinkFinished)]
    assert finished and "looped back" in finished[0].reason


def test_restart_timer_and_max_configure_on_a_silent_peer():
    e = gateway(magic=False, mru=1400)
    sent = [(0.0, frames(e.start(0.0))[0])]
    assert e.deadline == 3.0
    t = 0.0
    while not e.finished and t < 100:
        t = e.deadline
        for frame in frames(e.tick(t)):
            sent.append((t, frame))
    # RFC 1661 4.6: Max-Configure (10) requests, one per restart period, then give up (TO-).
    assert [s for s, _ in sent] == [3.0 * i for i in range(10)]
    assert [f[1] for _, f in sent] == list(range(1, 11))  # a new identifier each time
    assert t == 30.0 and e.lcp.state == STOPPED
    assert e.take_events() == [LinkFinished("LCP: no Configure-Ack from the peer")]


def test_lost_ack_retransmits_and_recovers():
    e = gateway(magic=False, mru=1400)
    e.start(0.0)
    e.receive(LCP, pkt(1, 9, b""), 0.5)  # the peer's request: acked, but our request's Ack is lost
    out = e.tick(3.0)
    assert frames(out) == [pkt(1, 2, opt(1, u16(1400)))]
    e.receive(LCP, pkt(2, 2, opt(1, u16(1400))), 3.1)
    assert e.lcp.state == OPENED and LayerUp(LCP) in e.take_events()


def test_peer_that_naks_forever_is_given_up_within_the_budget():
    timing = Timing()
    e = gateway(magic=False, mru=1400, timing=timing)
    out = e.start(0.0)
    t = 0.0
    for _ in range(1000):
        request = frames(out)[-1]
        out = e.receive(LCP, pkt(3, request[1], opt(1, u16(1200))), t)  # below max_mru: adopted... and naked again
        t += 0.01
        if e.finished or not out:
            break
    assert e.finished and "no agreement" in e.reason
    assert t < timing.budget_s()


def test_peer_that_keeps_requesting_rejected_options_is_given_up():
    e = gateway(magic=False)
    e.start(0.0)
    for ident in range(200):
        e.receive(LCP, pkt(1, ident & 0xFF, opt(3, u16(0xC023))), ident * 0.01)
        if e.finished:
            break
    assert e.finished and ident < 40


def test_max_failure_turns_naks_into_rejects():
    e = gateway(magic=False, min_peer_mru=0)
    e.start(0.0)
    replies = [frames(e.receive(LCP, pkt(1, i, opt(1, u16(50))), 0.0))[0][0] for i in range(7)]
    assert replies == [3, 3, 3, 3, 3, 4, 4]  # Max-Failure = 5 naks without an ack, then rejects


def test_terminate_request_from_peer():
    e = gateway()
    open_lcp(e)
    e.take_events()
    out = e.receive(LCP, pkt(5, 0x77, b"bye"), 10.0)
    assert frames(out) == [pkt(6, 0x77)]
    assert not e.finished and e.deadline == 13.0  # RFC 1661 4.1 RTR in Opened: zrc, wait one restart period
    e.tick(13.0)
    events = e.take_events()
    assert LayerDown(LCP) in events and events[-1] == LinkFinished("LCP: the peer sent Terminate-Request")


def test_our_close_with_and_without_terminate_ack():
    e = gateway()
    open_lcp(e)
    out = e.close(1.0, "operator")
    assert frames(out) == [pkt(5, 2)]  # identifiers continue after the Configure-Request's 1
    e.receive(LCP, pkt(6, 2), 1.5)
    assert e.finished and e.take_events()[-1] == LinkFinished("operator")

    e = gateway()
    open_lcp(e)
    sent = frames(e.close(1.0))
    t = 1.0
    while not e.finished:
        t = e.deadline
        sent += frames(e.tick(t))
    assert [f[0] for f in sent] == [5, 5] and t == 7.0  # Max-Terminate = 2 requests, then done


def test_unknown_code_gets_code_reject():
    e = gateway()
    open_lcp(e)
    bogus = pkt(0x0E, 0x10, b"\x01\x02")
    out = e.receive(LCP, bogus, 1.0)
    assert len(out) == 1 and out[0].payload[0] == 7 and out[0].payload[4:] == bogus
    assert e.lcp.state == OPENED


def test_code_reject_of_configure_request_is_catastrophic():
    e = gateway()
    open_lcp(e)
    e.receive(LCP, pkt(7, 3, pkt(1, 1, b"")), 1.0)
    assert e.lcp.state != OPENED
    assert not e.ipv4_open


def test_protocol_reject_for_unknown_protocol_only_when_open():
    e = gateway()
    e.start(0.0)
    assert e.receive(CCP, pkt(1, 1, opt(0x11, b"\x01")), 0.0) == []  # LCP not open: silently dropped
    open_lcp(e)
    ccp = pkt(1, 1, opt(0x11, b"\x01"))
    out = e.receive(CCP, ccp, 1.0)
    lcp = frames(out, LCP)
    assert len(lcp) == 1 and lcp[0][0] == 8 and lcp[0][4:] == u16(CCP) + ccp
    assert e.stats.rx_unknown_protocol == 2


def test_ncp_packets_before_lcp_opened_are_discarded():
    e = gateway()
    e.start(0.0)
    assert e.receive(IPCP, pkt(1, 1, opt(3, ip("0.0.0.0"))), 0.0) == []
    assert e.stats.rx_ignored == 1


def test_malformed_packets_are_counted():
    e = gateway()
    e.start(0.0)
    assert e.receive(LCP, b"\x01\x01\x00", 0.0) == []  # shorter than the header
    assert e.receive(LCP, b"\x01\x01\x00\x09\x01", 0.0) == []  # length past the frame
    assert e.receive(LCP, b"\x01\x01\x00\x03", 0.0) == []  # length shorter than the header
    assert e.stats.rx_malformed == 3
    # Padding after Length is ignored (RFC 1661 5): the request is answered as if it were absent.
    assert frames(e.receive(LCP, pkt(1, 4, b"") + b"\0\0\0", 0.0)) == [pkt(2, 4, b"")]


# -- echo ---------------------------------------------------------------------------------------
def test_echo_request_answered_with_our_magic():
    e = gateway()
    e.start(0.0)
    assert e.receive(LCP, pkt(9, 1, u32(0x5A5A5A5A) + b"data"), 0.0) == []  # not open: discarded
    open_lcp(e)
    out = e.receive(LCP, pkt(9, 0x21, u32(0x5A5A5A5A) + b"data"), 1.0)
    assert frames(out) == [pkt(10, 0x21, u32(e.lcp_options.magic) + b"data")]
    assert e.receive(LCP, pkt(11, 0x22, u32(0x5A5A5A5A)), 1.0) == []  # Discard-Request


def test_echo_keepalive_declares_a_silent_peer_dead():
    e = gateway(echo_interval_s=5.0, echo_failures=3, ipv4=False)
    open_lcp(e)
    t, sent = 0.0, []
    while not e.finished and t < 60:
        t = e.deadline
        sent += [(t, f) for f in frames(e.tick(t)) if f[0] == 9]
    assert [s for s, _ in sent] == [5.0, 10.0, 15.0]
    assert t == 20.0 and "Echo-Reply" in e.reason
    magic = e.lcp_options.magic
    assert all(f[4:8] == u32(magic) for _, f in sent)


def test_echo_replies_keep_the_link():
    e = gateway(echo_interval_s=5.0, echo_failures=2, ipv4=False)
    open_lcp(e)
    t = 0.0
    for _ in range(10):
        t = e.deadline
        for f in frames(e.tick(t)):
            e.receive(LCP, pkt(10, f[1], u32(0x99)), t + 0.1)
    assert not e.finished and e.stats.echo_replies == 10


# -- IPCP (RFC 1332, RFC 1877) ------------------------------------------------------------------
def test_ipcp_assigns_the_address_and_dns():
    e = gateway()
    out = open_lcp(e)
    ours = frames(out, IPCP)
    assert ours == [pkt(1, 1, opt(3, ip("10.9.0.1")))]  # starts once LCP is open
    ask = opt(3, ip("0.0.0.0")) + opt(129, ip("0.0.0.0")) + opt(130, ip("0.0.0.0")) + opt(131, ip("0.0.0.0"))
    out = e.receive(IPCP, pkt(1, 1, ask), 1.0)
    assert frames(out) == [pkt(4, 1, opt(130, ip("0.0.0.0")))]  # NBNS: nothing to offer
    ask = opt(3, ip("0.0.0.0")) + opt(129, ip("0.0.0.0")) + opt(131, ip("0.0.0.0"))
    out = e.receive(IPCP, pkt(1, 2, ask), 1.0)
    assert frames(out) == [pkt(3, 2, opt(3, ip("10.9.0.2")) + opt(129, ip("10.9.0.53")) + opt(131, ip("10.9.0.54")))]
    assert not e.ipv4_open
    got = opt(3, ip("10.9.0.2")) + opt(129, ip("10.9.0.53")) + opt(131, ip("10.9.0.54"))
    assert frames(e.receive(IPCP, pkt(1, 3, got), 1.0)) == [pkt(2, 3, got)]
    e.receive(IPCP, pkt(2, 1, opt(3, ip("10.9.0.1"))), 1.0)
    assert e.ipv4_open and e.ipcp_options.peer_address == ipaddress.IPv4Address("10.9.0.2")
    assert LayerUp(IPCP) in e.take_events()


def test_ipcp_wrong_address_naked_and_vj_compression_rejected():
    e = gateway()
    open_lcp(e)
    vj = opt(2, u16(0x002D) + bytes([15, 1]))
    out = e.receive(IPCP, pkt(1, 1, opt(3, ip("10.9.0.99")) + vj), 1.0)
    assert frames(out) == [pkt(4, 1, vj)]
    out = e.receive(IPCP, pkt(1, 2, opt(3, ip("10.9.0.99"))), 1.0)
    assert frames(out) == [pkt(3, 2, opt(3, ip("10.9.0.2")))]


def test_client_role_adopts_the_naked_address_and_dns():
    c2 = PppEngine(PppConfig(request_dns=True), rng=random.Random(3))
    out = open_lcp(c2)
    request = frames(out, IPCP)[0]
    assert request == pkt(1, 1, opt(3, ip("0.0.0.0")) + opt(129, ip("0.0.0.0")) + opt(131, ip("0.0.0.0")))
    out = c2.receive(IPCP, pkt(3, 1, opt(3, ip("10.9.0.2")) + opt(129, ip("10.9.0.53"))), 1.0)
    assert frames(out) == [pkt(1, 2, opt(3, ip("10.9.0.2")) + opt(129, ip("10.9.0.53")) + opt(131, ip("0.0.0.0")))]
    out = c2.receive(IPCP, pkt(4, 2, opt(131, ip("0.0.0.0"))), 1.0)
    assert frames(out) == [pkt(1, 3, opt(3, ip("10.9.0.2")) + opt(129, ip("10.9.0.53")))]


def test_protocol_reject_of_ipv6cp_leaves_ipv4():
    e = gateway(ipv6=True, peer_iid=bytes(7) + b"\x02", local_iid=bytes(7) + b"\x01")
    open_lcp(e)
    e.receive(IPCP, pkt(1, 1, opt(3, ip("10.9.0.2"))), 1.0)
    e.receive(IPCP, pkt(2, 1, opt(3, ip("10.9.0.1"))), 1.0)
    e.receive(LCP, pkt(8, 9, u16(IPV6CP) + pkt(1, 1, opt(1, bytes(7) + b"\x01"))), 1.0)
    assert e.ipv4_open and not e.ipv6_open and not e.finished and e.network_open


def test_protocol_reject_of_every_ncp_ends_the_link():
    e = gateway()
    open_lcp(e)
    out = e.receive(LCP, pkt(8, 9, u16(IPCP) + pkt(1, 1, b"")), 1.0)
    assert frames(out, LCP)[0][0] == 5  # Terminate-Request: nothing left to carry


def test_ip_packets_are_never_the_engines():
    e = gateway()
    open_lcp(e)
    assert e.receive(IPV4, bytes(20), 1.0) == [] and not e.ipv4_open


# -- IPV6CP (RFC 5072) --------------------------------------------------------------------------
def test_ipv6cp_interface_identifiers():
    ours, theirs = bytes.fromhex("0200000000000001"), bytes.fromhex("0200000000000002")
    e = gateway(ipv4=False, ipv6=True, local_iid=ours, peer_iid=theirs)
    out = open_lcp(e)
    assert frames(out, IPV6CP) == [pkt(1, 1, opt(1, ours))]
    assert frames(e.receive(IPV6CP, pkt(1, 1, opt(1, bytes(8))), 1.0)) == [pkt(3, 1, opt(1, theirs))]
    assert frames(e.receive(IPV6CP, pkt(1, 2, opt(1, ours)), 1.0)) == [pkt(3, 2, opt(1, theirs))]
    assert frames(e.receive(IPV6CP, pkt(1, 3, opt(2, u16(0x004F))), 1.0)) == [pkt(4, 3, opt(2, u16(0x004F)))]
    other = bytes.fromhex("1122334455667788")
    assert frames(e.receive(IPV6CP, pkt(1, 4, opt(1, other)), 1.0)) == [pkt(2, 4, opt(1, other))]
    # The peer naks ours with a conflicting suggestion equal to its own: we pick another.
    out = e.receive(IPV6CP, pkt(3, 1, opt(1, other)), 1.0)
    request = frames(out)[0]
    assert request[:6] == pkt(1, 2, opt(1, bytes(8)))[:6] and request[6:] not in (other, bytes(8))
    e.receive(IPV6CP, pkt(2, 2, request[4:]), 1.0)
    assert e.ipv6_open and e.ipv6cp_options.peer_iid == other


def test_renegotiation_takes_the_network_down():
    e = gateway()
    open_lcp(e)
    e.receive(IPCP, pkt(1, 1, opt(3, ip("10.9.0.2"))), 1.0)
    e.receive(IPCP, pkt(2, 1, opt(3, ip("10.9.0.1"))), 1.0)
    assert e.ipv4_open
    e.take_events()
    out = e.receive(LCP, pkt(1, 0x50, b""), 2.0)  # RFC 1661 4.1 RCR+ in Opened: tld, scr, sca
    assert [f[0] for f in frames(out, LCP)] == [1, 2]
    assert not e.ipv4_open and e.take_events()[:2] == [LayerDown(IPCP), LayerDown(LCP)]


@pytest.mark.parametrize("hdlc", [False, True])
def test_rx_header_and_accm_follow_negotiation(hdlc):
    e = gateway(request_compression=True, hdlc=hdlc, rx_accm=0)
    assert e.rx_header_bytes == 4
    open_lcp(e, peer_options=opt(2, u32(0x000A0000)) if hdlc else b"")
    assert e.rx_header_bytes == 1
    assert (e.rx_accm, e.tx_accm) == ((0, 0x000A0000) if hdlc else (0xFFFFFFFF, 0xFFFFFFFF))

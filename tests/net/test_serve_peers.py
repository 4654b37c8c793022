"""`tunring serve` against bad peers, played by a PPP client of our own over real TLS.

The gateway runs in this process (short PPP timers) so its counters can be read.  Each hostile
client is timed out or resynchronised with a counted error; nothing it sends reaches the TUN
unless it is a valid IP packet of an opened network protocol from its own address; and a good
client keeps working beside it.  Also: several frames in one TLS record cost exactly the copies
the codec documents (the first frame in place, the others copied)."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from serve_support import (
    GATEWAY4,
    PORT,
    PppClient,
    f5_tunnel,
    gateway_thread,
    icmp_echo,
    wait_for,
)

from tunring.proto import rfc1662
from tunring.proto.ppp_fsm import Timing

pytestmark = pytest.mark.net

FAST = Timing(restart_s=0.2, max_configure=4, max_terminate=2, max_failure=3, max_rounds=12)
CLIENT = "10.9.0.2"


def _link(gateway, timeout_s: float = 5.0):
    wait_for(lambda: gateway.links, timeout_s, "the tunnel")
    return next(iter(list(gateway.links)))


def _open_client(framing: str = "f5", user: str = "alice"):
    sock, rest, head = f5_tunnel("127.0.0.1", PORT, user, hdlc=framing == "f5-hdlc")
    assert head.startswith("HTTP/1.1 200") and "X-VPN-client-IP: 10.9.0." in head
    client = PppClient(framing, sock, rest, local_ipv4=None, hdlc=framing == "f5-hdlc")
    assert client.pump(lambda: client.engine.network_open), "PPP did not open"
    return client


def _ping(client: PppClient, count: int, source: str = CLIENT, start: int = 0) -> None:
    before = len(client.received)
    for seq in range(start, start + count):
        client.send_ip(icmp_echo(source, GATEWAY4, 0x77, seq))
    assert client.pump(lambda: len(client.received) >= before + count, 10), "echo replies missing"
    for reply in client.received[before:]:
        assert reply[9] == 1 and reply[20] == 0 and socket.inet_ntoa(reply[16:20]) == source  # ICMP Echo Reply


@pytest.fixture
def gateway(netns, tmp_path):
    with gateway_thread(tmp_path, ppp_timing=FAST, echo_interval_s=0.5, echo_failures=2) as (gw, _pin):
        yield gw


@pytest.fixture
def hdlc_gateway(netns, tmp_path):
    with gateway_thread(tmp_path, hdlc=True, ppp_timing=FAST) as (gw, _pin):
        yield gw


def test_python_client_opens_and_pings(gateway):
    client = _open_client()
    _ping(client, 5)
    link = _link(gateway)
    assert link.stats.rx_packets == 5 and link.codec.stats.rx_copies == 0


def test_concatenated_frames_cost_exactly_the_expected_copies(gateway):
    client = _open_client()
    link = _link(gateway)
    before = link.codec.stats.rx_copies
    records, per_record = 20, 3
    for r in range(records):
        # one TLS record (one sendall of one buffer) holding three F5 frames
        client.send_raw(b"".join(client.codec.encode_bytes(icmp_echo(CLIENT, GATEWAY4, 0x88, r * per_record + i))
                                 for i in range(per_record)))
    assert client.pump(lambda: len(client.received) >= records * per_record, 10)
    assert link.stats.rx_packets == records * per_record
    assert link.codec.stats.rx_copies - before == records * (per_record - 1)


def test_client_that_never_finishes_lcp_is_timed_out(gateway):
    sock, _rest, _head = f5_tunnel("127.0.0.1", PORT)
    link = _link(gateway)
    start = time.monotonic()
    wait_for(lambda: link.closed, FAST.budget_s() + 2, "the silent client to be dropped")
    assert "Configure-Ack" in link.reason and time.monotonic() - start < FAST.budget_s()
    assert not gateway.links and not gateway.portal.pool4.in_use  # its address is back in the pool
    sock.close()


def test_client_that_naks_forever_is_given_up(gateway):
    sock, rest, _head = f5_tunnel("127.0.0.1", PORT)
    client = PppClient("f5", sock, rest)
    client.answering = False
    link = _link(gateway)
    naks = 0
    deadline = time.monotonic() + FAST.budget_s() + 5
    while not link.closed and time.monotonic() < deadline:
        client.pump(lambda: bool(client.controls), 0.5)
        for control in client.controls:
            if control.kind == 0xC021 and control.payload[0] == 1:  # the gateway's Configure-Request: nak its MRU
                nak = bytes([3, control.payload[1]]) + struct.pack(">H", 8) + bytes([1, 4, 0x02, 0x00])
                client.send_raw(client.codec.encode_control(type(control)(0xC021, nak)))
                naks += 1
        client.controls.clear()
    assert link.closed and "no agreement" in link.reason and naks > FAST.max_configure
    assert not gateway.portal.pool4.in_use


def test_ip_before_ipcp_and_spoofed_sources_never_reach_the_tun(gateway):
    sock, rest, _head = f5_tunnel("127.0.0.1", PORT)
    client = PppClient("f5", sock, rest, ipv4=False)  # LCP only: IPCP never opens
    link = _link(gateway)
    assert client.pump(lambda: client.engine.lcp.opened)
    for seq in range(5):
        client.send_ip(icmp_echo(CLIENT, GATEWAY4, 1, seq))
    wait_for(lambda: link.stats.drops["IPv4 before IPCP is open"] == 5, 5, "the drops")
    assert link.stats.rx_packets == 0
    good = _open_client("f5", "bob")
    bob_address = socket.inet_ntoa(good.engine.ipcp_options.local.packed)
    good.send_ip(icmp_echo("10.9.0.99", GATEWAY4, 2, 1))  # not bob's address
    good.send_ip(b"\x45" + bytes(30))  # claims IPv4, malformed lengths
    good.send_ip(b"\x10" + bytes(30))  # not IP at all
    bob = next(x for x in list(gateway.links) if x.login.user == "bob")
    wait_for(lambda: sum(bob.stats.drops.values()) == 3, 5, "bob's drops")
    assert bob.stats.drops["IPv4 source is not the client's address"] == 1
    assert bob.stats.drops["malformed IPv4 header"] == 1 and bob.stats.drops["not an IP packet"] == 1
    _ping(good, 3, bob_address)
    assert bob.stats.rx_packets == 3


def test_bad_fcs_and_garbage_between_frames_resynchronise(hdlc_gateway):
    client = _open_client("f5-hdlc")
    link = _link(hdlc_gateway)
    good = [client.codec.encode_bytes(icmp_echo(CLIENT, GATEWAY4, 5, seq)) for seq in range(6)]
    bad_fcs = bytearray(good[0])
    bad_fcs[-3] ^= 0x01  # the FCS's low byte (just before the closing flag)
    stream = (good[0] + bytes(bad_fcs) + b"garbage between frames" + good[1] + good[2]
              + b"\x7e\x7e\x7e" + bytes(rfc1662.max_encoded_size(8)) + good[3])
    client.send_raw(stream)
    client.send_raw(good[4] + good[5])
    assert client.pump(lambda: len(client.received) >= 6, 10)
    drops = {k: v for k, v in link.stats.drops.items() if k.startswith("bad frame")}
    assert sum(drops.values()) >= 2 and link.codec.stats.rx_drops >= 2, link.stats.drops
    assert link.stats.rx_packets == 6 and not link.closed


def test_garbage_in_plain_f5_ends_only_that_link(gateway):
    good = _open_client("f5", "bob")
    sock, rest, _head = f5_tunnel("127.0.0.1", PORT, "alice")
    alice = next(x for x in list(gateway.links) if x.login.user == "alice")  # made before its response head
    sock.sendall(b"\x12\x34\x00\x10" + bytes(16))  # not the 0xf500 magic: the stream cannot resync
    wait_for(lambda: alice.closed, 5, "alice's link to close")
    assert "framing error" in alice.reason and alice.stats.drops["framing error"] == 1
    _ping(good, 3, socket.inet_ntoa(good.engine.ipcp_options.local.packed))


def test_hostile_connections_do_not_stall_a_good_client(gateway):
    silent = socket.create_connection(("127.0.0.1", PORT))  # TCP only: no TLS handshake
    import ssl

    slow = ssl._create_unverified_context().wrap_socket(socket.create_connection(("127.0.0.1", PORT)))
    slow.sendall(b"GET /my.pol")  # an HTTP request that never ends
    good = _open_client()
    start = time.monotonic()
    _ping(good, 20)
    assert time.monotonic() - start < 5
    silent.close()
    slow.close()


def test_echo_keepalive_drops_a_vanished_client(gateway):
    client = _open_client()
    link = _link(gateway)
    # The client stops answering (as if it died without closing TCP): Echo-Requests go unanswered.
    wait_for(lambda: link.closed, 5, "the dead client to be dropped")
    assert "Echo-Reply" in link.reason
    client.sock.close()

"""tunring's ESP against scapy's independent implementation, both directions.

Every transform, IPv4 and IPv6 inner packets, plain ESP and ESP in UDP (RFC
3948), with and without extended sequence numbers.
"""

from __future__ import annotations

import pytest
try:
    from esp_support import SCAPY_NAMES, drain, ipv4, ipv6, keys, ring_pair, assert_ring_clean
except ImportError:  # tests/proto became a package
    from .esp_support import SCAPY_NAMES, drain, ipv4, ipv6, keys, ring_pair, assert_ring_clean
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP
from scapy.layers.ipsec import SecurityAssociation as ScapySA
from scapy.packet import Raw

from tunring.proto import esp

TRANSFORMS = sorted(esp.TRANSFORMS)
OUTER = IP(src="192.0.2.1", dst="198.51.100.1")
SIZES = (0, 1, 13, 100, 1350)


def scapy_sa(name: str, spi: int, enc_key: bytes, auth_key: bytes, udp: bool, esn: bool, seq: int = 1) -> ScapySA:
    crypt, auth = SCAPY_NAMES[name]
    return ScapySA(
        ESP, spi=spi, crypt_algo=crypt, crypt_key=enc_key, auth_algo=auth, auth_key=auth_key or None,
        tunnel_header=OUTER.copy(), nat_t_header=UDP(sport=4500, dport=4500) if udp else None,
        esn_en=esn, seq_num=seq & 0xFFFFFFFF, esn=seq >> 32,
    )


def parse(inner: bytes):
    return IP(inner) if inner[0] >> 4 == 4 else IPv6(inner)


def inner_packets():
    for size in SIZES:
        yield ipv4(size, ident=size)
        yield ipv6(size, ident=size)


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("name", TRANSFORMS)
def test_scapy_encrypts_tunring_decrypts(name, udp, esn):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform, 1)
    seq0 = (1 << 32) - 3 if esn else 1  # with ESN, cross a 2^32 boundary on the way
    peer = scapy_sa(name, 0x1234, enc_key, auth_key, udp, esn, seq0)
    ours = esp.SecurityAssociation(0x1234, transform, enc_key, auth_key, esn=esn)
    ours.window.top = seq0 - 1  # as if the packets before seq0 had arrived
    sent = list(inner_packets())
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [ours], udp_encap=udp)
        for i, inner in enumerate(sent):
            seq = seq0 + i
            peer.seq_num, peer.esn = seq & 0xFFFFFFFF, seq >> 32
            wire = IP(bytes(peer.encrypt(parse(inner))))  # reparse, as a receiver would see it
            datagram = bytes(wire[UDP].payload) if udp else bytes(wire[ESP])
            assert inbound.feed(datagram) == [], inbound.stats
        assert drain(adapter) == sent
        assert_ring_clean(session)
    assert inbound.stats.rx_packets == len(sent)
    assert inbound.stats.rx_drops == 0


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp"])
@pytest.mark.parametrize("name", TRANSFORMS)
def test_tunring_encrypts_scapy_decrypts(name, udp, esn):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform, 2)
    seq0 = (1 << 32) - 3 if esn else 1
    ours = esp.SecurityAssociation(0x4321, transform, enc_key, auth_key, esn=esn, seq=seq0 - 1)
    peer = scapy_sa(name, 0x4321, enc_key, auth_key, udp, esn)
    sent = list(inner_packets())
    with ring_pair() as (session, adapter):
        for i, inner in enumerate(sent):
            adapter.deliver(inner)
            packet = session.receive()
            datagram = bytes(ours.encrypt(packet))
            session.release(packet)
            outer = OUTER.copy()
            outer.src, outer.dst = outer.dst, outer.src
            wire = outer / UDP(sport=4500, dport=4500) / Raw(datagram) if udp else outer / Raw(datagram)
            if not udp:
                wire.proto = 50
            wire = IP(bytes(wire))
            seq = seq0 + i
            peer.esn = seq >> 32  # scapy does not infer the high bits; tell it
            assert wire[ESP].seq == seq & 0xFFFFFFFF
            assert bytes(peer.decrypt(wire)) == inner
    assert ours.seq == seq0 - 1 + len(sent)


@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-128-hmac-sha1-96"])
def test_tfc_padding_round_trip_with_scapy(name):
    """pad_to pads every packet to a multiple of pad_to; scapy strips it."""
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform, 3)
    ours = esp.SecurityAssociation(0x777, transform, enc_key, auth_key)
    peer = scapy_sa(name, 0x777, enc_key, auth_key, False, False)
    with ring_pair(trail=esp.ESP_TRAIL + 256) as (session, adapter):
        for size in (0, 5, 60):
            inner = ipv4(size)
            adapter.deliver(inner)
            packet = session.receive()
            datagram = bytes(ours.encrypt(packet, pad_to=64))
            session.release(packet)
            assert (len(datagram) - transform.header_bytes - transform.icv_bytes) % 64 == 0
            wire = IP(bytes(IP(src="198.51.100.1", dst="192.0.2.1", proto=50) / Raw(datagram)))
            assert bytes(peer.decrypt(wire)) == inner

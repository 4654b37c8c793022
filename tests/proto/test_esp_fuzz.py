"""Fuzz every field of the ESP packet against a reference reading of RFC 4303.

Examples are built from fields: the plaintext (inner packet, padding, pad
length, next header) is arbitrary and sealed with a valid ICV, so the trailer
and inner-header checks are reached; then SPI, sequence number, IV, ciphertext,
ICV or the length may be damaged after sealing.  Whatever arrives, the result
must match the reference, nothing else may be delivered, no slot may leak, and
a good packet right after must still get through.  A short run is part of the
normal suite; ``TUNRING_LONG=1`` runs 100k examples.
"""

from __future__ import annotations

import struct

import pytest
try:
    from esp_support import DELIVERED, assert_ring_clean, drain, ipv4, ipv6, keys, outcome, ring_pair, seal, trailer
except ImportError:  # tests/proto became a package
    from .esp_support import (DELIVERED, assert_ring_clean, drain, ipv4, ipv6, keys, outcome, ring_pair, seal,
                              trailer)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunring.proto import esp

SPI = 0xABCD
FIELDS = ("none", "spi", "seq", "iv", "ciphertext", "icv", "truncate", "extend")


def reference(plaintext: bytes) -> bytes | None:
    """What RFC 4303 tunnel mode makes of an authentic plaintext: the inner packet or None."""
    if len(plaintext) < 2:
        return None
    pad, nh = plaintext[-2], plaintext[-1]
    if pad > len(plaintext) - 2 or plaintext[len(plaintext) - 2 - pad : -2] != bytes(range(1, pad + 1)):
        return None
    payload = plaintext[: len(plaintext) - 2 - pad]
    if nh == 4 and len(payload) >= 20 and payload[0] >> 4 == 4:
        length = struct.unpack_from(">H", payload, 2)[0]
        return payload[:length] if 20 <= length <= len(payload) else None
    if nh == 41 and len(payload) >= 40 and payload[0] >> 4 == 6:
        length = 40 + struct.unpack_from(">H", payload, 4)[0]
        return payload[:length] if length <= len(payload) else None
    return None


@st.composite
def plaintexts(draw, block: int) -> bytes:
    """Mostly well-formed trailers around IP-ish payloads, with any one part possibly wrong."""
    kind = draw(st.sampled_from(["v4", "v6", "raw"]))
    size = draw(st.integers(0, 120))
    if kind == "v4":
        payload = bytearray(ipv4(size, ident=size))
    elif kind == "v6":
        payload = bytearray(ipv6(size, ident=size))
    else:
        payload = bytearray(draw(st.binary(max_size=80)))
    if payload and draw(st.booleans()):  # damage the inner header
        at = draw(st.integers(0, min(len(payload), 48) - 1))
        payload[at] = draw(st.integers(0, 255))
    payload += draw(st.binary(max_size=8)) if draw(st.booleans()) else b""  # TFC-like tail
    nh = draw(st.sampled_from([4, 41, 4 if kind != "v6" else 41, 59, 0, 17, 255]))
    plain = bytearray(trailer(bytes(payload), nh, block, extra_pad=draw(st.sampled_from([0, 0, block, 2 * block]))))
    if draw(st.booleans()):  # damage padding, pad length or next header
        at = len(plain) - 1 - draw(st.integers(0, min(len(plain), 2 + 2 * block) - 1))
        plain[at] = draw(st.integers(0, 255))
    # Keep the cipher's alignment (a misaligned ciphertext is the "truncate" field's job).
    plain = plain[: len(plain) - len(plain) % block] if len(plain) >= block else plain
    return bytes(plain)


@st.composite
def cases(draw):
    name = draw(st.sampled_from(sorted(esp.TRANSFORMS)))
    transform = esp.TRANSFORMS[name]
    plain = draw(plaintexts(transform.block_bytes))
    field = draw(st.sampled_from(FIELDS))
    esn = draw(st.booleans())
    seq = draw(st.sampled_from([1, 2, 1000, 0xFFFFFFFF])) + (draw(st.sampled_from([0, 1 << 32])) if esn else 0)
    where = draw(st.integers(0, 1 << 16))
    xor = draw(st.integers(1, 255))
    extra = draw(st.binary(min_size=1, max_size=40))
    return name, plain, field, esn, seq, where, xor, extra


def damage(datagram: bytes, transform: esp.Transform, field: str, where: int, xor: int, extra: bytes) -> bytes:
    h, icv = transform.header_bytes, transform.icv_bytes
    spans = {"spi": (0, 4), "seq": (4, 8), "iv": (8, h), "ciphertext": (h, len(datagram) - icv),
             "icv": (len(datagram) - icv, len(datagram))}
    if field == "none":
        return datagram
    if field == "truncate":
        return datagram[: where % len(datagram)]
    if field == "extend":
        return datagram + extra
    lo, hi = spans[field]
    if hi <= lo:
        return datagram[:-1]
    at = lo + where % (hi - lo)
    return datagram[:at] + bytes([datagram[at] ^ xor]) + datagram[at + 1 :]


def check(case) -> None:
    name, plain, field, esn, seq, where, xor, extra = case
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform, 5)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key, esn=esn)
    sa.window.top = seq - 1
    datagram = damage(seal(transform, enc_key, auth_key, SPI, seq, plain, esn=esn), transform, field, where, xor, extra)
    want = reference(plain) if field == "none" else None
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa], udp_encap=bool(where & 1))
        status = outcome(inbound.feed(datagram))
        got = drain(adapter)
        assert_ring_clean(session)
        if want is None:
            assert status != DELIVERED and got == [], inbound.stats
        else:
            assert status == DELIVERED and got == [want], inbound.stats
        assert inbound.stats.rx_packets + inbound.stats.rx_drops + inbound.stats.rx_control == 1
        # The SA still works: the next good packet arrives.
        follow = ipv4(10)
        next_seq = seq + 1 if esn or seq < 0xFFFFFFFF else seq - 1  # a 32-bit SA cannot go past 2^32 - 1
        good = seal(transform, enc_key, auth_key, SPI, next_seq, trailer(follow, 4, transform.block_bytes), esn=esn)
        assert outcome(inbound.feed(good)) == DELIVERED, inbound.stats
        assert drain(adapter) == [follow]
        assert_ring_clean(session)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_fuzz_esp_fields(case):
    check(case)


@pytest.mark.slow
@settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(cases())
def test_fuzz_esp_fields_long(case):
    check(case)

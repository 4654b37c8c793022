"""Helpers shared by the ESP tests: a ring pair and an independent ESP sealer.

``seal`` builds ESP datagrams with the ``cryptography`` primitives directly (not
through tunring), so tests can make packets that authenticate but carry a bad
trailer, a wrong next header or a lying inner IP header.
"""

from __future__ import annotations

import contextlib
import os
import struct

from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunring import layout as L
from tunring.adapter import Adapter
from tunring.proto import esp
from tunring.proto.base import Control, Dropped, Keepalive
from tunring.session import Session

#: What ``outcome`` says of a datagram whose inner packet was delivered.
DELIVERED = "delivered"

SCAPY_NAMES = {
    "aes-gcm-128": ("AES-GCM", None),
    "aes-gcm-256": ("AES-GCM", None),
    "aes-cbc-128-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "aes-cbc-256-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "aes-cbc-128-hmac-sha256-128": ("AES-CBC", "SHA2-256-128"),
    "aes-cbc-256-hmac-sha256-128": ("AES-CBC", "SHA2-256-128"),
}


@contextlib.contextmanager
def ring_pair(capacity: int = 0x20000, lead: int = esp.ESP_LEAD, trail: int = esp.ESP_TRAIL):
    """A Session with ESP room and an Adapter over the same two rings, closed afterwards.

    Plain in-process buffers (``Session.over``/``Adapter.over``): no descriptors to share.
    """
    size = L.ring_size(capacity, lead, trail)
    send_ring, receive_ring = bytearray(size), bytearray(size)
    session = Session.over(send_ring, receive_ring, lead, trail)
    adapter = Adapter.over(send_ring, receive_ring, lead, trail)
    try:
        yield session, adapter
    finally:
        session.close()
        adapter.close()


def keys(transform: esp.Transform, seed: int = 0) -> tuple[bytes, bytes]:
    rnd = bytes((seed * 7 + i * 13) & 0xFF for i in range(64))
    return rnd[: transform.key_bytes], rnd[32 : 32 + transform.auth_key_bytes]


def ipv4(payload_bytes: int, ident: int = 0) -> bytes:
    """A syntactically valid IPv4/UDP packet of 28 + payload_bytes bytes."""
    total = 28 + payload_bytes
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    udp = struct.pack(">HHHH", 1000, 2000, 8 + payload_bytes, 0)
    return header + udp + bytes((ident + i) & 0xFF for i in range(payload_bytes))


def ipv6(payload_bytes: int, ident: int = 0) -> bytes:
    """A syntactically valid IPv6/UDP packet of 48 + payload_bytes bytes."""
    header = struct.pack(">IHBB16s16s", 0x60000000, 8 + payload_bytes, 17, 64,
                         b"\xfd" + bytes(14) + b"\x01", b"\xfd" + bytes(14) + b"\x02")
    udp = struct.pack(">HHHH", 1000, 2000, 8 + payload_bytes, 0)
    return header + udp + bytes((ident + i) & 0xFF for i in range(payload_bytes))


def trailer(payload: bytes, next_header: int, block: int, extra_pad: int = 0, pad_bytes: bytes | None = None) -> bytes:
    """payload || padding || pad length || next header, aligned to ``block``."""
    pad = -(len(payload) + 2) % block + extra_pad
    padding = bytes(range(1, pad + 1)) if pad_bytes is None else pad_bytes
    return payload + padding + bytes((len(padding), next_header))


def seal(transform: esp.Transform, enc_key: bytes, auth_key: bytes, spi: int, seq: int, plaintext: bytes,
         esn: bool = False, iv: bytes | None = None) -> bytes:
    """An ESP datagram for ``plaintext`` (which must already end in its trailer)."""
    header = struct.pack(">II", spi, seq & 0xFFFFFFFF)
    if transform.aead:
        iv = iv if iv is not None else struct.pack(">Q", seq ^ 0x5A5A)
        aad = struct.pack(">III", spi, seq >> 32, seq & 0xFFFFFFFF) if esn else header
        return header + iv + AESGCM(enc_key[:-4]).encrypt(enc_key[-4:] + iv, plaintext, aad)
    iv = iv if iv is not None else os.urandom(16)
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    body = header + iv + encryptor.update(plaintext) + encryptor.finalize()
    mac = hmac.HMAC(auth_key, transform.auth_hash())
    mac.update(body + (struct.pack(">I", seq >> 32) if esn else b""))
    return body + mac.finalize()[: transform.icv_bytes]


def outcome(events: list) -> str:
    """What one datagram came to: DELIVERED (no event), its drop reason, "keepalive" or "ike"."""
    assert len(events) <= 1, events
    if not events:
        return DELIVERED
    event = events[0]
    if isinstance(event, Dropped):
        return event.reason
    if isinstance(event, Keepalive):
        return "keepalive"
    assert isinstance(event, Control) and event.kind == esp.IKE_MESSAGE, event
    return "ike"


def drain(adapter: Adapter) -> list[bytes]:
    """Every packet the adapter has from the client, as bytes (released)."""
    out = []
    while (packet := adapter.receive()) is not None:
        out.append(bytes(packet.data))
        adapter.release(packet)
    return out


def assert_ring_clean(session: Session) -> None:
    """No allocated packet is left pending: every slot was sent or given back."""
    writer = session._writer
    assert not writer.slots, f"{len(writer.slots)} allocated packets leaked"
    assert writer.tail == writer.published

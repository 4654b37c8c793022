"""Cisco AnyConnect framings: CSTP over TLS (8-byte header) and DTLS (1-byte type).

CSTP record: ``'S' 'T' 'F' 0x01``, u16 big-endian payload length, u8 type,
u8 0, payload.  A DTLS datagram is one type byte and the payload.  Types:
0 data, 3 DPD request, 4 DPD response, 5 disconnect, 7 keepalive,
8 compressed data, 9 terminate; other types are dropped and counted.
"""

from __future__ import annotations

import struct

from ..errors import FramingError
from .base import (
    Codec,
    Compressed,
    Disconnect,
    DpdRequest,
    DpdResponse,
    Dropped,
    Event,
    Keepalive,
    RecordResult,
    Terminate,
)

DATA = 0
DPD_REQUEST = 3
DPD_RESPONSE = 4
DISCONNECT = 5
KEEPALIVE = 7
COMPRESSED = 8
TERMINATE = 9

MAGIC = b"STF\x01"
_HEADER = struct.Struct(">4sHBB")
_MAGIC_U32 = struct.Struct(">I")
_MAGIC_VALUE = _MAGIC_U32.unpack(MAGIC)[0]

_EVENTS = {
    DPD_REQUEST: DpdRequest,
    DPD_RESPONSE: DpdResponse,
    DISCONNECT: Disconnect,
    KEEPALIVE: Keepalive,
    TERMINATE: Terminate,
}
_TYPES = {cls: kind for kind, cls in _EVENTS.items()}


def _classify(buf: memoryview, kind: int, start: int, end: int) -> RecordResult:
    """What a record of type ``kind`` with payload buf[start:end] is (shared by CSTP and DTLS)."""
    if kind == DATA:
        if start == end:
            return Dropped(0, 0, "empty data record")
        return (start, end)
    if kind == COMPRESSED:
        return Compressed(start, end)
    event = _EVENTS.get(kind)
    if event is None:
        return Dropped(0, 0, f"unknown record type {kind}")
    return event(bytes(buf[start:end]))


def _control_type(event: Event) -> int:
    kind = _TYPES.get(type(event))
    if kind is None:
        raise ValueError(f"Cisco framings have no {type(event).__name__} record")
    return kind


def _control_payload(event: Event) -> bytes:
    return bytes(getattr(event, "payload", getattr(event, "reason", b"")))


class Cstp(Codec):
    """Cisco AnyConnect CSTP: 8-byte header records over the TLS stream."""

    name = "cstp"
    headroom = 8
    min_header = 8
    compressions = ("lzs", "lz4", "deflate")

    def _length(self, buf: memoryview, off: int) -> int:
        if _MAGIC_U32.unpack_from(buf, off)[0] != _MAGIC_VALUE:
            raise FramingError(f"wrong CSTP magic {bytes(buf[off:off + 4]).hex()} (expected 53544601)")
        return 8 + ((buf[off + 4] << 8) | buf[off + 5])

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        if buf[off + 6] == DATA and end > off + 8:
            return (off + 8, end)
        return _classify(buf, buf[off + 6], off + 8, end)

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        _HEADER.pack_into(buf, off, MAGIC, length, DATA, 0)

    def _pack_compressed(self, payload: bytes) -> bytes:
        return _HEADER.pack(MAGIC, len(payload), COMPRESSED, 0) + payload

    def _control(self, event: Event) -> bytes:
        payload = _control_payload(event)
        return _HEADER.pack(MAGIC, len(payload), _control_type(event), 0) + payload


class Dtls(Codec):
    """Cisco AnyConnect DTLS: one datagram per record, a 1-byte type header.

    The header fits in the ring slot's own Size field, so a Session needs no lead.
    """

    name = "dtls"
    headroom = 1
    compressions = ("lzs", "lz4")  # deflate is CSTP only
    min_header = 1
    stream_ok = False
    datagram_ok = True
    default_datagram = True

    def _length(self, buf: memoryview, off: int) -> int:
        return -1

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        return _classify(buf, buf[off], off + 1, end)

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        buf[off] = DATA

    def _pack_compressed(self, payload: bytes) -> bytes:
        return bytes((COMPRESSED,)) + payload

    def _control(self, event: Event) -> bytes:
        return bytes((_control_type(event),)) + _control_payload(event)

"""GlobalProtect over TLS: 16-byte header records.

Header: u32 magic ``0x1a2b3c4d``, u16 ethertype (0x0800 IPv4, 0x86DD IPv6,
0 keepalive), u16 payload length, then u32 1 and u32 0 **little-endian**.
Other ethertypes are dropped and counted; a wrong magic or tail stops the stream.
"""

from __future__ import annotations

import struct

from ..errors import FramingError
from .base import Codec, Dropped, Event, Keepalive, RecordResult

MAGIC = 0x1A2B3C4D
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_KEEPALIVE = 0
TAIL = struct.pack("<II", 1, 0)

_HEADER = struct.Struct(">IHH8s")
_MAGIC = struct.Struct(">I")


class Gpst(Codec):
    """GlobalProtect's TLS tunnel framing (its UDP path is ESP, see the esp codec)."""

    name = "gpst"
    headroom = 16
    min_header = 16

    def _length(self, buf: memoryview, off: int) -> int:
        magic = _MAGIC.unpack_from(buf, off)[0]
        if magic != MAGIC:
            raise FramingError(f"wrong GlobalProtect magic {magic:#010x} (expected {MAGIC:#010x})")
        if buf[off + 8 : off + 16] != TAIL:
            raise FramingError(f"wrong GlobalProtect header tail {bytes(buf[off + 8:off + 16]).hex()}")
        return 16 + ((buf[off + 6] << 8) | buf[off + 7])

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        ethertype = (buf[off + 4] << 8) | buf[off + 5]
        if ethertype == ETHERTYPE_IPV4 or ethertype == ETHERTYPE_IPV6:
            if end == off + 16:
                return Dropped(0, 0, "empty data record")
            return (off + 16, end)
        if ethertype == ETHERTYPE_KEEPALIVE:
            return Keepalive(bytes(buf[off + 16 : end]))
        return Dropped(0, 0, f"unknown ethertype {ethertype:#06x}")

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        version = buf[off + 16] >> 4 if length else 4
        _HEADER.pack_into(buf, off, MAGIC, ETHERTYPE_IPV6 if version == 6 else ETHERTYPE_IPV4, length, TAIL)

    def _control(self, event: Event) -> bytes:
        if not isinstance(event, Keepalive):
            raise ValueError(f"GlobalProtect has no {type(event).__name__} record")
        return _HEADER.pack(MAGIC, ETHERTYPE_KEEPALIVE, len(event.payload), TAIL) + event.payload

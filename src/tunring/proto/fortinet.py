"""Fortinet PPP over TLS or DTLS: u16 total length, u16 ``0x5050``, u16 PPP frame length, the frame."""

from __future__ import annotations

import struct

from ..errors import FramingError
from .ppp import PPP_HEADER_BYTES, PppCodec

FORTINET_MAGIC = 0x5050
_HHH = struct.Struct(">HHH")


class Fortinet(PppCodec):
    """Fortinet PPP over TLS (or DTLS): u16 total length, u16 ``0x5050``, u16 frame length."""

    name = "fortinet"
    encap = 6
    headroom = 6 + PPP_HEADER_BYTES
    min_header = 6
    datagram_ok = True

    def _length(self, buf: memoryview, off: int) -> int:
        total, magic, length = _HHH.unpack_from(buf, off)
        if magic != FORTINET_MAGIC:
            raise FramingError(f"wrong Fortinet magic {magic:#06x} (expected 0x5050)")
        if total != length + 6:
            raise FramingError(f"Fortinet lengths disagree: total {total}, frame {length} (+6 expected)")
        return total

    def _pack_encap(self, buf: memoryview, off: int, frame_length: int) -> None:
        _HHH.pack_into(buf, off, frame_length + 6, FORTINET_MAGIC, frame_length)

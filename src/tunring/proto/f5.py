"""F5 PPP over TLS or DTLS: u16 ``0xf500``, u16 PPP frame length, the PPP frame."""

from __future__ import annotations

import struct

from ..errors import FramingError
from .ppp import PPP_HEADER_BYTES, PppCodec

F5_MAGIC = 0xF500
_HH = struct.Struct(">HH")


class F5(PppCodec):
    """F5 PPP over TLS (or DTLS): u16 ``0xf500``, u16 frame length, PPP frame."""

    name = "f5"
    encap = 4
    headroom = 4 + PPP_HEADER_BYTES
    min_header = 4
    datagram_ok = True

    def _length(self, buf: memoryview, off: int) -> int:
        magic, length = _HH.unpack_from(buf, off)
        if magic != F5_MAGIC:
            raise FramingError(f"wrong F5 magic {magic:#06x} (expected 0xf500)")
        return 4 + length

    def _pack_encap(self, buf: memoryview, off: int, frame_length: int) -> None:
        _HH.pack_into(buf, off, F5_MAGIC, frame_length)

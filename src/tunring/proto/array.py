"""Array Networks over TLS: raw IP packets concatenated in the stream.

There is no header: each packet's length comes from its own IPv4 total length
or IPv6 payload length, and packets are split across TLS records arbitrarily.
Bytes that are not the start of an IP packet cannot be resynchronised on and
stop the stream with a FramingError.  Array's control messages are IPv4
packets with protocol 255 (and a 20-byte header); they surface as
:class:`~tunring.proto.base.Control` events with ``kind`` = the u16 at offset
12 and ``payload`` = the whole packet.  Over DTLS each datagram is one packet.
"""

from __future__ import annotations

from ..errors import FramingError
from .base import Codec, Control, RecordResult

IPV4_MIN_BYTES = 20
IPV6_HEADER_BYTES = 40
CONTROL_PROTOCOL = 255


class Array(Codec):
    """Array Networks SSL tunnel framing: the IP header is the record header."""

    name = "array"
    headroom = 0
    min_header = 6  # enough for the IPv6 payload length; an IPv4 packet is >= 20 bytes anyway
    datagram_ok = True

    def _length(self, buf: memoryview, off: int) -> int:
        version = buf[off] >> 4
        if version == 4:
            n = (buf[off + 2] << 8) | buf[off + 3]
            if n < IPV4_MIN_BYTES:
                raise FramingError(f"IPv4 total length {n} is shorter than the IPv4 header")
            return n
        if version == 6:
            return IPV6_HEADER_BYTES + ((buf[off + 4] << 8) | buf[off + 5])
        raise FramingError(f"byte {buf[off]:#04x} does not start an IPv4 or IPv6 packet")

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        if buf[off] == 0x45 and buf[off + 9] == CONTROL_PROTOCOL:
            return Control((buf[off + 12] << 8) | buf[off + 13], bytes(buf[off:end]))
        return (off, end)

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        pass

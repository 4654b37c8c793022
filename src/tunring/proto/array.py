"""Array Networks over TLS: raw IP packets concatenated in the stream.

There is no header: each packet's length comes from its own IPv4 total length
or IPv6 payload length, and packets are split across TLS records arbitrarily.
Bytes that are not the start of an IP packet cannot be resynchronised on and
stop the stream with a FramingError.
"""

from __future__ import annotations

from ..errors import FramingError
from .base import Codec, RecordResult

IPV4_MIN_BYTES = 20
IPV6_HEADER_BYTES = 40


class Array(Codec):
    """Array Networks SSL tunnel framing: the IP header is the record header."""

    name = "array"
    headroom = 0
    min_header = 6  # enough for the IPv6 payload length; an IPv4 packet is >= 20 bytes anyway

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
        return (off, end)

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        pass

"""PPP frames (RFC 1661) as the VPN framings carry them: header parsing, the shared codec
base of the encapsulations (:mod:`~tunring.proto.f5`, :mod:`~tunring.proto.fortinet`), and raw
PPP datagrams.  HDLC-like framing is :mod:`~tunring.proto.hdlc` (codecs) over
:mod:`~tunring.proto.rfc1662` (FCS, escaping).

The PPP layer itself (LCP, IPCP, ...) is not here: frames whose protocol is
not IPv4 (0x0021) or IPv6 (0x0057) surface as
:class:`~tunring.proto.base.Control` events with ``kind`` = the PPP protocol,
and ``encode_control(Control(protocol, payload))`` frames one.  Received
frames may use address/control-field and protocol-field compression (ACFC,
PFC); records are placed for the full 4-byte header ``FF 03 00 21`` that we
send, and a shorter header costs one counted move of the packet.
"""

from __future__ import annotations

import struct

from ..errors import FramingError
from .base import Codec, Control, Dropped, Event, RecordResult

PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_HEADER_BYTES = 4  # FF 03 + 2-byte protocol, as we send it

_PPP_V4 = b"\xff\x03\x00\x21"
_PPP_V6 = b"\xff\x03\x00\x57"


def parse_ppp(buf, start: int, end: int) -> RecordResult:
    """Classify the PPP frame buf[start:end] (address/control and protocol possibly compressed)."""
    pos = start
    if end - pos >= 2 and buf[pos] == 0xFF:
        if buf[pos + 1] != 0x03:
            raise FramingError(f"PPP address 0xff followed by control {buf[pos + 1]:#04x}, not 0x03")
        pos += 2
    if pos >= end:
        raise FramingError("PPP frame without a protocol field")
    protocol = buf[pos]
    if protocol & 1:
        pos += 1  # PFC: a one-byte protocol
    else:
        if pos + 2 > end:
            raise FramingError("PPP frame cut inside its protocol field")
        protocol = (protocol << 8) | buf[pos + 1]
        pos += 2
        if not protocol & 1:
            raise FramingError(f"PPP protocol {protocol:#06x} is even (malformed)")
    if protocol == PPP_IPV4 or protocol == PPP_IPV6:
        if pos == end:
            return Dropped(0, 0, "empty PPP data frame")
        return (pos, end)
    return Control(protocol, bytes(buf[pos:end]))


def ppp_header(data) -> bytes:
    """The 4-byte PPP header for an IP packet, by its version nibble."""
    return _PPP_V6 if len(data) and data[0] >> 4 == 6 else _PPP_V4


class PppCodec(Codec):
    """A PPP frame after ``encap`` bytes of encapsulation header (F5, Fortinet, raw PPP)."""

    encap = 0  # bytes of encapsulation header before the PPP frame
    headroom = PPP_HEADER_BYTES

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        return parse_ppp(buf, off + self.encap, end)

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        e = off + self.encap
        buf[e : e + 4] = _PPP_V6 if length and buf[e + 4] >> 4 == 6 else _PPP_V4
        self._pack_encap(buf, off, PPP_HEADER_BYTES + length)

    def _pack_encap(self, buf: memoryview, off: int, frame_length: int) -> None:
        pass

    def _control(self, event: Event) -> bytes:
        if not isinstance(event, Control):
            raise ValueError(f"PPP framings send Control(protocol, payload), not {type(event).__name__}")
        frame = b"\xff\x03" + struct.pack(">H", event.kind) + event.payload
        out = bytearray(self.encap + len(frame))
        out[self.encap :] = frame
        self._pack_encap(memoryview(out), 0, len(frame))
        return bytes(out)


class RawPpp(PppCodec):
    """RFC 1661 PPP frames, one per datagram (the DTLS form of the PPP protocols)."""

    name = "ppp"
    stream_ok = False
    datagram_ok = True
    default_datagram = True

    def _length(self, buf: memoryview, off: int) -> int:
        return -1

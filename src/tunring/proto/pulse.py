"""Pulse Secure IF-T/TLS: 16-byte header records.

Header (big-endian): u32 vendor (0x0a4c Juniper; 0x5597 TCG during setup),
u32 type (4 = IP data), u32 total length including the header, u32
sequence number.  Records other than vendor 0x0a4c type 4 surface as
:class:`~tunring.proto.base.Control` events with ``kind`` = type.
"""

from __future__ import annotations

import struct

from ..device import Device
from ..errors import FramingError
from .base import Codec, Control, Dropped, Event, RecordResult

VENDOR_JUNIPER = 0x0A4C
VENDOR_TCG = 0x5597
TYPE_IP = 4

_HEADER = struct.Struct(">IIII")


class Pulse(Codec):
    """Pulse IF-T/TLS data-phase framing; ``tx_sequence`` numbers the records we send."""

    name = "pulse"
    headroom = 16
    min_header = 16

    def __init__(self, device: Device, **kwargs) -> None:
        super().__init__(device, **kwargs)
        self.tx_sequence = 0

    def _length(self, buf: memoryview, off: int) -> int:
        vendor, _kind, length, _seq = _HEADER.unpack_from(buf, off)
        if vendor != VENDOR_JUNIPER and vendor != VENDOR_TCG:
            raise FramingError(f"wrong IF-T vendor {vendor:#x} (expected {VENDOR_JUNIPER:#x} or {VENDOR_TCG:#x})")
        if length < 16:
            raise FramingError(f"IF-T length {length} is shorter than its own 16-byte header")
        return length

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        vendor, kind, _length, _seq = _HEADER.unpack_from(buf, off)
        if vendor == VENDOR_JUNIPER and kind == TYPE_IP:
            if end == off + 16:
                return Dropped(0, 0, "empty data record")
            return (off + 16, end)
        return Control(kind, bytes(buf[off + 16 : end]))

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        _HEADER.pack_into(buf, off, VENDOR_JUNIPER, TYPE_IP, 16 + length, self.tx_sequence)
        self.tx_sequence = (self.tx_sequence + 1) & 0xFFFFFFFF

    def _control(self, event: Event) -> bytes:
        if not isinstance(event, Control):
            raise ValueError(f"IF-T/TLS has no {type(event).__name__} record; send a Control(kind, payload)")
        head = _HEADER.pack(VENDOR_JUNIPER, event.kind, 16 + len(event.payload), self.tx_sequence)
        self.tx_sequence = (self.tx_sequence + 1) & 0xFFFFFFFF
        return head + event.payload

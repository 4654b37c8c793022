"""Juniper oNCP over TLS: little-endian u16-length records carrying a KMP message stream.

Record boundaries are arbitrary: a KMP message may span records and a record
may hold several.  A KMP message has a 20-byte header (u16 type at offset 6,
300 = data; u16 payload length at offset 18, both big-endian); one KMP 300
message may carry several IPv4 packets back to back, split by each packet's
own IP length.  The common case (one record = one KMP 300 = one IP packet) is
decoded in place with a 22-byte header; everything else goes through a
reassembly buffer and is copied (counted).  Other KMP types surface as
:class:`~tunring.proto.base.Control` events with ``kind`` = KMP type.  A KMP
header that does not start with its six zero bytes stops the stream (there
is nothing to resynchronise on).
"""

from __future__ import annotations

import struct

from .. import layout as L
from ..device import Device
from ..errors import FramingError
from .base import Codec, Control, Dropped, Event, RecordResult

KMP_HEADER_BYTES = 20
KMP_DATA = 300
RECORD_HEADER_BYTES = 2

_U16LE = struct.Struct("<H")
_U16BE = struct.Struct(">H")
# Outgoing KMP headers: the fixed bytes are the ones the servers are known to accept.
_KMP = struct.Struct(">6sH10sH")
_KMP_MIDDLE_OUT = bytes((1, 0, 0, 0, 1, 0, 0, 0, 0, 0))
_ZERO6 = bytes(6)


def _split_ip(payload: memoryview, base: int, out: list, limit: int) -> None:
    """Append (start, end) of each IP packet in payload[base:limit] to ``out``; bytes that are
    not a whole IP packet (an empty message included) are a Dropped item."""
    if base == limit:
        out.append(Dropped(0, 0, "empty KMP 300 message"))
        return
    pos = base
    while pos < limit:
        n = L.ip_length(payload[pos:limit])
        if n < 20 or pos + n > limit:
            out.append(Dropped(0, 0, f"{limit - pos} bytes in a KMP 300 message are not a whole IP packet"))
            return
        out.append((pos, pos + n))
        pos += n


class Oncp(Codec):
    """Juniper Network Connect (oNCP) framing over TLS."""

    name = "oncp"
    headroom = RECORD_HEADER_BYTES + KMP_HEADER_BYTES
    min_header = RECORD_HEADER_BYTES

    def __init__(self, device: Device, **kwargs) -> None:
        super().__init__(device, **kwargs)
        self._kmp = bytearray()  # KMP bytes from records whose messages are not complete yet
        # (index in _kmp, stream offset) where each record's bytes in _kmp begin, to name the
        # stream offset of an unfinished message.
        self._kmp_records: list[tuple[int, int]] = []

    def _length(self, buf: memoryview, off: int) -> int:
        return RECORD_HEADER_BYTES + _U16LE.unpack_from(buf, off)[0]

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        start = off + RECORD_HEADER_BYTES
        if not self._kmp and end - start >= KMP_HEADER_BYTES and buf[start : start + 6] == _ZERO6:
            kind = _U16BE.unpack_from(buf, start + 6)[0]
            length = _U16BE.unpack_from(buf, start + 18)[0]
            if kind == KMP_DATA and start + KMP_HEADER_BYTES + length == end:
                # One whole KMP 300 message: its first IP packet stays in place.
                first = start + KMP_HEADER_BYTES
                n = L.ip_length(buf[first:end])
                if n == end - first and n >= 20:
                    return (first, end)
                out: list = []
                _split_ip(buf, first, out, end)
                return out
        # Reassembly: the record holds parts of KMP messages (the codec has moved its offset
        # past this record already).
        self._kmp_records.append((len(self._kmp), self._offset - (end - start)))
        self._kmp += buf[start:end]
        self.stats.rx_copy_bytes += end - start
        return self._parse_kmp()

    def _parse_kmp(self) -> list:
        kmp = self._kmp
        view = memoryview(kmp)
        out: list = []
        pos = 0
        try:
            while len(kmp) - pos >= KMP_HEADER_BYTES:
                if kmp[pos : pos + 6] != _ZERO6:
                    raise FramingError(f"not a KMP header: {bytes(kmp[pos:pos + 8]).hex()} "
                                       "does not start with 6 zero bytes")
                kind = _U16BE.unpack_from(kmp, pos + 6)[0]
                length = _U16BE.unpack_from(kmp, pos + 18)[0]
                end = pos + KMP_HEADER_BYTES + length
                if end > len(kmp):
                    break
                if kind == KMP_DATA:
                    segments: list = []
                    _split_ip(view, pos + KMP_HEADER_BYTES, segments, end)
                    for item in segments:
                        # Copied out now (counted): the reassembly buffer is about to move.
                        out.append(self._stage(view[item[0] : item[1]]) if type(item) is tuple else item)
                else:
                    out.append(Control(kind, bytes(view[pos + KMP_HEADER_BYTES : end])))
                pos = end
        finally:
            view.release()
        del kmp[:pos]
        self._kmp_consumed(pos)
        return out

    def _kmp_consumed(self, pos: int) -> None:
        """The first ``pos`` bytes of _kmp were parsed: keep the offsets of what is left."""
        records = [(i - pos, offset) for i, offset in self._kmp_records]
        while len(records) > 1 and records[1][0] <= 0:
            del records[0]
        if not self._kmp:
            records = []
        elif records[0][0] < 0:  # the unfinished message starts inside this record
            i, offset = records[0]
            records[0] = (0, offset - i)
        self._kmp_records = records

    def _end_of_stream(self) -> None:
        super()._end_of_stream()
        if self._kmp:
            self._fail(f"stream ends inside a KMP message ({len(self._kmp)} bytes of it present)",
                       self._kmp_records[0][1])

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        _U16LE.pack_into(buf, off, KMP_HEADER_BYTES + length)
        _KMP.pack_into(buf, off + RECORD_HEADER_BYTES, _ZERO6, KMP_DATA, _KMP_MIDDLE_OUT, length)

    def _control(self, event: Event) -> bytes:
        if not isinstance(event, Control):
            raise ValueError(f"oNCP has no {type(event).__name__} record; send a Control(kind, payload)")
        kmp = _KMP.pack(_ZERO6, event.kind, _KMP_MIDDLE_OUT, len(event.payload)) + event.payload
        return _U16LE.pack(len(kmp)) + kmp

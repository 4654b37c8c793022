"""pcap files of raw IP packets (LINKTYPE_RAW), written and read with struct.

The format is the classic libpcap one: a 24-byte global header, then per
packet a 16-byte record header (seconds, microseconds, captured length,
original length) and the bytes.  Reading accepts both byte orders, the
nanosecond variant, LINKTYPE_RAW (101, the old DLT_RAW 12/14, IPV4/IPV6 228/229) and
Ethernet (1, IPv4/IPv6 frames only).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import FramingError

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
_RAW_ALIASES = (LINKTYPE_RAW, 12, 14, 228, 229)  # DLT_RAW variants, LINKTYPE_IPV4/IPV6
SNAPLEN_BYTES = 0xFFFF
ETHERNET_HEADER_BYTES = 14

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Writes IP packets to a LINKTYPE_RAW pcap; the timestamp is the packet index in microseconds."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0
        out.write(_GLOBAL.pack(MAGIC_US, 2, 4, 0, 0, SNAPLEN_BYTES, LINKTYPE_RAW))

    def write(self, packet: bytes | memoryview) -> None:
        n = len(packet)
        sec, usec = divmod(self.count, 1_000_000)
        self.out.write(_RECORD.pack(sec, usec, n, n))
        self.out.write(packet)
        self.count += 1


def read_packets(data: bytes) -> Iterator[bytes]:
    """The IP packets in a pcap file's bytes; FramingError if it is not one we can read."""
    return (packet for _offset, packet in read_records(data))


def read_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset of its record, IP packet) for each packet of a pcap file's bytes, Ethernet
    frames that do not carry IP left out.  FramingError, at once, if it is not a file we can
    read, and while iterating at a record cut short."""
    order, linktype = _file_header(data)
    return _records(data, order, linktype)


def _file_header(data: bytes) -> tuple[str, int]:
    """(byte order, link type) of a pcap file; FramingError if it is not one we can read."""
    if len(data) < _GLOBAL.size:
        raise FramingError("not a pcap file: shorter than the 24-byte header")
    magic = struct.unpack_from("<I", data)[0]
    if magic in (MAGIC_US, MAGIC_NS):
        order = "<"
    elif struct.unpack_from(">I", data)[0] in (MAGIC_US, MAGIC_NS):
        order = ">"
    else:
        raise FramingError(f"not a pcap file (magic {data[:4].hex()}); pcapng is not supported")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in _RAW_ALIASES and linktype != LINKTYPE_ETHERNET:
        raise FramingError(f"pcap link type {linktype} is neither raw IP nor Ethernet")
    return order, linktype


def _records(data: bytes, order: str, linktype: int) -> Iterator[tuple[int, bytes]]:
    record = struct.Struct(order + "IIII")
    pos = _GLOBAL.size
    while pos < len(data):
        at = pos
        if pos + record.size > len(data):
            raise FramingError(f"pcap record header cut at offset {at}")
        _sec, _frac, caplen, _origlen = record.unpack_from(data, pos)
        pos += record.size
        if pos + caplen > len(data):
            raise FramingError(f"pcap record at offset {at} runs past the end of the file")
        frame = data[pos : pos + caplen]
        pos += caplen
        if linktype == LINKTYPE_ETHERNET:
            if len(frame) < ETHERNET_HEADER_BYTES or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
                continue  # not IP: a raw-IP tunnel cannot carry it
            frame = frame[ETHERNET_HEADER_BYTES:]
        yield at, frame

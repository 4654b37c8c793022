"""Helpers shared by the ring tests: IP packets with checkable payloads, session pairs."""

from __future__ import annotations

import contextlib
import struct
import zlib

from tunring import Adapter, Session

IPV4 = struct.Struct("!BBHHHBBH4s4s")


def ipv4(size: int, seq: int = 0, fill: bytes | None = None) -> bytes:
    """An IPv4 packet of ``size`` (>= 28) bytes whose payload is derived from ``seq``."""
    header = IPV4.pack(0x45, 0, size, seq & 0xFFFF, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
    body = fill if fill is not None else struct.pack("!Q", seq) * ((size - 20) // 8 + 1)
    return header + body[: size - 20]


def ipv6(size: int, seq: int = 0) -> bytes:
    header = struct.pack("!IHBB16s16s", 0x60000000, size - 40, 17, 64, b"\xfd" + bytes(15), b"\xfd" + bytes(14) + b"\1")
    return header + (struct.pack("!Q", seq) * ((size - 40) // 8 + 1))[: size - 40]


def stamped(size: int, seq: int) -> bytes:
    """An IPv4 packet (>= 28 bytes) carrying a 32-bit seq and a CRC32 of everything before it."""
    base = bytearray(ipv4(size, seq))
    struct.pack_into("!I", base, 20, seq & 0xFFFFFFFF)
    struct.pack_into("!I", base, size - 4, zlib.crc32(base[: size - 4]))
    return bytes(base)


def check_stamped(data) -> int:
    """The seq of a packet made by stamped(); AssertionError if it is damaged."""
    body = bytes(data)
    assert struct.unpack("!I", body[-4:])[0] == zlib.crc32(body[:-4]), "packet damaged"
    return struct.unpack_from("!I", body, 20)[0]


@contextlib.contextmanager
def pair(capacity: int = 0x20000, lead: int = 0, trail: int = 0, overallocate: bool = False):
    """A Session and an in-process Adapter attached to it."""
    session = Session.create(capacity, lead, trail, overallocate=overallocate)
    adapter = Adapter.attach(session.handle())
    try:
        yield session, adapter
    finally:
        adapter.close()
        session.close()

"""Test helpers: independent reference encoders (plain byte concatenation, written from
BACKGROUND.md's formats, sharing no code with tunring.proto) and an in-process ring."""

from __future__ import annotations

import ctypes
import random

from tunring import layout as L
from tunring.adapter import Adapter
from tunring.session import Session

KMP_MIDDLE = bytes([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])


def be16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def be32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def ppp_frame(ip: bytes) -> bytes:
    return b"\xff\x03" + (b"\x00\x57" if ip[0] >> 4 == 6 else b"\x00\x21") + ip


def cstp(payload: bytes, kind: int = 0) -> bytes:
    return b"STF\x01" + be16(len(payload)) + bytes([kind, 0]) + payload


def dtls(payload: bytes, kind: int = 0) -> bytes:
    return bytes([kind]) + payload


def gpst(payload: bytes, ethertype: int | None = None) -> bytes:
    if ethertype is None:
        ethertype = 0x86DD if payload[0] >> 4 == 6 else 0x0800
    return bytes.fromhex("1a2b3c4d") + be16(ethertype) + be16(len(payload)) + bytes([1, 0, 0, 0, 0, 0, 0, 0]) + payload


def pulse(payload: bytes, kind: int = 4, seq: int = 0, vendor: int = 0xA4C) -> bytes:
    return be32(vendor) + be32(kind) + be32(16 + len(payload)) + be32(seq) + payload


def kmp(payload: bytes, kind: int = 300) -> bytes:
    return bytes(6) + be16(kind) + KMP_MIDDLE + be16(len(payload)) + payload


def oncp_record(data: bytes) -> bytes:
    return len(data).to_bytes(2, "little") + data


def oncp(payload: bytes) -> bytes:
    return oncp_record(kmp(payload))


def array(payload: bytes) -> bytes:
    return payload


def f5(frame_or_ip: bytes, raw_frame: bool = False) -> bytes:
    frame = frame_or_ip if raw_frame else ppp_frame(frame_or_ip)
    return b"\xf5\x00" + be16(len(frame)) + frame


def fortinet(frame_or_ip: bytes, raw_frame: bool = False) -> bytes:
    frame = frame_or_ip if raw_frame else ppp_frame(frame_or_ip)
    return be16(len(frame) + 6) + b"\x50\x50" + be16(len(frame)) + frame


def ppp(ip: bytes) -> bytes:
    return ppp_frame(ip)


def fcs16(data: bytes) -> int:
    """RFC 1662 FCS-16, bit by bit (reflected 0x8408, init 0xFFFF)."""
    fcs = 0xFFFF
    for byte in data:
        fcs ^= byte
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs


def hdlc_frame(frame: bytes, accm: int = 0xFFFFFFFF, leading: bool = True) -> bytes:
    """Flag, escaped(frame + complemented FCS low byte first), flag; byte by byte."""
    fcs = fcs16(frame) ^ 0xFFFF
    out = bytearray(b"\x7e" if leading else b"")
    for byte in frame + bytes([fcs & 0xFF, fcs >> 8]):
        if byte in (0x7E, 0x7D) or (byte < 0x20 and accm >> byte & 1):
            out += bytes([0x7D, byte ^ 0x20])
        else:
            out.append(byte)
    out.append(0x7E)
    return bytes(out)


def hdlc(ip: bytes, accm: int = 0xFFFFFFFF, leading: bool = True) -> bytes:
    return hdlc_frame(ppp_frame(ip), accm, leading)


#: The data-record reference encoder of each framing, by CLI name.
REFERENCE = {
    "cstp": cstp, "dtls": dtls, "gpst": gpst, "pulse": pulse, "oncp": oncp,
    "array": array, "f5": f5, "fortinet": fortinet, "ppp": ppp,
    "hdlc": hdlc, "f5-hdlc": hdlc,
}


def ipv4(payload: bytes, ident: int = 0) -> bytes:
    """An IPv4 packet (checksum left 0: nothing here checks it)."""
    total = 20 + len(payload)
    return bytes([0x45, 0]) + be16(total) + be16(ident & 0xFFFF) + bytes([0x40, 0, 64, 17, 0, 0]) + bytes(
        [10, 0, 0, 1, 10, 0, 0, 2]) + payload


def ipv6(payload: bytes) -> bytes:
    return bytes([0x60, 0, 0, 0]) + be16(len(payload)) + bytes([17, 64]) + bytes(15) + b"\x01" + bytes(15) + b"\x02" + payload


def random_ip(rng: random.Random, max_bytes: int = 1500) -> bytes:
    if rng.random() < 0.7:
        return ipv4(rng.randbytes(rng.randint(0, max_bytes - 20)), rng.getrandbits(16))
    return ipv6(rng.randbytes(rng.randint(0, max_bytes - 40)))


def address(view: memoryview) -> int:
    """The address of the first byte of a writable ``view`` (the test rings are bytearrays)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def within(view_spans: list[tuple[int, int]], packet_view: memoryview) -> bool:
    """True if all of ``packet_view``'s memory lies inside one of the (address, length) spans."""
    start = address(packet_view)
    return any(a <= start and start + len(packet_view) <= a + n for a, n in view_spans)


def recv_into(codec, data: bytes) -> list:
    """``data`` delivered as a transport's ``recv_into`` would: written straight into the codec's
    ``want()`` views (a datagram codec takes it as one datagram); the events."""
    events = []
    if codec.datagram:
        view = codec.want()
        view[: len(data)] = data
        return codec.received(len(data))
    pos = 0
    while pos < len(data):
        view = codec.want()
        k = min(len(view), len(data) - pos)
        view[:k] = data[pos : pos + k]
        pos += k
        events += codec.received(k)
    return events


class Ring:
    """A Session (the codec's device) and an Adapter over the same in-process rings."""

    def __init__(self, codec_cls, capacity: int = 0x80000, mtu: int = 1500, lead: int | None = None) -> None:
        self.lead = codec_cls.session_lead() if lead is None else lead
        size = L.ring_size(capacity, self.lead, 0)
        self.send_ring = bytearray(size)
        self.receive_ring = bytearray(size)
        self.session = Session.over(self.send_ring, self.receive_ring, lead=self.lead, mtu=mtu)
        self.adapter = Adapter.over(self.send_ring, self.receive_ring, lead=self.lead)
        self.got: list[bytes] = []
        self.slots: list[int] = []  # ring offset of each delivered packet's data

    def drain(self) -> list[bytes]:
        """Everything the codec has sent to the device so far."""
        while True:
            p = self.adapter.receive()
            if p is None:
                return self.got
            self.got.append(bytes(p.data))
            self.slots.append(p.start)
            self.adapter.release(p)

    def inject(self, ip: bytes):
        """A packet the OS sends (device.receive() will return it)."""
        self.adapter.deliver(ip)
        return self.session.receive()

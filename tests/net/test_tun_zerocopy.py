"""Zero-copy proof for TunDevice, with oracles that are not its own counters.

- Memory addresses: the buffer the kernel read into (os.readv's target,
  recorded by a wrapper) is the memory of the packet delivered, and os.write
  is handed the packet's own memory; a GSO read's segments are elsewhere (they
  are copies) and the device's copy counters must then say how many and how
  many bytes, as the test counts them from what it received.
- tracemalloc: holding N received packets costs far less than N packets'
  bytes; the same measurement of an os.read loop (which copies every packet
  into new bytes) costs more than that, so the measurement would see a copy.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import tracemalloc

import pytest

from tunring.linux import TunDevice
from tunring.linux import tun as tunmod
from tunring.linux.offload import VNET_HDR_LEN

from tun_traffic import ADDRESSES, LOCAL4, PEER4, udp4

pytestmark = pytest.mark.net

PORT = 7300
COUNT = 200
PAYLOAD = 1372  # 1400-byte IPv4 packets


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def packet_address(p) -> int:
    return address(p.buf[p.start : p.start + 1])


def _ours(data: memoryview | bytes) -> bool:
    """A UDP/IPv4 packet of the test's (the kernel also sends IPv6 chatter of its own)."""
    return len(data) >= 28 and data[0] == 0x45 and data[9] == 17 and struct.unpack_from("!H", data, 22)[0] == PORT


def _send(count: int, payload: int = PAYLOAD) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(i.to_bytes(4, "big") * (payload // 4), (PEER4, PORT))


def _receive(dev: TunDevice, count: int) -> list:
    """``count`` of the test's packets, held (not released); the rest released."""
    held = []
    while len(held) < count:
        assert dev.wait(5), f"{len(held)} of {count} packets arrived"
        for p in dev.receive_many(64):
            if _ours(p.data):
                held.append(p)
            else:
                dev.release(p)
    return held


@pytest.fixture
def recorded_reads(monkeypatch):
    """Every os.readv's (target address, bytes read), as the kernel was told where to write."""
    reads: list[tuple[int, int]] = []
    real = os.readv

    def readv(fd, buffers):
        n = real(fd, buffers)
        reads.append((address(buffers[0]), n))
        return n

    monkeypatch.setattr(os, "readv", readv)
    return reads


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "vnet"])
def test_packets_are_delivered_in_the_memory_the_kernel_read_into(netns, recorded_reads, offload):
    with TunDevice.create("trz0", addresses=ADDRESSES, offload=offload, tso=False) as dev:
        _send(20)
        held = _receive(dev, 20)
        # The data starts where the read began (after the virtio header on a vnet device).
        targets = {at + (VNET_HDR_LEN if offload else 0): n - (VNET_HDR_LEN if offload else 0)
                   for at, n in recorded_reads}
        for p in held:
            assert targets.get(packet_address(p)) == len(p)
        dev.release_many(held)
        assert dev.copies == dev.copy_bytes == 0


def test_sent_packets_leave_from_their_own_memory(netns, monkeypatch):
    writes: list[tuple[int, int]] = []
    real = os.write

    def write(fd, data):
        writes.append((address(memoryview(data)), len(data)))
        return real(fd, data)

    with TunDevice.create("trz1", addresses=ADDRESSES) as dev, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL4, PORT))
        s.settimeout(5)
        packets = dev.allocate_many(100, 8)
        for i, p in enumerate(packets):
            p.data[:] = udp4(PEER4, LOCAL4, 5555, PORT, bytes([i]) * 72)
        where = [(packet_address(p), len(p)) for p in packets]
        monkeypatch.setattr(os, "write", write)
        dev.send_many(packets)
        monkeypatch.setattr(os, "write", real)
        assert writes == where
        assert [s.recv(200)[0] for _ in packets] == list(range(8))
        assert dev.copies == dev.copy_bytes == 0


def _traced_peak(read_all) -> tuple[int, object]:
    tracemalloc.start()
    try:
        kept = read_all()
        return tracemalloc.get_traced_memory()[1], kept
    finally:
        tracemalloc.stop()


def test_receiving_in_place_allocates_less_than_a_copy_would(netns):
    packet_bytes = 28 + PAYLOAD
    with TunDevice.create("trz2", addresses=ADDRESSES, packets=COUNT + 64) as dev:
        _send(COUNT)
        dev.wait(5)
        in_place, held = _traced_peak(lambda: _receive(dev, COUNT))
        assert all(bytes(p.data[28:32]) == i.to_bytes(4, "big") for i, p in enumerate(held))
        dev.release_many(held)

        def copying() -> list[bytes]:
            kept = []
            while len(kept) < COUNT:
                try:
                    data = os.read(dev.fileno(), 2048)  # what a plain read loop does: a new bytes each time
                except BlockingIOError:
                    dev.wait(5)
                    continue
                if _ours(data):
                    kept.append(data)
            return kept

        _send(COUNT)
        copied, kept = _traced_peak(copying)
        assert len(kept) == COUNT
    assert in_place < COUNT * packet_bytes // 4, f"{in_place} bytes for {COUNT} packets received in place"
    assert copied >= COUNT * packet_bytes, f"a copying read loop showed only {copied} bytes: the measurement is void"


def test_gso_segments_are_copies_and_counted(netns, recorded_reads):
    """One UDP_SEGMENT send arrives as a GSO read; its segments are elsewhere, and counted exactly."""
    payload = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: 7 segments of 1400 and a short one
    with TunDevice.create("trz3", addresses=ADDRESSES, offload=True) as dev:
        assert dev.offloads & tunmod.TUN_F_USO4, "this kernel has no USO: there would be no GSO read"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCAL4, 40000))
            s.setsockopt(socket.SOL_UDP, 103, 1400)  # UDP_SEGMENT
            s.sendto(payload, (PEER4, PORT))
        held = []
        while sum(len(p) - 28 for p in held) < len(payload):
            held.extend(_receive(dev, 1))
        assert dev.stats.gso_splits == 1 and len(held) == 8
        gso_reads = [(at, n) for at, n in recorded_reads if n > dev.mtu + VNET_HDR_LEN]
        assert len(gso_reads) == 1
        at, n = gso_reads[0]
        for p in held:  # not inside the buffer the kernel wrote: a copy
            assert not at <= packet_address(p) < at + n
        assert b"".join(bytes(p.data[28:]) for p in held) == payload
        assert dev.copies == len(held)
        assert dev.copy_bytes == sum(len(p) for p in held)
        dev.release_many(held)

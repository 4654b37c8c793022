"""A packet reflector over the Device API: the far end used by the TUN tests and benchmarks.

:func:`reflect` turns a packet from the kernel around so that the kernel
receives it as if from another host: the new destination is the old source
and the new source is the old destination with its last two 16-bit words
swapped (IPv4 ``10.1.10.2`` <-> ``10.2.10.1``, IPv6 ``fd00::1:2`` <->
``fd00::2:1``).  A client talking to ``10.1.10.2`` thus reaches a server on
the kernel's own address, which answers ``10.2.10.1`` and is reflected back
as ``10.1.10.2``: pings, UDP and TCP all work.  Both swaps leave every IP,
TCP, UDP and ICMP checksum valid, so the reflector never recomputes one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..device import Device
from ..errors import RingFull
from ..packet import ALLOCATED

log = logging.getLogger(__name__)

BATCH = 64


def peer_of(address: bytes) -> bytes:
    """The address a reflected packet comes from when sent to ``address`` (an involution)."""
    return address[:-4] + address[-2:] + address[-4:-2]


def reflect(pkt: memoryview) -> bool:
    """Turn ``pkt`` around in place; False (leave it alone) if it is not reflectable.

    Multicast and broadcast destinations and addresses equal to their own peer
    (which would loop) are not reflected.
    """
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        addrs = bytes(pkt[12:20])
        src, dst = addrs[:4], addrs[4:]
        if dst[0] >= 224 or dst[3] == 255:
            return False
        pkt[12:20] = peer_of(dst) + src
    elif len(pkt) >= 40 and pkt[0] >> 4 == 6:
        addrs = bytes(pkt[8:40])
        src, dst = addrs[:16], addrs[16:]
        if dst[0] == 0xFF:
            return False
        pkt[8:40] = peer_of(dst) + src
    else:
        return False
    return peer_of(dst) != dst


@dataclass
class Reflected:
    """What :func:`serve` did: ``packets`` reflected, each one memcpy'd (``copy_bytes`` in all)."""

    packets: int = 0
    copy_bytes: int = 0


def serve(device: Device, stop: Callable[[], bool], *, batch: int = BATCH) -> Reflected:
    """Reflect packets on ``device`` until ``stop()`` is true; returns what was reflected.

    Each reflected packet is copied into a newly allocated one (received and
    allocated packets live in different memory on a ring Session), and the
    batch goes out with one send_many so a device with offloads can coalesce.
    A full ring or kernel queue is waited out, never dropped.
    """
    done = Reflected()
    while not stop():
        if not device.wait(0.05):
            continue
        received = device.receive_many(batch)
        out: list = []
        for p in received:
            data = p.data
            if not reflect(data):
                continue
            while True:
                try:
                    q = device.allocate(len(data))
                    break
                except RingFull:
                    _flush(device, out)
                    out = []
                    _wait_writable(device, len(data))
            q.buf[q.start : q.end] = data
            done.copy_bytes += len(data)
            out.append(q)
        device.release_many(received)
        _flush(device, out)
        done.packets += len(out)
    return done


def _flush(device: Device, out: list) -> None:
    while out:
        try:
            device.send_many(out)
            return
        except RingFull:
            out = [p for p in out if p.state == ALLOCATED]
            _wait_writable(device, len(out[0]))


def _wait_writable(device: Device, size: int) -> None:
    wait = getattr(device, "wait_writable", None)  # rings and TUN devices have it; the loopback never fills
    if wait is None:
        time.sleep(0.001)
    else:
        wait(size, 0.1)

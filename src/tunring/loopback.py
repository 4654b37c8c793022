"""LoopbackDevice: an in-memory Device whose sent packets come back as received ones.

For tests and demos without root: code written against :class:`~tunring.device.Device`
runs unchanged over it.  A sent packet is not copied: the same slot is handed
back by ``receive`` with the same data window, headroom and tailroom.
"""

from __future__ import annotations

import os
import select
import time
from collections import deque

from .device import Device
from .errors import PacketError, RingClosed
from .packet import ALLOCATED, DONE, RECEIVED, Packet
from .pool import PacketPool

DEFAULT_PACKETS = 256


class LoopbackDevice(Device):
    """A Device over a :class:`~tunring.pool.PacketPool` that receives what it sends.

    The rules are the ring Session's: ``send`` requires the data to start where
    the slot's data starts (pull pushed headers off first) and
    ``shrink_and_send`` only takes the last allocated packet.  ``fileno`` is an
    eventfd that is readable while received packets wait.
    """

    def __init__(self, mtu: int = 1500, headroom: int = 32, tailroom: int = 32,
                 packets: int = DEFAULT_PACKETS) -> None:
        self.mtu = mtu
        self.headroom = headroom
        self.tailroom = tailroom
        self._pool = PacketPool(packets, mtu, headroom, tailroom, self)
        self._queue: deque[Packet] = deque()
        self._last: Packet | None = None
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._closed = False

    def _check(self, packet: Packet, state: int, verb: str) -> None:
        if self._closed:
            raise RingClosed("the loopback device is closed")
        if packet.owner is not self:
            raise PacketError(f"{verb}: this packet belongs to another ring or device")
        if packet.state != state:
            raise PacketError(f"{verb}: the packet was already sent, released or cancelled")

    def allocate(self, size: int) -> Packet:
        if self._closed:
            raise RingClosed("the loopback device is closed")
        packet = self._pool.take(size, ALLOCATED)
        self._last = packet
        return packet

    def allocate_many(self, size: int, count: int) -> list[Packet]:
        """Up to ``count`` packets of ``size`` bytes (as many as the pool has; RingFull if none)."""
        out = [self.allocate(size)]
        while len(out) < count and self._pool.free:
            out.append(self.allocate(size))
        return out

    def send(self, packet: Packet) -> None:
        self._check(packet, ALLOCATED, "send")
        if packet.start != packet.lo + self.headroom:
            raise PacketError("send: the packet's data no longer starts where its slot's data starts; "
                              "pull() pushed headers off before sending")
        if self._last is packet:
            self._last = None
        packet.state = DONE  # in flight: neither the sender's nor yet the receiver's
        if not self._queue:
            os.eventfd_write(self._efd, 1)
        self._queue.append(packet)

    def shrink_and_send(self, packet: Packet, size: int | None = None) -> None:
        self._check(packet, ALLOCATED, "shrink_and_send")
        if packet is not self._last:
            raise PacketError("shrink_and_send: only the last allocated, unsent packet can be shrunk")
        if size is not None:
            if not 0 <= size <= len(packet):
                raise PacketError(f"shrink_and_send({size}): can only shrink a {len(packet)}-byte packet")
            packet.end = packet.start + size
        self.send(packet)

    def cancel(self, packet: Packet) -> None:
        self._check(packet, ALLOCATED, "cancel")
        if self._last is packet:
            self._last = None
        self._pool.give(packet)

    def receive(self) -> Packet | None:
        if self._closed:
            raise RingClosed("the loopback device is closed")
        if not self._queue:
            return None
        packet = self._queue.popleft()
        packet.state = RECEIVED
        if not self._queue:
            self._drain()
        return packet

    def release(self, packet: Packet) -> None:
        self._check(packet, RECEIVED, "release")
        self._pool.give(packet)

    def wait(self, timeout_s: float | None = None) -> bool:
        if self._closed:
            raise RingClosed("the loopback device is closed")
        if self._queue:
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self._efd, select.POLLIN)
        while not self._queue:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not poller.poll(None if left is None else left * 1000.0) and left is not None:
                return bool(self._queue)
            if self._closed:
                raise RingClosed("the loopback device is closed")
        return True

    def _drain(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass

    def arm(self) -> bool:
        return bool(self._queue)

    def fileno(self) -> int:
        return self._efd

    @property
    def packets_out(self) -> int:
        """Packets allocated or queued or received and not yet given back."""
        return self._pool.in_use

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._efd)
        self._queue.clear()

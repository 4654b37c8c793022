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

from .errors import PacketError, RingClosed
from .packet import ALLOCATED, DONE, RECEIVED, Packet
from .pool import PacketPool, PoolDevice

DEFAULT_PACKETS = 256


class LoopbackDevice(PoolDevice):
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
        self.max_packet = mtu
        self._queue: deque[Packet] = deque()
        self._last: Packet | None = None
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._closed = False

    def _closed_error(self) -> RingClosed:
        return RingClosed("the loopback device is closed")

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

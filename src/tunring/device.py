"""Device: the one packet interface that codecs and applications are written against.

A device hands out :class:`~tunring.packet.Packet` windows with room before
and after the data, takes them back, and can be waited on.  The ring
:class:`~tunring.session.Session`, the Linux TUN device and the in-memory
loopback all implement it; code above it does not know which one it has.

Direction words are the client's: ``allocate``/``send`` put packets into the
operating system, ``receive``/``release`` take packets the operating system
sent out.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator

from .packet import Packet


class Device(abc.ABC):
    """Packet I/O with headroom and tailroom; see the module docstring."""

    #: Largest IP packet the device carries.
    mtu: int = 1500
    #: Packets that went through a copying path (``write``) instead of zero-copy.
    copies: int = 0

    # -- operating-system bound ------------------------------------------------
    @abc.abstractmethod
    def allocate(self, size: int) -> Packet:
        """A writable packet of ``size`` bytes with the device's headroom and tailroom."""

    @abc.abstractmethod
    def send(self, packet: Packet) -> None:
        """Hand an allocated packet to the operating system."""

    def send_many(self, packets: list[Packet]) -> None:
        for packet in packets:
            self.send(packet)

    @abc.abstractmethod
    def shrink_and_send(self, packet: Packet, size: int | None = None) -> None:
        """Send the last allocated packet cut to ``size`` bytes (default: its length)."""

    @abc.abstractmethod
    def cancel(self, packet: Packet) -> None:
        """Give back an allocated packet that will not be sent."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into a new packet and send it (the copying path)."""
        packet = self.allocate(len(data))
        packet.buf[packet.start : packet.end] = data
        self.send(packet)
        self.copies += 1

    # -- operating-system sent -------------------------------------------------
    @abc.abstractmethod
    def receive(self) -> Packet | None:
        """The next packet the operating system sent, or None if there is none yet."""

    def receive_many(self, max_count: int) -> list[Packet]:
        out: list[Packet] = []
        while len(out) < max_count:
            packet = self.receive()
            if packet is None:
                break
            out.append(packet)
        return out

    @abc.abstractmethod
    def release(self, packet: Packet) -> None:
        """Give a received packet's memory back."""

    def release_many(self, packets: list[Packet]) -> None:
        for packet in packets:
            self.release(packet)

    @abc.abstractmethod
    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until receive() has something to return; False on timeout."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """A descriptor that becomes readable when packets arrive (see ``arm``)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- waiting beside other descriptors (selectors, poll, asyncio) -----------
    def arm(self) -> bool:
        """Make fileno() signal the next arrival; True if receive() has something already.

        Poll ``wait_fds()`` only when this returns False, and call ``disarm()``
        after waking (a ring only signals while armed: Wintun's Alertable flag).
        """
        return False

    def disarm(self) -> None:
        """Undo arm() after waking."""

    def wait_fds(self) -> list[int]:
        """Descriptors to poll for readability while armed (fileno(), perhaps a peer's pidfd)."""
        return [self.fileno()]

    async def areceive(self) -> Packet:
        """The next packet, waiting on the running event loop without blocking it."""
        loop = asyncio.get_running_loop()
        while True:
            packet = self.receive()
            if packet is not None:
                return packet
            woken = loop.create_future()

            def wake() -> None:
                if not woken.done():
                    woken.set_result(None)

            fds = self.wait_fds()
            for fd in fds:
                loop.add_reader(fd, wake)
            try:
                if not self.arm():
                    await woken
            finally:
                for fd in fds:
                    loop.remove_reader(fd)
                self.disarm()

    def __aiter__(self) -> AsyncIterator[Packet]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Packet]:
        while True:
            yield await self.areceive()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""PacketPool: preallocated packet memory for devices that are not rings.

The Linux TUN device and the in-memory loopback keep their packets in one
anonymous mapping cut into equal slots.  A slot is ``headroom`` bytes, up to
``room_bytes`` of packet data, then at least ``tailroom`` bytes; a packet is a
:class:`~tunring.packet.Packet` window into its slot, so reads land in it and
writes leave from it with no copy.
"""

from __future__ import annotations

import mmap

from .device import Device
from .errors import PacketError, RingClosed, RingFull
from .packet import ALLOCATED, DONE, Packet

SLOT_ALIGN = 64  # cache line: packets never share one


class PacketPool:
    """``count`` slots of packet memory handed out as Packets owned by ``owner``.

    ``take`` gives a packet whose data starts ``headroom`` bytes into a free
    slot; ``give`` returns a packet's slot.  The pool never grows: when every
    slot is out, ``take`` raises RingFull (release or send packets first).
    """

    def __init__(self, count: int, room_bytes: int, headroom: int, tailroom: int, owner: object) -> None:
        if count < 1 or room_bytes < 1 or headroom < 0 or tailroom < 0:
            raise ValueError(f"bad pool geometry: count={count} room={room_bytes} "
                             f"headroom={headroom} tailroom={tailroom}")
        self.count = count
        self.room_bytes = room_bytes
        self.headroom = headroom
        self.tailroom = tailroom
        self.slot_bytes = (headroom + room_bytes + tailroom + SLOT_ALIGN - 1) // SLOT_ALIGN * SLOT_ALIGN
        self._mapping = mmap.mmap(-1, count * self.slot_bytes)
        self.buf = memoryview(self._mapping)
        self.owner = owner
        # Free slots as their offsets; a stack so the hottest slot is reused first.
        self.free = list(range((count - 1) * self.slot_bytes, -1, -self.slot_bytes))

    def take(self, size: int, state: int) -> Packet:
        """A packet of ``size`` bytes in a free slot, in ``state``."""
        if not 0 <= size <= self.room_bytes:
            raise PacketError(f"allocate({size}): this device's packets hold 0 to {self.room_bytes} bytes")
        if not self.free:
            raise RingFull(f"packet pool exhausted: all {self.count} packets are out; "
                           "send, cancel or release some first")
        lo = self.free.pop()
        start = lo + self.headroom
        return Packet(self.buf, start, start + size, lo, lo + self.slot_bytes, self.owner, state)

    def give(self, packet: Packet) -> None:
        """Return a packet's slot (the caller has checked ownership and state)."""
        packet.state = DONE
        self.free.append(packet.lo)

    @property
    def in_use(self) -> int:
        return self.count - len(self.free)


new = object.__new__


class PoolDevice(Device):
    """The allocation side of a Device whose packets live in a PacketPool (TUN, loopback).

    The rules are the ring Session's: ``shrink_and_send`` only takes the last
    allocated, unsent packet; packets are checked to be this device's and in
    the right state.  Subclasses set ``_pool``, ``_closed``, ``_last = None``
    and ``max_packet`` (the largest allocation), and say how they are named in
    errors with ``_closed_error``.
    """

    _pool: PacketPool
    _closed: bool = False
    _last: Packet | None = None
    max_packet: int = 1500

    def _closed_error(self) -> RingClosed:
        return RingClosed(f"{type(self).__name__} is closed")

    def _check(self, packet: Packet, state: int, verb: str) -> None:
        if self._closed:
            raise self._closed_error()
        if packet.owner is not self:
            raise PacketError(f"{verb}: this packet belongs to another ring or device")
        if packet.state != state:
            raise PacketError(f"{verb}: the packet was already sent, released or cancelled")

    def _refuse(self, size: int) -> None:
        """Raise why a packet of ``size`` bytes cannot be allocated."""
        if self._closed:
            raise self._closed_error()
        if not 0 <= size <= self.max_packet:
            raise PacketError(f"allocate({size}): this device's packets hold 0 to {self.max_packet} bytes")
        raise RingFull(f"packet pool exhausted: all {self._pool.count} packets are out; "
                       "send, cancel or release some first")

    def allocate(self, size: int) -> Packet:
        return self.allocate_many(size, 1)[0]

    def allocate_many(self, size: int, count: int) -> list[Packet]:
        """Up to ``count`` packets of ``size`` bytes: as many as the pool has, at least one (else RingFull)."""
        pool = self._pool
        if self._closed or not 0 <= size <= self.max_packet or not pool.free:
            self._refuse(size)
        free, buf, headroom, slot = pool.free, pool.buf, pool.headroom, pool.slot_bytes
        out: list[Packet] = []
        append = out.append
        for _ in range(min(count, len(free))):
            lo = free.pop()
            start = lo + headroom
            packet = new(Packet)  # Packet(...) spelled out, as the ring does: cheaper per packet
            packet.buf = buf
            packet.start = start
            packet.end = start + size
            packet.lo = lo
            packet.hi = lo + slot
            packet.owner = self
            packet.state = ALLOCATED
            append(packet)
        self._last = out[-1]
        return out

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

"""PacketPool: preallocated packet memory for devices that are not rings.

The Linux TUN device and the in-memory loopback keep their packets in one
anonymous mapping cut into equal slots.  A slot is ``headroom`` bytes, up to
``room_bytes`` of packet data, then at least ``tailroom`` bytes; a packet is a
:class:`~tunring.packet.Packet` window into its slot, so reads land in it and
writes leave from it with no copy.
"""

from __future__ import annotations

import mmap

from .errors import PacketError, RingFull
from .packet import DONE, Packet

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

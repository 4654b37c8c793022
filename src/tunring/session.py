"""Session: the client end of a ring pair (what wintun.dll is to a VPN client).

The client allocates packets in the **Receive** ring and sends them to the
adapter, and receives the packets the adapter puts in the **Send** ring (ring
names are the adapter's view, as in Wintun).  Every packet has ``4 + lead``
bytes of headroom (the slot's own Size field counts: it is written only at
``send``) and ``trail`` bytes (plus alignment) of tailroom, in both rings.
"""

from __future__ import annotations

import mmap
import os

from . import layout as L
from . import shm
from ._atomic import load
from .device import Device
from .errors import PacketError, RingClosed
from .packet import Packet
from .ring import RingReader, RingWriter, Waker

DEFAULT_CAPACITY = 0x400000  # 4 MiB, as in Wintun's example client


class Session(Device):
    """Client end of a Wintun ring pair, with optional per-packet padding.

    Make one with :meth:`create` (shared memory + events, for an adapter in this
    or another process) or :meth:`over` (two caller-supplied ring buffers, no
    events).  Packets are :class:`~tunring.packet.Packet` windows into the
    rings; they may be sent and released in any order.
    """

    def __init__(
        self,
        writer: RingWriter,
        reader: RingReader,
        *,
        mapping: mmap.mmap | None = None,
        fds: list[int] | None = None,
        mtu: int = 1500,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._mapping = mapping
        self._fds = fds or []
        self.mtu = mtu
        self.lead = writer.lead
        self.trail = writer.trail
        self.capacity = writer.capacity
        self.overallocate = writer.overallocate
        self._closed = False
        self._peer_pid = 0
        # The per-packet calls go straight to the ring ends (no delegating frame);
        # the methods below document them and serve other callers of the class.
        self.allocate = writer.allocate
        self.allocate_many = writer.allocate_many
        self.send = writer.send
        self.send_many = writer.send_many
        self.shrink_and_send = writer.shrink_and_send
        self.receive = reader.receive
        self.receive_many = reader.receive_many
        self.release = reader.release
        self.release_many = reader.release_many

    # -- construction ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        capacity: int = DEFAULT_CAPACITY,
        lead: int = 0,
        trail: int = 0,
        *,
        overallocate: bool = False,
        mtu: int = 1500,
    ) -> Session:
        """Both rings in one new shared mapping (memfd, 0600) with four eventfds."""
        geometry = shm.Geometry(capacity, lead, trail, overallocate)
        memfd, mapping = shm.create_mapping(geometry)
        events = shm.new_events()
        mem = memoryview(mapping)
        send_tail, receive_tail, send_head, receive_head = events
        writer = RingWriter(
            mem, geometry.receive_base, capacity, lead, trail, overallocate=overallocate,
            tail_waker=Waker(mem, geometry.receive_base + L.ALERTABLE, receive_tail),
            space_waker=Waker(mem, shm.RECEIVE_SPACE_ALERTABLE, receive_head),
        )
        reader = RingReader(
            mem, geometry.send_base, capacity, lead, trail,
            tail_waker=Waker(mem, geometry.send_base + L.ALERTABLE, send_tail),
            space_waker=Waker(mem, shm.SEND_SPACE_ALERTABLE, send_head),
        )
        return cls(writer, reader, mapping=mapping, fds=[memfd, *events], mtu=mtu)

    @classmethod
    def over(
        cls,
        send_ring: memoryview | bytearray,
        receive_ring: memoryview | bytearray,
        lead: int = 0,
        trail: int = 0,
        *,
        overallocate: bool = False,
        mtu: int = 1500,
    ) -> Session:
        """A session over two caller-supplied Wintun ring buffers (no events: waits poll).

        The capacity follows from the buffers' length (``layout.capacity_for``).
        Positions start at the rings' current Head/Tail.
        """
        send = memoryview(send_ring).cast("B")
        receive = memoryview(receive_ring).cast("B")
        writer = RingWriter(receive, 0, L.capacity_for(len(receive), lead, trail), lead, trail,
                            overallocate=overallocate)
        reader = RingReader(send, 0, L.capacity_for(len(send), lead, trail), lead, trail)
        return cls(writer, reader, mtu=mtu)

    def handle(self) -> shm.SessionHandle:
        """A handle an Adapter in another process attaches with (see SessionHandle)."""
        if not self._fds:
            raise RingClosed("a session made with Session.over() has no shared memory handle")
        return shm.SessionHandle(self._fds[0], tuple(self._fds[1:]))  # type: ignore[arg-type]

    @property
    def send_ring(self) -> memoryview:
        """The Send ring (adapter -> client) as raw bytes, header included."""
        return self._reader.mem[self._reader.base : self._reader.base + L.ring_size(self.capacity, self.lead, self.trail)]

    @property
    def receive_ring(self) -> memoryview:
        """The Receive ring (client -> adapter) as raw bytes, header included."""
        return self._writer.mem[self._writer.base : self._writer.base + L.ring_size(self.capacity, self.lead, self.trail)]

    @property
    def headroom(self) -> int:
        return L.SIZE_FIELD + self.lead

    # -- sending (into the Receive ring) ---------------------------------------
    def allocate(self, size: int) -> Packet:
        return self._writer.allocate(size)

    def allocate_many(self, size: int, count: int) -> list[Packet]:
        """Up to ``count`` packets of ``size`` bytes (as many as fit; RingFull if none)."""
        return self._writer.allocate_many(size, count)

    def send(self, packet: Packet) -> None:
        self._writer.send(packet)

    def send_many(self, packets: list[Packet]) -> None:
        self._writer.send_many(packets)

    def shrink_and_send(self, packet: Packet, size: int | None = None) -> None:
        self._writer.shrink_and_send(packet, size)

    def cancel(self, packet: Packet) -> None:
        self._writer.cancel(packet)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the peer has taken and released every packet sent; False on timeout."""
        return self._writer.flush(timeout_s)

    def wait_writable(self, size: int, timeout_s: float | None = None) -> bool:
        """Wait until a packet of ``size`` bytes can be allocated; False on timeout."""
        self._watch_peer()
        return self._writer.wait_writable(size, timeout_s)

    # -- receiving (from the Send ring) ----------------------------------------
    def receive(self) -> Packet | None:
        return self._reader.receive()

    def receive_many(self, max_count: int) -> list[Packet]:
        return self._reader.receive_many(max_count)

    def release(self, packet: Packet) -> None:
        self._reader.release(packet)

    def release_many(self, packets: list[Packet]) -> None:
        self._reader.release_many(packets)

    def wait(self, timeout_s: float | None = None) -> bool:
        self._watch_peer()
        return self._reader.wait(timeout_s)

    def fileno(self) -> int:
        """The Send ring's TailMoved eventfd: readable after the adapter publishes
        while this session is armed (``wait`` and ``async for`` arm it)."""
        if not self._fds:
            raise PacketError("a session made with Session.over() has no event to wait on")
        return self._fds[1]

    def arm(self) -> bool:
        self._watch_peer()
        return self._reader.arm()

    def disarm(self) -> None:
        self._reader.disarm()

    def wait_fds(self) -> list[int]:
        """The Send ring's TailMoved eventfd and, once an adapter process attached, its pidfd."""
        self._watch_peer()
        return self._reader.wait_fds()

    def _watch_peer(self) -> None:
        """Once an adapter process has attached, wake waiters if it exits."""
        if self._peer_pid or self._mapping is None:
            return
        pid = load(self._reader.mem, shm.ADAPTER_PID)
        if pid:
            self._peer_pid = pid
            fd = shm.peer_pidfd(pid)
            if fd is not None:
                self._fds.append(fd)
                self._reader.tail_waker.peer_fd = fd
                self._writer.space_waker.peer_fd = fd

    # -- lifetime --------------------------------------------------------------
    def close(self) -> None:
        """Stop both rings (the adapter sees Tail/Head = 0xFFFFFFFF) and free everything."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._reader.close()
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        self._writer.forget()
        self._reader.forget()
        shm.unmap(self._mapping, self._writer.mem if self._mapping is not None else None)
        self._mapping = None

    def __repr__(self) -> str:
        return (f"<Session capacity={self.capacity:#x} lead={self.lead} trail={self.trail} "
                f"overallocate={self.overallocate}{' closed' if self._closed else ''}>")

"""Adapter: the other end of a session (what the Wintun driver does), in user space.

The adapter takes the packets the client put in the Receive ring, validating
them as the driver does (each Size read once; a Size over 0xFFFF or a slot
running past the published content marks the ring dead with Head =
0xFFFFFFFF and raises RingCorrupt; a slot that is not IPv4/IPv6 is skipped and
counted as a discard), and delivers packets to the client in the Send ring,
either zero-copy (``reserve``, fill, ``commit``) or by copying (``deliver``).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

from . import layout as L
from . import shm
from ._atomic import load, store
from .errors import RingCorrupt
from .packet import Packet
from .ring import RingReader, RingWriter, Waker


@dataclass
class AdapterStats:
    """Counters, named from the adapter's side: rx = from the client, tx = to it."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    discards: int = 0  # client slots skipped: not IPv4/IPv6 (or over-allocated beyond the slot)
    errors: int = 0  # ring corruption found
    copies: int = 0  # packets delivered by the copying path (deliver)


class Adapter:
    """Adapter end of a ring pair: validating reader of the Receive ring, writer of the Send ring.

    Attach to a session's handle (same or another process) with :meth:`attach`,
    or wrap two raw ring buffers with :meth:`over`.
    """

    def __init__(self, reader: RingReader, writer: RingWriter, *, mapping: mmap.mmap | None = None,
                 fds: list[int] | None = None) -> None:
        self._reader = reader
        self._writer = writer
        self._mapping = mapping
        self._fds = fds or []
        self.lead = reader.lead
        self.trail = reader.trail
        self.capacity = reader.capacity
        self.overallocate = reader.overallocate
        self.stats = AdapterStats()
        self._closed = False

    @classmethod
    def attach(cls, handle: shm.SessionHandle) -> Adapter:
        """Attach to a session.  The adapter works on duplicates of the handle's
        descriptors: the handle stays the caller's to close."""
        fds = [os.dup(fd) for fd in handle.fds()]
        try:
            geometry, mapping = shm.open_mapping(fds[0])
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        mem = memoryview(mapping)
        send_tail, receive_tail, send_head, receive_head = fds[1:]
        store(mem, shm.ADAPTER_PID, os.getpid())
        peer = shm.peer_pidfd(load(mem, shm.CLIENT_PID))
        if peer is not None:
            fds.append(peer)
        g = geometry
        reader = RingReader(
            mem, g.receive_base, g.capacity, g.lead, g.trail, validate_ip=True, overallocate=g.overallocate,
            tail_waker=Waker(mem, g.receive_base + L.ALERTABLE, receive_tail, peer),
            space_waker=Waker(mem, shm.RECEIVE_SPACE_ALERTABLE, receive_head),
        )
        writer = RingWriter(
            mem, g.send_base, g.capacity, g.lead, g.trail,
            tail_waker=Waker(mem, g.send_base + L.ALERTABLE, send_tail),
            space_waker=Waker(mem, shm.SEND_SPACE_ALERTABLE, send_head, peer),
        )
        return cls(reader, writer, mapping=mapping, fds=fds)

    @classmethod
    def over(cls, send_ring: memoryview | bytearray, receive_ring: memoryview | bytearray, lead: int = 0,
             trail: int = 0, *, overallocate: bool = False) -> Adapter:
        """An adapter over two raw Wintun ring buffers (no events: waits poll)."""
        send = memoryview(send_ring).cast("B")
        receive = memoryview(receive_ring).cast("B")
        reader = RingReader(receive, 0, L.capacity_for(len(receive), lead, trail), lead, trail,
                            validate_ip=True, overallocate=overallocate)
        writer = RingWriter(send, 0, L.capacity_for(len(send), lead, trail), lead, trail)
        return cls(reader, writer)

    # -- from the client (Receive ring) ----------------------------------------
    def receive(self) -> Packet | None:
        """The next valid packet the client sent, or None; non-IP slots are skipped."""
        got = self.receive_many(1)
        return got[0] if got else None

    def receive_many(self, max_count: int) -> list[Packet]:
        reader = self._reader
        try:
            got = reader.receive_many(max_count)
        except RingCorrupt:
            self.stats.errors += 1
            raise
        finally:
            stats = self.stats
            stats.discards = reader.discards
            stats.rx_packets = reader.taken_packets
            stats.rx_bytes = reader.taken_bytes
        return got

    def release(self, packet: Packet) -> None:
        self._reader.release(packet)

    def release_many(self, packets: list[Packet]) -> None:
        self._reader.release_many(packets)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until receive() has something; False on timeout. RingClosed if the client died."""
        return self._reader.wait(timeout_s)

    def fileno(self) -> int:
        """The Receive ring's TailMoved eventfd (readable while armed, see Session.fileno)."""
        return self._fds[2]

    # The arming protocol of Device.arm/disarm/wait_fds, for callers that poll
    # fileno() together with other descriptors (the TUN bridge does).
    def arm(self) -> bool:
        return self._reader.arm()

    def disarm(self) -> None:
        self._reader.disarm()

    def wait_fds(self) -> list[int]:
        """fileno() and, if the client is another process, a pidfd readable when it exits."""
        return self._reader.wait_fds()

    # -- to the client (Send ring) ---------------------------------------------
    def reserve(self, max_size: int) -> Packet:
        """A writable slot for up to ``max_size`` bytes; fill it, then ``commit``."""
        return self._writer.allocate(max_size)

    def commit(self, packet: Packet, length: int | None = None) -> None:
        """Deliver a reserved packet with ``length`` bytes (default: its length).

        Shrinking is free for the last reserved packet; an earlier one must be
        committed at its reserved length.
        """
        writer = self._writer
        if writer.slots and writer.slots[-1] is packet:
            writer.shrink_and_send(packet, length)
        elif length is None or length == packet.end - packet.start:
            writer.send(packet)
        else:
            writer.shrink_and_send(packet, length)  # raises: only the last reserved packet shrinks
        self.stats.tx_packets += 1
        self.stats.tx_bytes += packet.end - packet.start

    def cancel(self, packet: Packet) -> None:
        self._writer.cancel(packet)

    def deliver(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the Send ring as one packet (RingFull if there is no room)."""
        packet = self._writer.allocate(len(data))
        packet.buf[packet.start : packet.end] = data
        self._writer.send(packet)
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(data)
        self.stats.copies += 1

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until the peer has taken and released every packet sent; False on timeout."""
        return self._writer.flush(timeout_s)

    def wait_writable(self, size: int, timeout_s: float | None = None) -> bool:
        return self._writer.wait_writable(size, timeout_s)

    # -- lifetime --------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed or self._reader.closed is not None

    def close(self) -> None:
        """Stop as the driver does: Receive ring Head = 0xFFFFFFFF, Send ring Tail = 0xFFFFFFFF."""
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        self._writer.close()
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

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

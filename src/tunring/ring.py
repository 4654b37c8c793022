"""The two ends of one Wintun ring: a writer (producer) and a reader (consumer).

A :class:`~tunring.session.Session` is a writer on the Receive ring plus a
reader on the Send ring; an :class:`~tunring.adapter.Adapter` is the mirror
image.  Each end keeps its own positions and the list of slots it has handed
out in process memory and trusts nothing in the shared mapping except the one
index the peer owns (Head for a writer, Tail for a reader), which it checks
before use.  Slots may be finished out of order; the shared index only ever
moves over a prefix of finished slots, as wintun.dll does with its release bit,
but here the "finished" mark lives in the Packet, not in the peer-writable ring.
"""

from __future__ import annotations

import os
import select
import time
from collections import deque
from collections.abc import Callable

from . import layout as L
from ._atomic import load, store
from .errors import PacketError, RingClosed, RingCorrupt, RingFull
from .packet import ALLOCATED, DONE, RECEIVED, Packet

SPIN_S = 100e-6  # how long a waiter polls before it sleeps (Wintun spins ~0.1 ms)
_POLL_FALLBACK_S = 200e-6  # sleep step when there is no event to sleep on

_pack_size = L.U32.pack_into
_unpack_size = L.U32.unpack_from
new = object.__new__


class Waker:
    """One sleeper and one waker around a flag word in shared memory.

    The sleeper (:meth:`sleep_until`) stores flag = 1, re-checks its condition
    and only then sleeps on the eventfd; the waker changes the condition and
    then calls :meth:`notify` (load flag, signal if set).  Both accesses are seq_cst
    (see ``_atomic.c``), so either the sleeper's re-check sees the change or the
    waker sees the flag: a wake-up cannot be lost.  ``efd`` is None for rings
    without events (``Session.over``): the sleeper then polls.
    """

    __slots__ = ("mem", "flag", "efd", "peer_fd", "spin_s", "sleeps")

    def __init__(self, mem: memoryview, flag: int, efd: int | None, peer_fd: int | None = None) -> None:
        self.mem = mem
        self.flag = flag
        self.efd = efd
        self.peer_fd = peer_fd  # a pidfd of the peer process, readable when it exits
        self.spin_s = SPIN_S
        self.sleeps = 0  # times the sleeper really slept (for tests and stats)

    def arm(self) -> None:
        """Ask the waker to signal the eventfd (no-op for a polling waker)."""
        if self.efd is not None:
            store(self.mem, self.flag, 1)

    def disarm(self) -> None:
        if self.efd is not None:
            store(self.mem, self.flag, 0)
            self.drain()

    def peer_exited(self) -> bool:
        return self.peer_fd is not None and bool(select.select([self.peer_fd], [], [], 0)[0])

    def notify(self) -> None:
        if self.efd is not None and load(self.mem, self.flag):
            os.eventfd_write(self.efd, 1)

    def sleep_until(self, ready: Callable[[], bool], timeout_s: float | None) -> bool:
        """Return True once ``ready()`` holds, False after ``timeout_s``."""
        if ready():
            return True
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        spin_end = time.monotonic() + (self.spin_s if timeout_s is None else min(self.spin_s, timeout_s))
        while time.monotonic() < spin_end:
            if ready():
                return True
        if self.efd is None:
            while True:
                if ready():
                    return True
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_FALLBACK_S)
        poller = select.poll()
        poller.register(self.efd, select.POLLIN)
        if self.peer_fd is not None:
            poller.register(self.peer_fd, select.POLLIN)
        while True:
            self.arm()
            try:
                if ready():
                    return True
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self.sleeps += 1
                events = poller.poll(None if left is None else left * 1000.0)
                self.drain()
                for fd, _ in events:
                    if fd == self.peer_fd:
                        # Let the caller see any last packets; report the exit if none.
                        if ready():
                            return True
                        raise RingClosed("the peer process has exited")
            finally:
                self.disarm()
            if ready():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def kick(self) -> None:
        """Wake the sleeper unconditionally (the ring is closing)."""
        if self.efd is not None:
            os.eventfd_write(self.efd, 1)

    def drain(self) -> None:
        if self.efd is not None:
            try:
                os.eventfd_read(self.efd)
            except BlockingIOError:
                pass


class _End:
    """What both ends share: the mapping, the ring's geometry and its liveness."""

    def __init__(self, mem: memoryview, base: int, capacity: int, lead: int, trail: int) -> None:
        L.check_capacity(capacity)
        L.check_padding(lead, trail)
        if base < 0 or base % L.ALIGNMENT or base + L.ring_size(capacity, lead, trail) > len(mem):
            raise ValueError("ring does not fit in the buffer")
        self.mem = mem
        self.base = base
        self.data = mem[base + L.HEADER_SIZE : base + L.ring_size(capacity, lead, trail)]
        self.capacity = capacity
        self.mask = capacity - 1
        self.lead = lead
        self.trail = trail
        self.pad = L.SIZE_FIELD + lead + trail  # slot bytes besides the packet itself
        self.closed: str | None = None  # why this end stopped, once it has
        # The packets this end has handed out and not yet had back, in slot order:
        # a writer's allocated-but-unpublished slots, a reader's taken-but-unreleased ones.
        self.slots: deque[Packet] = deque()

    def _own(self, packet: Packet, state: int, verb: str) -> None:
        if packet.owner is not self:
            raise PacketError(f"{verb}: this packet belongs to another ring or device")
        if packet.state != state:
            raise PacketError(f"{verb}: the packet was already sent, released or cancelled")

    def forget(self) -> None:
        """Drop this end's views of the mapping (packets still out become unusable)."""
        self.slots.clear()
        self.data.release()

    def _mark_dead(self, index: int, why: str) -> None:
        """Stop this end and tell the peer, as Wintun does, by writing 0xFFFFFFFF."""
        if self.closed is None:
            self.closed = why
            store(self.mem, self.base + index, L.DEAD)


class RingWriter(_End):
    """Producer end: allocate slots, fill them, publish Tail over finished ones.

    ``overallocate``: a sent packet may be shorter than its slot; the Size field
    then carries the slot's full size and the reader takes the real length from
    the IP header (Wintun's over-allocation proposal).
    """

    def __init__(
        self,
        mem: memoryview,
        base: int,
        capacity: int,
        lead: int = 0,
        trail: int = 0,
        *,
        tail_waker: Waker | None = None,
        space_waker: Waker | None = None,
        overallocate: bool = False,
    ) -> None:
        super().__init__(mem, base, capacity, lead, trail)
        # Without events (Session.over) waiting falls back to polling.
        self.tail_waker = tail_waker or Waker(mem, 0, None)  # wakes the reader when Tail moves
        self.space_waker = space_waker or Waker(mem, 0, None)  # the reader wakes us when Head moves
        self.overallocate = overallocate
        # Start where the ring stands: [Head, Tail) may still hold packets an earlier
        # writer published; later Heads are checked against what was seen here.
        tail = load(self.mem, self.base + L.TAIL)
        head = load(self.mem, self.base + L.HEAD)
        for name, value in (("Tail", tail), ("Head", head)):
            if value >= capacity or value % L.ALIGNMENT:
                raise RingCorrupt(f"ring {name} {value:#x} is not a valid position in a {capacity:#x}-byte ring")
        self.published = tail
        self.tail = tail  # private: end of the last allocated slot
        self.head = head  # last Head seen

    def refresh_head(self) -> int:
        """Read and check the reader's Head: it may only move over published bytes."""
        head = load(self.mem, self.base + L.HEAD)
        if head >= self.capacity:
            self.closed = self.closed or "the reader has closed the ring (Head >= capacity)"
            raise RingClosed(self.closed)
        last, mask = self.head, self.mask  # content() inlined: this runs on every allocation
        if head & 3 or (head - last) & mask > (self.published - last) & mask:
            self._mark_dead(L.TAIL, "ring corrupt: the reader's Head moved past what was published")
            raise RingCorrupt(
                f"ring corrupt: Head {head:#x} is outside the published region "
                f"[{self.head:#x}, {self.published:#x}); the ring is now marked dead"
            )
        self.head = head
        return head

    def free(self) -> int:
        """Bytes the next slot may use, as far as this end knows."""
        return L.free_space(self.head, self.tail, self.capacity)

    def _free_for(self, size: int) -> tuple[int, int]:
        """(slot bytes for ``size``, bytes free); RingFull if not even one slot fits."""
        if self.closed is not None:
            raise RingClosed(self.closed)
        if not 0 <= size <= L.MAX_IP_PACKET_SIZE:
            raise PacketError(f"allocate({size}): a packet holds 0 to {L.MAX_IP_PACKET_SIZE} bytes")
        slot = (size + self.pad + 3) & ~3
        # Head is read on every call, so a reader that stopped is noticed here.
        free = L.free_space(self.refresh_head(), self.tail, self.capacity)
        if free < slot:
            raise RingFull(f"ring full: a {size}-byte packet needs a {slot}-byte slot, {free} bytes free")
        return slot, free

    def allocate(self, size: int) -> Packet:
        slot = self._free_for(size)[0]
        lo = self.tail
        start = lo + L.SIZE_FIELD + self.lead
        packet = Packet(self.data, start, start + size, lo, lo + slot, self, ALLOCATED)
        self.tail = (lo + slot) & self.mask
        self.slots.append(packet)
        return packet

    def allocate_many(self, size: int, count: int) -> list[Packet]:
        """Up to ``count`` packets of ``size`` bytes: as many as fit, at least one (else RingFull)."""
        slot, free = self._free_for(size)
        data, mask, lo, offset = self.data, self.mask, self.tail, L.SIZE_FIELD + self.lead
        out = []
        append = out.append
        for _ in range(min(count, free // slot)):
            start = lo + offset
            packet = new(Packet)  # Packet(...) spelled out, as in receive_many
            packet.buf = data
            packet.start = start
            packet.end = start + size
            packet.lo = lo
            packet.hi = lo + slot
            packet.owner = self
            packet.state = ALLOCATED
            append(packet)
            lo = (lo + slot) & mask
        self.tail = lo
        self.slots.extend(out)
        return out

    def _finish(self, packet: Packet) -> None:
        """Check a packet may be sent as it stands and write its Size field."""
        if packet.owner is not self or packet.state != ALLOCATED:
            self._own(packet, ALLOCATED, "send")
        if packet.start != packet.lo + L.SIZE_FIELD + self.lead:
            raise PacketError(
                "send: the packet's data no longer starts where its slot's data starts; "
                "build headers in the headroom and pull() them off again before sending"
            )
        size = packet.end - packet.start
        room = packet.hi - packet.lo - self.pad  # the largest Size this slot can carry
        if self.overallocate:
            if size > room:
                raise PacketError(f"send: {size} bytes do not fit the {room}-byte slot (put() into the padding?)")
            if size < room:
                real = L.ip_length(packet.data)
                if real > size:
                    raise PacketError(
                        f"send: the IP header claims {real} bytes but only {size} were written"
                    )
            size = room
        elif (size + self.pad + 3) & ~3 != packet.hi - packet.lo:
            raise PacketError(
                f"send: {size} bytes do not match the slot allocated for {room} bytes; "
                "use shrink_and_send() on the last allocated packet, or overallocate=True"
            )
        _pack_size(self.data, packet.lo, size)
        packet.state = DONE

    def send(self, packet: Packet) -> None:
        self._finish(packet)
        self.publish()

    def send_many(self, packets: list[Packet]) -> None:
        data, offset, pad, finish = self.data, L.SIZE_FIELD + self.lead, self.pad, self._finish
        simple = not self.overallocate
        try:
            for p in packets:
                # Fast path for the common case; _finish checks and explains everything else.
                size = p.end - p.start
                if (simple and p.owner is self and p.state == ALLOCATED and p.start == p.lo + offset
                        and (size + pad + 3) & ~3 == p.hi - p.lo):
                    _pack_size(data, p.lo, size)
                    p.state = DONE
                else:
                    finish(p)
        except BaseException:
            self.publish()
            raise
        if len(packets) == len(self.slots):
            # Every unpublished slot was just finished (each was checked to be
            # ours and pending, and none twice): publish them all at once.
            self.slots.clear()
            self._publish_to(self.tail)
        else:
            self.publish()

    def shrink_and_send(self, packet: Packet, size: int | None = None) -> None:
        """Send the last allocated packet with only ``size`` bytes, giving back the rest."""
        self._own(packet, ALLOCATED, "shrink_and_send")
        if size is None:
            size = packet.end - packet.start
        if not self.slots or self.slots[-1] is not packet:
            raise PacketError("shrink_and_send: only the last allocated, unsent packet can be shrunk")
        room = packet.hi - packet.lo - self.pad
        if not 0 <= size <= room:
            raise PacketError(f"shrink_and_send({size}): can only shrink, the slot holds {room} bytes")
        if packet.start != packet.lo + L.SIZE_FIELD + self.lead:
            raise PacketError(
                "shrink_and_send: the packet's data no longer starts where its slot's data starts; "
                "pull() the header off first"
            )
        packet.end = packet.start + size
        packet.hi = packet.lo + ((size + self.pad + 3) & ~3)
        self.tail = packet.hi & self.mask
        if self.overallocate:
            self._finish(packet)  # checks the IP header against what was written
        else:
            _pack_size(self.data, packet.lo, size)  # everything else was checked above
            packet.state = DONE
        if len(self.slots) == 1:
            self.slots.clear()  # it was the only unpublished slot (the usual case)
            self._publish_to(self.tail)
        else:
            self.publish()

    def cancel(self, packet: Packet) -> None:
        """Give back a packet that will not be sent.

        The last allocated packet's space is simply returned.  An earlier one
        cannot be unallocated without moving later slots, so it is published as
        a non-IP slot, which an adapter skips and counts as a discard.
        """
        self._own(packet, ALLOCATED, "cancel")
        packet.state = DONE
        if self.slots[-1] is packet:
            self.slots.pop()
            self.tail = packet.lo
            return
        room = packet.hi - packet.lo - self.pad
        _pack_size(self.data, packet.lo, room)
        if room:
            self.data[packet.lo + L.SIZE_FIELD + self.lead] = 0  # version 0: not IP
        self.publish()

    def publish(self) -> None:
        """Move the shared Tail over the prefix of finished slots and wake the reader."""
        pending = self.slots
        tail = self.published
        while pending and pending[0].state == DONE:
            tail = pending.popleft().hi & self.mask
        self._publish_to(tail)

    def _publish_to(self, tail: int) -> None:
        if tail != self.published:
            self.published = tail
            store(self.mem, self.base + L.TAIL, tail)
            self.tail_waker.notify()

    def wait_writable(self, size: int, timeout_s: float | None) -> bool:
        """Wait until a ``size``-byte packet would fit; False on timeout."""
        slot = (size + self.pad + 3) & ~3

        def fits() -> bool:
            return L.free_space(self.refresh_head(), self.tail, self.capacity) >= slot

        return self.space_waker.sleep_until(fits, timeout_s)

    def flush(self, timeout_s: float | None) -> bool:
        """Wait until the reader has taken and released everything published; False on timeout."""

        def drained() -> bool:
            return self.refresh_head() == self.published

        return self.space_waker.sleep_until(drained, timeout_s)

    def close(self) -> None:
        """Stop producing: Tail = 0xFFFFFFFF tells the reader, who is woken.

        Packets published but not yet taken are lost with the Tail: ``flush`` first
        for a graceful end."""
        if self.closed is None:
            self._mark_dead(L.TAIL, "this end has closed the ring")
            self.tail_waker.kick()


class RingReader(_End):
    """Consumer end: take published slots in order, release them in any order.

    ``validate_ip`` is the adapter's (driver's) behaviour: a slot that is not an
    IPv4 (>= 20 bytes) or IPv6 (>= 40 bytes) packet is skipped and counted in
    ``discards``; with ``overallocate`` the real length comes from the IP
    header and a slot whose header claims more than the slot holds is skipped.
    """

    def __init__(
        self,
        mem: memoryview,
        base: int,
        capacity: int,
        lead: int = 0,
        trail: int = 0,
        *,
        tail_waker: Waker | None = None,
        space_waker: Waker | None = None,
        validate_ip: bool = False,
        overallocate: bool = False,
    ) -> None:
        super().__init__(mem, base, capacity, lead, trail)
        self.tail_waker = tail_waker or Waker(mem, 0, None)  # the writer wakes us when Tail moves
        self.space_waker = space_waker or Waker(mem, 0, None)  # we wake the writer when Head moves
        self.validate_ip = validate_ip
        self.overallocate = overallocate
        head = load(self.mem, self.base + L.HEAD)
        if head >= capacity or head % L.ALIGNMENT:
            raise RingCorrupt(f"ring Head {head:#x} is not a valid position in a {capacity:#x}-byte ring")
        self.head = head  # private: start of the next slot to take
        self.released = head  # last Head published
        self.tail = head  # last Tail seen
        self.discards = 0
        self.taken_packets = 0  # handed out by receive (discarded slots not counted)
        self.taken_bytes = 0

    def refresh_tail(self) -> int:
        """Read and check the writer's Tail: it may not reach into slots we hold."""
        tail = load(self.mem, self.base + L.TAIL)
        if tail >= self.capacity:
            self.closed = self.closed or "the writer has closed the ring (Tail >= capacity)"
            raise RingClosed(self.closed)
        if tail % L.ALIGNMENT or L.content(self.released, tail, self.capacity) < L.content(
            self.released, self.head, self.capacity
        ):
            self.corrupt(f"Tail {tail:#x} points into slots not yet released [{self.released:#x}, {self.head:#x})")
        self.tail = tail
        return tail

    def corrupt(self, why: str) -> None:
        self._mark_dead(L.HEAD, "ring corrupt: " + why)
        raise RingCorrupt(f"ring corrupt: {why}; the ring is now marked dead (Head = 0xFFFFFFFF)")

    def ready(self) -> bool:
        """True when receive() has something to say (a packet, or an error)."""
        return self.closed is not None or self.head != self.tail or load(self.mem, self.base + L.TAIL) != self.head

    def receive(self) -> Packet | None:
        got = self.receive_many(1)
        return got[0] if got else None

    def receive_many(self, max_count: int) -> list[Packet]:
        """Up to ``max_count`` published packets, in order (possibly none)."""
        if self.closed is not None:
            raise RingClosed(self.closed)
        out: list[Packet] = []
        append, hold = out.append, self.slots.append
        data, mask, pad = self.data, self.mask, self.pad
        offset = L.SIZE_FIELD + self.lead
        validate, overallocate = self.validate_ip, self.overallocate
        head, tail = self.head, self.tail
        discarded = False
        nbytes = 0
        try:
            while len(out) < max_count:  # discarded slots do not count
                if head == tail:
                    self.head = head
                    tail = self.refresh_tail()
                    if head == tail:
                        break
                room = (tail - head) & mask
                # Read Size once.  head < capacity, so this read is inside the ring
                # even if fewer than 4 bytes were published; the check below catches that.
                size = _unpack_size(data, head)[0]
                slot = (size + pad + 3) & ~3
                if size > L.MAX_IP_PACKET_SIZE or slot > room:
                    self.corrupt(f"slot at {head:#x} has Size {size:#x}: {slot} bytes, but "
                                 f"{room} bytes are published (and a Size is at most {L.MAX_IP_PACKET_SIZE:#x})")
                start = head + offset
                # Packet(...) spelled out: a quarter of the per-packet cost otherwise.
                packet = new(Packet)
                packet.buf = data
                packet.start = start
                packet.end = start + size
                packet.lo = head
                packet.hi = head + slot
                packet.owner = self
                packet.state = RECEIVED
                head = (head + slot) & mask
                hold(packet)
                if validate:
                    # The driver's rule: IPv4 of >= 20 bytes or IPv6 of >= 40, else skip;
                    # over-allocated slots also need an IP length that fits.
                    version = data[start] >> 4 if size else 0
                    if version == 4 and size >= 20:
                        real = (data[start + 2] << 8) | data[start + 3] if overallocate else size
                    elif version == 6 and size >= 40:
                        real = 40 + ((data[start + 4] << 8) | data[start + 5]) if overallocate else size
                    else:
                        real = -1
                    if real < 0 or real > size:
                        packet.state = DONE
                        self.discards += 1
                        discarded = True
                        continue
                    packet.end = start + real
                append(packet)
                nbytes += packet.end - start
        finally:
            self.head = head
            self.taken_packets += len(out)
            self.taken_bytes += nbytes
            if discarded:
                self._release_prefix()
        return out

    def release(self, packet: Packet) -> None:
        self._own(packet, RECEIVED, "release")
        packet.state = DONE
        self._release_prefix()

    def release_many(self, packets: list[Packet]) -> None:
        try:
            for packet in packets:
                if packet.owner is not self or packet.state != RECEIVED:
                    self._own(packet, RECEIVED, "release")
                packet.state = DONE
        except BaseException:
            self._release_prefix()
            raise
        if len(packets) == len(self.slots):
            # Every held slot was just released (each checked, none twice).
            self.slots.clear()
            self._release_to(self.head)
        else:
            self._release_prefix()

    def _release_prefix(self) -> None:
        held = self.slots
        head = self.released
        while held and held[0].state == DONE:
            head = held.popleft().hi & self.mask
        self._release_to(head)

    def _release_to(self, head: int) -> None:
        if head != self.released and self.closed is None:
            self.released = head
            store(self.mem, self.base + L.HEAD, head)
            self.space_waker.notify()

    def arm(self) -> bool:
        """Have the writer signal the eventfd when Tail moves; True if something is ready already."""
        self.tail_waker.arm()
        return self.ready()

    def disarm(self) -> None:
        """Undo arm() after waking; notices a peer process that exited meanwhile."""
        waker = self.tail_waker
        waker.disarm()
        if self.closed is None and not self.ready() and waker.peer_exited():
            self.closed = "the peer process has exited"

    def wait_fds(self) -> list[int]:
        """The eventfd, and the peer's pidfd if it is known."""
        waker = self.tail_waker
        return [fd for fd in (waker.efd, waker.peer_fd) if fd is not None]

    def wait(self, timeout_s: float | None) -> bool:
        """Wait until receive() has something; False on timeout."""
        return self.tail_waker.sleep_until(self.ready, timeout_s)

    def close(self) -> None:
        """Stop consuming: Head = 0xFFFFFFFF tells the writer, who is woken."""
        if self.closed is None:
            self._mark_dead(L.HEAD, "this end has closed the ring")
            self.space_waker.kick()

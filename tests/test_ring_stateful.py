"""Random interleavings of allocate/shrink/send/receive/release on both ends, against a plain model.

The model knows nothing of modular arithmetic: it counts bytes allocated,
published and consumed as ever-growing integers and keeps the slots in a list.
The ring's shared Head and Tail must equal those counters modulo the capacity,
free space must equal ``capacity - 4 - (allocated - consumed)``, and every
packet must arrive intact and in order.  Large packets make the rings wrap
many times within one run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tunring import Adapter, PacketError, RingFull, Session
from tunring import layout as L

CAPACITY = 0x20000
# Where a ring starts: the beginning, anywhere, or within a few slots of the wrap point.
START = st.one_of(st.just(0), st.integers(0, CAPACITY // 4 - 1).map(lambda x: x * 4),
                  st.integers(1, 8000).map(lambda x: CAPACITY - 4 * x))


def slot_bytes(size: int, lead: int, trail: int) -> int:
    n = 4 + lead + size + trail
    return (n + 3) // 4 * 4


@dataclass
class Slot:
    size: int  # allocated
    slot: int
    packet: object
    data: bytes = b""
    sent: bool = False
    valid: bool = True
    received: object = None  # the reader's Packet once taken
    done: bool = False  # released (or skipped)


@dataclass
class Direction:
    """One ring: writer ops, reader ops, and the plain model of it."""

    name: str
    allocate: object
    send: object
    shrink: object
    receive: object
    release: object
    ring: object  # callable -> memoryview of the raw ring
    validates: bool
    lead: int
    trail: int
    slots: list = field(default_factory=list)  # not yet consumed, allocation order
    allocated: int = 0
    published: int = 0
    consumed: int = 0
    discards: int = 0

    def free(self) -> int:
        return CAPACITY - 4 - (self.allocated - self.consumed)

    def publish(self) -> None:
        # Tail moves over the prefix of sent slots.
        total = self.consumed
        for s in self.slots:
            if not s.sent:
                break
            total += s.slot
        self.published = max(self.published, total)

    def consume(self) -> None:
        while self.slots and self.slots[0].done:
            self.consumed += self.slots.pop(0).slot



def ip_or_garbage(size: int, seq: int, valid: bool) -> bytes:
    body = (struct.pack("!I", seq) * (size // 4 + 1))[:size]
    if valid and size >= 20:
        return struct.pack("!BBH", 0x45, 0, size) + body[4:]
    return b"\x00" + body[1:] if size else b""


class RingMachine(RuleBasedStateMachine):
    @initialize(lead=st.integers(0, 40), trail=st.integers(0, 40),
                up_at=START, down_at=START, shared=st.booleans())
    def start(self, lead: int, trail: int, up_at: int, down_at: int, shared: bool) -> None:
        """Both rings start at chosen offsets, often just before the wrap point.

        ``shared``: the ends live in shared memory with events (Session.create);
        otherwise they run over two plain buffers (Session.over/Adapter.over),
        which lets the rings start anywhere.
        """
        if shared:
            up_at = down_at = 0
            self.session = Session.create(CAPACITY, lead, trail)
            self.adapter = Adapter.attach(self.session.handle())
        else:
            send_ring = bytearray(L.ring_size(CAPACITY, lead, trail))
            receive_ring = bytearray(L.ring_size(CAPACITY, lead, trail))
            struct.pack_into("<II", receive_ring, 0, up_at, up_at)
            struct.pack_into("<II", send_ring, 0, down_at, down_at)
            self.session = Session.over(send_ring, receive_ring, lead, trail)
            self.adapter = Adapter.over(send_ring, receive_ring, lead, trail)
        s, a = self.session, self.adapter
        self.up = Direction("up", s.allocate, s.send, s.shrink_and_send, a.receive, a.release,
                            lambda: s.receive_ring, True, lead, trail, allocated=up_at, published=up_at,
                            consumed=up_at)
        self.down = Direction("down", a.reserve, a.commit, a.commit, s.receive, s.release,
                              lambda: s.send_ring, False, lead, trail, allocated=down_at, published=down_at,
                              consumed=down_at)
        self.starts = (up_at, down_at)
        self.seq = 0

    def teardown(self) -> None:
        if hasattr(self, "session"):
            for d, at in zip((self.up, self.down), self.starts):
                if d.consumed // CAPACITY > at // CAPACITY:
                    event(f"{d.name} ring wrapped")
            self.adapter.close()
            self.session.close()

    # -- writer side ------------------------------------------------------------
    @rule(up=st.booleans(), size=st.one_of(st.integers(0, 64), st.integers(20, 3000), st.integers(20000, 0xFFFF)))
    def allocate(self, up: bool, size: int) -> None:
        d = self.up if up else self.down
        slot = slot_bytes(size, d.lead, d.trail)
        if slot <= d.free():
            p = d.allocate(size)
            assert len(p) == size and p.headroom == 4 + d.lead and p.tailroom == slot - 4 - d.lead - size
            d.slots.append(Slot(size, slot, p))
            d.allocated += slot
        else:
            try:
                d.allocate(size)
            except RingFull:
                pass
            else:
                raise AssertionError(f"{d.name}: allocation of {size} beyond free {d.free()} succeeded")

    def _unsent(self, d: Direction) -> list[Slot]:
        return [s for s in d.slots if not s.sent]

    @precondition(lambda self: hasattr(self, "up") and (self._unsent(self.up) or self._unsent(self.down)))
    @rule(data=st.data(), valid=st.booleans())
    def send(self, data, valid: bool) -> None:
        d = self.up if self._unsent(self.up) and (not self._unsent(self.down) or data.draw(st.booleans())) else self.down
        s = data.draw(st.sampled_from(self._unsent(d)))
        last = s is d.slots[-1]
        new_size = data.draw(st.integers(0, s.size)) if last else s.size
        self.seq += 1
        s.data = ip_or_garbage(new_size, self.seq, valid)
        s.valid = (not d.validates) or (valid and new_size >= 20)
        s.packet.data[:new_size] = s.data
        if last and new_size != s.size:
            d.shrink(s.packet, new_size)
            d.allocated -= s.slot - slot_bytes(new_size, d.lead, d.trail)
            s.slot = slot_bytes(new_size, d.lead, d.trail)
        else:
            d.send(s.packet)
        s.sent = True
        d.publish()

    @precondition(lambda self: hasattr(self, "up") and len(self._unsent(self.up)) >= 2)
    @rule()
    def shrink_not_last_is_refused(self) -> None:
        first = self._unsent(self.up)[0]
        if first is self.up.slots[-1]:
            return
        before = (first.packet.start, first.packet.end, first.packet.hi)
        try:
            self.up.shrink(first.packet, 0)
        except PacketError:
            pass
        else:
            raise AssertionError("shrink of a packet that is not the last allocated succeeded")
        assert (first.packet.start, first.packet.end, first.packet.hi) == before

    # -- reader side ------------------------------------------------------------
    @rule(up=st.booleans())
    def receive(self, up: bool) -> None:
        d = self.up if up else self.down
        got = d.receive()
        offset = d.consumed
        expected = None
        for s in d.slots:
            offset += s.slot
            if offset > d.published:
                break
            if s.received is None and not s.done:
                if not s.valid:
                    s.done = True  # the adapter skips and counts it
                    d.discards += 1
                    continue
                expected = s
                break
        if expected is None:
            assert got is None, f"{d.name}: got a packet the model does not have"
        else:
            assert got is not None, f"{d.name}: a published packet did not arrive"
            assert bytes(got.data) == expected.data
            expected.received = got
        d.consume()
        if d.validates:
            assert self.adapter.stats.discards == self.up.discards

    @precondition(lambda self: hasattr(self, "up") and any(s.received and not s.done for s in self.up.slots + self.down.slots))
    @rule(data=st.data())
    def release(self, data) -> None:
        candidates = [(d, s) for d in (self.up, self.down) for s in d.slots if s.received and not s.done]
        d, s = data.draw(st.sampled_from(candidates))
        d.release(s.received)
        s.done = True
        d.consume()

    # -- the ring arithmetic ----------------------------------------------------
    @invariant()
    def shared_indices_match_the_model(self) -> None:
        if not hasattr(self, "up"):
            return
        for d in (self.up, self.down):
            head, tail = struct.unpack_from("<II", d.ring(), 0)
            assert tail == d.published % CAPACITY, d.name
            assert head == d.consumed % CAPACITY, d.name
            # The library's free-space formula at the writer's private tail agrees with the model.
            assert L.free_space(head, d.allocated % CAPACITY, CAPACITY) == d.free(), d.name


RingMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRing = RingMachine.TestCase

"""An in-process ring pair: a Session (the codec's device) and an Adapter on the same memory.

For tools and benchmarks that run a codec against the ring without a driver:
what the codec sends, the adapter receives (validated, as the driver would),
and what the adapter delivers, the codec's device receives.
"""

from __future__ import annotations

from .. import layout as L
from ..adapter import Adapter
from ..session import Session


def ring_pair(lead: int = 0, trail: int = 0, capacity: int = 0x100000, mtu: int = 1500, *,
              prefault: bool = False) -> tuple[Session, Adapter]:
    """A Session and an Adapter over two fresh ring buffers in this process (no events).

    ``prefault`` writes every page of both rings now, so that a benchmark's timed loops do
    not pay the first touch of each page.
    """
    size = L.ring_size(capacity, lead, trail)
    send_ring = bytearray(size)
    receive_ring = bytearray(size)
    if prefault:
        for ring in (send_ring, receive_ring):
            ring[:] = bytes(size)
    session = Session.over(send_ring, receive_ring, lead=lead, trail=trail, mtu=mtu)
    adapter = Adapter.over(send_ring, receive_ring, lead=lead, trail=trail)
    return session, adapter


def drain(adapter: Adapter, max_count: int = 1 << 30) -> int:
    """Take and release up to ``max_count`` packets the session sent (the driver's side); the count."""
    packets = adapter.receive_many(max_count)
    adapter.release_many(packets)
    return len(packets)

"""An in-process ring pair: a Session (the codec's device) and an Adapter on the same memory.

For tools and benchmarks that run a codec against the ring without a driver:
what the codec sends, the adapter receives (validated, as the driver would),
and what the adapter delivers, the codec's device receives.
"""

from __future__ import annotations

from .. import layout as L
from ..adapter import Adapter
from ..session import Session


def ring_pair(lead: int = 0, trail: int = 0, capacity: int = 0x100000, mtu: int = 1500) -> tuple[Session, Adapter]:
    """A Session and an Adapter over two fresh ring buffers in this process (no events)."""
    size = L.ring_size(capacity, lead, trail)
    send_ring = bytearray(size)
    receive_ring = bytearray(size)
    session = Session.over(send_ring, receive_ring, lead=lead, trail=trail, mtu=mtu)
    adapter = Adapter.over(send_ring, receive_ring, lead=lead, trail=trail)
    return session, adapter

"""Packet: a window onto packet memory with room before and after the data.

The vocabulary is sk_buff's and rte_mbuf's.  Memory from ``lo`` to ``hi`` in
``buf`` belongs to the packet; its data is ``buf[start:end]``.  ``headroom`` is
``start - lo`` and ``tailroom`` is ``hi - end``.

- ``push(n)``: grow the data by ``n`` bytes at the front (into the headroom),
  for a header; returns a view of those ``n`` bytes.
- ``pull(n)``: drop ``n`` bytes from the front (a header that was read);
  returns a view of the dropped bytes.
- ``put(n)``: grow the data by ``n`` bytes at the end (into the tailroom), for
  a trailer; returns a view of those ``n`` bytes.
- ``trim(n)``: drop ``n`` bytes from the end (as DPDK's ``rte_pktmbuf_trim``;
  note that sk_buff's ``skb_trim`` takes the new length instead).

A Packet never copies: every view it returns is a view into ``buf``.
"""

from __future__ import annotations

from .errors import PacketError

# Packet states.  The owner (a ring end or a device) keeps packets in its own
# bookkeeping; the state says what may still be done with one.
ALLOCATED = 1  # writable, not yet sent
RECEIVED = 2  # readable (and writable in place), not yet released
DONE = 3  # sent, released or cancelled: no longer the caller's


class Packet:
    """A window into ring (or pool) memory: data plus headroom and tailroom.

    Obtained from a device's ``allocate``/``receive`` (or an adapter's
    ``reserve``/``receive``) and handed back with ``send``/``release``.  Views
    taken from a packet must not be used after it has been handed back.
    """

    __slots__ = ("buf", "start", "end", "lo", "hi", "owner", "state")

    def __init__(self, buf: memoryview, start: int, end: int, lo: int, hi: int, owner: object, state: int) -> None:
        self.buf = buf
        self.start = start
        self.end = end
        self.lo = lo
        self.hi = hi
        self.owner = owner
        self.state = state

    @property
    def data(self) -> memoryview:
        return self.buf[self.start : self.end]

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def headroom(self) -> int:
        return self.start - self.lo

    @property
    def tailroom(self) -> int:
        return self.hi - self.end

    def push(self, n: int) -> memoryview:
        if not 0 <= n <= self.start - self.lo:
            raise PacketError(f"push({n}): only {self.start - self.lo} bytes of headroom")
        self.start -= n
        return self.buf[self.start : self.start + n]

    def pull(self, n: int) -> memoryview:
        if not 0 <= n <= self.end - self.start:
            raise PacketError(f"pull({n}): the packet holds only {self.end - self.start} bytes")
        self.start += n
        return self.buf[self.start - n : self.start]

    def put(self, n: int) -> memoryview:
        if not 0 <= n <= self.hi - self.end:
            raise PacketError(f"put({n}): only {self.hi - self.end} bytes of tailroom")
        self.end += n
        return self.buf[self.end - n : self.end]

    def trim(self, n: int) -> None:
        if not 0 <= n <= self.end - self.start:
            raise PacketError(f"trim({n}): the packet holds only {self.end - self.start} bytes")
        self.end -= n

    def __repr__(self) -> str:
        state = {ALLOCATED: "allocated", RECEIVED: "received", DONE: "done"}.get(self.state, "?")
        return f"<Packet {state} len={len(self)} headroom={self.headroom} tailroom={self.tailroom}>"

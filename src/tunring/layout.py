"""Wintun ring layout and arithmetic: pure functions, no I/O.

A ring is ``u32 Head; u32 Tail; i32 Alertable; u8 Data[]`` (little-endian).
``Data`` holds ``capacity`` bytes addressed modulo ``capacity`` plus a slack of
``max_slot - 4`` bytes so a slot that starts just before the wrap point still
lies contiguously in memory.  A slot is ``u32 Size`` followed by ``lead``
padding bytes, ``Size`` packet bytes and ``trail`` padding bytes, rounded up to
:data:`ALIGNMENT`.  With ``lead == trail == 0`` this is byte for byte the format
that the shipped Wintun driver and DLL use; the paddings are those of Wintun's
unmerged ``WintunStartSessionWithPadding`` proposal.
"""

from __future__ import annotations

import struct

ALIGNMENT = 4
SIZE_FIELD = 4  # sizeof(TUN_PACKET): the u32 Size before every packet
MAX_IP_PACKET_SIZE = 0xFFFF
MIN_CAPACITY = 0x20000  # 128 KiB
MAX_CAPACITY = 0x4000000  # 64 MiB
RELEASE_BIT = 0x80000000  # the DLL's in-ring "not yet finished" marker
DEAD = 0xFFFFFFFF  # what an end writes into Head/Tail when it stops

# Offsets inside one ring.
HEAD = 0
TAIL = 4
ALERTABLE = 8
HEADER_SIZE = 12

U32 = struct.Struct("<I")


def align(n: int) -> int:
    """Round ``n`` up to the ring's 4-byte alignment."""
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def slot_size(size: int, lead: int = 0, trail: int = 0) -> int:
    """Bytes one packet of ``size`` bytes occupies in the ring."""
    return align(SIZE_FIELD + lead + size + trail)


def max_slot(lead: int = 0, trail: int = 0) -> int:
    """The largest slot: a packet of MAX_IP_PACKET_SIZE with its padding."""
    return slot_size(MAX_IP_PACKET_SIZE, lead, trail)


def ring_size(capacity: int, lead: int = 0, trail: int = 0) -> int:
    """Total bytes of one ring: header, data area and wrap slack."""
    return HEADER_SIZE + capacity + max_slot(lead, trail) - SIZE_FIELD


def capacity_for(ring_bytes: int, lead: int = 0, trail: int = 0) -> int:
    """The capacity of a ring of ``ring_bytes`` bytes (inverse of ring_size)."""
    return ring_bytes - HEADER_SIZE - max_slot(lead, trail) + SIZE_FIELD


def wrap(offset: int, capacity: int) -> int:
    return offset & (capacity - 1)


def free_space(head: int, tail: int, capacity: int) -> int:
    """Bytes a producer at ``tail`` may still fill before reaching ``head``.

    One alignment unit always stays free so that ``head == tail`` means empty.
    """
    return (head - tail - ALIGNMENT) & (capacity - 1)


def content(head: int, tail: int, capacity: int) -> int:
    """Bytes published between ``head`` and ``tail``."""
    return (tail - head) & (capacity - 1)


def check_capacity(capacity: int) -> None:
    if capacity & (capacity - 1) or not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
        raise ValueError(
            f"capacity must be a power of two in [{MIN_CAPACITY:#x}, {MAX_CAPACITY:#x}], "
            f"got {capacity:#x}"
        )


def check_padding(lead: int, trail: int) -> None:
    # Bounded so that a slot stays far below the u32 range.
    if not (0 <= lead <= 0xFFFF and 0 <= trail <= 0xFFFF):
        raise ValueError(f"lead and trail must be in [0, 0xFFFF], got lead={lead} trail={trail}")


def ip_length(data: memoryview | bytes) -> int:
    """The length an IPv4/IPv6 header claims, or -1 if ``data`` is not IP.

    IPv4: total length; IPv6: 40 + payload length (no jumbograms).  This is how
    the adapter finds the real size of an over-allocated packet.
    """
    n = len(data)
    if n >= 20 and data[0] >> 4 == 4:
        return (data[2] << 8) | data[3]
    if n >= 40 and data[0] >> 4 == 6:
        return 40 + ((data[4] << 8) | data[5])
    return -1

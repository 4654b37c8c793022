"""Ring arithmetic against the formulas of BACKGROUND §1 (Wintun's TUN_* macros)."""

from hypothesis import given
from hypothesis import strategies as st

from tunring import layout as L


def test_wintun_constants():
    assert L.HEADER_SIZE == 12
    assert L.max_slot() == 0x10004  # TUN_MAX_PACKET_SIZE = align4(4 + 0xFFFF)
    # TUN_RING_SIZE(capacity) = sizeof(TUN_RING) + capacity + 0x10000
    for cap in (0x20000, 0x400000, 0x4000000):
        assert L.ring_size(cap) == 12 + cap + 0x10000
        assert L.capacity_for(L.ring_size(cap)) == cap


@given(st.integers(0, 0xFFFF), st.integers(0, 64), st.integers(0, 64))
def test_slot_is_aligned_and_holds_everything(size, lead, trail):
    slot = L.slot_size(size, lead, trail)
    assert slot % 4 == 0
    assert 4 + lead + size + trail <= slot < 4 + lead + size + trail + 4
    assert slot <= L.max_slot(lead, trail)


@given(st.sampled_from([0x20000, 0x40000, 0x400000]), st.integers(0, 64), st.integers(0, 64))
def test_padded_ring_size(cap, lead, trail):
    # Max packet and ring size grow by the padding.
    assert L.ring_size(cap, lead, trail) == 12 + cap + L.slot_size(0xFFFF, lead, trail) - 4
    assert L.capacity_for(L.ring_size(cap, lead, trail), lead, trail) == cap


@given(st.integers(0, 0x1FFFF).map(lambda x: x & ~3), st.integers(0, 0x1FFFF).map(lambda x: x & ~3))
def test_free_space_and_content_are_complementary(head, tail):
    cap = 0x20000
    # Free = (Head - Tail - 4) & (cap - 1); one unit always stays free.
    assert L.free_space(head, tail, cap) == (head - tail - 4) % cap
    if head != (tail + 4) % cap:
        assert L.free_space(head, tail, cap) + L.content(head, tail, cap) == cap - 4
    assert L.content(head, head, cap) == 0


def test_capacity_bounds():
    for bad in (0x10000, 0x20001, 0x8000000, 0x30000):
        try:
            L.check_capacity(bad)
        except ValueError as e:
            assert "power of two" in str(e)
        else:
            raise AssertionError(bad)


def test_ip_length():
    v4 = bytes([0x45, 0, 0x01, 0x2C]) + bytes(16)
    v6 = bytes([0x60, 0, 0, 0, 0x00, 0x10]) + bytes(34)
    assert L.ip_length(v4) == 300
    assert L.ip_length(v6) == 56
    assert L.ip_length(v4[:19]) == -1
    assert L.ip_length(bytes(40)) == -1

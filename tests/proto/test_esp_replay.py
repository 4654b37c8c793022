"""The anti-replay window against a plain reference model (RFC 4303 3.4.3, Appendix A).

The model keeps a set of every accepted sequence number; the window keeps a
bitmap.  Random traffic: in order, jumps, reordering inside and beyond the
window, duplicates, forged packets, and with ESN, runs across 2^32.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
try:
    from esp_support import DELIVERED, assert_ring_clean, drain, ipv4, keys, outcome, ring_pair, seal, trailer
except ImportError:  # tests/proto became a package
    from .esp_support import DELIVERED, assert_ring_clean, drain, ipv4, keys, outcome, ring_pair, seal, trailer

from tunring.proto import esp

M32 = 0xFFFFFFFF


class Model:
    """What the window must do, written the obvious way."""

    def __init__(self, size: int, top: int) -> None:
        self.size = size
        self.top = top
        self.seen: set[int] = set()

    def offer(self, seq: int, authentic: bool) -> str | None | bool:
        if not authentic:
            return False
        if seq == 0 or seq <= self.top - self.size:
            return esp.TOO_OLD
        if seq in self.seen:
            return esp.REPLAY
        self.seen.add(seq)
        self.top = max(self.top, seq)
        return None


@st.composite
def traffic(draw):
    esn = draw(st.booleans())
    size = draw(st.sampled_from([1, 2, 3, 31, 64, 65, 1000, 4096]))
    limit = (1 << 64) - 1 if esn else M32
    if esn:
        base = draw(st.sampled_from([1, (1 << 32) - 3 * size, (1 << 32) - 5, (2 << 32) - size // 2 - 1]))
    else:
        base = draw(st.sampled_from([1, 1000, M32 - 3 * size]))
    base = max(1, base)
    ops = []
    cursor = base
    sent: list[int] = []
    for _ in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from(["next", "next", "jump", "back", "far_back", "dup"]))
        if kind == "next":
            seq = cursor + 1
        elif kind == "jump":
            seq = cursor + draw(st.integers(1, 2 * size + 2))
        elif kind == "back":
            seq = cursor - draw(st.integers(0, size))
        elif kind == "far_back":
            seq = cursor - draw(st.integers(size, 3 * size + 2))
        else:
            seq = draw(st.sampled_from(sent)) if sent else cursor
        seq = min(max(seq, 1), limit)
        cursor = max(cursor, seq)
        sent.append(seq)
        ops.append((seq, draw(st.sampled_from([True, True, True, False]))))
    return esn, size, base, ops


@settings(max_examples=300, deadline=None)
@given(traffic())
def test_window_matches_the_model(case):
    esn, size, base, ops = case
    window = esp.ReplayWindow(size, esn)
    window.top = base - 1
    model = Model(size, base - 1)
    for seq, authentic in ops:
        inferred = window.infer(seq & M32)
        if inferred != seq:
            # Guessing the high bits may only fail for numbers left of the window;
            # the ICV (which covers the high bits) then fails: not authentic.
            assert esn and seq <= model.top - size, (seq, inferred, model.top)
            authentic = False
        expected = model.offer(seq, authentic)
        if expected is False:
            continue  # a forged packet never reaches the window
        assert window.check(seq) == expected
        assert window.accept(seq) == expected
        assert window.top == model.top


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic())
def test_sa_delivers_exactly_what_the_model_accepts(case):
    """Real datagrams through the receive path; forged ones have a flipped ICV bit."""
    esn, size, base, ops = case
    transform = esp.AES_GCM_128
    enc_key, auth_key = keys(transform, 9)
    sa = esp.SecurityAssociation(0x999, transform, enc_key, auth_key, esn=esn, replay_window=size)
    sa.window.top = base - 1
    model = Model(size, base - 1)
    expected = []
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [sa])
        for seq, authentic in ops:
            inner = ipv4(8, ident=seq)
            datagram = bytearray(seal(transform, enc_key, auth_key, 0x999, seq, trailer(inner, 4, 4), esn=esn))
            if not authentic:
                datagram[-1] ^= 0x40
            status = outcome(inbound.feed(datagram))
            if model.offer(seq, authentic) is None:
                expected.append(inner)
                assert status == DELIVERED
            else:
                assert status in esp.DROP_REASONS
            assert len(drain(adapter)) == (status == DELIVERED)
            assert_ring_clean(session)
    assert sa.window.top == model.top
    assert inbound.stats.rx_packets == len(expected)


def test_esn_rollover_in_order_and_reordered_across_the_boundary():
    window = esp.ReplayWindow(64, esn=True)
    window.top = (1 << 32) - 10
    order = [(1 << 32) - 9, (1 << 32) + 2, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 32) - 2]
    for seq in order:
        assert window.infer(seq & M32) == seq
        assert window.accept(seq) is None
    assert window.top == (1 << 32) + 2
    assert window.accept((1 << 32) - 1) == esp.REPLAY
    # Just past the boundary, the low bits of an old number are read as the previous 2^32 block.
    assert window.infer(M32 - 20) == M32 - 20

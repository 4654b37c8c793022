"""Property: two PPP engines talking through a lossy, reordering, duplicating link always reach
Opened (LCP and every network protocol, with matching parameters) or give up, within the restart
budget.  The link's misbehaviour is drawn by hypothesis frame by frame; time is a fake clock."""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tunring.proto.ppp_engine import PppConfig, PppEngine
from tunring.proto.ppp_fsm import Timing

TIMING = Timing()
# LCP negotiates within one budget, then the network protocols within another.
DEADLINE_S = 2 * TIMING.budget_s()

fates = st.lists(st.tuples(st.sampled_from(["deliver", "drop", "duplicate"]),
                           st.floats(min_value=0.0, max_value=4.0)), max_size=300)


def run_link(a: PppEngine, b: PppEngine, fate_list: list, tail_delay_s: float = 0.05):
    """Run both engines until both are quiet (or DEADLINE_S); returns the time it ended."""
    heap: list = []
    order = itertools.count()
    fate_iter = iter(fate_list)

    def transmit(src: PppEngine, frames, now: float) -> None:
        dst = b if src is a else a
        for frame in frames:
            fate, delay = next(fate_iter, ("deliver", tail_delay_s))
            if fate == "drop":
                continue
            copies = 2 if fate == "duplicate" else 1
            for i in range(copies):
                heapq.heappush(heap, (now + delay + i * 0.5, next(order), dst, frame))

    now = 0.0
    transmit(a, a.start(now), now)
    transmit(b, b.start(now), now)
    while now <= DEADLINE_S:
        deadlines = [e.deadline for e in (a, b) if e.deadline is not None]
        next_frame = heap[0][0] if heap else None
        if next_frame is None and not deadlines:
            return now  # nothing in flight, no timer running: quiet
        if next_frame is not None and (not deadlines or next_frame <= min(deadlines)):
            now, _, dst, frame = heapq.heappop(heap)
            transmit(dst, dst.receive(frame.kind, frame.payload, now), now)
        else:
            now = min(deadlines)
            for e in (a, b):
                if e.deadline is not None and e.deadline <= now:
                    transmit(e, e.tick(now), now)
    return now


EXAMPLES = int(os.environ.get("TUNRING_PPP_EXAMPLES", "500"))  # 20000 ran clean when this was written


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fate_list=fates, seed=st.integers(0, 2**32 - 1), hdlc=st.booleans(), ipv6=st.booleans(),
       compress=st.booleans(), mru=st.integers(1280, 1500))
def test_two_engines_open_or_give_up(fate_list, seed, hdlc, ipv6, compress, mru):
    rng = random.Random(seed)
    gw = PppEngine(PppConfig(local_ipv4="10.9.0.1", peer_ipv4="10.9.0.2", dns=("10.9.0.53",), ipv6=ipv6,
                             hdlc=hdlc, mru=1400, max_mru=1400, min_peer_mru=1400, timing=TIMING,
                             peer_iid=bytes(7) + b"\x02", local_iid=bytes(7) + b"\x01"),
                   rng=random.Random(rng.getrandbits(32)))
    client = PppEngine(PppConfig(request_dns=True, ipv6=ipv6, hdlc=hdlc, mru=mru, max_mru=1500,
                                 request_compression=compress, timing=TIMING),
                       rng=random.Random(rng.getrandbits(32)))
    ended = run_link(gw, client, fate_list)
    assert ended <= DEADLINE_S, "still negotiating after the restart budget"
    for e in (gw, client):
        assert e.finished or e.network_open, (e.phase, e.reason, [f.state for f in e.ncps.values()])
    event("gave up" if gw.finished or client.finished else "opened")
    event(f"ended within {int(ended // 10) * 10}-{int(ended // 10) * 10 + 10} s")
    if gw.finished or client.finished:
        return
    # Both opened: what each side uses is what the other agreed to.
    assert gw.ipv4_open and client.ipv4_open and gw.ipv6_open == client.ipv6_open == ipv6
    assert client.ipcp_options.local == ipaddress.IPv4Address("10.9.0.2") == gw.ipcp_options.peer_address
    assert client.ipcp_options.dns.get(129) == ipaddress.IPv4Address("10.9.0.53")
    g, c = gw.lcp_options, client.lcp_options
    assert (g.peer_mru, c.peer_mru) == (c.rx_mru, g.rx_mru)
    assert (g.tx_pfc, g.tx_acfc) == (c.rx_pfc, c.rx_acfc) == (compress, compress)
    assert client.rx_header_bytes == (1 if compress else 4)
    if hdlc:
        assert (gw.tx_accm, client.tx_accm) == (client.rx_accm, gw.rx_accm) == (0, 0)
    assert g.peer_magic == c.magic and c.peer_magic == g.magic
    if ipv6:
        assert gw.ipv6cp_options.peer_iid == client.ipv6cp_options.local
        assert client.ipv6cp_options.peer_iid == gw.ipv6cp_options.local


def test_perfect_link_opens_in_one_round_trip():
    gw = PppEngine(PppConfig(local_ipv4="10.9.0.1", peer_ipv4="10.9.0.2"), rng=random.Random(1))
    client = PppEngine(PppConfig(), rng=random.Random(2))
    ended = run_link(gw, client, [])
    assert gw.network_open and client.network_open and ended < 1.0


def test_a_dead_link_gives_up_within_the_budget():
    gw = PppEngine(PppConfig(local_ipv4="10.9.0.1", peer_ipv4="10.9.0.2"), rng=random.Random(1))
    client = PppEngine(PppConfig(), rng=random.Random(2))
    ended = run_link(gw, client, [("drop", 0.0)] * 10_000)
    assert gw.finished and client.finished and ended <= TIMING.budget_s()

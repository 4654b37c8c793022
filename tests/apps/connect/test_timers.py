"""Dead-peer detection and keepalive timing, step by step on a fake clock (openconnect's rules)."""

from tunring.apps.connect.timers import PeerTimers


def test_dpd_probes_then_declares_the_peer_dead():
    t = PeerTimers(dpd_s=10, keepalive_s=0, now=0.0)
    assert t.next_due(0.0) == 10.0
    assert not t.check(9.9).dpd
    first = t.check(10.0)
    assert first.dpd and not first.dead_after_s and t.dpd_sent == 1
    assert not t.check(14.9).dpd  # the next probe comes dpd/2 later
    assert t.next_due(14.9) == 15.0
    assert t.check(15.0).dpd and t.dpd_sent == 2
    assert t.check(20.0).dead_after_s == 20.0  # 2 x dpd of silence


def test_traffic_resets_the_silence():
    t = PeerTimers(dpd_s=10, keepalive_s=0, now=0.0)
    t.check(10.0)
    t.last_rx = 12.0  # the answer came
    assert not t.check(21.9).dpd and not t.check(21.9).dead_after_s
    assert t.next_due(21.9) == 22.0


def test_keepalive_after_quiet_sending_only():
    t = PeerTimers(dpd_s=0, keepalive_s=20, now=0.0)
    assert t.next_due(0.0) == 20.0
    assert not t.check(19.0).keepalive
    assert t.check(20.0).keepalive and t.keepalives_sent == 1
    assert not t.check(39.0).keepalive  # counted as sent at 20
    t.last_tx = 50.0
    assert not t.check(69.0).keepalive and t.check(70.0).keepalive


def test_disabled_timers_never_fire():
    t = PeerTimers(dpd_s=0, keepalive_s=0, now=0.0)
    assert t.next_due(1e9) == float("inf")
    due = t.check(1e9)
    assert not (due.dpd or due.keepalive or due.dead_after_s)

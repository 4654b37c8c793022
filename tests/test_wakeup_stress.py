"""No missed wake-ups: 100,000+ real sleeps and wake-ups between two processes.

The adapter (child) sleeps as soon as its ring is empty (no spinning), so every
burst the client sends must wake it through the Alertable flag and the
eventfd.  The client waits until the adapter has armed the flag, sometimes
publishes at once (the racy case the seq_cst accesses exist for), sometimes
after a short delay, and now and then leaves a longer idle gap.  Each packet
carries its send time; a missed wake-up would show as a stall (the adapter
sleeps with no timeout), and no packet may wait more than 50 ms.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import struct
import time

from tunring import Adapter, RingClosed, Session

WAKEUPS = 100_000
STALL_NS = 50_000_000


def consumer(handle, count: int, conn) -> None:
    adapter = Adapter.attach(handle)
    waker = adapter._reader.tail_waker
    waker.spin_s = 0.0  # sleep the moment the ring is empty: every burst is a wake-up
    worst = got = 0
    try:
        while got < count:
            if not adapter.wait(5.0):
                conn.send(("stalled", got, worst, waker.sleeps))
                return
            packets = adapter.receive_many(64)
            now = time.monotonic_ns()
            for p in packets:
                worst = max(worst, now - struct.unpack_from("<Q", p.buf, p.start + 20)[0])
            got += len(packets)
            adapter.release_many(packets)
        conn.send(("ok", got, worst, waker.sleeps))
    except BaseException as e:
        conn.send((repr(e), got, worst, waker.sleeps))
    finally:
        adapter.close()


def test_alternating_bursts_and_idle_gaps_never_miss_a_wakeup():
    ctx = mp.get_context("fork")
    rng = random.Random(1)
    session = Session.create(0x40000)
    bursts = [rng.choice((1, 1, 1, 2, 3)) for _ in range(int(WAKEUPS * 1.15))]
    total = sum(bursts)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=consumer, args=(session.handle(), total, child))
    proc.start()
    ring = session.receive_ring
    packet = bytearray(struct.pack("!BBH", 0x45, 0, 28) + bytes(24))
    try:
        for i, n in enumerate(bursts):
            # Wait (bounded) until the adapter has taken everything and gone back to
            # sleep (Head caught up with Tail, Alertable set), then race it.
            deadline = time.monotonic() + 0.2  # longer than a stall, so a lost wake-up shows
            while time.monotonic() < deadline:
                head, tail, alertable = struct.unpack_from("<III", ring, 0)
                if head == tail and alertable:
                    break
            if i % 3 == 1:
                time.sleep(0)  # a little later than the arming
            elif i % 5000 == 4999:
                time.sleep(rng.uniform(0.001, 0.005))  # an idle gap
            try:
                group = session.allocate_many(28, n)
            except RingClosed:
                break  # the adapter gave up: its report says why
            stamp = time.monotonic_ns()
            for p in group:
                struct.pack_into("<Q", packet, 20, stamp)
                p.data[:] = packet
            session.send_many(group)
        status, got, worst_ns, sleeps = parent.recv() if parent.poll(60) else ("no answer", 0, 0, 0)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        session.close()
    assert status == "ok", f"{status}: {got} of {total} packets arrived"
    assert got == total
    assert sleeps >= WAKEUPS, f"only {sleeps} real sleeps; the test did not exercise wake-ups"
    assert worst_ns < STALL_NS, f"a packet waited {worst_ns / 1e6:.1f} ms"

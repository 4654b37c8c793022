"""Ring throughput (client -> adapter) beside mp.Queue, mp.Pipe and an AF_UNIX SOCK_SEQPACKET socketpair.

Every implementation carries the same IPv4 packets from a producer to a
consumer that looks at each packet's first byte.  "1proc" runs both ends in
this process, a batch at a time; "2proc" runs the consumer in a forked child
and times from the first packet sent to the last packet received.  tunring
is measured one packet per call ("single") and with the batch API ("batch").
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import struct
import time

from ...adapter import Adapter
from ...errors import RingFull
from ...session import Session
from . import Result, result

SIZES = (64, 512, 1400)
BATCH = 64
PEER_BATCH_1PROC = 16  # peers' in-flight messages in one process: must fit a 64 KiB pipe
PEERS = ("mp.Queue", "mp.Pipe", "socketpair")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=0.5, help="target duration of each measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--procs", choices=("1", "2", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of every implementation; the best of each is kept")


def make_packets(size: int, count: int = 256) -> list[bytes]:
    """Distinct IPv4 packets of ``size`` bytes (the adapter validates them as IP)."""
    out = []
    for i in range(count):
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, i, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
        out.append(header + bytes([i & 0xFF]) * (size - len(header)))
    return out


# -- producers and consumers ---------------------------------------------------


def ring_produce(session: Session, packets: list[bytes], count: int, batch: int) -> None:
    n = len(packets)
    sent = 0
    size = len(packets[0])
    while sent < count:
        try:
            group = session.allocate_many(size, min(batch, count - sent))
        except RingFull:
            session.wait_writable(size, 1.0)
            continue
        for i, p in enumerate(group, sent):
            p.buf[p.start : p.end] = packets[i % n]
        session.send_many(group)
        sent += len(group)


def ring_consume(adapter: Adapter, count: int, batch: int) -> int:
    got = 0
    check = 0
    while got < count:
        group = adapter.receive_many(batch)
        if not group:
            adapter.wait(1.0)
            continue
        for p in group:
            check ^= p.buf[p.start]
        adapter.release_many(group)
        got += len(group)
    return check


def _peer_pair(impl: str):
    """(send, recv, close) callables for a peer transport."""
    if impl == "mp.Queue":
        q = mp.Queue(maxsize=4096)
        return q.put, q.get, q.close
    if impl == "mp.Pipe":
        a, b = mp.Pipe(duplex=False)
        return b.send_bytes, a.recv_bytes, lambda: (a.close(), b.close())
    if impl == "socketpair":
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        return b.send, lambda: a.recv(65536), lambda: (a.close(), b.close())
    raise ValueError(impl)


def _count_for(size: int, seconds: float) -> int:
    # A rough first guess; each measurement is long enough to be stable.
    return max(20_000, int(seconds * 400_000))


# -- one process ---------------------------------------------------------------


def one_process(size: int, seconds: float) -> list[Result]:
    packets = make_packets(size)
    count = _count_for(size, seconds)
    rows = []
    for mode, batch in (("single", 1), ("batch", BATCH)):
        with Session.create() as session:
            adapter = Adapter.attach(session.handle())
            t0 = time.perf_counter()
            done = 0
            while done < count:
                k = min(batch, count - done)
                if batch == 1:
                    p = session.allocate(size)
                    p.buf[p.start : p.end] = packets[done % 256]
                    session.send(p)
                    q = adapter.receive()
                    _ = q.buf[q.start]
                    adapter.release(q)
                else:
                    group = session.allocate_many(size, k)
                    for i, p in enumerate(group, done):
                        p.buf[p.start : p.end] = packets[i % 256]
                    session.send_many(group)
                    got = adapter.receive_many(k)
                    for q in got:
                        _ = q.buf[q.start]
                    adapter.release_many(got)
                done += k
            dt = time.perf_counter() - t0
            adapter.close()
        rows.append(result(f"1proc-{mode}", "tunring", size, count, dt))
    for impl in PEERS:
        send, recv, close = _peer_pair(impl)
        t0 = time.perf_counter()
        done = 0
        while done < count:
            k = min(PEER_BATCH_1PROC, count - done)
            for i in range(k):
                send(packets[(done + i) % 256])
            for _ in range(k):
                _ = recv()[0]
            done += k
        dt = time.perf_counter() - t0
        close()
        rows.append(result("1proc", impl, size, count, dt))
    return rows


# -- two processes -------------------------------------------------------------


def _ring_child(handle, count: int, batch: int, conn) -> None:
    adapter = Adapter.attach(handle)
    conn.send("ready")
    ring_consume(adapter, count, batch)
    conn.send(time.perf_counter())
    adapter.close()


def _peer_child(recv, count: int, conn) -> None:
    conn.send("ready")
    for _ in range(count):
        _ = recv()[0]
    conn.send(time.perf_counter())


def two_process(size: int, seconds: float) -> list[Result]:
    ctx = mp.get_context("fork")
    packets = make_packets(size)
    count = _count_for(size, seconds)
    rows = []
    for mode, batch in (("single", 1), ("batch", BATCH)):
        session = Session.create()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_ring_child, args=(session.handle(), count, batch, child))
        proc.start()
        parent.recv()
        t0 = time.perf_counter()
        ring_produce(session, packets, count, batch)
        t1 = parent.recv()
        proc.join()
        session.close()
        rows.append(result(f"2proc-{mode}", "tunring", size, count, t1 - t0))
    for impl in PEERS:
        send, recv, close = _peer_pair(impl)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_peer_child, args=(recv, count, child))
        proc.start()
        parent.recv()
        t0 = time.perf_counter()
        for i in range(count):
            send(packets[i % 256])
        t1 = parent.recv()
        proc.join()
        close()
        rows.append(result("2proc", impl, size, count, t1 - t0))
    return rows


def run(args: argparse.Namespace) -> list[Result]:
    """Every implementation once per round, rounds interleaved; the best pps of each row is kept
    (this machine is shared: the best run is the least disturbed one)."""
    best: dict[tuple[str, str, int], Result] = {}
    for _ in range(max(1, args.rounds)):
        for size in args.sizes:
            rows: list[Result] = []
            if args.procs in ("1", "both"):
                rows += one_process(size, args.seconds)
            if args.procs in ("2", "both"):
                rows += two_process(size, args.seconds)
            for r in rows:
                key = (r.case, r.impl, r.packet_size)
                if key not in best or r.pps > best[key].pps:
                    best[key] = r
    return list(best.values())

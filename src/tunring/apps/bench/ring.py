"""Ring throughput (client -> adapter) beside mp.Queue, mp.Pipe and an AF_UNIX SOCK_SEQPACKET socketpair.

Every implementation carries the same IPv4 packets from a producer to a
consumer that looks at each packet's first byte.  "1proc" runs both ends in
this process, a batch at a time; "2proc" runs the consumer in a forked child
and times from the first packet sent to the last packet received.  tunring
is measured one packet per call ("single") and with the batch API ("batch").
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ...adapter import Adapter
from ...cli import int_in, seconds_in
from ...errors import RingFull
from ...session import Session
from .common import Impl, Result, add_sizes_argument, best_of, ipv4_udp, measure_table

SIZES = (64, 512, 1400)
BATCH = 64
DISTINCT_PACKETS = 256
# The 1proc peers write a batch before they read it, and mp.Pipe writes into a pipe: its 16 pages
# must hold the batch, or the write blocks for ever.  Linux gives each write whole pages (it
# merges only a remainder that fits the last page), and mp.Pipe writes a 4-byte length with the
# bytes, or before them above 16 KiB.
PIPE_PAGES = 16
PAGE_BYTES = mmap.PAGESIZE
MP_HEADER_BYTES, MP_ONE_WRITE_BYTES = 4, 16384
MAX_SIZE = (PIPE_PAGES - 1) * PAGE_BYTES  # one message, length and bytes, always fits
PEER_BATCH_1PROC = 16  # peers' messages in flight in one process (fewer when they would not fit)
MIN_PACKETS = 20_000
PACKETS_PER_SECOND_GUESS = 400_000

Send = Callable[[bytes], Any]
Receive = Callable[[], bytes]
PeerPair = tuple[Send, Receive, Callable[[], Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=seconds_in(0), default=0.5, help="target duration of each measurement")
    add_sizes_argument(parser, SIZES, MAX_SIZE)
    parser.add_argument("--procs", choices=("1", "2", "both"), default="both")
    parser.add_argument("--rounds", type=int_in(1), default=3,
                        help="interleaved rounds of every implementation; the best of each is kept")


def make_packets(size: int, count: int = DISTINCT_PACKETS) -> list[bytes]:
    """Distinct IPv4 packets of ``size`` bytes (the adapter validates them as IP)."""
    return [ipv4_udp(size, ident=i, fill=i & 0xFF) for i in range(count)]


def _count_for(seconds: float) -> int:
    # A rough first guess; each measurement is long enough to be stable.
    return max(MIN_PACKETS, int(seconds * PACKETS_PER_SECOND_GUESS))


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


# -- the peers: (send, receive, close) of each transport -------------------------


def _queue() -> PeerPair:
    q: mp.Queue[bytes] = mp.Queue(maxsize=4096)
    return q.put, q.get, q.close


def _pipe() -> PeerPair:
    a, b = mp.Pipe(duplex=False)

    def close() -> None:
        a.close()
        b.close()

    return b.send_bytes, a.recv_bytes, close


def _socketpair() -> PeerPair:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    def close() -> None:
        a.close()
        b.close()

    return b.send, lambda: a.recv(65536), close


PEERS: dict[str, Callable[[], PeerPair]] = {"mp.Queue": _queue, "mp.Pipe": _pipe, "socketpair": _socketpair}


# -- one process ---------------------------------------------------------------


def _ring_1proc(batch: int, packets: list[bytes], count: int) -> float:
    """Both ends in this process: allocate, fill and send a batch, then receive and release it."""
    with Session.create() as session:
        adapter = Adapter.attach(session.handle())
        try:
            t0 = time.perf_counter()
            (_single_1proc if batch == 1 else _batch_1proc)(session, adapter, packets, count, batch)
            return time.perf_counter() - t0
        finally:
            adapter.close()


def _single_1proc(session: Session, adapter: Adapter, packets: list[bytes], count: int, _batch: int) -> None:
    size = len(packets[0])
    n = len(packets)
    for done in range(count):
        p = session.allocate(size)
        p.buf[p.start : p.end] = packets[done % n]
        session.send(p)
        q = adapter.receive()
        assert q is not None  # just sent
        _ = q.buf[q.start]
        adapter.release(q)


def _batch_1proc(session: Session, adapter: Adapter, packets: list[bytes], count: int, batch: int) -> None:
    size = len(packets[0])
    n = len(packets)
    done = 0
    while done < count:
        group = session.allocate_many(size, min(batch, count - done))  # as many as fit
        for i, p in enumerate(group, done):
            p.buf[p.start : p.end] = packets[i % n]
        session.send_many(group)
        got = adapter.receive_many(len(group))
        for q in got:
            _ = q.buf[q.start]
        adapter.release_many(got)
        done += len(group)


def _pipe_pages(size: int) -> int:
    """The most pipe pages one mp.Pipe message of ``size`` bytes can take."""
    if size <= MP_ONE_WRITE_BYTES:
        return -(-(size + MP_HEADER_BYTES) // PAGE_BYTES)
    return 1 + -(-size // PAGE_BYTES)


def _peer_1proc(pair: Callable[[], PeerPair], packets: list[bytes], count: int) -> float:
    send, recv, close = pair()
    n = len(packets)
    batch = min(PEER_BATCH_1PROC, PIPE_PAGES // _pipe_pages(len(packets[0])))
    t0 = time.perf_counter()
    done = 0
    while done < count:
        k = min(batch, count - done)
        for i in range(k):
            send(packets[(done + i) % n])
        for _ in range(k):
            _ = recv()[0]
        done += k
    seconds = time.perf_counter() - t0
    close()
    return seconds


# -- two processes -------------------------------------------------------------


def _ring_child(handle, count: int, batch: int, conn) -> None:
    adapter = Adapter.attach(handle)
    conn.send("ready")
    ring_consume(adapter, count, batch)
    conn.send(time.perf_counter())
    adapter.close()


def _peer_child(recv: Receive, count: int, conn) -> None:
    conn.send("ready")
    for _ in range(count):
        _ = recv()[0]
    conn.send(time.perf_counter())


def _two_process(child: Callable[..., None], args: tuple, produce: Callable[[], None]) -> float:
    """Seconds from the first packet ``produce`` sends to the last one the forked ``child`` receives."""
    ctx = mp.get_context("fork")
    parent, child_end = ctx.Pipe()
    proc = ctx.Process(target=child, args=(*args, child_end))
    proc.start()
    parent.recv()  # the child is ready
    t0 = time.perf_counter()
    produce()
    t1 = parent.recv()
    proc.join()
    return t1 - t0


def _ring_2proc(batch: int, packets: list[bytes], count: int) -> float:
    with Session.create() as session:
        return _two_process(_ring_child, (session.handle(), count, batch),
                            lambda: ring_produce(session, packets, count, batch))


def _peer_2proc(pair: Callable[[], PeerPair], packets: list[bytes], count: int) -> float:
    send, recv, close = pair()
    n = len(packets)

    def produce() -> None:
        for i in range(count):
            send(packets[i % n])

    try:
        return _two_process(_peer_child, (recv, count), produce)
    finally:
        close()


# -- the tables: a case, and what is measured in it --------------------------------
# measure(packets, count) -> seconds
ONE_PROCESS = [
    Impl("tunring", partial(_ring_1proc, 1), variant="single"),
    Impl("tunring", partial(_ring_1proc, BATCH), variant="batch"),
    *(Impl(name, partial(_peer_1proc, pair)) for name, pair in PEERS.items()),
]
TWO_PROCESS = [
    Impl("tunring", partial(_ring_2proc, 1), variant="single"),
    Impl("tunring", partial(_ring_2proc, BATCH), variant="batch"),
    *(Impl(name, partial(_peer_2proc, pair)) for name, pair in PEERS.items()),
]
CASES = {"1": [("1proc", ONE_PROCESS)], "2": [("2proc", TWO_PROCESS)],
         "both": [("1proc", ONE_PROCESS), ("2proc", TWO_PROCESS)]}


def run(args: argparse.Namespace) -> list[Result]:
    """Every implementation once per round, rounds interleaved; the best pps of each row is kept."""
    count = _count_for(args.seconds)

    def one_round() -> list[Result]:
        rows: list[Result] = []
        for size in args.sizes:
            packets = make_packets(size)
            for case, table in CASES[args.procs]:
                rows += measure_table(table, case, size, partial(_measure, case, size, packets, count))
        return rows

    return best_of(args.rounds, one_round)


def _measure(case: str, size: int, packets: list[bytes], count: int, entry: Impl) -> Result:
    return entry.result(case, size, count, entry.measure(packets, count))

"""`tunring demo`: a padded session with its adapter in a second process, traffic both ways.

The client builds IPv4 packets of mixed sizes directly in ring slots (header
room reserved for a VPN header and trailer), the adapter checks every byte of
every packet and answers with its own stream, written in place with
reserve/commit; the client checks those.  Nothing is copied by tunring: the
summary counts the copies its copying paths made, which must be zero.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import struct
import time

from ..adapter import Adapter
from ..errors import RingFull
from ..session import Session
from ..shm import SessionHandle

LEAD = 16  # room for a VPN header (CSTP 8, GlobalProtect 16, ESP 24 with the Size field)
TRAIL = 32  # room for a trailer (ESP padding + ICV)
BATCH = 32
IPV4 = struct.Struct("!BBHHHBBH4s4s")
PATTERN = random.Random(2021).randbytes(4096)


def packet_size(seq: int) -> int:
    """Mixed sizes: mostly small and full-size, as on a real link."""
    r = (seq * 2654435761) & 0xFFFF
    if r < 0x6000:
        return 40 + r % 60
    if r < 0xA000:
        return 1400 + r % 100
    return 100 + r % 1300


def build(packet, seq: int, size: int) -> None:
    """Write an IPv4 packet in place: header by pack_into, payload from the pattern."""
    buf, start = packet.buf, packet.start
    IPV4.pack_into(buf, start, 0x45, 0, size, seq & 0xFFFF, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
    off = seq % 1024
    buf[start + 20 : start + size] = PATTERN[off : off + size - 20]


def verify(packet, seq: int) -> bool:
    size = packet_size(seq)
    if len(packet) != size:
        return False
    data = packet.data
    off = seq % 1024
    return data[20:] == PATTERN[off : off + size - 20] and IPV4.unpack_from(data)[3] == seq & 0xFFFF


def pump(allocate, commit, receive_many, release_many, wait, count: int) -> tuple[int, int, int, int]:
    """Send ``count`` packets and take ``count``; returns (sent, received, bytes received, bad)."""
    sent = received = nbytes = bad = 0
    while sent < count or received < count:
        progressed = False
        group = 0
        while sent < count and group < BATCH:
            size = packet_size(sent)
            try:
                p = allocate(1500)  # allocate for the MTU, fill, send only what was written
            except RingFull:
                break
            build(p, sent, size)
            commit(p, size)
            sent += 1
            group += 1
            progressed = True
        got = receive_many(BATCH)
        for p in got:
            if not verify(p, received):
                bad += 1
            nbytes += len(p)
            received += 1
        if got:
            release_many(got)
            progressed = True
        if not progressed:
            wait(0.002)
    return sent, received, nbytes, bad


def adapter_process(handle: SessionHandle, count: int, conn) -> None:
    with handle:
        adapter = Adapter.attach(handle)
    try:
        result = pump(adapter.reserve, adapter.commit, adapter.receive_many, adapter.release_many,
                      adapter.wait, count)
        adapter.flush(10.0)
        conn.send((result, adapter.stats.copies, adapter.stats.discards))
    finally:
        adapter.close()


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="stream verified packets both ways through a padded session (no root)")
    p.add_argument("--count", type=int, default=100_000, help="packets each way")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    ctx = mp.get_context("spawn")  # the adapter gets the session by fd passing, not by fork
    session = Session.create(lead=LEAD, trail=TRAIL)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=adapter_process, args=(session.handle(), args.count, child), daemon=True)
    proc.start()
    print(f"tunring demo: session with lead {LEAD}, trail {TRAIL}, capacity {session.capacity >> 20} MiB; "
          f"adapter in process {proc.pid}")
    t0 = time.perf_counter()
    try:
        sent, received, nbytes, bad = pump(
            session.allocate, session.shrink_and_send, session.receive_many, session.release_many,
            session.wait, args.count)
        (a_sent, a_received, a_bytes, a_bad), adapter_copies, discards = parent.recv()
    finally:
        proc.join(10)
        session.close()
    seconds = time.perf_counter() - t0
    gbit = (nbytes + a_bytes) * 8 / seconds / 1e9
    print(f"  client -> adapter: {a_received} packets, {a_bytes / 1e6:.1f} MB, {a_bad} bad, {discards} discarded")
    print(f"  adapter -> client: {received} packets, {nbytes / 1e6:.1f} MB, {bad} bad")
    print(f"  {seconds:.2f} s, {(received + a_received) / seconds:,.0f} packets/s, {gbit:.2f} Gbit/s both ways")
    print(f"  copies made by tunring: {session.copies + adapter_copies} "
          f"(packets built and checked in ring memory, shrunk to size on send)")
    ok = bad == a_bad == discards == 0 and received == a_received == args.count
    print("  every byte verified" if ok else "  FAILED: packets were lost or damaged")
    return 0 if ok else 1

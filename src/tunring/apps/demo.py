"""`tunring demo`: a VPN client forwarding between a CSTP server and a ring, copying nothing.

Three processes: a VPN server speaking Cisco CSTP over a socket (standing in
for the TLS connection), the client (this process) and the adapter (the
driver's role) attached to the client's padded session.  The server's records
are read straight into ring slots, the header landing in the slot's headroom,
and shrunk to size; the adapter checks every byte and answers with its own
stream, written in place with reserve/commit; the client frames those in
place (header pushed into the headroom) and the server checks every byte.
The summary counts the copies tunring made, which must be zero.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import selectors
import socket
import struct
import threading
import time

from ..adapter import Adapter
from ..errors import RingFull
from ..proto.cisco import Cstp
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


def build_into(buf: memoryview, start: int, seq: int, size: int) -> None:
    """Write an IPv4 packet in place: header by pack_into, payload from the pattern."""
    IPV4.pack_into(buf, start, 0x45, 0, size, seq & 0xFFFF, 0, 64, 17, 0, b"\x0a\0\0\1", b"\x0a\0\0\2")
    off = seq % 1024
    buf[start + 20 : start + size] = PATTERN[off : off + size - 20]


def verify_bytes(data: memoryview, seq: int) -> bool:
    size = packet_size(seq)
    off = seq % 1024
    return (len(data) == size and data[20:] == PATTERN[off : off + size - 20]
            and IPV4.unpack_from(data)[3] == seq & 0xFFFF)


def build(packet, seq: int, size: int) -> None:
    build_into(packet.buf, packet.start, seq, size)


def verify(packet, seq: int) -> bool:
    return verify_bytes(packet.data, seq)


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


# -- the VPN leg: a CSTP server over a socket --------------------------------------
CSTP_HEADER = struct.Struct("!4sHBB")


def server_process(sock: socket.socket, count: int, conn) -> None:
    """The VPN server's end: CSTP records over a socket (standing in for TLS).

    It frames its packets with its own struct code (not tunring's codec) and
    checks what comes back, so the demo's two ends are independent.
    """
    received = [0, 0, 0]  # packets, bytes, bad

    def reader() -> None:
        while received[0] < count:
            record = sock.recv(65536)
            if not record:
                return
            magic, length, kind, _ = CSTP_HEADER.unpack_from(record)
            if magic != b"STF\x01" or kind != 0 or length != len(record) - 8:
                received[2] += 1
            else:
                data = memoryview(record)[8:]
                if not verify_bytes(data, received[0]):
                    received[2] += 1
                received[1] += length
            received[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    record = bytearray(8 + 1500)
    view = memoryview(record)
    for seq in range(count):
        size = packet_size(seq)
        CSTP_HEADER.pack_into(record, 0, b"STF\x01", size, 0, 0)
        build_into(view, 8, seq, size)
        sock.sendall(view[: 8 + size])
    thread.join()
    conn.send(tuple(received))
    sock.close()


def forward(session: Session, sock: socket.socket, count: int) -> Cstp:
    """The VPN client: CSTP records read straight into ring slots, ring packets framed in place."""
    codec = Cstp(session)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    outgoing: list = []  # (packet, view) framed but not yet (fully) written
    sent = 0
    while codec.stats.rx_packets < count or sent < count:
        progressed = False
        for _ in range(BATCH):  # socket -> ring: the record header lands in the headroom
            if codec.stats.rx_packets >= count:
                break
            try:
                n = sock.recv_into(codec.want())
            except (BlockingIOError, RingFull):
                break
            if n == 0:
                raise ConnectionError("the server closed the connection")
            codec.received(n)
            progressed = True
        if not outgoing and sent < count:  # ring -> socket: header pushed into the headroom
            outgoing = [(p, codec.encode(p)) for p in session.receive_many(BATCH)]
        while outgoing:
            packet, view = outgoing[0]
            try:
                written = sock.send(view)
            except BlockingIOError:
                break
            if written < len(view):
                outgoing[0] = (packet, view[written:])
                break
            session.release(packet)
            outgoing.pop(0)
            sent += 1
            progressed = True
        if not progressed:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if outgoing else 0)
            selector.register(sock, events)
            selector.register(session.fileno(), selectors.EVENT_READ)
            try:
                if not session.arm():
                    selector.select(0.01)
            finally:
                session.disarm()
                selector.unregister(sock)
                selector.unregister(session.fileno())
    return codec


def copies_made(codec: Cstp, session: Session, adapter_copies: int) -> int:
    """Packets tunring copied on the demo's paths, each counted once.

    The codec counts what it copies itself (it never uses the device's copying ``write``), the
    session counts its own ``write`` calls and the adapter its ``deliver`` calls: disjoint counts.
    """
    st = codec.stats
    return st.rx_copies + st.tx_copies + session.copies + adapter_copies


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="a CSTP server, a client and an adapter: verified traffic both ways, "
                                    "no copies (no root)")
    p.add_argument("--count", type=int, default=50_000, help="packets each way")
    p.add_argument("--ring", action="store_true", help="the ring demo even as root (root's default: tunring connect)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """As root: `tunring connect` against ocserv (tunring.apps.connect.demo); else (or --ring) the ring demo."""
    from .connect import demo as vpn_demo

    if not args.ring:
        lacking = vpn_demo.missing()
        if lacking is None:
            return vpn_demo.run()
        print(f"(the VPN demo, `tunring connect` against ocserv, needs {lacking}: showing the ring demo)")
    return ring_demo(args)


def ring_demo(args: argparse.Namespace) -> int:
    """server <-CSTP over a socket-> client <-ring-> adapter, every byte checked at the far end."""
    ctx = mp.get_context("spawn")  # the adapter gets the session by fd passing, not by fork
    session = Session.create(lead=max(LEAD, Cstp.session_lead()), trail=TRAIL)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one record per read, as TLS
    a_parent, a_child = ctx.Pipe()
    s_parent, s_child = ctx.Pipe()
    adapter = ctx.Process(target=adapter_process, args=(session.handle(), args.count, a_child), daemon=True)
    server = ctx.Process(target=server_process, args=(theirs, args.count, s_child), daemon=True)
    adapter.start()
    server.start()
    theirs.close()
    print(f"tunring demo: VPN server (pid {server.pid}) <-CSTP over a socket-> client <-ring-> "
          f"adapter (pid {adapter.pid})")
    print(f"  session: lead {session.lead}, trail {session.trail}, capacity {session.capacity >> 20} MiB")
    t0 = time.perf_counter()
    try:
        # No flush here: the adapter reports what it took, and it may close its
        # end as soon as it has everything.
        codec = forward(session, ours, args.count)
        (_, a_received, a_bytes, a_bad), adapter_copies, discards = a_parent.recv()
        s_received, s_bytes, s_bad = s_parent.recv()
    finally:
        adapter.join(10)
        server.join(10)
        ours.close()
        session.close()
    seconds = time.perf_counter() - t0
    copies = copies_made(codec, session, adapter_copies)
    print(f"  server -> client -> ring -> adapter: {a_received} packets, {a_bytes / 1e6:.1f} MB, "
          f"{a_bad} bad, {discards} discarded")
    print(f"  adapter -> ring -> client -> server: {s_received} packets, {s_bytes / 1e6:.1f} MB, {s_bad} bad")
    print(f"  {seconds:.2f} s, {(a_received + s_received) / seconds:,.0f} packets/s, "
          f"{(a_bytes + s_bytes) * 8 / seconds / 1e9:.2f} Gbit/s through the client")
    print(f"  copies made by tunring: {copies} (CSTP records read into ring slots and framed in place)")
    ok = a_bad == s_bad == discards == 0 and a_received == s_received == args.count
    print("  every byte verified end to end" if ok else "  FAILED: packets were lost or damaged")
    if copies:  # one record per read, headers in the headroom: a copy here is a bug
        print(f"  FAILED: {copies} packets were copied where the design copies none")
    return 0 if ok and not copies else 1

"""The codecs over real sockets, as a client uses them: recv_into(codec.want())."""

from __future__ import annotations

import random
import socket
import threading

import framing_ref as ref
from tunring.proto.cisco import Cstp, Dtls


def test_stream_socket_recv_into_ring_packets():
    rng = random.Random(4)
    ips = [ref.random_ip(rng) for _ in range(300)]
    stream = b"".join(ref.cstp(ip) for ip in ips)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ring = ref.Ring(Cstp, capacity=0x400000)
    codec = Cstp(ring.session)

    def send() -> None:
        pos = 0
        while pos < len(stream):  # uneven writes: reads will cut records anywhere
            step = rng.randint(1, 5000)
            a.sendall(stream[pos : pos + step])
            pos += step
        a.close()

    writer = threading.Thread(target=send)
    writer.start()
    try:
        while True:
            n = b.recv_into(codec.want())
            if not n:
                break
            codec.received(n)
            ring.drain()
        codec.close()
    finally:
        writer.join()
        b.close()
    assert ring.drain() == ips


def test_datagram_socket_one_record_per_recv_is_zero_copy():
    rng = random.Random(6)
    ips = [ref.random_ip(rng) for _ in range(100)]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ring = ref.Ring(Dtls, capacity=0x400000)
    codec = Dtls(ring.session)
    try:
        for ip in ips:
            a.send(ref.dtls(ip))
            view = codec.want()
            codec.received(b.recv_into(view))
            p = ring.adapter.receive()
            assert ref.address(p.data) == ref.address(view) + 1  # where recv_into wrote, past the type byte
            ring.adapter.release(p)
            ring.got.append(ip)
        a.send(b"")  # an empty datagram is a counted drop, not the end
        codec.received(b.recv_into(codec.want()))
    finally:
        a.close()
        b.close()
    assert ring.drain() == ips
    assert codec.stats.rx_copies == 0 and codec.stats.rx_drops == 1


def test_exact_reads_over_a_plain_stream_copy_nothing():
    """A plain byte stream returns whatever is buffered: with want(exact=True) each
    read stops at the header, then at the record's end, so no record is copied."""
    rng = random.Random(8)
    ips = [ref.random_ip(rng) for _ in range(200)]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ring = ref.Ring(Cstp, capacity=0x400000)
    codec = Cstp(ring.session)
    writer = threading.Thread(target=lambda: (a.sendall(b"".join(ref.cstp(ip) for ip in ips)), a.close()))
    writer.start()
    targets = []  # (address, length) of every view recv_into wrote into
    try:
        while True:
            view = codec.want(exact=True)
            n = b.recv_into(view)
            if not n:
                break
            targets.append((ref.address(view), n))
            codec.received(n)
            while (p := ring.adapter.receive()) is not None:
                assert ref.within(targets, p.data)  # delivered from the very bytes recv_into wrote
                ring.got.append(bytes(p.data))
                ring.adapter.release(p)
        codec.close()
    finally:
        writer.join()
        b.close()
    assert ring.drain() == ips
    assert codec.stats.rx_copies == 0 and codec.stats.rx_copy_bytes == 0

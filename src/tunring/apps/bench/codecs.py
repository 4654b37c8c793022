"""Codecs: decode a realistic VPN stream into ring packets, in place vs decode-then-copy.

For each framing the same stream of records (mixed IPv4/IPv6 packet sizes,
ACK-sized to full-MTU) is decoded twice in the same run, back to back:

- ``tunring``: the codec's ``want()``/``received()``: each record is written
  into the view the codec gives (as ``recv_into`` would) and the packet is
  shrunk and sent where it lies;
- ``copy``: what a client without header room does: read the record into a
  private buffer, parse it (with the same framing code), make the IP packet a
  ``bytes`` object, then allocate a ring packet and copy it in.

Case ``NAME`` reads one record per read (as a TLS transport returns them);
case ``NAME/16k`` reads 16 KiB at a time (aggregates: tunring copies all but
the first record of each read).  An adapter drains the ring in both.
"""

from __future__ import annotations

import argparse
import random
import time

from ...proto import FRAMINGS
from ...proto import rfc1662 as H
from ...proto.hdlc import Hdlc
from ...proto.ppp import parse_ppp
from ..ringpair import ring_pair
from . import Result, result

READ_BYTES = 16384
DRAIN_EVERY = 32


def _drain(receive_many, release_many, max_count: int) -> int:
    """Take and release what the codec sent to the ring (the adapter's side); the count."""
    packets = receive_many(max_count)
    release_many(packets)
    return len(packets)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int, default=10000, help="packets per measurement (default 10000)")
    parser.add_argument("--framing", action="append", choices=sorted(FRAMINGS),
                        help="only these framings (repeatable; default all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs per impl, interleaved; the best counts (default 5)")


def mixed_packets(count: int, seed: int) -> list[bytes]:
    """IP packets with a realistic size mix: many ACK-sized, some mid, many near-MTU."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        r = rng.random()
        size = rng.randint(40, 100) if r < 0.45 else rng.randint(500, 600) if r < 0.6 else rng.randint(1300, 1500)
        if rng.random() < 0.8:
            out.append(bytes([0x45, 0]) + size.to_bytes(2, "big") + (i & 0xFFFF).to_bytes(2, "big")
                       + bytes([0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]) + rng.randbytes(size - 20))
        else:
            size = max(size, 60)
            out.append(bytes([0x60, 0, 0, 0]) + (size - 40).to_bytes(2, "big") + bytes([6, 64])
                       + bytes(32) + rng.randbytes(size - 40))
    return out


def _records(name: str, packets: list[bytes]) -> list[bytes]:
    cls = FRAMINGS[name]
    session, _adapter = ring_pair(lead=cls.session_lead())
    codec = cls(session)
    return [codec.encode_bytes(ip) for ip in packets]


def _reads(name: str, records: list[bytes], per_record: bool) -> list[bytes]:
    if per_record or FRAMINGS[name](ring_pair()[0]).datagram:
        return records
    stream = b"".join(records)
    return [stream[i : i + READ_BYTES] for i in range(0, len(stream), READ_BYTES)]


def run_tunring(name: str, reads: list[bytes], warmup: bool = False) -> tuple[float, int]:
    cls = FRAMINGS[name]
    session, adapter = ring_pair(lead=cls.session_lead(), capacity=0x400000)
    codec = cls(session)
    want = codec.want
    received = codec.received
    receive_many = adapter.receive_many
    release_many = adapter.release_many
    got = 0
    t0 = time.perf_counter()
    for i, data in enumerate(reads):
        n = len(data)
        view = want()
        if len(view) >= n:
            view[:n] = data  # the transport's recv_into, straight into the ring
            received(n)
        else:
            pos = 0
            while pos < n:
                view = want()
                k = min(len(view), n - pos)
                view[:k] = data[pos : pos + k]
                pos += k
                received(k)
        if i % DRAIN_EVERY == 0:
            got += _drain(receive_many, release_many, 1024)
    if not codec.datagram and not warmup:
        codec.close()
    got += _drain(receive_many, release_many, 1 << 20)
    return time.perf_counter() - t0, got


def run_copy(name: str, reads: list[bytes], warmup: bool = False) -> tuple[float, int]:
    """Decode into a private buffer with the same framing code, then copy into the ring."""
    cls = FRAMINGS[name]
    if issubclass(cls, Hdlc):
        return _run_copy_hdlc(cls, reads)
    session, adapter = ring_pair(lead=cls.session_lead(), capacity=0x400000)
    parser = cls(session)  # only its framing functions are used
    length = parser._length
    record = parser._record
    min_header = parser.min_header
    write = session.write
    receive_many = adapter.receive_many
    release_many = adapter.release_many
    datagram = parser.datagram
    buf = bytearray(1 << 17)
    mv = memoryview(buf)
    have = 0
    got = 0
    t0 = time.perf_counter()
    for i, data in enumerate(reads):
        n = len(data)
        mv[have : have + n] = data  # the transport's recv_into, into a private buffer
        have += n
        pos = 0
        while have - pos >= min_header:
            size = have - pos if datagram else length(mv, pos)
            if have - pos < size:
                break
            r = record(mv, pos, pos + size)
            if type(r) is tuple:
                write(bytes(mv[r[0] : r[1]]))  # decode to bytes, then allocate and copy
            pos += size
        if pos:
            mv[: have - pos] = mv[pos:have]
            have -= pos
        if i % DRAIN_EVERY == 0:
            got += _drain(receive_many, release_many, 1024)
    got += _drain(receive_many, release_many, 1 << 20)
    return time.perf_counter() - t0, got


def _run_copy_hdlc(cls, reads: list[bytes]) -> tuple[float, int]:
    """The copying HDLC receiver: split the stream on flags, un-HDLC each frame into
    ``bytes``, then allocate and copy into the ring."""
    session, adapter = ring_pair(lead=cls.session_lead(), capacity=0x400000)
    splitter = H.HdlcSplitter()
    decode_frame = H.decode_frame
    write = session.write
    receive_many = adapter.receive_many
    release_many = adapter.release_many
    accm = H.ACCM_ALL
    got = 0
    t0 = time.perf_counter()
    for i, data in enumerate(reads):
        carried, spans = splitter.feed(data)
        frames = [carried] if carried is not None else []
        frames += [bytearray(data[s:e]) for s, e in spans]
        for frame in frames:
            n = decode_frame(memoryview(frame), accm)
            r = parse_ppp(frame, 0, n)
            if type(r) is tuple:
                write(bytes(frame[r[0] : r[1]]))
        if i % DRAIN_EVERY == 0:
            got += _drain(receive_many, release_many, 1024)
    got += _drain(receive_many, release_many, 1 << 20)
    return time.perf_counter() - t0, got


def run(args: argparse.Namespace) -> list[Result]:
    packets = mixed_packets(args.packets, args.seed)
    total_bytes = sum(map(len, packets))
    mean = total_bytes // len(packets)
    out: list[Result] = []
    for name in args.framing or sorted(FRAMINGS):
        records = _records(name, packets)
        cases = [(name, True)]
        if FRAMINGS[name].stream_ok:
            cases.append((f"{name}/16k", False))
        for case, per_record in cases:
            reads = _reads(name, records, per_record)
            best = {"tunring": float("inf"), "copy": float("inf")}
            # Interleaved, best of --repeat: the machine is shared and noisy.
            for _ in range(args.repeat):
                for impl, fn in (("tunring", run_tunring), ("copy", run_copy)):
                    fn(name, reads[:200], warmup=True)
                    seconds, got = fn(name, reads)
                    if got != len(packets):
                        raise RuntimeError(f"{case}/{impl}: {got} packets came out of {len(packets)}")
                    best[impl] = min(best[impl], seconds)
            for impl, seconds in best.items():
                out.append(result(case, impl, mean, len(packets), seconds,
                                  mbps=round(total_bytes / seconds / 1e6, 1)))
    return out

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
from functools import partial

from ...adapter import Adapter
from ...cli import int_in
from ...proto import FRAMINGS, Codec
from ...proto import rfc1662 as H
from ...proto.hdlc import Hdlc
from ...proto.ppp import parse_ppp
from ...session import Session
from .common import TCP, Impl, Result, best_of, drain, ipv4, measure_table, ring_pair

READ_BYTES = 16384
DRAIN_EVERY = 32  # reads between two drains of the ring (the adapter's side)
DRAIN_MAX = 1024
CAPACITY = 0x400000
WARMUP_READS = 200
COPY_BUFFER_BYTES = 1 << 17

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int_in(1), default=10000, help="packets per measurement (default 10000)")
    parser.add_argument("--framing", action="append", choices=sorted(FRAMINGS),
                        help="only these framings (repeatable; default all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int_in(1), default=5,
                        help="runs per impl, interleaved; the best counts (default 5)")


def mixed_packets(count: int, seed: int) -> list[bytes]:
    """IP packets with a realistic size mix: many ACK-sized, some mid, many near-MTU."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        r = rng.random()
        size = rng.randint(40, 100) if r < 0.45 else rng.randint(500, 600) if r < 0.6 else rng.randint(1300, 1500)
        if rng.random() < 0.8:
            out.append(ipv4(rng.randbytes(size - 20), protocol=TCP, ident=i, dont_fragment=True))
        else:
            size = max(size, 60)
            out.append(bytes([0x60, 0, 0, 0]) + (size - 40).to_bytes(2, "big") + bytes([TCP, 64])
                       + bytes(32) + rng.randbytes(size - 40))
    return out


def _records(name: str, packets: list[bytes]) -> list[bytes]:
    cls = FRAMINGS[name]
    session, _adapter = ring_pair(lead=cls.session_lead())
    codec = cls(session)
    return [codec.encode_bytes(ip) for ip in packets]


def _reads(name: str, records: list[bytes], per_record: bool) -> list[bytes]:
    if per_record or FRAMINGS[name].default_datagram:
        return records
    stream = b"".join(records)
    return [stream[i : i + READ_BYTES] for i in range(0, len(stream), READ_BYTES)]


def _rig(cls: type[Codec]) -> tuple[Session, Adapter]:
    return ring_pair(lead=cls.session_lead(), capacity=CAPACITY)


def _batches(reads: list[bytes]) -> list[list[bytes]]:
    """The reads in groups of DRAIN_EVERY: the ring is drained after each group."""
    return [reads[i : i + DRAIN_EVERY] for i in range(0, len(reads), DRAIN_EVERY)]


def run_tunring(name: str, reads: list[bytes], warmup: bool = False) -> tuple[float, int]:
    """The codec's want()/received(): each read lands in the ring packet the codec offers."""
    cls = FRAMINGS[name]
    session, adapter = _rig(cls)
    codec = cls(session)
    want = codec.want
    received = codec.received
    got = 0
    t0 = time.perf_counter()
    for batch in _batches(reads):
        for data in batch:
            n = len(data)
            view = want()
            if len(view) >= n:
                view[:n] = data  # the transport's recv_into, straight into the ring
                received(n)
                continue
            pos = 0
            while pos < n:
                view = want()
                k = min(len(view), n - pos)
                view[:k] = data[pos : pos + k]
                pos += k
                received(k)
        got += drain(adapter, DRAIN_MAX)
    if not codec.datagram and not warmup:
        codec.close()
    got += drain(adapter)
    return time.perf_counter() - t0, got


def run_copy(name: str, reads: list[bytes], warmup: bool = False) -> tuple[float, int]:
    """Decode into a private buffer with the same framing code, then copy into the ring."""
    cls = FRAMINGS[name]
    if issubclass(cls, Hdlc):
        return _run_copy_hdlc(cls, reads)
    session, adapter = _rig(cls)
    parser = cls(session)  # only its framing functions (the subclass interface) are used
    length = parser._length
    record = parser._record
    min_header = parser.min_header
    write = session.write
    datagram = parser.datagram
    mv = memoryview(bytearray(COPY_BUFFER_BYTES))
    have = 0
    got = 0
    t0 = time.perf_counter()
    for batch in _batches(reads):
        for data in batch:
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
        got += drain(adapter, DRAIN_MAX)
    got += drain(adapter)
    return time.perf_counter() - t0, got


def _run_copy_hdlc(cls: type[Codec], reads: list[bytes]) -> tuple[float, int]:
    """The copying HDLC receiver: split the stream on flags, un-HDLC each frame into
    ``bytes``, then allocate and copy into the ring."""
    session, adapter = _rig(cls)
    splitter = H.HdlcSplitter()
    decode_frame = H.decode_frame
    write = session.write
    accm = H.ACCM_ALL
    got = 0
    t0 = time.perf_counter()
    for batch in _batches(reads):
        for data in batch:
            carried, spans = splitter.feed(data)
            frames = [carried] if carried is not None else []
            frames += [bytearray(data[s:e]) for s, e in spans]
            for frame in frames:
                n = decode_frame(memoryview(frame), accm)
                r = parse_ppp(frame, 0, n)
                if type(r) is tuple:
                    write(bytes(frame[r[0] : r[1]]))
        got += drain(adapter, DRAIN_MAX)
    got += drain(adapter)
    return time.perf_counter() - t0, got


#: What is measured on each case: measure(framing, reads, warmup=False) -> (seconds, packets out).
IMPLS = [
    Impl("tunring", run_tunring),
    Impl("copy", run_copy),
]


def run(args: argparse.Namespace) -> list[Result]:
    packets = mixed_packets(args.packets, args.seed)
    out: list[Result] = []
    for name in args.framing or sorted(FRAMINGS):
        records = _records(name, packets)
        cases = [(name, True)]
        if FRAMINGS[name].stream_ok:
            cases.append((f"{name}/16k", False))
        for case, per_record in cases:
            reads = _reads(name, records, per_record)
            # Interleaved, best of --repeat: the machine is shared and noisy.
            out += best_of(args.repeat, partial(_round, name, case, reads, packets))
    return out


def _round(name: str, case: str, reads: list[bytes], packets: list[bytes]) -> list[Result]:
    """Each implementation once on ``reads``, after a short warm-up run of its own."""
    mean = sum(map(len, packets)) // len(packets)
    return measure_table(IMPLS, case, mean, partial(_measure, name, case, reads, packets))


def _measure(name: str, case: str, reads: list[bytes], packets: list[bytes], entry: Impl) -> Result:
    entry.measure(name, reads[:WARMUP_READS], warmup=True)
    seconds, got = entry.measure(name, reads)
    if got != len(packets):
        raise RuntimeError(f"{case}/{entry.impl}: {got} packets came out of {len(packets)}")
    total_bytes = sum(map(len, packets))
    return entry.result(case, total_bytes // len(packets), len(packets), seconds,
                        mbps=round(total_bytes / seconds / 1e6, 1))

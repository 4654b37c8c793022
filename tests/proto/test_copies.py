"""Copies: the in-place paths are proven by memory addresses and allocation tracing, and every
copy the codecs make is counted exactly, in packets and bytes, as derived from how the input
was built (not from the codec's own view of it)."""

from __future__ import annotations

import random
import socket
import tracemalloc

import lz4.block
import pytest

import framing_ref as ref
from tunring.errors import FramingError
from tunring.proto import FRAMINGS, Dropped, compress
from tunring.proto.cisco import Cstp, Dtls
from tunring.proto.compress import lzs_compress
from tunring.proto.oncp import Oncp

STREAM = sorted(name for name, cls in FRAMINGS.items() if cls.stream_ok)
DATAGRAM = sorted(name for name, cls in FRAMINGS.items() if cls.datagram_ok)
# Big packets (the codecs take up to 16 KiB records): the in-place paths allocate only
# bookkeeping of a fixed size (views, match objects: about 2 KB for HDLC), the copying paths
# allocate at least the packet.
PACKET_BYTES = 4000


def ip_offset(name: str, record: bytes, ip: bytes) -> int:
    """Where the IP packet starts in the record as the reference encoder built it; for HDLC,
    after un-escaping: the opening flag and the 4-byte PPP header."""
    return 1 + 4 if "hdlc" in name else record.index(ip)


def packets(seed: int, count: int, size: int = PACKET_BYTES) -> list[bytes]:
    rng = random.Random(seed)
    return [ref.ipv4(rng.randbytes(size - 20), i) if i % 3 else ref.ipv6(rng.randbytes(size - 40))
            for i in range(count)]


def encoder(name: str, accm: int = 0xFFFFFFFF):
    return (lambda ip: ref.hdlc(ip, accm)) if "hdlc" in name else ref.REFERENCE[name]


class Traced:
    """Peak bytes allocated (tracemalloc) inside each ``with`` block, above what was live before."""

    def __init__(self) -> None:
        self.peaks: list[int] = []

    def __enter__(self):
        tracemalloc.reset_peak()
        self._before = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc) -> None:
        self.peaks.append(tracemalloc.get_traced_memory()[1] - self._before)


@pytest.fixture
def traced():
    tracemalloc.start()
    try:
        yield Traced()
    finally:
        tracemalloc.stop()


def seqpacket():
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one record per recv, as TLS


# -- in place: the transport's target is the delivered packet's memory, nothing allocated -----------
IN_PLACE_CASES = ([(n, 0xFFFFFFFF) for n in STREAM] + [(f"{n}/datagram", 0xFFFFFFFF) for n in DATAGRAM]
                  + [("hdlc", 0), ("f5-hdlc", 0)])  # HDLC after LCP set the ACCM to 0


@pytest.mark.parametrize("name,accm", IN_PLACE_CASES)
def test_recv_into_target_is_the_delivered_packet(name, accm, traced):
    """Each record is received with ``sock.recv_into(codec.want())``; the packet the adapter gets
    lies at that very address (plus the header), and the codec allocated less than a packet."""
    name, _, shape = name.partition("/")
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, capacity=0x100000)
    codec = cls(ring.session, datagram=shape == "datagram", rx_accm=accm) if "hdlc" in name else \
        cls(ring.session, datagram=shape == "datagram")
    enc = encoder(name, accm)
    a, b = seqpacket()
    try:
        for ip in packets(1, 30):
            record = enc(ip)
            a.send(record)
            with traced:
                view = codec.want()
                n = b.recv_into(view)
                assert codec.received(n) == []
            target = ref.address(view)
            p = ring.adapter.receive()
            assert bytes(p.data) == ip
            assert ref.address(p.data) == target + ip_offset(name, record, ip)
            ring.adapter.release(p)
    finally:
        a.close()
        b.close()
    assert max(traced.peaks[1:]) < PACKET_BYTES  # the first record fills one-time caches (compiled patterns)
    assert codec.stats.rx_copies == codec.stats.rx_copy_bytes == 0


@pytest.mark.parametrize("name", STREAM)
def test_two_records_in_one_read_allocate_a_copy_and_count_it(name, traced):
    """The copying path, for contrast: the second record of a read is kept (allocated) and
    copied, and the counters say so, byte for byte."""
    cls = FRAMINGS[name]
    ring = ref.Ring(cls, capacity=0x100000)
    codec = cls(ring.session)
    enc = encoder(name)
    ips = packets(2, 20)
    for first, second in zip(ips[::2], ips[1::2]):
        blob = enc(first) + enc(second)
        with traced:
            ref.recv_into(codec, blob)
        ring.drain()
    assert ring.got == ips
    assert min(traced.peaks) >= PACKET_BYTES
    assert codec.stats.rx_copies == len(ips) // 2


def test_lzs_records_decompress_in_the_slot_they_were_read_into():
    """LZS output goes straight into the slot the compressed record was read into (the native
    kernel first copies the compressed record aside, since it writes the slot while reading it)."""
    ips = packets(3, 20)
    ring = ref.Ring(Cstp, capacity=0x100000)
    codec = Cstp(ring.session, compression="lzs")
    aside = 0
    for ip in ips:
        record = ref.cstp(lzs_compress(ip), kind=8)
        aside += len(record) - 8
        view = codec.want()
        target = ref.address(view)
        view[: len(record)] = record
        codec.received(len(record))
        p = ring.adapter.receive()
        assert bytes(p.data) == ip and ref.address(p.data) == target + 8
        ring.adapter.release(p)
    stats = codec.stats
    assert stats.rx_decompressed == len(ips)
    if compress.LzsDecompressor.copies_overlapping_src:
        assert stats.rx_copies == len(ips) and stats.rx_copy_bytes == aside
    else:
        assert stats.rx_copies == stats.rx_copy_bytes == 0


@pytest.mark.parametrize("name", ["lz4", "deflate"])
def test_library_decompression_output_is_a_counted_copy(name):
    """python-lz4 and zlib return new bytes: copying them into the slot is counted (natively the
    output is written in place, but the record is first copied aside, counted as well)."""
    import zlib

    ips = packets(4, 10)
    if name == "lz4":
        payloads = [lz4.block.compress(ip, store_size=False) for ip in ips]
    else:
        z, adler, payloads = zlib.compressobj(6, zlib.DEFLATED, -12), 1, []
        for ip in ips:
            adler = zlib.adler32(ip, adler)
            payloads.append(z.compress(ip) + z.flush(zlib.Z_SYNC_FLUSH) + adler.to_bytes(4, "big"))
    ring = ref.Ring(Cstp, capacity=0x100000)
    codec = Cstp(ring.session, compression=name)
    for payload in payloads:
        ref.recv_into(codec, ref.cstp(payload, kind=8))
    assert ring.drain() == ips
    kind = compress.decompressor(name)
    expected = (sum(map(len, ips)) if kind.staged else 0) + (
        sum(map(len, payloads)) if kind.copies_overlapping_src else 0)
    assert codec.stats.rx_copies == len(ips)
    assert codec.stats.rx_copy_bytes == expected


# -- copies counted exactly -------------------------------------------------------------------------
def test_oncp_record_with_three_packets_counts_staging_and_ring_write():
    """The first packet stays in place; the other two are staged out of the slot and copied
    into their own: twice their bytes."""
    a, b, c = packets(5, 3, 900)
    ring = ref.Ring(Oncp)
    codec = Oncp(ring.session)
    ref.recv_into(codec, ref.oncp(a + b + c))
    assert ring.drain() == [a, b, c]
    assert codec.stats.rx_copies == 2
    assert codec.stats.rx_copy_bytes == 2 * (len(b) + len(c))


def test_oncp_message_across_records_counts_every_copy():
    """A KMP message split over two records is reassembled (its bytes copied once), then its
    packet is copied out of the reassembly buffer and into the ring."""
    ip = packets(6, 1, 600)[0]
    message = ref.kmp(ip)
    records = [ref.oncp_record(message[:100]), ref.oncp_record(message[100:])]
    ring = ref.Ring(Oncp)
    codec = Oncp(ring.session)
    for record in records:
        ref.recv_into(codec, record)
    codec.close()
    assert ring.drain() == [ip]
    assert codec.stats.rx_copies == 1
    assert codec.stats.rx_copy_bytes == len(message) + 2 * len(ip)


@pytest.mark.parametrize("name", sorted(set(STREAM) - {"hdlc", "f5-hdlc"}))
def test_aggregate_read_counts_stash_partial_and_ring_writes(name):
    """One read: three whole records and the first 7 bytes of a fourth.  Copied: every byte of
    the read after the first record (kept), the IP bytes of the second and third (into the
    ring) and the fourth's 7 bytes (into its packet)."""
    ips = packets(7, 4, 700)
    records = [ref.REFERENCE[name](ip) for ip in ips]
    ring = ref.Ring(FRAMINGS[name])
    codec = FRAMINGS[name](ring.session)
    blob = b"".join(records[:3]) + records[3][:7]
    view = codec.want()
    view[: len(blob)] = blob
    codec.received(len(blob))
    ref.recv_into(codec, records[3][7:])
    codec.close()
    assert ring.drain() == ips
    assert codec.stats.rx_copies == 3
    assert codec.stats.rx_copy_bytes == (len(blob) - len(records[0])) + len(ips[1]) + len(ips[2]) + 7


@pytest.mark.parametrize("name", ["hdlc", "f5-hdlc"])
def test_hdlc_aggregate_counts_stash_copy_out_and_ring_writes(name):
    """Frames after the first in one read: the read's bytes after the first frame are kept,
    each later frame is copied out to be un-HDLC'd and its IP packet copied into the ring."""
    ips = packets(8, 5, 700)
    frames = [ref.hdlc(ip) for ip in ips]  # 7E escaped 7E each: doubled flags
    blob = b"".join(frames)
    ring = ref.Ring(FRAMINGS[name])
    codec = FRAMINGS[name](ring.session)
    ref.recv_into(codec, blob)
    codec.close()
    assert ring.drain() == ips
    first_content_end = len(frames[0]) - 1  # the first frame's closing flag starts what is kept
    escaped = [len(f) - 2 for f in frames]  # the bytes between each frame's two flags
    assert codec.stats.rx_copies == len(ips) - 1
    assert codec.stats.rx_copy_bytes == (len(blob) - first_content_end) + sum(escaped[1:]) + sum(map(len, ips[1:]))


@pytest.mark.parametrize("name", DATAGRAM)
def test_feed_is_a_counted_copy(name):
    """``feed`` copies each datagram into its packet: one copied packet and its bytes each."""
    ips = packets(9, 10)
    records = [ref.REFERENCE[name](ip) for ip in ips]
    ring = ref.Ring(FRAMINGS[name])
    codec = FRAMINGS[name](ring.session, datagram=True)
    for record in records:
        codec.feed(record)
    assert ring.drain() == ips
    assert codec.stats.rx_copies == len(ips)
    assert codec.stats.rx_copy_bytes == sum(map(len, records))


def test_feed_of_a_stream_copies_each_byte_once():
    ips = packets(10, 10)
    stream = b"".join(ref.cstp(ip) for ip in ips)
    ring = ref.Ring(Cstp)
    codec = Cstp(ring.session)
    codec.feed(stream)
    codec.close()
    assert ring.drain() == ips
    assert codec.stats.rx_copies == len(ips) and codec.stats.rx_copy_bytes == len(stream)


def test_demo_counts_an_aggregated_packet_once():
    """The demo's copy total over a real Session: an aggregate of three records copies two
    packets, which the codec counts and the session does not count again."""
    from tunring.apps.demo import copies_made
    from tunring.session import Session

    session = Session.create(capacity=0x40000, lead=Cstp.session_lead())
    try:
        codec = Cstp(session)
        ips = packets(11, 3, 300)
        ref.recv_into(codec, b"".join(ref.cstp(ip) for ip in ips))
        assert copies_made(codec, session, adapter_copies=0) == 2
    finally:
        session.close()


# -- streams that end badly ---------------------------------------------------------------------------
def test_oncp_stream_ending_inside_a_kmp_message_is_an_error():
    """Half a KMP message at the end: the records are whole, the message is not."""
    good, cut_ip = packets(12, 2, 500)
    message = ref.kmp(cut_ip)
    stream = ref.oncp(good) + ref.oncp_record(message[:30])
    ring = ref.Ring(Oncp)
    codec = Oncp(ring.session)
    codec.feed(stream)
    with pytest.raises(FramingError, match="inside a KMP message") as info:
        codec.close()
    assert info.value.offset == len(ref.oncp(good)) + 2  # the message's first byte, after its record header
    assert ring.drain() == [good]
    assert codec.failed


def test_oncp_unfinished_message_offset_spans_records():
    ip = packets(13, 1, 500)[0]
    message = ref.kmp(ip)
    records = [ref.oncp_record(message[:10]), ref.oncp_record(message[10:40])]
    codec = Oncp(ref.Ring(Oncp).session)
    codec.feed(b"".join(records))
    with pytest.raises(FramingError) as info:
        codec.close()
    assert info.value.offset == 2  # it began in the first record


def test_zero_length_kmp_300_message_is_a_counted_drop():
    good = packets(14, 1, 100)[0]
    ring = ref.Ring(Oncp)
    codec = Oncp(ring.session)
    events = ref.recv_into(codec, ref.oncp(b"")) + ref.recv_into(codec, ref.oncp(good))
    events += ref.recv_into(codec, ref.oncp_record(ref.kmp(b"") + ref.kmp(good)))  # reassembly path
    assert ring.drain() == [good, good]
    assert [type(e) for e in events] == [Dropped, Dropped]
    assert codec.stats.rx_drops == 2


def test_decode_cli_fails_on_a_truncated_oncp_stream(tmp_path, capsys):
    from tunring.cli import main

    good, cut_ip = packets(15, 2, 500)
    (tmp_path / "s").write_bytes(ref.oncp(good) + ref.oncp_record(ref.kmp(cut_ip)[:30]))
    rc = main(["decode", "--framing", "oncp", str(tmp_path / "s"), "-o", str(tmp_path / "o.pcap")])
    captured = capsys.readouterr()
    assert rc == 1
    assert f"offset {len(ref.oncp(good)) + 2}" in captured.err and "KMP" in captured.err


# -- tunring decode reports the copies it made ---------------------------------------------------------
def decode_inputs(name: str, ips: list[bytes], datagram: bool) -> tuple[bytes | str, int, int]:
    """An input for ``tunring decode`` and the copies (packets, bytes) decoding it takes, derived
    from how it is built: exact reads put every plain record in place; datagrams go through
    ``feed`` (one copy each); the rest is spelled out per framing."""
    enc = ref.REFERENCE[name]
    if datagram:
        records = [enc(ip) for ip in ips]
        return "".join(r.hex() + "\n" for r in records), len(ips), sum(map(len, records))
    if name == "oncp":  # the last three packets share one KMP 300 message: two are copied twice
        stream = b"".join(enc(ip) for ip in ips[:-3]) + ref.oncp(b"".join(ips[-3:]))
        return stream, 2, 2 * (len(ips[-2]) + len(ips[-1]))
    if name in ("f5", "fortinet"):  # the last frame without address/control (ACFC): moved by 2
        stream = b"".join(enc(ip) for ip in ips[:-1]) + enc(b"\x00\x21" + ips[-1], raw_frame=True)
        return stream, 1, len(ips[-1])
    if "hdlc" in name:  # one read takes the whole (short) stream: all but the first frame copied
        frames = [ref.hdlc(ip) for ip in ips]
        stream = b"".join(frames)
        kept = len(stream) - (len(frames[0]) - 1)
        return stream, len(ips) - 1, kept + sum(len(f) - 2 for f in frames[1:]) + sum(map(len, ips[1:]))
    return b"".join(enc(ip) for ip in ips), 0, 0


DECODE_CASES = [(n, FRAMINGS[n].default_datagram) for n in sorted(FRAMINGS)] + [
    (n, True) for n in DATAGRAM if not FRAMINGS[n].default_datagram]


@pytest.mark.parametrize("name,datagram", DECODE_CASES)
def test_decode_cli_reports_the_copies_it_made(name, datagram, tmp_path, capsys):
    from tunring.cli import main

    ips = packets(16, 8, 600)
    data, copies, copy_bytes = decode_inputs(name, ips, datagram)
    path = tmp_path / "in"
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    shape = ["--datagram"] if datagram and not FRAMINGS[name].default_datagram else []
    assert main(["decode", "--framing", name, *shape, str(path), "-o", str(tmp_path / "o.pcap")]) == 0
    out = capsys.readouterr().out
    assert f"{len(ips)} IP packets" in out
    assert f"copies: {copies} packets, {copy_bytes:,} bytes;" in out


def test_dtls_datagram_of_the_wrong_size_for_feed_is_dropped_at_its_index():
    codec = Dtls(ref.Ring(Dtls).session)
    codec.feed(ref.dtls(packets(17, 1, 100)[0]))
    events = codec.feed(b"\x00" * 70000)
    assert [e.offset for e in events if isinstance(e, Dropped)] == [1]

"""Compressed CSTP/DTLS records (type 8): decompressed into a max(16384, mtu) packet then
shrunk; bombs and bad checksums are FramingErrors with nothing delivered; compression on send.

LZ4 and deflate records are built with the reference libraries (lz4.block, zlib) here,
independently of tunring.proto.compress.
"""

from __future__ import annotations

import random
import zlib

import lz4.block
import pytest

import framing_ref as ref
from tunring.errors import FramingError
from tunring.proto import Dropped
from tunring.proto.cisco import Cstp, Dtls
from tunring.proto.compress import lzs_compress

IPS = [ref.ipv4(b"compressible " * 50), ref.ipv6(bytes(range(256)) * 3), ref.ipv4(b"x")]


class RefDeflate:
    """CSTP deflate as BACKGROUND describes it: raw deflate, 4 KiB window, one stream,
    sync flush per record, big-endian adler32 of everything so far."""

    def __init__(self) -> None:
        self.z = zlib.compressobj(6, zlib.DEFLATED, -12)
        self.adler = 1

    def __call__(self, data: bytes) -> bytes:
        body = self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        self.adler = zlib.adler32(data, self.adler)
        return body + self.adler.to_bytes(4, "big")


def lz4_ref(data: bytes) -> bytes:
    return lz4.block.compress(data, store_size=False)


def compressor_for(name):
    return {"lz4": lz4_ref, "deflate": RefDeflate(), "lzs": lzs_compress}[name]


@pytest.mark.parametrize("name", ["lzs", "lz4", "deflate"])
def test_cstp_compressed_records_mixed_with_plain(name):
    comp = compressor_for(name)
    stream = b"".join(ref.cstp(comp(ip), kind=8) if i % 2 == 0 else ref.cstp(ip) for i, ip in enumerate(IPS))
    ring = ref.Ring(Cstp)
    codec = Cstp(ring.session, compression=name)
    codec.feed(stream)
    codec.close()
    assert ring.drain() == IPS
    assert codec.stats.rx_decompressed == 2


@pytest.mark.parametrize("name", ["lzs", "lz4"])
def test_dtls_compressed_datagrams(name):
    comp = compressor_for(name)
    ring = ref.Ring(Dtls)
    codec = Dtls(ring.session, compression=name)
    for ip in IPS:
        codec.feed(ref.dtls(comp(ip), kind=8))
    assert ring.drain() == IPS


def test_deflate_is_cstp_only():
    with pytest.raises(ValueError, match="deflate"):
        Dtls(ref.Ring(Dtls).session, compression="deflate")


@pytest.mark.parametrize("name", ["lzs", "lz4", "deflate"])
def test_decompression_bomb_is_an_error_nothing_delivered(name):
    comp = compressor_for(name)
    bomb = ref.ipv4(bytes(20000))  # decompresses past max(16384, mtu)
    ring = ref.Ring(Cstp)
    codec = Cstp(ring.session, compression=name)
    codec.feed(ref.cstp(IPS[0]))
    with pytest.raises(FramingError, match="exceed|fit|bound|large|output"):
        codec.feed(ref.cstp(comp(bomb), kind=8) + ref.cstp(IPS[2]))
    # Nothing of the bomb reached the ring and its allocation was given back; the
    # stream itself is intact (the record was consumed) and carries on.
    codec.feed(b"")
    codec.close()
    assert ring.drain() == [IPS[0], IPS[2]]
    assert not ring.session._writer.slots


def test_deflate_bad_checksum():
    comp = RefDeflate()
    record = bytearray(comp(IPS[0]))
    record[-1] ^= 0xFF
    ring = ref.Ring(Cstp)
    codec = Cstp(ring.session, compression="deflate")
    with pytest.raises(FramingError, match="adler32"):
        codec.feed(ref.cstp(bytes(record), kind=8))
    assert ring.drain() == []


def test_compressed_record_without_negotiated_compression():
    ring = ref.Ring(Cstp)
    codec = Cstp(ring.session)
    with pytest.raises(FramingError, match="no compression"):
        codec.feed(ref.cstp(lz4_ref(IPS[0]), kind=8))


@pytest.mark.parametrize("name", ["lzs", "lz4", "deflate"])
def test_send_compressed_and_decode_back(name):
    rng = random.Random(2)
    ips = IPS + [ref.random_ip(rng) for _ in range(20)]
    tx_ring = ref.Ring(Cstp)
    tx = Cstp(tx_ring.session, compression=name)
    wire = []
    for ip in ips:
        p = tx_ring.inject(ip)
        wire.append(bytes(tx.encode(p)))
        tx_ring.session.release(p)
    assert tx.stats.tx_compressed >= 1
    if name == "deflate":
        assert tx.stats.tx_compressed == len(ips)  # every deflate record must be sent as such
    if name == "lz4":  # cross-check against the reference library
        for ip, rec in zip(ips, wire):
            if rec[6] == 8:
                assert lz4.block.decompress(rec[8:], uncompressed_size=len(ip)) == ip
    if name == "deflate":
        d = zlib.decompressobj(-12)
        for ip, rec in zip(ips, wire):
            assert d.decompress(rec[8:-4]) == ip
    rx_ring = ref.Ring(Cstp)
    rx = Cstp(rx_ring.session, compression=name)
    rx.feed(b"".join(wire))
    rx.close()
    assert rx_ring.drain() == ips


def test_decode_cli_with_compression(tmp_path, capsys):
    from tunring.cli import main

    comp = RefDeflate()
    stream = b"".join(ref.cstp(comp(ip), kind=8) for ip in IPS)
    (tmp_path / "s").write_bytes(stream)
    assert main(["decode", "--framing", "cstp", "--compression", "deflate", str(tmp_path / "s"),
                 "-o", str(tmp_path / "o.pcap")]) == 0
    assert "decompressed: 3" in capsys.readouterr().out


def test_unknown_type_in_compressed_dtls_still_dropped():
    ring = ref.Ring(Dtls)
    codec = Dtls(ring.session, compression="lz4")
    events = codec.feed(ref.dtls(b"??", kind=0x77))
    assert isinstance(events[0], Dropped)

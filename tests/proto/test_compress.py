"""LZS, LZ4 ("oc-lz4") and CSTP deflate: vectors, round trips, reference cross-checks, bounds, fuzzing."""

import os
import random
import tracemalloc
import zlib

import lz4.block
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunring import _impl
from tunring.errors import FramingError
from tunring.proto import compress

SLOW_EXAMPLES = int(os.environ.get("TUNRING_FUZZ_EXAMPLES", "100000"))  # inputs per long fuzz run
RECEIVE_BYTES = 16384  # what a codec allocates for decompression: max(16384, mtu)

random_data = st.binary(max_size=3000)
compressible_data = st.one_of(
    st.lists(st.sampled_from([b"a", b"b", b"ab", b"hello ", b"GET / HTTP/1.1\r\n", b"\x00" * 40]), max_size=300)
    .map(b"".join),
    st.tuples(st.binary(min_size=1, max_size=50), st.integers(1, 200)).map(lambda t: t[0] * t[1]),
)
packets = st.one_of(random_data, compressible_data)


def decompress_with(fn, src, cap=RECEIVE_BYTES) -> bytes:
    dst = memoryview(bytearray(cap))
    return bytes(dst[: fn(src, dst)])


# ---- LZS: an independent bit-by-bit reference (ANSI X3.241 as RFC 1974 describes it) ----------


class Bad(Exception):
    pass


def ref_lzs_decode(data: bytes, cap: int) -> bytes:
    bits = "".join(f"{b:08b}" for b in data)
    pos = 0

    def take(k):
        nonlocal pos
        if pos + k > len(bits):
            raise Bad("truncated")
        value = int(bits[pos : pos + k], 2)
        pos += k
        return value

    out = bytearray()
    while True:
        if take(1) == 0:
            out.append(take(8))
        else:
            seven_bits = take(1) == 1
            offset = take(7) if seven_bits else take(11)
            if offset == 0 and seven_bits:
                break  # end marker
            if offset == 0:
                raise Bad("offset 0")
            code = take(2)
            if code < 3:
                length = code + 2
            else:
                code = take(2)
                if code < 3:
                    length = code + 5
                else:
                    length = 8
                    while (nibble := take(4)) == 15:
                        length += 15
                    length += nibble
            if offset > len(out):
                raise Bad("offset beyond output")
            for _ in range(length):
                out.append(out[-offset])
        if len(out) > cap:
            raise Bad("too long")
    if (pos + 7) // 8 != len(data):
        raise Bad("trailing bytes")
    return bytes(out)


def ref_lzs_encode(tokens) -> bytes:
    """Bits for a token list: ("lit", byte) | ("match", offset, length, offset_bits) | ("end",)."""
    bits = []
    for token in tokens:
        if token[0] == "lit":
            bits.append(f"0{token[1]:08b}")
        elif token[0] == "end":
            bits.append("110000000")
        else:
            _, offset, length, width = token
            bits.append(f"11{offset:07b}" if width == 7 else f"10{offset:011b}")
            if length < 5:
                bits.append(f"{length - 2:02b}")
            elif length < 8:
                bits.append(f"11{length - 5:02b}")
            else:
                k, n = divmod(length - 8, 15)
                bits.append("1111" + "1111" * k + f"{n:04b}")
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    return int(s, 2).to_bytes(len(s) // 8, "big") if s else b""


@st.composite
def lzs_token_streams(draw):
    """A valid LZS packet built token by token (including forms our compressor never emits:
    11-bit offsets below 128, overlapping matches, very long lengths) and its expected output."""
    out = bytearray()
    tokens = []
    for _ in range(draw(st.integers(0, 60))):
        if not out or draw(st.booleans()):
            byte = draw(st.integers(0, 255))
            tokens.append(("lit", byte))
            out.append(byte)
        else:
            offset = draw(st.integers(1, min(len(out), compress.LZS_MAX_OFFSET)))
            length = draw(st.one_of(st.integers(2, 10), st.integers(2, 700)))
            width = 7 if offset < 128 and draw(st.booleans()) else 11
            tokens.append(("match", offset, length, width))
            for _ in range(length):
                out.append(out[-offset])
    tokens.append(("end",))
    return ref_lzs_encode(tokens), bytes(out)


def test_lzs_vectors_by_hand():
    # Empty packet: the end marker 110000000 and 7 zero bits.
    assert compress.lzs_compress(b"") == bytes.fromhex("c000")
    # "ABAB": literal A 0|01000001, literal B 0|01000010, match 11|0000010 (offset 2) 00 (length 2),
    # end marker, zero pad: 001000001 001000010 11000001000 110000000 00
    assert compress.lzs_compress(b"ABAB") == bytes.fromhex("2090b04600")
    # "A"*9: literal A, then offset 1 length 8 (1111 0000) overlapping itself.
    assert compress.lzs_compress(b"A" * 9) == bytes.fromhex("20e07c3000")
    for packet in (b"", b"ABAB", b"A" * 9):
        assert decompress_with(compress.lzs_decompress_into, compress.lzs_compress(packet)) == packet
    # 11-bit offset form for a short offset (legal, never produced by our compressor):
    # literal 'x' then 10|00000000001 (offset 1), 01 (length 3), end marker.
    assert ref_lzs_encode([("lit", 0x78), ("match", 1, 3, 11), ("end",)]) == bytes.fromhex("3c4005c000")
    assert decompress_with(compress.lzs_decompress_into, bytes.fromhex("3c4005c000")) == b"xxxx"


@given(packets)
def test_lzs_round_trip(packet):
    packed = compress.lzs_compress(packet)
    assert decompress_with(compress.lzs_decompress_into, packed) == packet
    assert ref_lzs_decode(packed, RECEIVE_BYTES) == packet


def test_lzs_compresses_compressible_data():
    text = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n" * 20
    assert len(compress.lzs_compress(text)) < len(text) / 5
    assert len(compress.lzs_compress(bytes(1400))) < 60


def test_lzs_long_history_uses_11_bit_offsets():
    rnd = random.Random(3)
    block = rnd.randbytes(300)
    packet = block + rnd.randbytes(1500) + block  # the repeat is 1800 bytes back
    packed = compress.lzs_compress(packet)
    assert len(packed) < len(packet) * 9 // 8 - 200
    assert decompress_with(compress.lzs_decompress_into, packed) == packet
    far = block + rnd.randbytes(2100) + block  # beyond the 2047-byte history: no match possible
    assert decompress_with(compress.lzs_decompress_into, compress.lzs_compress(far)) == far


@given(lzs_token_streams())
def test_lzs_decoder_on_hand_built_token_streams(stream):
    packed, expected = stream
    assert ref_lzs_decode(packed, 1 << 20) == expected
    if len(expected) <= RECEIVE_BYTES:
        assert decompress_with(compress.lzs_decompress_into, packed) == expected
    else:
        with pytest.raises(FramingError):
            decompress_with(compress.lzs_decompress_into, packed)


@pytest.mark.parametrize(
    "tokens_or_bytes, message",
    [
        (b"", "end marker"),
        ([("lit", 65)], "end marker"),  # no end marker, zero-padded
        ([("lit", 65), ("match", 2, 3, 7), ("end",)], "reaches"),
        ([("lit", 65), ("match", 0, 3, 11), ("end",)], "offset 0"),
        (bytes.fromhex("c000") + b"\x00", "after the LZS end marker"),
        (bytes.fromhex("20e0"), "ends inside"),
    ],
)
def test_lzs_malformed(tokens_or_bytes, message):
    packed = tokens_or_bytes if isinstance(tokens_or_bytes, bytes) else ref_lzs_encode(tokens_or_bytes)
    with pytest.raises(FramingError, match=message):
        decompress_with(compress.lzs_decompress_into, packed)


def test_lzs_output_bound_and_bomb():
    packet = b"0123456789" * 100
    packed = compress.lzs_compress(packet)
    assert decompress_with(compress.lzs_decompress_into, packed, len(packet)) == packet
    # Output goes straight into dst, so a failure leaves partial output there, but never a byte
    # past dst's end (dst is a window with guard bytes on both sides).
    backing = bytearray(b"\xee" * (len(packet) + 63))
    dst = memoryview(backing)[32 : 32 + len(packet) - 1]
    with pytest.raises(FramingError, match="exceeds"):
        compress.lzs_decompress_into(packed, dst)
    assert backing[:32] == backing[-32:] == b"\xee" * 32
    if _impl.native is None:  # the pure decoder writes as it reads: the literals before the match
        assert dst[:10] == packet[:10]
    # A bomb: one literal and one match claiming ~15 MB (a million 1111 nibbles, 500 KB).
    bomb = ref_lzs_encode([("lit", 0), ("match", 1, 8 + 15 * 1_000_000, 7), ("end",)])
    dst = bytearray(RECEIVE_BYTES)
    with pytest.raises(FramingError, match="exceeds"):
        compress.lzs_decompress_into(bomb, memoryview(dst))
    assert dst == bytes(RECEIVE_BYTES)


# ---- LZ4 ------------------------------------------------------------------------------------


def test_lz4_vectors_by_hand():
    # Block format: token (literal length << 4 | match length - 4), literals, u16le offset.
    assert decompress_with(compress.lz4_decompress_into, b"\x50hello") == b"hello"
    block = b"\x38abc\x03\x00" + b"\x50XXXXX"  # "abc", then 12 bytes from 3 back, then 5 literals
    assert decompress_with(compress.lz4_decompress_into, block) == b"abc" * 5 + b"XXXXX"
    assert lz4.block.decompress(block, uncompressed_size=100) == b"abc" * 5 + b"XXXXX"


@given(packets, st.sampled_from(["default", "fast", "high_compression"]))
def test_lz4_cross_checked_with_reference(packet, mode):
    ours = compress.lz4_compress(packet)
    if packet:
        assert lz4.block.decompress(ours, uncompressed_size=len(packet)) == packet
    theirs = lz4.block.compress(packet, mode=mode, store_size=False)
    assert decompress_with(compress.lz4_decompress_into, theirs) == packet
    assert decompress_with(compress.lz4_decompress_into, ours) == packet


def test_lz4_output_bound_and_garbage():
    packet = b"0123456789" * 100
    packed = compress.lz4_compress(packet)
    assert decompress_with(compress.lz4_decompress_into, packed, len(packet)) == packet
    with pytest.raises(FramingError):
        decompress_with(compress.lz4_decompress_into, packed, len(packet) - 1)
    bomb = compress.lz4_compress(bytes(10_000_000))
    with pytest.raises(FramingError):
        decompress_with(compress.lz4_decompress_into, bomb)
    with pytest.raises(FramingError):
        decompress_with(compress.lz4_decompress_into, b"\x1f\x00\x10\x00")  # match before any output
    with pytest.raises(FramingError):
        decompress_with(compress.lz4_decompress_into, b"")


# ---- deflate (CSTP) ---------------------------------------------------------------------------


def reference_records(payloads, level=6):
    """Records as a CSTP peer builds them, with zlib directly: sync-flushed raw deflate + adler32."""
    stream = zlib.compressobj(level, zlib.DEFLATED, -12)
    adler = 1
    for payload in payloads:
        body = stream.compress(payload) + stream.flush(zlib.Z_SYNC_FLUSH)
        adler = zlib.adler32(payload, adler)
        yield body + adler.to_bytes(4, "big")


@given(st.lists(packets, max_size=8))
def test_deflate_compressor_cross_checked_with_zlib(payloads):
    tx = compress.compressor("deflate")
    records = [tx.compress(p) for p in payloads]
    inflate = zlib.decompressobj(-12)
    sent = b""
    for record, payload in zip(records, payloads):
        sent += payload
        # each record carries the adler32 of everything so far, starting from 1
        assert record[-4:] == zlib.adler32(sent).to_bytes(4, "big")
        assert record[-8:-4] == b"\x00\x00\xff\xff"  # ends with a sync flush
        assert inflate.decompress(record[:-4]) == payload


@given(st.lists(packets, max_size=8), st.integers(0, 9))
def test_deflate_decompressor_on_reference_records(payloads, level):
    rx = compress.decompressor("deflate")
    for record, payload in zip(reference_records(payloads, level), payloads):
        assert decompress_with(rx.decompress_into, record) == payload


def test_deflate_adler32_chains_across_records():
    tx, rx = compress.compressor("deflate"), compress.decompressor("deflate")
    first, second = tx.compress(b"hello "), tx.compress(b"world")
    assert first[-4:] == zlib.adler32(b"hello ", 1).to_bytes(4, "big")
    assert second[-4:] == zlib.adler32(b"hello world").to_bytes(4, "big")
    assert decompress_with(rx.decompress_into, first) == b"hello "
    assert decompress_with(rx.decompress_into, second) == b"world"
    # Records only make sense in order: the second alone fails its checksum.
    with pytest.raises(FramingError, match="adler32"):
        decompress_with(compress.decompressor("deflate").decompress_into, second)


def test_deflate_bad_checksum_delivers_nothing_and_stops_the_stream():
    tx, rx = compress.compressor("deflate"), compress.decompressor("deflate")
    good = tx.compress(b"first packet")
    bad = bytearray(tx.compress(b"second packet"))
    bad[-1] ^= 0x01
    third = tx.compress(b"third packet")
    assert decompress_with(rx.decompress_into, good) == b"first packet"
    dst = bytearray(b"\xee" * 100)
    with pytest.raises(FramingError, match="adler32"):
        rx.decompress_into(bytes(bad), memoryview(dst))
    if _impl.native is None:  # the reference checks before it writes; the native core inflates
        assert dst == b"\xee" * 100  # straight into dst, and the codec cancels that packet
    assert rx.broken
    with pytest.raises(FramingError, match="unusable"):
        rx.decompress_into(third, memoryview(dst))


def test_deflate_bomb_costs_one_bounded_buffer():
    tx, rx = compress.compressor("deflate"), compress.decompressor("deflate")
    bomb = tx.compress(bytes(20_000_000))  # ~20 KB on the wire
    dst = memoryview(bytearray(RECEIVE_BYTES))
    tracemalloc.start()
    try:
        with pytest.raises(FramingError, match="exceeds"):
            rx.decompress_into(bomb, dst)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * RECEIVE_BYTES + len(bomb)


def test_deflate_output_exactly_filling_dst_is_accepted():
    tx, rx = compress.compressor("deflate"), compress.decompressor("deflate")
    packet = os.urandom(1000)
    assert decompress_with(rx.decompress_into, tx.compress(packet), cap=1000) == packet
    assert decompress_with(rx.decompress_into, tx.compress(packet), cap=1000) == packet  # history hit
    assert decompress_with(rx.decompress_into, tx.compress(b"")) == b""


def test_deflate_garbage_and_short_records():
    with pytest.raises(FramingError, match="no adler32"):
        decompress_with(compress.decompressor("deflate").decompress_into, b"\x00\x01")
    with pytest.raises(FramingError, match="corrupt"):
        decompress_with(compress.decompressor("deflate").decompress_into, b"\xff" * 20)
    final = zlib.compressobj(6, zlib.DEFLATED, -12)
    ended = final.compress(b"x") + final.flush() + zlib.adler32(b"x").to_bytes(4, "big")
    with pytest.raises(FramingError, match="ended"):
        decompress_with(compress.decompressor("deflate").decompress_into, ended)


# ---- by name --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", compress.NAMES)
@given(st.lists(packets, max_size=4))
def test_round_trip_by_name(name, payloads):
    tx, rx = compress.compressor(name), compress.decompressor(name)
    assert tx.name == rx.name == name
    for payload in payloads:
        assert decompress_with(rx.decompress_into, tx.compress(memoryview(bytearray(payload)))) == payload


def test_unknown_name():
    assert set(compress.NAMES) == {"lzs", "lz4", "deflate"}
    with pytest.raises(ValueError, match="unknown compression"):
        compress.compressor("zstd")
    with pytest.raises(ValueError, match="unknown compression"):
        compress.decompressor("")


# ---- fuzzing ----------------------------------------------------------------------------------


def mutate(data: bytes, rnd: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        choice = rnd.randrange(3)
        if choice == 0 and data:
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        elif choice == 1 and data:
            del data[rnd.randrange(len(data)) :]
        else:
            data.insert(rnd.randint(0, len(data)), rnd.randrange(256))
    return bytes(data)


def check_decoder(name: str, data: bytes, cap: int) -> None:
    """Any input: a bounded result inside dst or FramingError, nothing else, nothing outside dst."""
    backing = bytearray(b"\xee" * (cap + 16))
    dst = memoryview(backing)[:cap]
    rx = compress.decompressor(name)
    try:
        n = rx.decompress_into(data, dst)
    except FramingError:
        pass
    else:
        assert 0 <= n <= cap
    assert backing[cap:] == b"\xee" * 16
    if name == "lzs":
        try:
            expected = ref_lzs_decode(data, cap)
        except Bad:
            with pytest.raises(FramingError):
                compress.lzs_decompress_into(data, memoryview(bytearray(cap)))
        else:
            assert decompress_with(compress.lzs_decompress_into, data, cap) == expected


def fuzz_inputs(name):
    valid = st.one_of(packets, lzs_token_streams().map(lambda s: s[1])).map(
        lambda packet: compress.compressor(name).compress(packet)  # fresh: deflate keeps history
    )
    return st.one_of(
        st.binary(max_size=200),
        st.tuples(valid, st.randoms(use_true_random=False)).map(lambda t: mutate(t[0], t[1])),
    )


@pytest.mark.parametrize("name", compress.NAMES)
@given(data=st.data(), cap=st.sampled_from([0, 1, 64, 1500, 16384]))
def test_fuzz_decoders(name, data, cap):
    check_decoder(name, data.draw(fuzz_inputs(name)), cap)


def long_inputs(name: str, seed: int, count: int):
    """``count`` reproducible inputs for the long runs: random bytes and compressed packets
    (random, repetitive, text-like) with bits flipped, tails cut or bytes inserted."""
    rnd = random.Random(seed)
    pool = []
    for i in range(64):
        size = rnd.randrange(0, 2000)
        packet = [rnd.randbytes(size), bytes(size), (rnd.randbytes(7) * 300)[:size],
                  b"GET /a HTTP/1.1\r\nHost: x\r\n" * (size // 27)][i % 4]
        pool.append(compress.compressor(name).compress(packet))
    for i in range(count):
        if i % 2:
            yield rnd.randbytes(rnd.randrange(200)), rnd.choice(CAPS)
        else:
            yield mutate(rnd.choice(pool), rnd), rnd.choice(CAPS)


CAPS = [0, 1, 64, 1500, RECEIVE_BYTES]
LONG_SEED = int(os.environ.get("TUNRING_FUZZ_SEED", "1974"))


@pytest.mark.slow
@pytest.mark.parametrize("name", compress.NAMES)
def test_fuzz_decoders_long(name):
    for data, cap in long_inputs(name, LONG_SEED, SLOW_EXAMPLES):
        check_decoder(name, data, cap)

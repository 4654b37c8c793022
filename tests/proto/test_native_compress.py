"""The native decompressors (and LZS compressor) against the pure-Python reference: the same
bytes to both (valid, cut, corrupted, random, bombs), the same results, errors and messages,
the same output, nothing written outside dst."""

import os
import zlib

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compress import ref_lzs_encode

from native_support import outcome, pair, released_the_gil, while_scribbled
from tunring.errors import FramingError  # LZS bits for a token list, from RFC 1974's grammar

pytestmark = pytest.mark.path_independent  # both paths in every run: once is enough
PURE, NATIVE = pair("tunring.proto.compress")
GUARD = b"\x5a" * 16
CAPS = st.sampled_from([0, 1, 2, 64, 1399, 1500, 16384])

packets = st.one_of(
    st.binary(max_size=3000),
    st.lists(st.sampled_from([b"a", b"ab", b"hello ", b"GET / HTTP/1.1\r\n", b"\x00" * 40]), max_size=300)
    .map(b"".join),
    st.tuples(st.binary(min_size=1, max_size=50), st.integers(1, 300)).map(lambda t: t[0] * t[1]),
)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "none"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data[at:at] = bytes([draw(st.integers(0, 255))])
    return bytes(data)


def into(fn, src: bytes, cap: int):
    """Decompress into a dst of cap bytes between guards: (outcome, dst bytes, guards intact)."""
    backing = bytearray(GUARD + b"\xee" * cap + GUARD)
    dst = memoryview(backing)[len(GUARD) : len(GUARD) + cap]
    result = outcome(fn, src, dst)
    intact = backing[: len(GUARD)] == GUARD and backing[len(GUARD) + cap :] == GUARD
    # What dst holds is specified up to the result; after an error only that nothing is written
    # outside it (both paths write as they go: the pure one bit by bit, the native one after a
    # checking pass, so partial output differs).
    written = bytes(dst[: result[1]]) if result[0] == "ok" else b""
    if result[0] != "ok":  # input with several faults: the paths may name a different one first
        result = (result[0], "")
    return result, written, intact


# ---- LZS -----------------------------------------------------------------------------------------


token = st.one_of(
    st.tuples(st.just("lit"), st.integers(0, 255)),
    st.tuples(st.just("match"), st.integers(0, 2047), st.one_of(st.integers(2, 20), st.integers(2, 5000)),
              st.sampled_from([7, 11])).map(lambda t: (t[0], t[1] & (127 if t[3] == 7 else 2047), t[2], t[3])),
)
token_streams = st.tuples(st.lists(token, max_size=40), st.booleans()).map(
    lambda t: ref_lzs_encode(t[0] + ([("end",)] if t[1] else [])))
lzs_inputs = st.one_of(packets.map(PURE.lzs_compress).flatmap(mutated), token_streams.flatmap(mutated),
                       st.binary(max_size=100))


@given(lzs_inputs, CAPS)
@settings(max_examples=400)
def test_lzs_decompress_same_everything(src, cap):
    native = into(NATIVE.lzs_decompress_into, src, cap)
    assert native == into(PURE.lzs_decompress_into, src, cap)
    assert native[2]


def test_lzs_bombs_and_big_outputs():
    bomb = ref_lzs_encode([("lit", 0), ("match", 1, 8 + 15 * 1_000_000, 7), ("end",)])  # ~15 MB claimed
    big = PURE.lzs_compress(os.urandom(30_000) * 3)  # >64 KiB of output: decoded without the GIL
    for src, cap in ((bomb, 16384), (bomb, 1 << 24), (big, 90_000), (big, 89_999), (big, 100_000)):
        assert into(NATIVE.lzs_decompress_into, src, cap) == into(PURE.lzs_decompress_into, src, cap)


@given(packets)
def test_lzs_compress_byte_for_byte(packet):
    packed = NATIVE.lzs_compress(memoryview(bytearray(packet)))
    assert packed == PURE.lzs_compress(packet)


def test_lzs_compress_history_edges():
    # Matches exactly 2047 back and just beyond, long overlapping runs, ties between offsets.
    block = os.urandom(40)
    for packet in (block + os.urandom(2007) + block, block + os.urandom(2008) + block, b"ab" * 5000,
                   bytes(70_000), b"xyz" * 700 + os.urandom(100) + b"xyz" * 700, b""):
        assert NATIVE.lzs_compress(packet) == PURE.lzs_compress(packet)


# ---- LZ4: liblz4 writes as it goes, so dst is compared up to the result only ------------------


lz4_inputs = st.one_of(
    st.tuples(packets, st.sampled_from(["default", "fast", "high_compression"]))
    .map(lambda t: lz4.block.compress(t[0], mode=t[1], store_size=False)).flatmap(mutated),
    st.binary(max_size=100),
)


def same_output(native, pure):
    """Same outcome, the same n output bytes, guards intact (dst past n is scratch natively)."""
    assert native[0] == pure[0]
    assert native[2] and pure[2]
    if native[0][0] == "ok":
        n = native[0][1]
        assert native[1][:n] == pure[1][:n]


@given(lz4_inputs, CAPS)
@settings(max_examples=300)
def test_lz4_decompress_same_results(src, cap):
    same_output(into(NATIVE.lz4_decompress_into, src, cap), into(PURE.lz4_decompress_into, src, cap))


def test_lz4_bomb_and_big_output():
    bomb = lz4.block.compress(bytes(10_000_000), store_size=False)
    big = lz4.block.compress(os.urandom(50_000) * 2, store_size=False)
    for src, cap in ((bomb, 16384), (big, 100_000), (big, 99_999)):
        same_output(into(NATIVE.lz4_decompress_into, src, cap), into(PURE.lz4_decompress_into, src, cap))


# ---- deflate: one stream per direction, so whole sequences of records go to both --------------


@st.composite
def record_sequences(draw):
    """Records as a CSTP peer sends them, some damaged, with the dst size for each."""
    level = draw(st.integers(0, 9))
    stream = zlib.compressobj(level, zlib.DEFLATED, -12)
    adler, records = 1, []
    for payload in draw(st.lists(packets, max_size=6)):
        final = draw(st.integers(0, 9)) == 0  # a final block: CSTP never sends one
        body = stream.compress(payload) + stream.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)
        adler = zlib.adler32(payload, adler)
        record = body + adler.to_bytes(4, "big")
        if draw(st.integers(0, 4)) == 0:
            record = draw(mutated(record))
        records.append((record, draw(CAPS)))
        if final:
            break
    return records


def stream_run(cls, records):
    rx, steps = cls(), []
    for record, cap in records:
        result, dst, intact = into(rx.decompress_into, record, cap)
        steps.append((result, dst[: result[1]] if result[0] == "ok" else None, intact, rx.broken))
    return steps


@given(st.one_of(record_sequences(), st.lists(st.tuples(st.binary(max_size=80), CAPS), max_size=3)))
@settings(max_examples=300)
def test_deflate_same_results_record_by_record(records):
    native = stream_run(NATIVE.DeflateDecompressor, records)
    assert native == stream_run(PURE.DeflateDecompressor, records)
    assert all(step[2] for step in native)


def test_deflate_bound_edges_and_bomb():
    # Output exactly filling dst, then input left that yields nothing more (the sync flush), or
    # one byte more; cap 0 with and without output; a bomb; a record over 64 KiB of output.
    cases = []
    for payload, caps in ((os.urandom(1000), (1000, 999, 1001)), (b"", (0, 1)), (b"x", (0, 1)),
                          (bytes(20_000_000), (16384,)), (os.urandom(40_000) * 2, (80_000, 100_000))):
        for cap in caps:
            tx = zlib.compressobj(6, zlib.DEFLATED, -12)
            body = tx.compress(payload) + tx.flush(zlib.Z_SYNC_FLUSH)
            cases.append([(body + zlib.adler32(payload).to_bytes(4, "big"), cap)])
    for records in cases:
        assert stream_run(NATIVE.DeflateDecompressor, records) == stream_run(PURE.DeflateDecompressor, records)


def test_deflate_class_looks_like_the_reference():
    rx = NATIVE.DeflateDecompressor()
    assert rx.name == NATIVE.DeflateDecompressor.name == "deflate" and rx.broken is False
    assert isinstance(NATIVE.decompressor("deflate"), NATIVE.DeflateDecompressor)


def test_decompressors_while_a_peer_rewrites_the_record():
    # Records read from memory another process can write: results bounded by dst, or FramingError.
    payload = (os.urandom(64) * 40_000)[:2_500_000]
    tx = zlib.compressobj(6, zlib.DEFLATED, -12)
    deflated = tx.compress(payload) + tx.flush(zlib.Z_SYNC_FLUSH) + zlib.adler32(payload).to_bytes(4, "big")
    cases = [(NATIVE.lzs_decompress_into, PURE.lzs_compress(payload)),
             (NATIVE.lz4_decompress_into, lz4.block.compress(payload, store_size=False)),
             (lambda src, dst: NATIVE.DeflateDecompressor().decompress_into(src, dst), deflated)]
    for fn, record in cases:
        src = bytearray(record)
        cap = len(payload)
        backing = bytearray(GUARD + bytes(cap) + GUARD)
        dst = memoryview(backing)[len(GUARD) : len(GUARD) + cap]
        for result in while_scribbled(memoryview(src), lambda fn=fn, src=src, dst=dst: fn(src, dst)):
            assert result[0] is FramingError or 0 <= result[1] <= cap, (fn, result)
        assert backing[: len(GUARD)] == GUARD and backing[-len(GUARD) :] == GUARD


def test_big_records_are_decompressed_without_the_gil():
    payload = os.urandom(4_000_000) * 4
    tx = zlib.compressobj(6, zlib.DEFLATED, -12)
    deflated = tx.compress(payload) + tx.flush(zlib.Z_SYNC_FLUSH) + zlib.adler32(payload).to_bytes(4, "big")
    dst = memoryview(bytearray(len(payload)))
    # LZ4 is over in a few ms: several calls, so that the other thread surely gets its turn.
    for fn, record, calls in ((NATIVE.lzs_decompress_into, NATIVE.lzs_compress(payload), 3),  # = PURE's bytes
                              (NATIVE.lz4_decompress_into, lz4.block.compress(payload, store_size=False), 30),
                              (NATIVE.DeflateDecompressor().decompress_into, deflated, 1)):
        assert released_the_gil(lambda fn=fn, record=record, calls=calls: [fn(record, dst) for _ in range(calls)]), fn


def test_lzs_single_faults_have_the_same_message():
    # One fault per input: both paths must name it in the same words.
    cases = {
        "no end marker": (ref_lzs_encode([("lit", 65)])[:1], 64),
        "offset 0": (ref_lzs_encode([("lit", 65), ("match", 0, 2, 7), ("end",)]), 64),
        "too far back": (ref_lzs_encode([("lit", 65), ("match", 9, 2, 7), ("end",)]), 64),
        "output too big": (ref_lzs_encode([("lit", 65), ("match", 1, 40, 7), ("end",)]), 8),
        "bytes after the end": (ref_lzs_encode([("lit", 65), ("end",)]) + b"\x00\x01", 64),
    }
    for why, (src, cap) in cases.items():
        native = outcome(NATIVE.lzs_decompress_into, src, memoryview(bytearray(cap)))
        pure = outcome(PURE.lzs_decompress_into, src, memoryview(bytearray(cap)))
        assert native == pure and native[0] is FramingError, why

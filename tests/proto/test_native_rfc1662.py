"""The native HDLC kernels against the pure-Python reference: the same bytes to both, the same
results, the same errors and messages, the same bytes written, nothing written outside."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_support import outcome, pair, released_the_gil, while_scribbled
from tunring.errors import FramingError

pytestmark = pytest.mark.path_independent  # both paths in every run: once is enough
PURE, NATIVE = pair("tunring.proto.rfc1662")
ACCM_ALL = PURE.ACCM_ALL
GUARD = b"\xa5" * 16

accms = st.one_of(st.just(0), st.just(ACCM_ALL), st.integers(0, ACCM_ALL), st.integers(-(2**40), 2**70))
special = st.sampled_from([0x7E, 0x7D, 0x5E, 0x5D, 0x00, 0x01, 0x11, 0x13, 0x1F, 0x20, 0x7C, 0x7F, 0xFF])
tricky = st.lists(st.one_of(special, st.integers(0, 255)), max_size=400).map(bytes)
# Sizes around the kernel's pieces: 16-byte blocks, 64-byte CRC folds, the 4096-byte scratch.
frames = st.one_of(tricky, st.binary(min_size=2, max_size=3000), st.binary(min_size=4000, max_size=9000))


def encode(frame: bytes, accm: int, leading_flag: bool = False) -> bytes:
    dst = memoryview(bytearray(PURE.max_encoded_size(len(frame))))
    return bytes(dst[: PURE.encode_frame(frame, dst, accm, leading_flag=leading_flag)])


@st.composite
def wire_frames(draw):
    """Bytes between two flags as a receiver meets them: valid, cut, corrupted, with control
    characters inserted on the way, or none of these."""
    body = encode(draw(frames), draw(accms))[:-1]  # no opening flag; drop the closing one
    body = bytearray(body)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "none"]))
        at = draw(st.integers(0, len(body)))
        if op == "flip" and at < len(body):
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            body = body[:at] if draw(st.booleans()) else body[at:]
        elif op == "insert":
            body[at:at] = bytes([draw(special)])
        elif op == "delete" and at < len(body):
            del body[at]
    return bytes(body)


raw_frames = st.one_of(wire_frames(), tricky, st.binary(max_size=200))


def decode_run(module, raw: bytes, accm: int):
    """(outcome, the frame decoded in place, the guards): ``buf[:n]`` is specified on success;
    beyond it, and after an error, only that nothing outside ``buf`` is written."""
    backing = bytearray(GUARD + raw + GUARD)
    view = memoryview(backing)[len(GUARD) : len(GUARD) + len(raw)]
    result = outcome(module.decode_frame, view, accm)
    frame = bytes(view[: result[1]]) if result[0] == "ok" else b""
    return result, frame, bytes(backing[: len(GUARD)] + backing[-len(GUARD) :])


@given(raw_frames, accms)
@settings(max_examples=400)
def test_decode_frame_same_results_errors_and_bytes(raw, accm):
    native = decode_run(NATIVE, raw, accm)
    assert native == decode_run(PURE, raw, accm)
    assert native[2] == GUARD + GUARD


def test_decode_frame_valid_frames_of_every_size_and_density():
    # Deterministic sweep: every length near the block, fold and scratch boundaries, escapes
    # from none to every byte, at both usual ACCMs (the hypothesis test draws the rest).
    rnd = __import__("random").Random(1662)
    for size in [*range(0, 70), 127, 128, 129, 1400, 4094, 4095, 4096, 4097, 8190, 8193]:
        for density in (0.0, 0.05, 0.5, 1.0):
            frame = bytes(rnd.choice((0x7D, 0x7E, 0x03)) if rnd.random() < density else rnd.randrange(256)
                          for _ in range(size))
            for accm in (0, ACCM_ALL):
                raw = encode(frame, accm)[:-1]
                assert decode_run(NATIVE, raw, accm) == decode_run(PURE, raw, accm)


@pytest.mark.parametrize("accm", [0, ACCM_ALL])
def test_decode_frame_big_frame_without_the_gil(accm):
    # Above 64 KiB of input the native core releases the GIL; the result must not change.
    frame = os.urandom(70_000)
    raw = encode(frame, accm)[:-1]
    native = decode_run(NATIVE, raw, accm)
    assert native == decode_run(PURE, raw, accm)
    assert native[0] == ("ok", len(frame))


def test_big_frames_are_decoded_without_the_gil_small_ones_with_it():
    big = bytearray(encode(os.urandom(20_000_000), ACCM_ALL)[:-1])
    assert released_the_gil(lambda: NATIVE.decode_frame(memoryview(big)))
    small = [bytearray(encode(os.urandom(1400), ACCM_ALL)[:-1]) for _ in range(20_000)]
    assert not released_the_gil(lambda: [NATIVE.decode_frame(memoryview(b)) for b in small])


def test_decode_frame_errors_name_the_same_cause():
    cases = {b"": "too short", b"\x21\x7d": "control escape", b"\x21\x7e\x22\x23\x24": "flag",
             b"\xff\x03\x00\x21\x45\x00\x12\x34": "bad FCS"}
    for raw, words in cases.items():
        for module in (PURE, NATIVE):
            with pytest.raises(FramingError, match=words):
                module.decode_frame(memoryview(bytearray(raw)))


def encode_run(module, frame: bytes, accm: int, leading: bool, room_delta: int):
    need = len(encode(frame, accm, leading)) if accm is not None else 0
    room = max(0, need + room_delta)
    backing = bytearray(GUARD + b"\x00" * room + GUARD)
    dst = memoryview(backing)[len(GUARD) : len(GUARD) + room]
    return outcome(module.encode_frame, frame, dst, accm, leading_flag=leading), bytes(backing)


@given(frames, accms, st.booleans(), st.sampled_from([-2, -1, 0, 0, 1, 17]))
def test_encode_frame_same_bytes_and_bounds(frame, accm, leading, room_delta):
    native = encode_run(NATIVE, frame, accm, leading, room_delta)
    assert native == encode_run(PURE, frame, accm, leading, room_delta)


@given(frames, accms, st.integers(0, 40), st.booleans())
def test_encode_frame_into_its_own_memory(frame, accm, shift, leading):
    # src is a window of dst (a packet encoded where it lies): the native core reads it whole first.
    def run(module):
        buf = bytearray(shift + PURE.max_encoded_size(len(frame)))
        buf[shift : shift + len(frame)] = frame
        mv = memoryview(buf)
        return outcome(module.encode_frame, mv[shift : shift + len(frame)], mv, accm, leading_flag=leading), bytes(buf)

    assert run(NATIVE) == run(PURE)


def test_encode_frame_default_accm_and_keywords():
    frame = bytes(range(64))
    for kwargs in ({}, {"tx_accm": 0}, {"leading_flag": False}):
        got = [outcome(m.encode_frame, frame, memoryview(bytearray(200)), **kwargs) for m in (PURE, NATIVE)]
        assert got[0] == got[1]
    with pytest.raises(TypeError):
        NATIVE.encode_frame(frame, memoryview(bytearray(200)), 0, False)  # leading_flag is keyword-only


@given(st.binary(max_size=600), st.integers(-2, 0x10001), st.booleans())
def test_fcs16_same_register(data, fcs, as_view):
    src = memoryview(bytearray(data)) if as_view else data
    native, pure = outcome(NATIVE.fcs16, src, fcs), outcome(PURE.fcs16, src, fcs)
    if pure[0] == "ok":
        assert native == pure
    else:  # a register outside 0..0xFFFF: both refuse it (the words are fastcrc's or ours)
        assert native[0] is pure[0] is OverflowError


def test_fcs16_long_inputs_every_alignment():
    data = os.urandom(5000)
    for start in range(17):
        for end in (start, start + 15, start + 16, start + 63, start + 64, start + 65, 4999, 5000):
            assert NATIVE.fcs16(data[start:end], 0x1234) == PURE.fcs16(data[start:end], 0x1234)


@given(st.lists(st.one_of(st.just(0x7E), st.integers(0, 255)), max_size=300).map(bytes), st.booleans())
def test_scan_same_spans(data, as_view):
    src = memoryview(bytearray(data)) if as_view else data
    native = NATIVE.scan(src)
    assert native == PURE.scan(src)
    assert type(native).__name__ == "HdlcScan" and native.spans == native[0]


def test_decode_frame_while_a_peer_rewrites_the_frame():
    # The frame lies in memory another process can write (a ring slot): whatever it reads, the
    # kernel stays inside the buffer and answers with a length inside it or a FramingError.
    raw = encode(os.urandom(2_000_000), ACCM_ALL)[:-1]
    backing = bytearray(GUARD + raw + GUARD)
    frame = memoryview(backing)[len(GUARD) : len(GUARD) + len(raw)]
    for result in while_scribbled(frame, lambda: NATIVE.decode_frame(frame, 0)):
        assert result[0] is FramingError or 0 <= result[1] <= len(raw) - 2, result
    assert backing[: len(GUARD)] == GUARD and backing[-len(GUARD) :] == GUARD


def test_encode_frame_while_a_peer_rewrites_the_source():
    src = bytearray(os.urandom(3_000_000))
    room = PURE.max_encoded_size(len(src))
    backing = bytearray(GUARD + bytes(room) + GUARD)
    dst = memoryview(backing)[len(GUARD) : len(GUARD) + room]
    for result in while_scribbled(memoryview(src), lambda: NATIVE.encode_frame(src, dst, ACCM_ALL)):
        assert result[0] is ValueError or 0 < result[1] <= room, result
    assert backing[: len(GUARD)] == GUARD and backing[-len(GUARD) :] == GUARD

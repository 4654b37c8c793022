"""Compression as AnyConnect servers negotiate it: LZS, LZ4 ("oc-lz4") and deflate (CSTP only).

Sans-I/O building blocks.  Decompression always goes into a caller's buffer (a ring packet
allocated at ``max(16384, mtu)``, usually the very slot the record was read into) with a hard
bound: output that would not fit is a :class:`FramingError`, so a decompression bomb costs at
most that one allocation.

- LZS (ANSI X3.241, as in RFC 1974 and OpenConnect): each packet compressed on its own with a
  2 KiB history, ended by an end marker and zero bits up to a byte boundary.  Our own code.
- LZ4 block format with no size prefix, each packet on its own: the ``lz4`` package.
- Deflate: raw deflate (4 KiB window, zlib wbits -12), ONE stream per direction for the whole
  connection; each record is the output of a sync flush followed by the big-endian adler32 of
  all uncompressed data sent so far in that direction (starting at 1).

Framing code picks an algorithm by name: ``compressor(name)`` and ``decompressor(name)`` return
one object per direction (``compress(src) -> bytes``, ``decompress_into(src, dst) -> int``).
"""

from __future__ import annotations

import zlib
from typing import Protocol

import lz4.block

from .. import _impl
from ..errors import FramingError

Buffer = bytes | bytearray | memoryview

# ---- LZS ------------------------------------------------------------------------------------
#
# Tokens, most significant bit first:
#   0 bbbbbbbb                  literal byte
#   1 1 ooooooo  <length>       match, offset 1..127
#   1 0 ooooooooooo <length>    match, offset 1..2047
#   1 1 0000000                 end marker (then zero bits to the byte boundary)
#   <length>: 00=2 01=3 10=4 1100=5 1101=6 1110=7; else 1111, then nibbles: each 1111 adds 15
#   and the first other nibble n ends it: 8 + 15*k + n.

LZS_MAX_OFFSET = 2047
LZS_MIN_MATCH = 2
_ZERO = ord("0")
_PAD = b"0" * 64  # read past the end of the bits as zeros; every read is checked against nbits
_LITERAL_RUN = 32  # literals examined at once when decoding a run of them
_LZS_END = b"110000000"
# The short length codes by their 4 leading bits: (length, bits used); None: 1111, long form.
_LZS_LENGTHS = {
    format(i, "04b").encode(): ((2 + (i >> 2), 2) if i < 12 else (i - 7, 4) if i < 15 else None)
    for i in range(16)
}


def _lzs_tables() -> tuple[dict[bytes, int], dict[bytes, int], dict[bytes, tuple[int, int | None, int]]]:
    """Lookup tables keyed by ASCII bit strings, so common tokens cost one slice and one lookup.

    Literal bytes by their 8 bits; 11-bit offsets by their bits; and for a 7-bit-offset match (or
    the end marker), its first 13 bits -> (offset, length or None for the long form, bits used).
    """
    literals = {format(b, "08b").encode(): b for b in range(256)}
    long_offsets = {format(offset, "011b").encode(): offset for offset in range(LZS_MAX_OFFSET + 1)}
    short: dict[bytes, tuple[int, int | None, int]] = {}
    for offset in range(128):
        for code in range(16):
            key = b"11" + format(offset, "07b").encode() + format(code, "04b").encode()
            if offset == 0:
                short[key] = (0, None, 9)  # end marker: the 4 bits after it are not a length
                continue
            length = _LZS_LENGTHS[key[9:]]
            short[key] = (offset, None, 13) if length is None else (offset, length[0], 9 + length[1])
    return literals, long_offsets, short


_LZS_LITERALS, _LZS_LONG_OFFSETS, _LZS_SHORT = _lzs_tables()


def lzs_decompress_into(src: Buffer, dst: memoryview) -> int:
    """Decompress one LZS packet straight into ``dst`` and return the number of bytes written.

    ``src`` is read whole before anything is written, so it may lie in ``dst`` (a record
    decompressed in the slot it was read into).  Raises FramingError if the data is malformed
    (bad offset, no end marker, bytes after it) or the output would not fit in ``dst``; nothing
    is ever written past ``dst``'s end, but after an error ``dst`` holds partial output.
    """
    nbytes = memoryview(src).nbytes
    nbits = 8 * nbytes
    # One ASCII '0'/'1' per bit: every field is then a slice and a table lookup, and a run of
    # literals is gathered with strided slices instead of bit by bit.  Reads past the end see
    # zero padding, which decodes as literals that the run check refuses.
    bits = format(int.from_bytes(src, "big"), f"0{nbits}b").encode() + _PAD if nbytes else _PAD
    cap = len(dst)
    literals = _LZS_LITERALS
    zero = _ZERO
    o = 0  # bytes output so far
    p = 0
    while True:
        if bits[p] == zero:
            if bits[p + 9] != zero:  # a lone literal (the common case between matches)
                if o >= cap:
                    raise FramingError(f"LZS output exceeds the {cap}-byte buffer")
                dst[o] = literals[bits[p + 1 : p + 9]]
                o += 1
                p += 9
            else:
                o, p = _lzs_literal_run(bits, p, nbits, dst, o)
            continue
        offset, length, p = _lzs_match_token(bits, p)
        if offset == 0:  # end marker
            if p > nbits:
                raise FramingError("LZS data ends inside the end marker")
            if (p + 7) // 8 != nbytes:
                raise FramingError(f"{nbytes - (p + 7) // 8} bytes after the LZS end marker")
            return o
        if offset > o:
            raise FramingError(f"LZS match reaches {offset} bytes back but only {o} were output")
        if o + length > cap:
            raise FramingError(f"LZS output exceeds the {cap}-byte buffer")
        _lzs_match(dst, o, offset, length)
        o += length


def _lzs_literal_run(bits: bytes, p: int, nbits: int, dst: memoryview, o: int) -> tuple[int, int]:
    """Write the run of literal tokens at bit ``p`` to ``dst[o:]``; the new (o, p).

    The flag bits of consecutive literals are 9 bits apart, so one strided slice finds where the
    run ends and one ``int`` conversion decodes it.
    """
    run = bits[p : p + 9 * _LITERAL_RUN : 9].find(b"1")
    if run < 0:
        run = _LITERAL_RUN
    run = min(run, (nbits - p) // 9)
    if run <= 0:
        raise FramingError("LZS data ends without an end marker")
    if o + run > len(dst):
        raise FramingError(f"LZS output exceeds the {len(dst)}-byte buffer")
    literal_bits = bytearray(bits[p : p + 9 * run])
    del literal_bits[::9]  # drop the flag bits
    dst[o : o + run] = int(literal_bits, 2).to_bytes(run, "big")
    return o + run, p + 9 * run


def _lzs_match_token(bits: bytes, p: int) -> tuple[int, int, int]:
    """The match token at bit ``p``: (offset, length, next bit); offset 0 is the end marker."""
    entry = _LZS_SHORT.get(bits[p : p + 13])
    if entry is not None:
        offset, length, used = entry
        p += used
        if offset == 0:
            return 0, 0, p
    else:
        offset = _LZS_LONG_OFFSETS[bits[p + 2 : p + 13]]
        p += 13
        if offset == 0:
            raise FramingError("LZS match with offset 0")
        code = _LZS_LENGTHS[bits[p : p + 4]]
        if code is None:
            length = None
            p += 4
        else:
            length, used = code
            p += used
    if length is None:
        # 1111 then nibbles; count the 1111s by finding the first 0 bit (the zero padding
        # guarantees one): the nibble holding it ends the length.
        k = (bits.find(b"0", p) - p) >> 2
        length = 8 + 15 * k + int(bits[p + 4 * k : p + 4 * k + 4], 2)
        p += 4 * k + 4
    return offset, length, p


def _lzs_match(dst: memoryview, o: int, offset: int, length: int) -> None:
    """Append ``length`` bytes from ``offset`` back at ``dst[o]``, as LZ77 defines it.

    An overlapping match (offset < length) repeats the last ``offset`` bytes: each slice copies
    the whole period written so far, so it takes log2(length / offset) slices, none overlapping.
    """
    start = o - offset
    done = 0
    while done < length:
        k = min(offset + done, length - done)
        dst[o + done : o + done + k] = dst[start : start + k]
        done += k


def _lzs_literal_bits(chunk: bytes) -> bytes:
    """Literal tokens for ``chunk``, as ASCII bits: a 0 flag before each byte's 8 bits."""
    n = len(chunk)
    if n == 0:
        return b""
    byte_bits = format(int.from_bytes(chunk, "big"), f"0{8 * n}b").encode()
    out = bytearray(b"0" * (9 * n))
    for k in range(8):  # bit k of every byte, strided: 8 C-speed copies, whatever n is
        out[k + 1 :: 9] = byte_bits[k::8]
    return bytes(out)


def _lzs_match_bits(offset: int, length: int) -> bytes:
    head = b"11" + format(offset, "07b").encode() if offset < 128 else b"10" + format(offset, "011b").encode()
    if length < 5:
        tail = format(length - 2, "02b")
    elif length < 8:
        tail = format(length + 7, "04b")
    else:
        k, n = divmod(length - 8, 15)
        tail = "1111" * (k + 1) + format(n, "04b")
    return head + tail.encode()


def lzs_compress(src: Buffer) -> bytes:
    """Compress one packet with LZS (2 KiB history, greedy longest match, end marker).

    Matches are found with ``bytes.rfind`` over the history window (C speed) and their length
    by galloping then bisecting, so Python work is per token, not per byte compared.
    """
    data = bytes(src)
    n = len(data)
    rfind = data.rfind
    out: list[bytes] = []
    literal_start = i = 0
    while i + LZS_MIN_MATCH <= n:
        lo = max(0, i - LZS_MAX_OFFSET)
        # A match of length L starts at some j in [lo, i) and may run past i (overlap).
        j = rfind(data[i : i + LZS_MIN_MATCH], lo, i + LZS_MIN_MATCH - 1)
        if j < 0:
            i += 1
            continue
        good, where = LZS_MIN_MATCH, j
        bad = None
        limit = n - i
        trial = good * 2
        while True:  # gallop up, then bisect between good (found) and bad (not found)
            if bad is None and trial > limit:
                trial = limit
                if trial <= good:
                    break
            j = rfind(data[i : i + trial], lo, i + trial - 1)
            if j >= 0:
                good, where = trial, j
            else:
                bad = trial
            if bad is None:
                if good == limit:
                    break
                trial = good * 2
            else:
                if bad - good <= 1:
                    break
                trial = (good + bad) // 2
        out.append(_lzs_literal_bits(data[literal_start:i]))
        out.append(_lzs_match_bits(i - where, good))
        i += good
        literal_start = i
    out.append(_lzs_literal_bits(data[literal_start:]))
    out.append(_LZS_END)
    bits = b"".join(out)
    nbytes = (len(bits) + 7) // 8
    return (int(bits, 2) << (8 * nbytes - len(bits))).to_bytes(nbytes, "big")


# ---- LZ4 ------------------------------------------------------------------------------------


def lz4_decompress_into(src: Buffer, dst: memoryview) -> int:
    """Decompress one LZ4 block (no size prefix) into ``dst``; return the bytes written.

    The ``lz4`` package's public API has no "into" form: ``lz4.block.decompress`` with
    ``uncompressed_size=len(dst)`` decompresses with LZ4_decompress_safe, bounded by ``len(dst)``,
    into a buffer it allocates, which is then copied into ``dst`` (one memcpy of the output).
    Writing straight into ``dst`` would mean calling the C symbol ``LZ4_decompress_safe`` (it is
    exported by the package's extension module and by the system liblz4) through ctypes: an
    implementation detail of the wheel, or a system library, so not done.
    """
    if not len(dst):
        raise FramingError("no room to decompress an LZ4 block")
    try:
        out = lz4.block.decompress(src, uncompressed_size=len(dst))
    except lz4.block.LZ4BlockError as err:
        raise FramingError(f"bad LZ4 block or output over {len(dst)} bytes: {err}") from None
    n = len(out)
    dst[:n] = out
    return n


def lz4_compress(src: Buffer) -> bytes:
    """Compress one packet as an LZ4 block with no size prefix ("oc-lz4")."""
    return lz4.block.compress(src, store_size=False)


# ---- deflate --------------------------------------------------------------------------------

DEFLATE_WBITS = -12  # raw deflate, 4 KiB window
ADLER32_BYTES = 4


class DeflateCompressor:
    """The sending half of CSTP deflate: one raw deflate stream for the whole connection.

    ``compress(src)`` returns a whole record body: the deflate output up to a sync flush, then
    the big-endian adler32 of everything compressed so far.  Every record it returns MUST be
    sent, in order: the stream and the checksum already include its data.
    """

    name = "deflate"

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._stream = zlib.compressobj(level, zlib.DEFLATED, DEFLATE_WBITS)
        self._adler = 1

    def compress(self, src: Buffer) -> bytes:
        stream = self._stream
        body = stream.compress(src) + stream.flush(zlib.Z_SYNC_FLUSH)
        self._adler = zlib.adler32(src, self._adler)
        return body + self._adler.to_bytes(ADLER32_BYTES, "big")


class DeflateDecompressor:
    """The receiving half of CSTP deflate: one raw inflate stream for the whole connection.

    ``decompress_into(src, dst)`` takes one record body (deflate data + big-endian adler32 of all
    data received so far), writes the output to ``dst`` only once it has been checked, and returns
    its length.  Output over ``len(dst)``, corrupt data or a bad checksum raise FramingError and
    leave the stream unusable (the peer's history and checksum now include data we do not have):
    every later call raises too, and the connection has to be restarted.
    """

    name = "deflate"
    staged = True  # zlib returns bytes: the output is copied into dst (once it is checked)
    copies_overlapping_src = False  # zlib reads src into its own output before anything is written

    def __init__(self) -> None:
        self._stream = zlib.decompressobj(DEFLATE_WBITS)
        self._adler = 1
        self._error: str | None = None

    @property
    def broken(self) -> bool:
        return self._error is not None

    def decompress_into(self, src: Buffer, dst: memoryview) -> int:
        if self._error is not None:
            raise FramingError(f"deflate stream unusable after an earlier error ({self._error}); reconnect")
        record = memoryview(src)
        if len(record) < ADLER32_BYTES:
            return self._fail(f"deflate record of {len(record)} bytes has no adler32")
        stream = self._stream
        cap = len(dst)
        try:
            # max_length bounds the output (0 would mean unbounded, hence max(cap, 1)).
            out = stream.decompress(record[:-ADLER32_BYTES], max(cap, 1))
            while stream.unconsumed_tail and len(out) <= cap:
                # Input left at the bound: fine only if it yields no more output (e.g. the
                # flush marker after output that exactly fills dst).
                out += stream.decompress(stream.unconsumed_tail, 1)
        except zlib.error as err:
            return self._fail(f"corrupt deflate data: {err}")
        if len(out) > cap:
            return self._fail(f"deflate output exceeds the {cap}-byte buffer")
        if stream.eof:
            return self._fail("deflate stream ended (a final block), which CSTP never sends")
        adler = zlib.adler32(out, self._adler)
        if adler != int.from_bytes(record[-ADLER32_BYTES:], "big"):
            return self._fail("deflate adler32 mismatch")
        self._adler = adler
        n = len(out)
        dst[:n] = out
        return n

    def _fail(self, reason: str) -> int:
        self._error = reason
        raise FramingError(reason)


# ---- the native core ------------------------------------------------------------------------
# tunring._native has the decompressors above in C, writing straight into dst (and the LZS
# compressor, byte for byte the same); where it is active (tunring._impl) these names are
# rebound to it, before the classes below take them.  The Python above stays the specification.
if _impl.native is not None:
    lzs_decompress_into = _impl.native.lzs_decompress_into
    lzs_compress = _impl.native.lzs_compress
    lz4_decompress_into = _impl.native.lz4_decompress_into
    DeflateDecompressor = _impl.native.DeflateDecompressor  # type: ignore[misc]  # the C class stands in for this one


# ---- by name --------------------------------------------------------------------------------


class Compressor(Protocol):
    """One direction's compression: ``compress(src)`` returns a record payload."""

    name: str

    def compress(self, src: Buffer) -> bytes: ...


class Decompressor(Protocol):
    """One direction's decompression into a bounded buffer; FramingError on bad input.

    ``decompress_into(src, dst)`` reads ``src`` whole before it writes ``dst``, so ``src`` may lie
    inside ``dst`` (a record decompressed in its own slot).  ``staged`` is True when the output is
    built in the library's memory and then copied into ``dst`` (one memcpy of the output, which
    the codec counts); False when it is written straight into ``dst``.  ``copies_overlapping_src``
    is True when a ``src`` lying inside ``dst`` is first copied aside (the native kernels write
    ``dst`` while they read ``src``): one memcpy of the input, which the codec counts too.
    """

    name: str
    staged: bool
    copies_overlapping_src: bool

    def decompress_into(self, src: Buffer, dst: memoryview) -> int: ...


class LzsCompressor:
    """LZS for one direction: stateless, each packet on its own."""

    name = "lzs"
    compress = staticmethod(lzs_compress)


class LzsDecompressor:
    """LZS for one direction: stateless, each packet on its own, straight into ``dst``."""

    name = "lzs"
    staged = False
    copies_overlapping_src = _impl.native is not None  # the pure decoder reads src whole into its bit string
    decompress_into = staticmethod(lzs_decompress_into)


class Lz4Compressor:
    """LZ4 block ("oc-lz4") for one direction: stateless, each packet on its own."""

    name = "lz4"
    compress = staticmethod(lz4_compress)


class Lz4Decompressor:
    """LZ4 block ("oc-lz4") for one direction: stateless, each packet on its own."""

    name = "lz4"
    # python-lz4 returns bytes, copied into dst; the native core's liblz4 call writes dst itself
    staged = _impl.native is None
    copies_overlapping_src = _impl.native is not None
    decompress_into = staticmethod(lz4_decompress_into)


_COMPRESSORS: dict[str, type] = {"lzs": LzsCompressor, "lz4": Lz4Compressor, "deflate": DeflateCompressor}
_DECOMPRESSORS: dict[str, type] = {"lzs": LzsDecompressor, "lz4": Lz4Decompressor, "deflate": DeflateDecompressor}
NAMES = tuple(_COMPRESSORS)


def compressor(name: str) -> Compressor:
    """A new compressor for one direction of a connection (deflate keeps state per direction)."""
    try:
        return _COMPRESSORS[name]()
    except KeyError:
        raise ValueError(f"unknown compression {name!r}; known: {', '.join(NAMES)}") from None


def decompressor(name: str) -> Decompressor:
    """A new decompressor for one direction of a connection."""
    try:
        return _DECOMPRESSORS[name]()
    except KeyError:
        raise ValueError(f"unknown compression {name!r}; known: {', '.join(NAMES)}") from None

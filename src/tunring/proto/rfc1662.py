"""HDLC-like framing of RFC 1662 (asynchronous PPP), sans-I/O and without per-byte Python loops.

A frame on the wire is ``7E`` + escaped(PPP frame + FCS-16, low byte first) + ``7E``; one flag
may both close a frame and open the next.  Escaping puts ``7D`` before a byte and XORs the byte
with ``0x20``; it is applied to ``7E``, ``7D`` and every control character (``< 0x20``) whose bit
is set in the transmit ACCM (bit ``i`` of the 32-bit map is character ``i``).

- :func:`fcs16` is the FCS-16 of RFC 1662 (reflected polynomial 0x8408), as a running register.
- :func:`decode_frame` un-escapes ONE frame (the bytes between two flags) in place, applies the
  receive-ACCM discard rule of RFC 1662 section 4.2/7.1 (which OpenConnect omits), checks the FCS
  and returns the length of the PPP frame now at the front of the buffer.  It only shrinks, and
  moves the runs between escapes inside the buffer: nothing is copied out.
  :func:`decode_frame_copy` is its copying twin (whole-string arithmetic into new memory): in pure
  Python it is faster when nearly every byte is escaped, at the price of two counted copies.
- :func:`encode_frame` writes flag + escaped(frame + FCS) + flag into a caller's buffer, never past
  its end; :func:`max_encoded_size` is the worst case to allocate for.
- :func:`scan` and :class:`HdlcSplitter` find frame boundaries in a byte stream read in chunks.

Everything is built from C-speed pieces: literal regular-expression searches over the caller's
buffer (they read any buffer in place, where ``bytes.find`` would need a copy), memoryview slice
assignment (a memmove), ``bytes.split/replace/translate/join`` and integer arithmetic on whole
frames for the copying strategy, and the FCS from ``fastcrc`` (the standard library's
``binascii.crc_hqx`` is the non-reflected CRC: with the bit reversal it needs it ran at about
230 MB/s on its own on the development machine, leaving nothing for un-escaping within a
200 MB/s budget; fastcrc's table-driven CRC-16/IBM-SDLC ran at about 5 GB/s).
Measure with ``scripts/measure_proto.py``.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from fastcrc import crc16 as _crc16

from .. import _impl
from ..errors import FramingError

FLAG = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
FCS_INIT = 0xFFFF  # the FCS register before the first byte
FCS_GOOD = 0xF0B8  # the register after a whole frame including its (complemented) FCS
FCS_BYTES = 2
MIN_FRAME_BYTES = 4  # RFC 1662 section 4.3: shorter frames (FCS included) are invalid
ACCM_ALL = 0xFFFFFFFF  # the default ACCM before LCP negotiates one: escape every control char
MAX_FRAME_BYTES = 2 * (0xFFFF + 8) + 2  # largest escaped frame HdlcSplitter accepts by default

_FLAG_B = b"\x7e"
_ESCAPE_B = b"\x7d"
# Literal patterns: re searches them at memchr-like speed over any buffer, without copying it.
_FLAG_RE = re.compile(re.escape(_FLAG_B))
_ESCAPE_RE = re.compile(re.escape(_ESCAPE_B))
_NOT_FLAG_RE = re.compile(b"[^" + re.escape(_FLAG_B) + b"]")  # a class: slow per byte, for short runs of flags
# fastcrc's ibm_sdlc is CRC-16/X-25: our register with init 0xFFFF and the result complemented,
# and its ``initial`` argument is a previous *result*.  So register r <-> result r ^ 0xFFFF.
_SDLC_GOOD = FCS_GOOD ^ 0xFFFF
_sdlc = _crc16.ibm_sdlc

# Un-escaping tables: the byte after 7D, XORed, as a 1-byte bytes object.
_UNESCAPED = tuple(bytes([b ^ ESCAPE_XOR]) for b in range(256))
_ESCAPE_MARK = bytes(ESCAPE_XOR if b == ESCAPE else 0 for b in range(256))
# Above one escape per _MANY_ESCAPES bytes, whole-string arithmetic beats a per-escape join.
_MANY_ESCAPES = 20
# Escaping table: a byte as its 2-byte escape sequence.
_ESCAPED = tuple(bytes([ESCAPE, b ^ ESCAPE_XOR]) for b in range(256))
_SINGLE = tuple(bytes([b]) for b in range(256))


def fcs16(data: bytes | bytearray | memoryview, fcs: int = FCS_INIT) -> int:
    """Run the FCS-16 register ``fcs`` over ``data`` and return the new register.

    As RFC 1662's ``pppfcs16``: start from :data:`FCS_INIT`; a sender transmits
    ``fcs16(frame) ^ 0xFFFF`` low byte first, and ``fcs16(frame + fcs_bytes) == FCS_GOOD``.
    """
    return _sdlc(data, initial=fcs ^ 0xFFFF) ^ 0xFFFF


@functools.lru_cache(maxsize=64)
def _control_chars(accm: int) -> bytes:
    """The control characters whose bit is set in ``accm``, as a ``translate`` delete set."""
    return bytes(c for c in range(32) if accm >> c & 1)


def _unescape(raw: bytes) -> bytes:
    """Remove control escapes from ``raw`` (which holds at least one 7D and no 7E): the whole-string
    arithmetic of :func:`decode_frame_copy`."""
    if raw.count(_ESCAPE_B) * _MANY_ESCAPES < len(raw):
        # Few escapes (typical once LCP has set the ACCM to 0: only 7E and 7D are escaped):
        # each part after the first starts with an escaped byte.  An empty part means "7D 7D"
        # or a trailing 7D, left to the whole-string path below.
        parts = raw.split(_ESCAPE_B)
        rest = parts[1:]
        if b"" not in rest:
            unescaped = _UNESCAPED
            return parts[0] + b"".join([unescaped[p[0]] + p[1:] for p in rest])
    # Many escapes (a full ACCM escapes about 1 byte in 7 of random data): per-escape Python work
    # would dominate, so work on whole strings.  In a little-endian integer "the byte after" is a
    # shift by 8: ``marks`` has 0x20 at each 7D, so ``marks << 8`` XORs every escaped byte at once.
    marks = int.from_bytes(raw.translate(_ESCAPE_MARK), "little")
    if marks & (marks << 8) or raw.endswith(_ESCAPE_B):
        # "7D 7D" somewhere (or a trailing 7D).  A 7D escapes whatever follows it, even another
        # 7D: replacing "7D 7D" pairs left to right pairs each run of 7Ds exactly as a byte-by-byte
        # decoder would, and the 5D it leaves cannot start a pair.
        raw = raw.replace(b"\x7d\x7d", b"\x5d")
        if raw.endswith(_ESCAPE_B):
            raise FramingError("HDLC frame ends with a control escape (0x7D): aborted or truncated frame")
        marks = int.from_bytes(raw.translate(_ESCAPE_MARK), "little")
    # Now every 7D is an escape followed by a byte that is not 7D.  After the XOR the escapes are
    # still there as 7D and an escaped 7D reads "7D 7D"; plain bytes are never 7D, so splitting on
    # "7D 7D" (left to right: the first 7D of a run is always an escape) and deleting the other
    # 7Ds leaves exactly the data.
    xored = (int.from_bytes(raw, "little") ^ (marks << 8)).to_bytes(len(raw), "little")
    segments = xored.split(b"\x7d\x7d")
    if len(segments) == 1:
        return xored.translate(None, _ESCAPE_B)
    return _ESCAPE_B.join([segment.translate(None, _ESCAPE_B) for segment in segments])


def decode_frame(buf: memoryview, rx_accm: int = 0) -> int:
    """Un-HDLC one frame in place and return the length ``n`` of the PPP frame now in ``buf[:n]``.

    ``buf`` holds the bytes between two flags: escaped, FCS included, no 7E.  Control characters
    whose bit is set in ``rx_accm`` are discarded where they appear unescaped (RFC 1662 4.2: they
    may have been inserted by equipment on the way; this happens before un-escaping, so a flagged
    character right after a 7D is dropped and the 7D escapes the next byte).  Truly in place: the
    runs between escapes move left inside ``buf`` and nothing is copied out; writes only inside
    ``buf[:len(buf)]`` and only shrinks.  Raises :class:`FramingError` for a trailing 7D (an
    aborted frame), a 7E inside, a frame shorter than 4 bytes with its FCS, or a bad FCS; after
    an error ``buf`` holds partly un-escaped bytes (it is the caller's to discard).
    """
    n = len(buf)
    if rx_accm & ACCM_ALL:
        n = _discard_controls(buf, rx_accm & ACCM_ALL)
    if _FLAG_RE.search(buf, 0, n) is not None:
        raise FramingError("HDLC frame contains a flag (0x7E): split the stream on flags first")
    escape = _ESCAPE_RE.search(buf, 0, n)
    if escape is not None:
        n = _unescape_in_place(buf, n, escape.start())
    return _checked(buf[:n])


def decode_frame_copy(src: bytes | bytearray | memoryview, rx_accm: int = 0) -> memoryview:
    """The copying twin of :func:`decode_frame`: the PPP frame in ``src``, un-escaped into new memory.

    Same rules and errors; ``src`` is never written.  It copies ``src`` out once (``len(src)``
    bytes) and returns a view of new memory holding the PPP frame (FCS checked and cut off).  No
    per-escape Python work: when a peer escapes every control character (about one byte in 7),
    it is several times faster than the in-place strategy in pure Python.
    """
    raw = bytes(src)
    if rx_accm & ACCM_ALL:
        raw = raw.translate(None, _control_chars(rx_accm & ACCM_ALL))
    if _FLAG_B in raw:
        raise FramingError("HDLC frame contains a flag (0x7E): split the stream on flags first")
    if _ESCAPE_B in raw:  # a memchr: cheaper than anything _unescape does
        raw = _unescape(raw)
    frame = memoryview(raw)
    return frame[: _checked(frame)]


def _checked(frame: memoryview) -> int:
    """The PPP length of the un-escaped ``frame`` (FCS included); FramingError if short or bad."""
    n = len(frame)
    if n < MIN_FRAME_BYTES:
        raise FramingError(f"HDLC frame of {n} bytes is too short (minimum {MIN_FRAME_BYTES} with the FCS)")
    if _sdlc(frame) != _SDLC_GOOD:
        raise FramingError("HDLC frame has a bad FCS")
    return n - FCS_BYTES


def _unescape_in_place(buf: memoryview, n: int, i: int) -> int:
    """Un-escape ``buf[:n]``, whose first 7D is at ``i``, by moving the runs between escapes left.

    Each 7D escapes the byte after it (even another 7D: the search for the next escape starts
    after the escaped byte), which moves with the run that follows it and is XORed where it lands.
    Python work is per escape, not per byte.  Returns the new length.
    """
    search = _ESCAPE_RE.search
    w = i
    while True:
        r = i + 1  # the escaped byte
        if r >= n:
            raise FramingError("HDLC frame ends with a control escape (0x7D): aborted or truncated frame")
        escape = search(buf, r + 1, n)
        end = n if escape is None else escape.start()
        k = end - r
        buf[w : w + k] = buf[r:end]  # memoryview assignment is a memmove: overlap is fine
        buf[w] ^= ESCAPE_XOR
        w += k
        if escape is None:
            return w
        i = end


def _discard_controls(buf: memoryview, accm: int) -> int:
    """Drop the unescaped control characters of ``accm`` from ``buf`` in place; the new length.

    A character-class search: slower per byte than a literal one (it is the price of the
    receive-ACCM rule), but it reads the buffer where it lies and allocates nothing; a frame
    without such a character, the normal case, costs just that one search.
    """
    search = _control_pattern(accm).search
    found = search(buf)
    n = len(buf)
    if found is None:
        return n
    w = i = found.start()
    while True:
        found = search(buf, i + 1, n)
        end = n if found is None else found.start()
        k = end - i - 1
        if k:
            buf[w : w + k] = buf[i + 1 : end]
            w += k
        if found is None:
            return w
        i = end


@functools.lru_cache(maxsize=64)
def _control_pattern(accm: int) -> re.Pattern[bytes]:
    """A search for any control character of ``accm``."""
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in _control_chars(accm)) + b"]")


def max_encoded_size(n: int) -> int:
    """Worst-case bytes :func:`encode_frame` writes for an ``n``-byte frame (every byte escaped)."""
    return 2 * (n + FCS_BYTES) + 2


def _escape(data: bytes, tx_accm: int) -> bytes:
    # One replace per character to escape: a 1-byte search is a memchr, so characters that are
    # absent cost next to nothing.  7D comes first: later replacements insert 7Ds (which must not
    # be escaped again) and nothing else that is in the set.
    for c in _escape_set(tx_accm & ACCM_ALL):
        data = data.replace(_SINGLE[c], _ESCAPED[c])
    return data


@functools.lru_cache(maxsize=64)
def _escape_set(accm: int) -> bytes:
    """The bytes a transmit ACCM escapes, 7D first."""
    return _ESCAPE_B + _FLAG_B + _control_chars(accm)


def encode_frame(
    src: bytes | bytearray | memoryview,
    dst: memoryview,
    tx_accm: int = ACCM_ALL,
    *,
    leading_flag: bool = True,
) -> int:
    """Write [7E] + escaped(``src`` + FCS) + 7E into ``dst`` and return the number of bytes written.

    Escapes 7E, 7D and the control characters whose bit is set in ``tx_accm``.  Leave out the
    opening flag (``leading_flag=False``) when the previous frame's closing flag is still the last
    thing sent.  Raises ValueError, writing nothing, when ``dst`` is too small; allocating
    :func:`max_encoded_size` bytes always suffices.  ``src`` may overlap ``dst`` (a packet encoded
    into its own memory): it is read completely before anything is written.
    """
    fcs = fcs16(src) ^ 0xFFFF
    data = bytes(src) + bytes((fcs & 0xFF, fcs >> 8))
    body = _escape(data, tx_accm)
    start = 1 if leading_flag else 0
    total = start + len(body) + 1
    if total > len(dst):
        raise ValueError(f"HDLC frame needs {total} bytes but the buffer holds {len(dst)}")
    if start:
        dst[0] = FLAG
    dst[start : total - 1] = body
    dst[total - 1] = FLAG
    return total


class HdlcScan(NamedTuple):
    """What :func:`scan` found in a buffer."""

    spans: list[tuple[int, int]]  # (start, end) of each complete non-empty frame, flags excluded
    rest: int  # offset of the last flag, which opens the unfinished frame (len(data) if no flag)
    garbage: int  # bytes before the first flag (not part of any frame)


def scan(data: bytes | bytearray | memoryview) -> HdlcScan:
    """Find the complete frames in ``data``, where a frame is only known to start after a flag.

    The caller-keeps-the-bytes way to split a stream, stateless: keep ``data[rest:]`` (it starts
    with the flag that opened the unfinished frame) and present it again at the front of the next
    call, followed by the bytes read next, e.g. by moving it to the front of the receive buffer
    and reading after it.  Bytes before the first flag are garbage (a stream joined mid-frame).
    Empty frames (back-to-back flags) are skipped.  Frames are reported in any length; bound them
    yourself (a caller whose kept tail grows past its buffer should drop it and hunt for a flag).
    ``data`` is searched where it lies, never copied.
    """
    flags = _flags(data)
    if not flags:
        return HdlcScan([], len(data), len(data))
    return HdlcScan(_spans(flags, len(data) + 1), flags[-1], flags[0])


def find_flag(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """Offset of the first flag in ``data[start:end]``, or -1 (searched where it lies)."""
    found = _FLAG_RE.search(data, start, len(data) if end is None else end)
    return -1 if found is None else found.start()


def skip_flags(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """Offset of the first byte of ``data[start:end]`` that is not a flag (``end`` if none)."""
    end = len(data) if end is None else end
    found = _NOT_FLAG_RE.search(data, start, end)
    return end if found is None else found.start()


def _flags(data: bytes | bytearray | memoryview) -> list[int]:
    """Offsets of every flag in ``data`` (searched in place)."""
    return [m.start() for m in _FLAG_RE.finditer(data)]


def _spans(flags: list[int], limit: int) -> list[tuple[int, int]]:
    """The non-empty frames between consecutive flags, those longer than ``limit`` left out."""
    return [(a + 1, b) for a, b in zip(flags, flags[1:], strict=False) if 0 < b - a - 1 <= limit]


class HdlcSplitter:
    """Splits an HDLC byte stream, fed in chunks, into frames (the escaped bytes between flags).

    ``feed(chunk)`` returns ``(carried, spans)``: ``carried`` is the frame that began in earlier
    chunks and ends in this one (a bytearray holding a copy, or None), and ``spans`` are the
    ``(start, end)`` offsets in ``chunk`` of the frames wholly inside it, in stream order after
    ``carried``: decode those in place with ``decode_frame(chunk[start:end])``.  An unfinished
    frame at the end of ``chunk`` is copied into the splitter, so the caller may reuse ``chunk``
    after ``feed`` returns; ``carried_bytes`` counts those copies.  A caller that would rather
    keep split frames in its own memory (no copy at all) uses :func:`scan` instead.
    Garbage before the first flag is discarded (``garbage_bytes``); a frame longer than
    ``max_frame_bytes`` (escaped) is dropped (``oversize_frames``), and if it was unfinished the
    splitter hunts for the next flag.  A bad frame never affects its neighbours: each frame is
    checked on its own by :func:`decode_frame`, and the next flag starts afresh.

    Typical receive loop (``buf`` is where the transport read ``n`` bytes)::

        carried, spans = splitter.feed(buf[:n])
        if carried is not None:                       # began in an earlier read: a copy
            n_ppp = decode_frame(memoryview(carried)) # PPP frame in carried[:n_ppp]
        for start, end in spans:                      # in place, in buf
            n_ppp = decode_frame(buf[start:end])      # PPP frame in buf[start:start + n_ppp]
    """

    __slots__ = ("max_frame_bytes", "_carry", "_hunting", "garbage_bytes", "carried_bytes", "oversize_frames")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, *, synced: bool = False) -> None:
        """``synced=True`` if the stream is known to start at a frame boundary without a flag."""
        self.max_frame_bytes = max_frame_bytes
        self._carry = bytearray()
        self._hunting = not synced
        self.garbage_bytes = 0
        self.carried_bytes = 0
        self.oversize_frames = 0

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held from earlier chunks."""
        return len(self._carry)

    def feed(self, chunk: bytes | bytearray | memoryview) -> tuple[bytearray | None, list[tuple[int, int]]]:
        """Take the next bytes of the stream; return ``(carried, spans)`` as described above."""
        data = memoryview(chunk)
        flags = _flags(data)
        if not flags:
            self._hold(data, 0)
            return None, []
        first = flags[0]
        carried = None
        if self._hunting:
            self.garbage_bytes += first
            self._hunting = False
        elif self._carry or first:
            carry = self._carry
            self._carry = bytearray()
            carry += data[:first]
            self.carried_bytes += first
            if len(carry) > self.max_frame_bytes:
                self.oversize_frames += 1
            else:
                carried = carry
        spans = _spans(flags, self.max_frame_bytes)
        self.oversize_frames += len(_spans(flags, len(data))) - len(spans)
        if flags[-1] + 1 < len(data):
            self._hold(data, flags[-1] + 1)
        return carried, spans

    def _hold(self, data: memoryview, start: int) -> None:
        """Keep data[start:] as the beginning (or continuation) of an unfinished frame."""
        if self._hunting:
            self.garbage_bytes += len(data) - start
            return
        self._carry += data[start:]
        self.carried_bytes += len(data) - start
        if len(self._carry) > self.max_frame_bytes:
            self.oversize_frames += 1
            self._carry = bytearray()
            self._hunting = True


# ---- the native core ------------------------------------------------------------------------
# tunring._native has the functions above in C (same results, same errors, same bytes written);
# where it is active (tunring._impl) these names are rebound to it.  The Python above stays the
# specification and the fallback.
if _impl.native is not None:
    fcs16 = _impl.native.fcs16
    decode_frame = _impl.native.hdlc_decode_frame
    encode_frame = _impl.native.hdlc_encode_frame
    scan = functools.partial(_impl.native.hdlc_scan, HdlcScan)

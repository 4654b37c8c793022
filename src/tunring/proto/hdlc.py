"""PPP in HDLC-like framing (RFC 1662) over a byte stream: OpenConnect's RFC1662 and F5 HDLC encapsulations.

Frames are ``7E`` + escaped(PPP frame + FCS-16) + ``7E``; one flag may close a
frame and open the next, or the sender may open every frame with its own
flag.  Received bytes are read straight into a ring packet, placed so that
once :func:`~tunring.proto.rfc1662.decode_frame` has un-escaped the frame where
it lies (un-HDLC only shrinks) the IP packet starts exactly at the packet's
data: the codec remembers whether the sender doubles flags and puts the
flag it last saw (a synthetic copy of it) right in front of the next read.
Un-HDLC in the slot is truly in place (nothing is copied out and back);
frames that arrived in the same read after the first are kept in private
memory and un-HDLC'd from there by
:func:`~tunring.proto.rfc1662.decode_frame_copy` (they are copied into the
ring anyway; every copy is counted).  A frame with a bad FCS, unescaped
characters of the receive ACCM, or that does not fit is dropped and counted,
and decoding resynchronises on the next flag: the frames around it are kept.  Sending escapes per the transmit ACCM
into a scratch buffer (escaping expands: it cannot be done in place); the
view returned by ``encode`` is valid until the next ``encode``.
"""

from __future__ import annotations

from ..device import Device
from ..errors import FramingError, RingFull
from ..packet import Packet
from . import rfc1662 as H
from .base import Codec, Control, Dropped, Event, RecordResult
from .ppp import PPP_HEADER_BYTES, parse_ppp, ppp_header

FLAG_BYTES = 1


class Hdlc(Codec):
    """HDLC-framed PPP over TLS.  ``rx_accm``/``tx_accm`` start at the RFC 1662
    default (all control characters) and are set by the PPP layer after LCP."""

    name = "hdlc"
    # Two flags (a synthetic copy of the last flag seen + the sender's own
    # opening flag, if it doubles them) and the PPP header in front of the IP data.
    headroom = 2 * FLAG_BYTES + PPP_HEADER_BYTES
    min_header = 1

    def __init__(self, device: Device, *, rx_accm: int = H.ACCM_ALL, tx_accm: int = H.ACCM_ALL, **kwargs) -> None:
        super().__init__(device, **kwargs)
        self.rx_accm = rx_accm
        self.tx_accm = tx_accm
        self._alloc_bytes = min(H.max_encoded_size(self.max_payload + PPP_HEADER_BYTES), 0xFFFF)
        self._synced = False  # a flag was seen: what follows is a frame or another flag
        self._hunt_reason = "bytes before the first HDLC flag"  # why unsynced bytes are dropped
        # Whether the sender opens every frame with its own flag (OpenConnect and
        # our encoder do); learnt from each frame, a wrong guess costs one move.
        self._double = True
        self._opened = False  # the next frame's opening flag was already read
        self._synthetic = False  # the current packet starts with our copy of the last flag
        self._scanned = 0  # bytes of the current packet already scanned without a frame end
        self._txbuf = bytearray()

    # -- receiving ---------------------------------------------------------------
    def want(self, exact: bool = False) -> memoryview:
        """The rest of the current packet (``exact`` has no meaning: frames end at flags)."""
        return super().want()

    def _stream(self, p: Packet, n: int) -> None:
        if n > self._room - self._have:
            raise ValueError("received(): more bytes than the last want() view holds")
        self._have += n
        self._scan_packet(p)

    def _end_of_stream(self) -> None:
        p = self._pkt
        if p is None:
            return
        base = self._base
        content = H.skip_flags(p.buf, base, base + self._have) - base  # flags before a frame are no frame
        if content < self._have:
            self._fail(f"stream ends inside an HDLC frame ({self._have - content} bytes of it present)",
                       self._offset + content)

    def _start_packet(self) -> Packet:
        return self._new_packet(None)

    def _new_packet(self, partial: memoryview | None) -> Packet:
        """A packet to read the next frame into; ``partial``: its first bytes (from a flag on)."""
        p = self._allocate(self._alloc_bytes)
        # The flag in front of the frame goes here, so the frame's content (and
        # after un-HDLC its PPP header) starts PPP_HEADER_BYTES before p.start.
        flag_at = p.start - PPP_HEADER_BYTES - FLAG_BYTES
        synthetic = partial is None and self._synced
        if synthetic and self._double and not self._opened:
            flag_at -= FLAG_BYTES  # the sender's own opening flag comes first
        flag_at = max(flag_at, p.lo)  # too little headroom: the packet is moved later (counted)
        self._opened = False
        self._synthetic = synthetic
        self._scanned = 0
        self._pkt = p
        self._base = flag_at
        self._room = p.end - flag_at
        self._need = 0
        self._have = 0
        if partial is not None:
            if len(partial) > self._room:  # cannot happen: it came from a packet of the same size
                raise AssertionError("HDLC partial frame larger than a packet")
            self._copy_in(p.buf[flag_at:], partial)
            self._have = len(partial)
            self._copied = len(partial) > FLAG_BYTES  # a copied flag alone is no copy of the frame
        elif synthetic:
            # A copy of the flag that closed the last frame (it belongs to the
            # stream offset before this packet's first read byte).
            p.buf[flag_at] = H.FLAG
            self._have = FLAG_BYTES
            self._offset -= FLAG_BYTES
        return p

    def _scan_packet(self, p: Packet) -> None:
        base = self._base
        have = self._have
        buf = p.buf
        seen = self._scanned
        if seen and self._synced and have < self._room and H.find_flag(buf, base + seen, base + have) < 0:
            # Bytes before ``seen`` held no frame end: only the new ones can close it
            # (keeps many small reads of one big frame linear, not quadratic).
            self._scanned = have
            return
        self._scanned = have
        found = H.scan(buf[base : base + have])
        if not self._synced and not self._sync(found, have):
            return
        if not found.spans:
            if have == self._room:
                # An unfinished frame fills the whole packet: drop it and hunt for a flag.
                self._drop(have - found.rest, "HDLC frame longer than the maximum", self._offset + found.rest)
                self._offset += have
                self._pkt_cancel()
                self._synced = False
                self._hunt_reason = "rest of an HDLC frame longer than the maximum"
            return
        start, end = found.spans[0]
        if self._synthetic:
            # Flags the sender put between our copy of the last flag and the frame.
            self._double = start >= 2
        offset = self._offset + start
        if H.skip_flags(buf, base + end, base + have) == base + have:
            # Only flags after the frame (its closing one, maybe the next one's opening one):
            # nothing to keep.
            self._opened = have - end > 1
            self._offset += have
        else:
            # Bytes after the first frame (from its closing flag on): keep them
            # before the packet is shrunk or reused.
            self._stash_bytes(buf[base + end : base + have])
            self._offset += end
        copied = self._copied
        self._pkt = None
        self._have = 0
        self._copied = False
        self._take(self._frame(buf, base + start, base + end, offset), p, buf, end - start, offset, copied)

    def _sync(self, found: H.HdlcScan, have: int) -> bool:
        """Hunting for the first flag: drop what comes before it; True once it is found."""
        if found.garbage:
            self._drop(found.garbage, self._hunt_reason, self._offset)
        if found.garbage == have:
            self._offset += have
            self._have = self._scanned = 0
            return False
        self._synced = True
        return True

    def _frame(self, buf: memoryview, start: int, end: int, offset: int) -> RecordResult:
        """Un-HDLC buf[start:end] where it lies and classify the PPP frame; a bad frame is a Dropped."""
        try:
            n = H.decode_frame(buf[start:end], self.rx_accm)
            return parse_ppp(buf, start, start + n)
        except FramingError as err:
            return Dropped(offset, end - start, err.reason)

    def _stashed_frame(self, raw: memoryview, offset: int) -> tuple[RecordResult, memoryview]:
        """Un-HDLC the frame ``raw`` of the stash, by copying it out (counted: it has to be
        copied into the device anyway); the result and the buffer its offsets refer to."""
        self.stats.rx_copy_bytes += len(raw)
        try:
            frame = H.decode_frame_copy(raw, self.rx_accm)
            return parse_ppp(frame, 0, len(frame)), frame
        except FramingError as err:
            return Dropped(offset, len(raw), err.reason), raw

    def _parse_stash(self) -> None:
        stash = self._stash
        assert stash is not None
        self._stash = None
        found = H.scan(stash)  # the stash starts at a flag: no garbage
        for start, end in found.spans:
            offset = self._offset + start
            result, frame = self._stashed_frame(stash[start:end], offset)
            self._take(result, None, frame, end - start, offset, True)
        rest = stash[found.rest :]
        # Keep one flag in front of an unfinished frame; a lone flag is just "synced".
        extra = H.skip_flags(rest)
        self._offset += found.rest + max(0, extra - FLAG_BYTES)
        if len(rest) > extra:
            if found.spans:
                # The frames above go into the ring first (the caller drains the
                # copies, then calls again): the packet for the unfinished frame
                # must be the last one allocated.
                self._stash = rest[extra - FLAG_BYTES :]
            else:
                partial = rest[extra - FLAG_BYTES :]
                try:
                    self._new_packet(partial)
                except RingFull:
                    self._stash = partial  # nothing lost: the next want() tries again
                    raise
        else:
            self._offset += min(extra, FLAG_BYTES)
            self._opened = extra > FLAG_BYTES

    # -- sending -------------------------------------------------------------------
    def _escape(self, frame) -> memoryview:
        need = H.max_encoded_size(len(frame))
        if len(self._txbuf) < need:
            self._txbuf = bytearray(need)
        out = memoryview(self._txbuf)
        n = H.encode_frame(frame, out, self.tx_accm)  # every frame opens with its own flag
        return out[:n]

    def encode(self, packet: Packet) -> memoryview:
        """The HDLC frame for ``packet`` (PPP header pushed into its headroom, then
        escaped into a scratch buffer, counted in ``tx_copies``)."""
        n = packet.end - packet.start
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += n
        stats.tx_copies += 1
        stats.tx_copy_bytes += n
        if packet.start - packet.lo >= PPP_HEADER_BYTES:
            header = ppp_header(packet.data)
            packet.push(PPP_HEADER_BYTES)[:] = header
            return self._escape(packet.data)
        return self._escape(ppp_header(packet.data) + bytes(packet.data))

    def encode_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        return bytes(self._escape(ppp_header(data) + bytes(data)))

    def _control(self, event: Event) -> bytes:
        if not isinstance(event, Control):
            raise ValueError(f"PPP framings send Control(protocol, payload), not {type(event).__name__}")
        frame = b"\xff\x03" + event.kind.to_bytes(2, "big") + event.payload
        return bytes(self._escape(frame))


class F5Hdlc(Hdlc):
    """F5's HDLC encapsulation: the same RFC 1662 framing over the TLS stream."""

    name = "f5-hdlc"

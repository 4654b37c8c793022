"""The codec interface: sans-I/O framings that decode into ring packets and encode in place.

A :class:`Codec` sits between a transport (TLS stream, DTLS/UDP datagrams, a
file) and a :class:`~tunring.device.Device`.  It never touches a socket, a
thread or a clock: the caller moves bytes, the codec says where they go.

Receiving (transport -> device)::

    view = codec.want()              # a memoryview inside a freshly allocated packet
    n = sock.recv_into(view)         # the record header lands in the packet's headroom
    for event in codec.received(n):  # IP packets were sent to the device already
        ...                          # control messages: DpdRequest, Keepalive, ...

For a **datagram** codec every ``received(n)`` is one whole record.  For a
**stream** codec ``want()`` offers the rest of the current packet's room
while the record length is unknown, then exactly the bytes that complete the
record, so a transport that returns one record per read (TLS does, one TLS
record at a time) fills every packet in place and nothing is copied.  When a
read holds more than one record (an aggregate), the first record is delivered
in place and the bytes after it are copied into the packets that follow.
Every memcpy on the receive path is counted in :attr:`Codec.stats`
(``rx_copies`` packets, ``rx_copy_bytes`` bytes), where it is made: keeping
the bytes after a record, staging packets out of a slot about to be reused,
copying into the device, moving a packet inside its slot, ``feed``.

Each received record goes through one of two paths, ``_stream`` or
``_datagram``, which end in one completion step, ``_complete``: the framing's
``_record`` classifies the record (a :data:`RecordResult`) and ``_take``
delivers it.  Records parsed from copied bytes (the stash) take the same step.

Stream end: ``close()`` delivers what is pending and raises FramingError if
the stream ended inside a record, or inside anything a framing reassembles.

Sending (device -> transport)::

    p = device.receive()
    wire = codec.encode(p)           # header pushed into p's headroom: one contiguous view
    sock.sendall(wire); device.release(p)

Headroom: a device must give every packet ``Codec.headroom`` bytes in front of
its data (its ``headroom``) for zero-copy in both directions; a
:class:`~tunring.session.Session` gives ``4 + lead``, so create it with
``lead=codec_class.session_lead()``.  With less headroom the codec still
works, by copying (counted).

Errors: a stream that cannot be resynchronised (wrong magic, impossible
length) raises :class:`~tunring.errors.FramingError` with an ``offset``
attribute (the stream offset of the record that failed) and the codec stays
failed.  A record that is well framed but not understood (unknown type), and
any bad datagram, is dropped, counted in ``rx_drops`` and reported as a
:class:`Dropped` event.  Decompression failures raise FramingError after the
record has been consumed; nothing of that record is delivered, and the stream
goes on.  Compressed records are decompressed in the slot they were read into
(allocated large enough for that).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NoReturn, cast

from .. import layout as L
from ..device import Device
from ..errors import FramingError, RingFull
from ..packet import Packet

if TYPE_CHECKING:
    from . import compress

log = logging.getLogger(__name__)

#: Decompressed packets are allocated at max(this, mtu), as OpenConnect does.
DECOMPRESS_MIN_BYTES = 16384
#: Default largest record payload a stream codec accepts (OpenConnect: max(16384, mtu)).
STREAM_MIN_PAYLOAD_BYTES = 16384


# -- events -------------------------------------------------------------------
class Event:
    """Something other than an IP packet that a codec found on the wire."""

    __slots__ = ()


@dataclass(frozen=True)
class DpdRequest(Event):
    """Dead peer detection request: answer with ``encode_control(DpdResponse(payload))``."""

    payload: bytes = b""


@dataclass(frozen=True)
class DpdResponse(Event):
    payload: bytes = b""


@dataclass(frozen=True)
class Keepalive(Event):
    payload: bytes = b""


@dataclass(frozen=True)
class Disconnect(Event):
    """The peer ends the session; ``reason`` is the raw payload (CSTP: a reason byte and text)."""

    reason: bytes = b""


@dataclass(frozen=True)
class Terminate(Event):
    payload: bytes = b""


@dataclass(frozen=True)
class Control(Event):
    """A framing's own control record: ``kind`` is its type (Pulse type, KMP type, PPP protocol)."""

    kind: int
    payload: bytes = b""


@dataclass(frozen=True)
class Dropped(Event):
    """A record (or bytes) skipped and counted: ``offset`` in the stream, or the datagram index."""

    offset: int
    length: int
    reason: str


@dataclass
class CodecStats:
    """Counters of one codec.  ``rx_copies`` counts delivered packets any byte of which was
    copied rather than read in place (aggregates, misplaced headers, ``feed``, decompressor
    output built in a library's memory); ``rx_copy_bytes`` counts every byte memcpy'd on the
    receive path: staging into private memory, joining stashed bytes, copies into the ring,
    moves inside a slot.  ``tx_copies``: records built outside the packet (short headroom)."""

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_copies: int = 0
    rx_copy_bytes: int = 0
    rx_decompressed: int = 0
    rx_control: int = 0
    rx_drops: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_copies: int = 0
    tx_copy_bytes: int = 0
    tx_compressed: int = 0


# What a framing's _record() says about one complete record.
@dataclass(frozen=True)
class Compressed:
    """The record's payload ``buf[start:end]`` is a compressed IP packet."""

    start: int
    end: int


#: An IP packet inside the record's buffer: ``(start, end)``.
Segment = tuple[int, int]
#: The verdict of a framing's ``_record()`` on one complete record, handled in one place
#: (``Codec._take``): a Segment (the common case), Compressed, an Event (a control message, or
#: Dropped), None (nothing to deliver), or a list of Segments, ``bytes`` (IP packets the framing
#: already copied out, counted) and Events, in stream order.
RecordResult = Segment | Compressed | Event | None | list


class Codec:
    """One framing over one device, in one transport shape (stream or datagram).

    Subclasses describe the wire format with a few class attributes and four
    methods (``_length``, ``_record``, ``_pack``, ``_control``); this class
    does the placement, in-place delivery, copying fallbacks and counting.
    ``want()``/``received(n)`` decode into the device; ``encode(packet)``
    and ``encode_control(event)`` build what goes to the transport.
    """

    #: Name on the command line.
    name: ClassVar[str] = ""
    #: Header bytes in front of a data record's IP packet (the headroom needed).
    headroom: ClassVar[int] = 0
    #: Trailer bytes after the IP packet (the tailroom needed).
    tailroom: ClassVar[int] = 0
    #: Bytes a stream codec needs to learn a record's length.
    min_header: ClassVar[int] = 1
    #: True if the framing can run over a byte stream / over datagrams.
    stream_ok: ClassVar[bool] = True
    datagram_ok: ClassVar[bool] = False
    #: Default transport shape.
    default_datagram: ClassVar[bool] = False
    #: Compression algorithms its compressed records may use (tunring.proto.compress names).
    compressions: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def session_lead(cls) -> int:
        """The Session ``lead`` that gives this framing's headroom (a Session's is 4 + lead)."""
        # The one place a codec meets the ring's Size field: every other decision uses the
        # device's own ``headroom``.
        return max(0, cls.headroom - L.SIZE_FIELD)

    def __init__(
        self,
        device: Device,
        *,
        datagram: bool | None = None,
        max_payload: int | None = None,
        compression: str | None = None,
    ) -> None:
        if datagram is None:
            datagram = self.default_datagram
        if datagram and not self.datagram_ok:
            raise ValueError(f"{self.name} has no datagram form")
        if not datagram and not self.stream_ok:
            raise ValueError(f"{self.name} has no stream form")
        self.device = device
        self.datagram = datagram
        self.mtu = device.mtu
        #: Largest record payload accepted; longer records are framing errors.
        self.max_payload = max_payload if max_payload is not None else max(STREAM_MIN_PAYLOAD_BYTES, self.mtu)
        self.max_payload = min(self.max_payload, L.MAX_IP_PACKET_SIZE - self.headroom)
        self._max_record = self.max_payload + self.headroom
        self.stats = CodecStats()
        self.compression = compression
        self._compressor, self._decompressor = self._compression(compression)
        #: Decompressed packets get max(DECOMPRESS_MIN_BYTES, mtu), as OpenConnect gives them.
        self._decompress_bytes = max(DECOMPRESS_MIN_BYTES, self.mtu)
        # Placement: the record header goes into the device's headroom.  With less headroom
        # the IP data lands late and is moved at delivery (a counted copy).
        # Every device has a headroom (Session: 4 + lead); the Device ABC declares it with the ring rework.
        self._lead = min(self.headroom, device.headroom)  # type: ignore[attr-defined]
        payload = self.max_payload if self._decompressor is None else max(self.max_payload, self._decompress_bytes)
        self._alloc_bytes = payload + self.headroom - self._lead  # a compressed record decompresses in its own slot
        self._pkt: Packet | None = None  # packet the current record is read into
        self._base = 0  # where the current record starts in _pkt.buf
        self._room = 0  # bytes from _base to the end of _pkt's memory we may fill
        self._have = 0  # bytes of the current record present at _base
        self._need = 0  # the current record's total length, 0 while unknown
        self._offset = 0  # stream offset of the current record (datagram: index)
        self._copied = False  # some of the current packet's bytes were copied into it
        self._stash: memoryview | None = None  # read bytes after a complete record, not yet parsed
        # Waiting for the device, in order: IP packets to copy in (bytes, or views of private
        # memory) and (payload, offset) tuples of compressed records to decompress.
        self._queue: deque = deque()
        self._events: list[Event] = []
        self._failed: FramingError | None = None
        self._shrink_and_send = device.shrink_and_send
        self._allocate = device.allocate

    def _compression(self, name: str | None) -> tuple[compress.Compressor | None, compress.Decompressor | None]:
        """The (compressor, decompressor) pair of the negotiated algorithm, if any."""
        if name is None:
            return None, None
        if name not in self.compressions:
            raise ValueError(f"{self.name} cannot carry {name!r} compression "
                             f"(it carries: {', '.join(self.compressions) or 'none'})")
        from . import compress  # only when asked for: it may need optional packages

        return compress.compressor(name), compress.decompressor(name)

    # -- receiving: the transport's side ---------------------------------------------
    @property
    def packet(self) -> Packet | None:
        """The packet the next bytes are read into (None until ``want()``)."""
        return self._pkt

    @property
    def failed(self) -> bool:
        """True once a FramingError has stopped the stream (every call raises it again)."""
        return self._failed is not None

    @property
    def offset(self) -> int:
        """Stream bytes fully consumed so far (datagram codecs: datagrams consumed)."""
        return self._offset

    def want(self, exact: bool = False) -> memoryview:
        """Where the transport should put its next bytes (never empty).

        By default the view runs to the end of the packet while the record's
        length is unknown (a read may then bring several records: the ones after
        the first are copied), and to the record's end once it is known.
        ``exact=True`` asks for no more than the header, then no more than the
        record: two reads per record, but nothing is ever copied, whatever the
        transport returns (for plain byte streams; TLS already returns one
        record at a time).  May raise RingFull (nothing lost: wait for space and
        call again) or the FramingError that stopped the stream.
        """
        p = self._pkt
        if p is None:
            if self._failed is not None or self._queue or self._stash is not None:
                p = self._next_packet()
            else:
                p = self._start_packet()
        base = self._base
        end = self._need or (self.min_header if exact and not self.datagram else self._room)
        return p.buf[base + self._have : base + end]

    def release_idle(self) -> bool:
        """Give the packet ``want()`` allocated back to the device if no byte of it has arrived.

        For two codecs on one device (CSTP and DTLS on one TUN): a device shrinks only its
        last allocation, so one codec's idle packet must not sit under the other's.  True if
        a packet was given back; the next ``want()`` allocates a new one.
        """
        if self._pkt is None or self._have or self._stash is not None:
            return False
        self._pkt_cancel()
        return True

    def received(self, n: int) -> list[Event]:
        """``n`` bytes were written at the start of the last ``want()`` view: deliver what they complete."""
        p = self._pkt
        if p is None or self._failed is not None or (n <= 0 and not self.datagram):
            return self._received_nothing(n)
        if self.datagram:
            self._datagram(p, n)
        else:
            self._stream(p, n)
        if self._queue or self._stash is not None:
            self._drain(soft=True)
        # Events stay queued if anything above raised: the next call returns them.
        return self._take_events() if self._events else []

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Copying convenience: push ``data`` through want()/received() (stream: any amount;
        datagram: exactly one record).  Every byte is copied once, into its packet (counted)."""
        data = memoryview(data).cast("B")
        if self.datagram:
            return self._feed_datagram(data)
        events: list[Event] = []
        error: FramingError | None = None
        pos = 0
        while pos < len(data):
            view = self.want(exact=True)  # whole records into their own packets: no aggregates
            k = min(len(view), len(data) - pos)
            self._copy_in(view, data[pos : pos + k])
            pos += k
            try:
                events += self.received(k)
            except FramingError as err:
                if self._failed is not None:
                    raise
                error = error or err  # a bad compressed record: consumed, the stream goes on
        if error is not None:
            self._events[:0] = events  # returned by the next call
            raise error
        return events

    def close(self) -> list[Event]:
        """End of stream: deliver what is pending and return the last events.

        A stream that ends inside a record (or inside anything a framing reassembles, such as
        an oNCP KMP message) ended badly: a FramingError at that record's offset, and the codec
        stays failed.  May raise RingFull (nothing lost: drain the device and call again).
        """
        if self._failed is not None:
            raise self._failed
        self._drain()
        self._end_of_stream()
        self._pkt_cancel()
        return self._take_events()

    def _received_nothing(self, n: int) -> list[Event]:
        """received() without a packet to complete: a stopped stream, an empty read, or a misuse."""
        if self._failed is not None:
            raise self._failed
        if n != 0:
            raise ValueError("received(): more bytes than the last want() view holds")
        return self._take_events()

    def _feed_datagram(self, data: memoryview) -> list[Event]:
        view = self.want()
        if len(data) > len(view):
            index = self._offset
            self._pkt_cancel()
            self._offset = index + 1
            self._drop(len(data), f"datagram of {len(data)} bytes exceeds the {len(view)}-byte maximum", index)
            return self._take_events()
        self._copy_in(view, data)
        return self.received(len(data))

    def _end_of_stream(self) -> None:
        """Fail if the stream ended inside a record (framings that hold more state extend this)."""
        if self._have:
            self._fail(f"stream ends inside a record ({self._have} bytes of it present)")

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- receiving: the two paths, one completion step --------------------------------
    def _stream(self, p: Packet, n: int) -> None:
        """``n`` more stream bytes in ``p``: complete the record once all of it is there."""
        have = self._have + n
        need = self._need
        if have > (need or self._room):
            raise ValueError("received(): more bytes than the last want() view holds")
        self._have = have
        base = self._base
        if not need:
            if have < self.min_header:
                return
            try:  # inline: this runs for every record
                need = self._length(p.buf, base)
            except FramingError:
                need = 0
            if not self.min_header <= need <= self._max_record:
                self._checked_length(p.buf, base)  # says what is wrong and stops the stream
            self._need = need
        if have < need:
            return
        if have > need:
            # An aggregate: keep the bytes after this record before p's memory is reused.
            self._stash_bytes(p.buf[base + need : base + have])
        offset, copied = self._detach(need)
        self._complete(p, p.buf, base, base + need, offset, copied)

    def _datagram(self, p: Packet, n: int) -> None:
        """One whole datagram of ``n`` bytes in ``p``: a bad one is a counted drop."""
        if not 0 <= n <= self._room:
            raise ValueError("received(): more bytes than the last want() view holds")
        base = self._base
        offset, copied = self._detach(1)
        fault = self._datagram_fault(p.buf, base, n)
        if fault is not None:
            self.device.cancel(p)
            self._drop(n, fault, offset)
            return
        self._complete(p, p.buf, base, base + n, offset, copied)

    def _datagram_fault(self, buf: memoryview, base: int, n: int) -> str | None:
        """Why the datagram buf[base:base+n] is not a record of this framing, or None."""
        if n < self.min_header:
            return f"datagram of {n} bytes is shorter than the header"
        try:
            length = self._length(buf, base)
        except FramingError as err:
            return err.reason
        if length >= 0 and length != n:
            return f"header says {length} bytes, the datagram has {n}"
        return None

    def _detach(self, size: int) -> tuple[int, bool]:
        """The current record is complete (``size``: its stream bytes, or 1 datagram): the
        codec lets go of its packet; returns the record's offset and whether it was copied."""
        offset, copied = self._offset, self._copied
        self._pkt = None
        self._have = self._need = 0
        self._copied = False
        self._offset = offset + size
        return offset, copied

    def _complete(self, p: Packet | None, buf: memoryview, base: int, end: int, offset: int, copied: bool) -> None:
        """The completion step of every path: classify the record buf[base:end] and deliver it.

        ``p`` is the packet the record lies in, or None for a record in private memory (the
        stash).  The common case, one IP packet already where the slot's data starts, is sent
        right here; everything else goes through :meth:`_take`.
        """
        try:
            result = self._record(buf, base, end)
        except FramingError as err:
            if p is not None:
                self.device.cancel(p)
            self._bad_record(err.reason, end - base, offset)
            return
        if p is not None and type(result) is tuple and result[0] == p.start and not copied:
            size = result[1] - result[0]
            self._shrink_and_send(p, size)
            stats = self.stats
            stats.rx_packets += 1
            stats.rx_bytes += size
        else:
            self._take(result, p, buf, end - base, offset, copied)

    def _checked_length(self, buf: memoryview, off: int) -> int:
        """The length of the record at ``off``; a length the framing cannot have stops the stream."""
        try:
            length = self._length(buf, off)
        except FramingError as err:
            self._fail(err.reason)
        if length < self.min_header:
            self._fail(f"record length {length} is shorter than the {self.min_header}-byte header")
        if length > self._max_record:
            self._fail(f"record length {length} exceeds the maximum {self._max_record}")
        return length

    def _bad_record(self, reason: str, length: int, offset: int) -> None:
        """A record the framing refused: a datagram is dropped, a stream stops."""
        if self.datagram:
            self._drop(length, reason, offset)
        else:
            self._fail(reason, offset)

    def _fail(self, reason: str, offset: int | None = None) -> NoReturn:
        """Stop the stream at ``offset`` (default: the current record's) with a FramingError,
        raised now and by every later call."""
        self._failed = FramingError(reason, self._offset if offset is None else offset)
        self._pkt_cancel()
        self._stash = None
        raise self._failed from None

    def _drop(self, length: int, reason: str, offset: int | None = None) -> None:
        self.stats.rx_drops += 1
        if offset is None:
            offset = self._offset
        log.debug("%s: dropped %d bytes at %d: %s", self.name, length, offset, reason)
        self._events.append(Dropped(offset, length, reason))

    # -- receiving: delivery -----------------------------------------------------------
    def _take(self, result: RecordResult, p: Packet | None, buf: memoryview, length: int, offset: int,
              copied: bool) -> None:
        """Deliver what ``_record()`` found: the one place a RecordResult is handled.

        ``p``: the packet the record lies in (its first IP packet is sent in place, the rest
        staged before p's memory is reused), or None when ``buf`` is private memory (each IP
        packet is then copied into a new packet).
        """
        if type(result) is tuple:
            if p is None:
                self._queue.append(buf[result[0] : result[1]])
            else:
                self._send_in_place(p, result[0], result[1], copied)
        elif type(result) is list:
            self._take_several(result, p, buf, length, offset, copied)
        elif isinstance(result, Compressed):
            if p is None:
                self._queue.append((buf[result.start : result.end], offset))  # decompressed in turn
            else:
                self._decompress(buf[result.start : result.end], p, offset, copied)
        else:
            if p is not None:
                self.device.cancel(p)
            if result is not None:
                self._event(cast(Event, result), length, offset)

    def _take_several(self, items: list, p: Packet | None, buf: memoryview, length: int, offset: int,
                      copied: bool) -> None:
        """A record holding several items: the first IP packet stays in ``p`` if no packet comes before it."""
        first = None
        in_place = p is not None
        for item in items:
            kind = type(item)
            if kind is tuple:
                if in_place:
                    first = item
                elif p is not None:  # p's memory is reused once p is sent: stage a copy first
                    self._queue.append(self._stage(buf[item[0] : item[1]]))
                else:  # private memory stays valid: the only copy left is the one into the device
                    self._queue.append(buf[item[0] : item[1]])
                in_place = False
            elif kind is bytes:  # copied out (and counted) by the framing already
                self._queue.append(item)
                in_place = False
            elif item is not None:
                self._event(item, length, offset)
        if p is not None:
            if first is None:
                self.device.cancel(p)
            else:
                self._send_in_place(p, first[0], first[1], copied)

    def _event(self, event: Event, length: int, offset: int) -> None:
        if isinstance(event, Dropped):
            self._drop(length, event.reason, offset)
        else:
            self.stats.rx_control += 1
            self._events.append(event)

    def _send_in_place(self, p: Packet, start: int, end: int, copied: bool) -> None:
        """Send the IP packet buf[start:end] of ``p``, moved to the slot's data if it is not there."""
        n = end - start
        if start != p.start:
            # The header was not the size the record was placed for (PPP header compression,
            # short headroom): move the IP packet to the slot's data.
            p.buf[p.start : p.start + n] = p.buf[start:end]
            self.stats.rx_copy_bytes += n
            copied = True
        self._send(p, n, copied)

    def _send(self, p: Packet, n: int, copied: bool) -> None:
        """Shrink ``p`` (the last packet allocated) to ``n`` bytes and send it; count it."""
        self._shrink_and_send(p, n)
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += n
        if copied:
            stats.rx_copies += 1

    def _decompress(self, src: memoryview, p: Packet | None, offset: int, copied: bool) -> None:
        """Decompress a compressed record's payload ``src`` into ``p``'s slot and send it.

        ``p`` is the packet the record was read into (allocated large enough for this, and
        ``src`` lies in it: decompressors read their input whole before writing), or None for a
        record from private memory: then a new packet is allocated (RingFull propagates).  A
        bad record is a FramingError after it has been consumed; nothing of it is delivered.
        """
        decompressor = self._decompressor
        if decompressor is None:
            if p is not None:
                self.device.cancel(p)
            raise FramingError("compressed record but no compression was negotiated", offset)
        in_slot = p is not None
        if p is None:
            p = self._allocate(self._decompress_bytes)
        try:
            n = decompressor.decompress_into(src, p.buf[p.start : p.start + self._decompress_bytes])
        except Exception as err:  # FramingError, or a decompressor's own error type: the same meaning
            self.device.cancel(p)
            raise FramingError(f"compressed record: {getattr(err, 'reason', err)}", offset) from None
        if decompressor.staged:  # built in the library's memory, then copied into the slot
            self.stats.rx_copy_bytes += n
            copied = True
        if in_slot and decompressor.copies_overlapping_src:  # the record copied aside first
            self.stats.rx_copy_bytes += len(src)
            copied = True
        self.stats.rx_decompressed += 1
        self._send(p, n, copied)

    # -- receiving: placement and copies ----------------------------------------------
    def _next_packet(self) -> Packet:
        """The packet the next bytes go into: what is queued or stashed goes first."""
        if self._failed is not None:
            raise self._failed
        self._drain()
        # The stash may have started a record in a new packet.
        return self._pkt if self._pkt is not None else self._start_packet()

    def _start_packet(self) -> Packet:
        """Allocate the packet the next record is read into, its header in the headroom."""
        p = self._pkt = self._allocate(self._alloc_bytes)
        base = self._base = p.start - self._lead
        self._room = p.end - base
        self._have = self._need = 0
        return p

    def _pkt_cancel(self) -> None:
        if self._pkt is not None:
            self.device.cancel(self._pkt)
            self._pkt = None
        self._have = self._need = 0
        self._copied = False

    def _copy_in(self, view: memoryview, data: memoryview | bytes) -> None:
        """Copy ``data`` into the current packet at ``view`` (counted; the packet is a copy now)."""
        view[: len(data)] = data
        self.stats.rx_copy_bytes += len(data)
        self._copied = True

    def _stage(self, *views: memoryview | bytes) -> bytes:
        """Copy ``views``, joined, out to private memory (counted)."""
        data = b"".join(views)
        self.stats.rx_copy_bytes += len(data)
        return data

    def _stash_bytes(self, view: memoryview) -> None:
        """Keep read bytes that follow a complete record, after what is stashed already."""
        self._stash = memoryview(self._stage(view) if self._stash is None else self._stage(self._stash, view))

    def _write(self, data: memoryview | bytes) -> None:
        """Copy one IP packet into a new packet of the device and send it (counted)."""
        n = len(data)
        p = self._allocate(n)
        p.buf[p.start : p.start + n] = data
        self.stats.rx_copy_bytes += n
        self._send(p, n, True)

    def _drain(self, soft: bool = False) -> None:
        """Copy queued packets into the device and parse stashed stream bytes.

        ``soft``: stop quietly when the ring is full (the rest waits for the
        next ``want()``); otherwise RingFull propagates.
        """
        try:
            self._drain_queue()
            while self._stash is not None:
                self._parse_stash()
                self._drain_queue()
        except RingFull:
            if not soft:
                raise

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            item = queue.popleft()  # consumed even if it turns out bad (a FramingError)
            try:
                if type(item) is tuple:  # (compressed payload, offset)
                    self._decompress(item[0], None, item[1], True)
                else:
                    self._write(item)
            except RingFull:
                queue.appendleft(item)  # nothing lost: it goes first next time
                raise

    def _parse_stash(self) -> None:
        """Take one record, or the start of one, from the stash."""
        stash = self._stash
        assert stash is not None
        n = len(stash)
        need = self._checked_length(stash, 0) if n >= self.min_header else 0
        if need and n >= need:
            rest = stash[need:]
            self._stash = rest if len(rest) else None
            offset = self._offset
            self._offset += need
            self._complete(None, stash, 0, need, offset, True)
            return
        # The start of a record: into a new packet, where the rest is read in place behind it.
        self._start_packet()
        self._copy_in(self._pkt.buf[self._base : self._base + n], stash)  # type: ignore[union-attr]
        self._have = n
        self._need = need
        self._stash = None

    # -- subclass interface ------------------------------------------------------
    def _length(self, buf: memoryview, off: int) -> int:
        """Total length of the record whose first ``min_header`` bytes are at ``off``
        (-1: the framing has no length field; only for datagram framings)."""
        raise NotImplementedError

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        """Classify the complete record ``buf[off:end]`` (see :data:`RecordResult`)."""
        raise NotImplementedError

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        """Write a data record's header for ``length`` IP bytes at ``buf[off:off+headroom]``
        (and its trailer, if any, after the IP bytes)."""
        raise NotImplementedError

    def _control(self, event: Event) -> bytes:
        raise ValueError(f"{self.name} cannot send {type(event).__name__}")

    def _pack_compressed(self, payload: bytes) -> bytes:
        raise ValueError(f"{self.name} has no compressed records")

    # -- sending -------------------------------------------------------------------
    def encode(self, packet: Packet) -> memoryview:
        """Frame ``packet`` (an IP packet from ``device.receive()``) for the transport.

        The header is pushed into the packet's headroom and the returned view is
        ``packet.data`` (one contiguous buffer, no copy).  With too little
        headroom, or with compression, the record is built in new memory (counted
        in ``tx_copies``/``tx_compressed``).  Release the packet after the view is
        written.
        """
        n = packet.end - packet.start
        stats = self.stats
        stats.tx_packets += 1
        stats.tx_bytes += n
        if self._compressor is not None:
            payload = self._compressor.compress(packet.data)
            # Stateless algorithms fall back to plain records when compression does
            # not pay; a deflate record must always be sent (the stream includes it).
            if len(payload) < n or self._compressor.name == "deflate":
                stats.tx_compressed += 1
                return memoryview(self._pack_compressed(payload))
        h = self.headroom
        t = self.tailroom
        if packet.start - packet.lo >= h and packet.hi - packet.end >= t:
            packet.push(h)
            if t:
                packet.put(t)
            self._pack(packet.buf, packet.start, n)
            return packet.data
        out = bytearray(h + n + self.tailroom)
        out[h : h + n] = packet.data
        self._pack(memoryview(out), 0, n)
        stats.tx_copies += 1
        stats.tx_copy_bytes += n
        return memoryview(out)

    def encode_bytes(self, data: bytes | bytearray | memoryview) -> bytes:
        """The record for one IP packet given as bytes (the copying path)."""
        n = len(data)
        h = self.headroom
        if self._compressor is not None:
            payload = self._compressor.compress(data)
            if len(payload) < n or self._compressor.name == "deflate":
                self.stats.tx_compressed += 1
                return bytes(self._pack_compressed(payload))
        out = bytearray(h + n + self.tailroom)
        out[h : h + n] = data
        self._pack(memoryview(out), 0, n)
        return bytes(out)

    def encode_control(self, event: Event) -> bytes:
        """The record carrying a control message (DPD, keepalive, ...)."""
        return self._control(event)

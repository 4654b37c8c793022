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
in place and the bytes after it are copied into the packets that follow;
every such copy is counted in :attr:`Codec.stats` (``rx_copies`` packets,
``rx_copy_bytes`` bytes).

Sending (device -> transport)::

    p = device.receive()
    wire = codec.encode(p)           # header pushed into p's headroom: one contiguous view
    sock.sendall(wire); device.release(p)

Headroom: a device must give every packet ``Codec.headroom`` bytes in front of
its data for zero-copy in both directions; a :class:`~tunring.session.Session`
gives ``4 + lead``, so create it with ``lead=codec_class.session_lead()``.
With less headroom the codec still works, by copying (counted).

Errors: a stream that cannot be resynchronised (wrong magic, impossible
length) raises :class:`~tunring.errors.FramingError` with an ``offset``
attribute (the stream offset of the record that failed) and the codec stays
failed.  A record that is well framed but not understood (unknown type), and
any bad datagram, is dropped, counted in ``rx_drops`` and reported as a
:class:`Dropped` event.  Decompression failures raise FramingError after the
record has been consumed; nothing of that record is delivered.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Union

from .. import layout as L
from ..device import Device
from ..errors import FramingError, RingFull
from ..packet import Packet

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
    """Counters of one codec.  ``rx_copies`` counts delivered packets any byte of
    which was copied rather than read in place (aggregates, misplaced headers);
    ``rx_copy_bytes`` counts every byte memcpy'd on the receive path, staging
    included.  ``tx_copies``: records built outside the packet (short headroom)."""

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


Segment = tuple  # (start, end): an IP packet inside the buffer
RecordResult = Union[Segment, Event, Compressed, None, list]


def framing_error(message: str, offset: int) -> FramingError:
    """A FramingError carrying ``offset`` (where the bad record starts) and the bare ``reason``."""
    err = FramingError(f"{message} (at stream offset {offset})")
    err.offset = offset  # type: ignore[attr-defined]
    err.reason = message  # type: ignore[attr-defined]
    return err


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
        """The Session ``lead`` that gives this framing's header room (4 + lead >= headroom)."""
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
        mtu = getattr(device, "mtu", 1500)
        self.mtu = mtu
        #: Largest record payload accepted; longer records are framing errors.
        self.max_payload = max_payload if max_payload is not None else max(STREAM_MIN_PAYLOAD_BYTES, mtu)
        self.max_payload = min(self.max_payload, L.MAX_IP_PACKET_SIZE - self.headroom)
        self._max_record = self.max_payload + self.headroom
        self._fits = False  # the device's headroom holds our header (known after one allocation)
        self.stats = CodecStats()
        self.compression = compression
        self._decompressor = None
        self._compressor = None
        if compression is not None and compression not in self.compressions:
            raise ValueError(f"{self.name} cannot carry {compression!r} compression "
                             f"(it carries: {', '.join(self.compressions) or 'none'})")
        if compression is not None:
            from . import compress  # only when asked for: it may need optional packages

            self._decompressor = compress.decompressor(compression)
            self._compressor = compress.compressor(compression)
        self._pkt: Packet | None = None  # packet the current record is read into
        self._base = 0  # where the current record starts in _pkt.buf
        self._room = 0  # bytes from _base to the end of _pkt's memory we may fill
        self._have = 0  # bytes of the current record present at _base
        self._need = 0  # the current record's total length, 0 while unknown
        self._offset = 0  # stream offset of the current record (datagram: index)
        self._stash: memoryview | None = None  # read bytes after a complete record, not yet parsed
        # IP packets (bytes, or views of the stash) waiting to be copied into the
        # device, and (payload, offset) tuples of compressed records to decompress.
        self._copies: deque = deque()
        self._events: list[Event] = []
        self._failed: FramingError | None = None
        self._partly_copied = False  # the current packet's first bytes came from the stash
        self._shrink_and_send = device.shrink_and_send
        self._allocate = device.allocate

    # -- receiving ---------------------------------------------------------------
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
        if p is not None:
            base = self._base
            need = self._need
            if not need and exact and not self.datagram:
                need = self.min_header
            return p.buf[base + self._have : base + (need or self._room)]
        if self._fits and self._failed is None and not self._copies and self._stash is None:
            # Fast path: a new packet with the header room in front of its data.
            p = self._allocate(self.max_payload)
            self._pkt = p
            base = self._base = p.start - self.headroom
            self._room = p.end - base
            return p.buf[base : (base + self.min_header) if exact and not self.datagram else p.end]
        if self._failed is not None:
            raise self._failed
        if self._copies or self._stash is not None:
            self._drain()
        if self._pkt is None:
            self._start_packet()
        return self.want(exact)

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
        """``n`` bytes were written at the start of the last ``want()`` view."""
        p = self._pkt
        if p is not None and n > 0 and not self.datagram:
            # Fast path (the common case, kept flat on purpose: Python pays per
            # call): a stream read that completes exactly one record.
            have = self._have + n
            need = self._need
            if have > (need or self._room):
                raise ValueError("received(): more bytes than the last want() view holds")
            if have < need or (not need and have < self.min_header):
                self._have = have
                return self._take_events() if self._events else []
            base = self._base
            buf = p.buf
            if not need:
                try:
                    need = self._length(buf, base)
                except FramingError:
                    need = -1
                if not self.min_header <= need <= self._max_record:
                    need = self._checked_length(buf, base)  # raises the right error
            if have == need and not self._partly_copied:
                self._pkt = None
                self._have = self._need = 0
                offset = self._offset
                self._offset = offset + need
                end = base + need
                try:
                    result = self._record(buf, base, end)
                except FramingError as err:
                    result = self._bad_record(p, err, end - base, offset)
                if type(result) is tuple and result[0] == p.start:
                    size = result[1] - result[0]
                    self._shrink_and_send(p, size)
                    stats = self.stats
                    stats.rx_packets += 1
                    stats.rx_bytes += size
                else:
                    self._dispatch(p, buf, base, end, offset, False, result)
                if self._copies:
                    self._drain(soft=True)
                return self._take_events() if self._events else []
            self._have = have
            self._need = need
            self._stream(p)
        elif p is not None and n > 0 and self._failed is None:
            # Datagram fast path: a well-formed record whose IP packet is in place.
            if n > self._room:
                raise ValueError("received(): more bytes than the last want() view holds")
            base = self._base
            buf = p.buf
            end = base + n
            index = self._offset
            self._pkt = None
            self._offset = index + 1
            try:
                if n < self.min_header:
                    raise FramingError(f"datagram of {n} bytes is shorter than the header")
                length = self._length(buf, base)
                if length >= 0 and length != n:
                    raise FramingError(f"header says {length} bytes, the datagram has {n}")
                result = self._record(buf, base, end)
            except FramingError as err:
                self.device.cancel(p)
                self._drop(n, str(err), index)
                return self._take_events()
            if type(result) is tuple and result[0] == p.start:
                size = result[1] - result[0]
                self._shrink_and_send(p, size)
                stats = self.stats
                stats.rx_packets += 1
                stats.rx_bytes += size
            else:
                self._dispatch(p, buf, base, end, index, False, result)
        else:
            if self._failed is not None:
                raise self._failed
            if n <= 0 and not self.datagram:
                return self._take_events()
            if p is None or not 0 <= n <= (self._need or self._room) - self._have:
                raise ValueError("received(): more bytes than the last want() view holds")
            self._have += n
            if self.datagram:
                self._datagram(p)
            else:
                self._stream(p)
        if self._copies or self._stash is not None:
            self._drain(soft=True)
        # Events stay queued if anything above raised: the next call returns them.
        return self._take_events()

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Copying convenience: push ``data`` through want()/received() (stream: any
        amount; datagram: exactly one record)."""
        data = memoryview(data).cast("B")
        events: list[Event] = []
        if self.datagram:
            view = self.want()
            if len(data) > len(view):
                self._pkt_cancel()
                self._offset += 1
                self._drop(len(data), f"datagram of {len(data)} bytes exceeds the {len(view)}-byte maximum")
                events.extend(self._events)
                self._events = []
                return events
            view[: len(data)] = data
            return events + self.received(len(data))
        pos = 0
        while pos < len(data):
            view = self.want()
            k = min(len(view), len(data) - pos)
            view[:k] = data[pos : pos + k]
            pos += k
            events.extend(self.received(k))
        return events

    def close(self) -> list[Event]:
        """End of stream: deliver what is pending; a partial record is a FramingError."""
        if self._failed is not None:
            raise self._failed
        self._drain()
        events = self._events
        self._events = []
        if self._have:
            have, offset = self._have, self._offset
            self._pkt_cancel()
            self._failed = framing_error(f"stream ends inside a record ({have} bytes of it present)", offset)
            raise self._failed
        self._pkt_cancel()
        return events

    # -- subclass interface ------------------------------------------------------
    def _length(self, buf: memoryview, off: int) -> int:
        """Total length of the record whose first ``min_header`` bytes are at ``off``
        (-1: the framing has no length field; only for datagram framings)."""
        raise NotImplementedError

    def _record(self, buf: memoryview, off: int, end: int) -> RecordResult:
        """Classify the complete record ``buf[off:end]``: an IP segment ``(start,
        end)``, a list of segments, ``bytes`` (IP packets the framing already
        copied out) and events, an Event, Compressed, or None (nothing to deliver)."""
        raise NotImplementedError

    def _pack(self, buf: memoryview, off: int, length: int) -> None:
        """Write a data record's header for ``length`` IP bytes at ``buf[off:off+headroom]``
        (and its trailer, if any, after the IP bytes)."""
        raise NotImplementedError

    def _control(self, event: Event) -> bytes:
        raise ValueError(f"{self.name} cannot send {type(event).__name__}")

    def _pack_compressed(self, payload: bytes) -> bytes:
        raise ValueError(f"{self.name} has no compressed records")

    # -- placement -----------------------------------------------------------------
    def _start_packet(self) -> None:
        """Allocate the packet the next record is read into, header in its headroom."""
        dev = self.device
        p = self._allocate(self.max_payload)
        lead = self.headroom
        # The header goes into the headroom; if there is too little, the IP data
        # lands late and is moved to p.start at delivery (a counted copy).
        self._fits = p.start - p.lo >= lead
        if not self._fits:
            dev.cancel(p)
            p = dev.allocate(self.max_payload + lead - p.headroom)
            lead = p.headroom
        self._pkt = p
        self._base = p.start - lead
        self._room = p.end - self._base
        self._have = 0
        self._need = 0

    def _pkt_cancel(self) -> None:
        if self._pkt is not None:
            self.device.cancel(self._pkt)
            self._pkt = None
        self._have = self._need = 0
        self._partly_copied = False

    def _stream(self, p: Packet) -> None:
        buf = p.buf
        base = self._base
        need = self._need
        if not need:
            if self._have < self.min_header:
                return
            need = self._checked_length(buf, base)
            if need > self._room:
                # Only possible when the device gave less room than max_payload needs.
                self._fail(f"record of {need} bytes does not fit the {self._room}-byte packet")
            self._need = need
        have = self._have
        if have < need:
            return
        if have > need:
            # An aggregate: keep the bytes after this record before the packet's
            # memory is shrunk or reused.
            self._stash_bytes(buf[base + need : base + have])
        self._pkt = None
        self._have = self._need = 0
        offset = self._offset
        self._offset += need
        copied, self._partly_copied = self._partly_copied, False
        self._deliver(p, buf, base, base + need, offset, copied)

    def _datagram(self, p: Packet) -> None:
        buf = p.buf
        base = self._base
        end = base + self._have
        self._pkt = None
        self._have = self._need = 0
        index = self._offset
        self._offset += 1
        try:
            if end - base < self.min_header:
                raise framing_error(f"datagram of {end - base} bytes is shorter than the header", index)
            length = self._length(buf, base)
            if length >= 0 and length != end - base:
                raise framing_error(f"header says {length} bytes, the datagram has {end - base}", index)
        except FramingError as err:
            self.device.cancel(p)
            self._drop(end - base, str(err), index)
            return
        self._deliver(p, buf, base, end, index)

    def _checked_length(self, buf: memoryview, off: int) -> int:
        try:
            length = self._length(buf, off)
        except FramingError as err:
            self._fail(str(err))
        if length < self.min_header:
            self._fail(f"record length {length} is shorter than the {self.min_header}-byte header")
        if length > self._max_record:
            self._fail(f"record length {length} exceeds the maximum {self._max_record}")
        return length

    def _fail(self, message: str):
        self._failed = framing_error(message, self._offset)
        self._pkt_cancel()
        self._stash = None
        raise self._failed

    def _drop(self, length: int, reason: str, offset: int | None = None) -> None:
        self.stats.rx_drops += 1
        if offset is None:
            offset = self._offset
        log.debug("%s: dropped %d bytes at %d: %s", self.name, length, offset, reason)
        self._events.append(Dropped(offset, length, reason))

    # -- delivery ----------------------------------------------------------------
    def _deliver(self, p: Packet, buf: memoryview, off: int, end: int, offset: int, copied: bool = False) -> None:
        """Deliver the complete record buf[off:end] that sits in packet ``p``."""
        result = self._classify(p, buf, off, end, offset)
        self._dispatch(p, buf, off, end, offset, copied, result)

    def _classify(self, p: Packet, buf: memoryview, off: int, end: int, offset: int) -> RecordResult:
        """The framing's verdict on a record; a FramingError drops a datagram or stops a stream."""
        try:
            return self._record(buf, off, end)
        except FramingError as err:
            return self._bad_record(p, err, end - off, offset)

    def _bad_record(self, p: Packet, err: FramingError, length: int, offset: int) -> None:
        if self.datagram:
            self._drop(length, str(err), offset)
            return None  # the caller cancels p
        self.device.cancel(p)
        self._failed = framing_error(str(err), offset)
        self._stash = None
        raise self._failed from None

    def _dispatch(self, p: Packet, buf: memoryview, off: int, end: int, offset: int, copied: bool,
                  result: RecordResult) -> None:
        if type(result) is tuple:
            self._send_in_place(p, buf, result[0], result[1], copied)
        elif type(result) is list:
            # The first IP packet stays in place if nothing must be delivered before it.
            first = None
            data_seen = False
            for item in result:
                kind = type(item)
                if kind is tuple:
                    if not data_seen:
                        first = item
                    else:
                        self._copies.append(bytes(buf[item[0] : item[1]]))
                        self.stats.rx_copy_bytes += item[1] - item[0]
                    data_seen = True
                elif kind is bytes:  # already copied out by the framing
                    self._copies.append(item)
                    data_seen = True
                else:
                    self._event(item, end - off, offset)
            if first is None:
                self.device.cancel(p)
            else:
                self._send_in_place(p, buf, first[0], first[1], copied)
        elif isinstance(result, Compressed):
            payload = bytes(buf[result.start : result.end])
            self.device.cancel(p)
            self._copies.append((payload, offset))  # decompressed in turn by _drain_copies
        else:
            self.device.cancel(p)
            if result is not None:
                self._event(result, end - off, offset)

    def _event(self, event: Event, length: int, offset: int) -> None:
        if isinstance(event, Dropped):
            self._drop(length, event.reason, offset)
        else:
            self.stats.rx_control += 1
            self._events.append(event)

    def _send_in_place(self, p: Packet, buf: memoryview, start: int, end: int, copied: bool = False) -> None:
        n = end - start
        if start != p.start:
            # The header was not the size we placed the record for (PPP header
            # compression, short headroom): move the IP packet to the slot's data.
            buf[p.start : p.start + n] = buf[start:end]
            self.stats.rx_copy_bytes += n
            copied = True
        if copied:
            self.stats.rx_copies += 1
        self._shrink_and_send(p, n)
        self.stats.rx_packets += 1
        self.stats.rx_bytes += n

    def _decompress(self, payload: bytes, offset: int) -> None:
        if self._decompressor is None:
            raise framing_error("compressed record but no compression was negotiated", offset)
        dev = self.device
        q = dev.allocate(max(DECOMPRESS_MIN_BYTES, self.mtu))
        try:
            n = self._decompressor.decompress_into(payload, q.data)
        except FramingError as err:
            dev.cancel(q)
            raise framing_error(f"compressed record: {err}", offset) from None
        except Exception as err:  # a decompressor's own error type: same meaning
            dev.cancel(q)
            raise framing_error(f"compressed record: {err}", offset) from None
        dev.shrink_and_send(q, n)
        self.stats.rx_decompressed += 1
        self.stats.rx_packets += 1
        self.stats.rx_bytes += n

    def _stash_bytes(self, view: memoryview) -> None:
        data = bytes(view)
        self.stats.rx_copy_bytes += len(data)
        if self._stash is not None:
            data = bytes(self._stash) + data
        self._stash = memoryview(data)

    def _drain(self, soft: bool = False) -> None:
        """Copy queued packets into the device and parse stashed stream bytes.

        ``soft``: stop quietly when the ring is full (the rest waits for the
        next ``want()``); otherwise RingFull propagates.
        """
        try:
            self._drain_copies()
            while self._stash is not None:
                self._parse_stash()
                self._drain_copies()
        except RingFull:
            if not soft:
                raise

    def _drain_copies(self) -> None:
        copies = self._copies
        dev = self.device
        stats = self.stats
        while copies:
            data = copies[0]
            if type(data) is tuple:  # (compressed payload, offset): RingFull leaves it queued
                copies.popleft()
                try:
                    self._decompress(*data)
                except RingFull:
                    copies.appendleft(data)
                    raise
                continue
            dev.write(data)  # allocate + copy + send; RingFull leaves it queued
            copies.popleft()
            stats.rx_copies += 1
            stats.rx_packets += 1
            stats.rx_bytes += len(data)

    def _parse_stash(self) -> None:
        """Take one record (or the start of one) from the stash."""
        stash = self._stash
        assert stash is not None
        n = len(stash)
        need = 0
        if n >= self.min_header:
            need = self._checked_length(stash, 0)
        if need and n >= need:
            # A whole record in the stash: deliver it by copying.
            rest = stash[need:]
            self._stash = rest if len(rest) else None
            offset = self._offset
            self._offset += need
            self._deliver_copy(stash, need, offset)
            return
        # The start of a record: place it in a new packet and read the rest in place.
        self._start_packet()
        p = self._pkt
        assert p is not None
        if need > self._room or n > self._room:
            self._fail(f"record of {max(need, n)} bytes does not fit the {self._room}-byte packet")
        p.buf[self._base : self._base + n] = stash
        self.stats.rx_copy_bytes += n
        self._have = n
        self._stash = None
        self._partly_copied = True
        self._need = need

    def _deliver_copy(self, buf: memoryview, end: int, offset: int) -> None:
        try:
            result = self._record(buf, 0, end)
        except FramingError as err:
            self._failed = framing_error(str(err), offset)
            self._stash = None
            raise self._failed
        items = result if type(result) is list else [result]
        for item in items:
            if type(item) is tuple:
                # ``buf`` is the stash, private immutable bytes: a view of it stays
                # valid, so the only copy left is the one into the ring.
                self._copies.append(buf[item[0] : item[1]])
                self.stats.rx_copy_bytes += item[1] - item[0]
            elif type(item) is bytes:
                self._copies.append(item)
            elif isinstance(item, Compressed):
                self._copies.append((bytes(buf[item.start : item.end]), offset))
            elif item is not None:
                self._event(item, end, offset)

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

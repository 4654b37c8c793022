"""One client's PPP tunnel on the gateway: TLS stream <-> codec <-> PPP engine, and its TUN port.

A :class:`Link` owns the client's TLS socket once the portal has answered its tunnel request.
Reads go straight into packet memory (``codec.want()``): the encapsulation and PPP headers land
in the headroom, HDLC frames are un-escaped where they lie, and IP packets are shrunk and sent to
the link's :class:`ClientPort`.  The port is the Device the codec delivers into: it admits a
packet to the gateway's TUN only if it is a well-formed IP packet of a network protocol the
engine has opened, from the address the client was given, and writes it to the TUN straight
from packet memory; anything else is dropped and counted by reason.  Packets the gateway routes
to the client are encoded in their own headroom and encrypted from there
(:class:`~tunring.apps.serve.tls.TlsStream`); the gateway flushes the records of a burst in one
system call.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import struct
from collections import Counter
from dataclasses import dataclass, field

from ...device import Device
from ...errors import FramingError, PacketError, RingClosed, RingFull
from ...linux.offload import VNET_HDR_LEN, ZERO_HDR
from ...linux.tun import SEND_BLOCKED, TunDevice
from ...packet import ALLOCATED, Packet
from ...pool import PacketPool, PoolDevice
from ...proto import FRAMINGS
from ...proto.base import STREAM_MIN_PAYLOAD_BYTES as MAX_RECORD_PAYLOAD
from ...proto.base import Control, Dropped
from ...proto.ppp_engine import ACCM_ALL, LCP, LayerUp, LinkFinished, PppConfig, PppEngine
from ...proto.rfc1662 import max_encoded_size
from .addresses import interface_id
from .portal import Login, TunnelStart
from .tls import TlsStream

log = logging.getLogger(__name__)

PORT_PACKETS = 8  # the codec holds one packet at a time; copies of aggregates take a few more
READ_BUDGET = 64  # TLS records per readiness event, so that one busy client cannot starve the others
_U16 = struct.Struct(">H")


@dataclass
class LinkStats:
    rx_packets: int = 0  # IP packets admitted to the TUN
    rx_bytes: int = 0
    tx_packets: int = 0  # IP packets sent to the client
    tx_bytes: int = 0
    handover_copy_bytes: int = 0  # bytes read with the tunnel request, copied into the codec
    drops: Counter = field(default_factory=Counter)  # reason -> count, both directions


class _Port(Device):
    """What both ports share: the link, admission counting, no receive side."""

    link: Link

    def _refused(self, packet: Packet, reason: str) -> None:
        link = self.link
        link.stats.drops[reason] += 1
        log.debug("%s: dropped a %d-byte packet from the client: %s", link.name, len(packet), reason)

    def receive(self) -> Packet | None:
        return None  # the gateway reads the TUN itself and routes to links

    def release(self, packet: Packet) -> None:
        raise PacketError("a client port hands out no received packets")

    def wait(self, timeout_s: float | None = None) -> bool:
        return False

    def fileno(self) -> int:
        return self.link.tun.fileno()

    def flush(self) -> None:
        """Hand what was admitted since the last flush to the TUN."""


class TunPort(_Port):
    """The Device a plain-framing client's codec delivers into (F5, Fortinet).

    Packets come from the gateway TUN's own pool, so the codec reads each frame straight into
    TUN packet memory; admitted packets are kept until :meth:`flush` (the end of a TLS read
    burst) and sent with ``send_many``, which writes consecutive segments of one TCP flow as one
    GSO write: the kernel then runs its TCP receive path once per run, not once per segment.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self.tun = link.tun
        self.mtu = link.mtu
        self.headroom = self.tun.headroom
        self.tailroom = self.tun.tailroom
        self.batch: list[Packet] = []

    def allocate(self, size: int) -> Packet:
        return self.tun.allocate_many(size, 1)[0]

    def shrink_and_send(self, packet: Packet, size: int | None = None) -> None:
        if size is not None:
            if not 0 <= size <= len(packet):
                raise PacketError(f"shrink_and_send({size}): can only shrink a {len(packet)}-byte packet")
            packet.end = packet.start + size
        self.send(packet)

    def send(self, packet: Packet) -> None:
        reason = self.link.admit(packet.data)
        if reason is None:
            self.batch.append(packet)
        else:
            self._refused(packet, reason)
            self.tun.cancel(packet)

    def cancel(self, packet: Packet) -> None:
        self.tun.cancel(packet)

    def flush(self) -> None:
        batch = self.batch
        if not batch:
            return
        self.batch = []
        stats = self.link.stats
        try:
            self.tun.send_many(batch)
        except (RingFull, RingClosed):
            unsent = [p for p in batch if p.state == ALLOCATED]  # send_many keeps the rest the caller's
            for p in unsent:
                self.tun.cancel(p)
            stats.drops["TUN queue full"] += len(unsent)
            batch = [p for p in batch if p.state != ALLOCATED]
        stats.rx_packets += len(batch)
        stats.rx_bytes += sum(p.end - p.start for p in batch)

    def close(self) -> None:
        for p in self.batch:
            self.tun.cancel(p)
        self.batch = []


class ClientPort(PoolDevice, _Port):
    """The Device an HDLC client's codec delivers into: a pool of its own, because an HDLC frame
    is read into room for its worst-case escaping (twice the MRU), more than the TUN's packets
    hold; admitted packets are written to the TUN one by one, straight from that memory."""

    def __init__(self, link: Link, room: int, headroom: int) -> None:
        self.link = link
        self.tun = link.tun
        self.mtu = link.mtu
        self._vnet = VNET_HDR_LEN if self.tun.offload else 0  # the TUN wants a virtio header first
        self.headroom = max(headroom, self._vnet)
        self.tailroom = 0
        self.max_packet = room
        self._pool = PacketPool(PORT_PACKETS, room, self.headroom, 0, self)
        self._last = None
        self._closed = False

    def send(self, packet: Packet) -> None:
        self._check(packet, ALLOCATED, "send")
        data = packet.data
        link = self.link
        reason = link.admit(data)
        if reason is None:
            start, vnet = packet.start, self._vnet
            packet.buf[start - vnet : start] = ZERO_HDR[:vnet]  # over the PPP header, already read
            try:
                written = write_to_tun(self.tun, packet.buf[start - vnet : packet.end])
            except RingClosed:
                written = False
            if written:
                link.stats.rx_packets += 1
                link.stats.rx_bytes += len(data)
            else:
                link.stats.drops["TUN queue full"] += 1
        else:
            self._refused(packet, reason)
        if self._last is packet:
            self._last = None
        self._pool.give(packet)

    def close(self) -> None:
        self._closed = True


def write_to_tun(tun: TunDevice, view: memoryview) -> bool:
    """Write one packet from memory that is not the TUN's own (an HDLC port's pool); False if
    the kernel queue is full.  A packet the kernel refuses is logged and counted as written."""
    try:
        os.write(tun.fileno(), view)
    except OSError as e:
        if e.errno in SEND_BLOCKED:
            return False
        if e.errno == errno.EBADF:
            raise RingClosed(f"TUN device {tun.name} is closed") from None
        log.debug("%s: kernel refused a %d-byte packet: %s", tun.name, len(view), e.strerror)
    return True


def _ipv4_reason(data, source: bytes | None, mtu: int) -> str | None:
    n = len(data)
    if source is None:
        return "IPv4 before IPCP is open"
    if n < 20 or (data[0] & 0x0F) < 5 or _U16.unpack_from(data, 2)[0] != n:
        return "malformed IPv4 header"
    if data[12:16] != source:
        return "IPv4 source is not the client's address"
    return "larger than the MTU" if n > mtu else None


def _ipv6_reason(data, source: bytes | None, mtu: int) -> str | None:
    n = len(data)
    if source is None:
        return "IPv6 before IPV6CP is open"
    if n < 40 or 40 + _U16.unpack_from(data, 4)[0] != n:
        return "malformed IPv6 header"
    if data[8:24] != source:
        return "IPv6 source is not the client's address"
    return "larger than the MTU" if n > mtu else None


class Link:
    """One tunnel; the gateway calls ``readable``, ``writable``, ``deliver`` and ``tick``."""

    def __init__(self, tls: TlsStream, start: TunnelStart, gateway, now: float) -> None:
        self.tls = tls
        self.login: Login = start.login
        self.name = f"{start.login.user}@{start.login.lease.ipv4}"  # type: ignore[union-attr]
        self.gateway = gateway
        self.tun = gateway.tun
        self.mtu = gateway.settings.mtu
        self.stats = LinkStats()
        self.closed = False
        self.reason = ""
        self.hdlc = start.framing != "f5" and start.framing != "fortinet"
        self.engine = PppEngine(self._ppp_config(start, gateway))
        codec_class = FRAMINGS[start.framing]
        self.port: _Port
        if self.hdlc:
            max_payload = max(MAX_RECORD_PAYLOAD, self.mtu)
            self.port = ClientPort(self, max_encoded_size(max_payload + 4), codec_class.headroom)
        else:
            # Frames are read into TUN packets, which hold the MRU: a longer frame is a framing error.
            max_payload = self.mtu
            self.port = TunPort(self)
        self.codec = codec_class(self.port, max_payload=max_payload)
        self.establish_deadline = now + gateway.settings.ppp_timing.budget_s()
        # (IPv4, IPv6) source addresses admitted, set once their network protocol is open
        self._sources: tuple[bytes | None, bytes | None] = (None, None)
        self._send_controls(self.engine.start(now))

    @staticmethod
    def _ppp_config(start: TunnelStart, gateway) -> PppConfig:
        s = gateway.settings
        lease = start.login.lease
        assert lease is not None  # the portal only starts tunnels for logins with addresses
        pool6 = gateway.portal.pool6
        ipv6 = start.ipv6 and lease.ipv6 is not None and pool6 is not None
        return PppConfig(
            mru=s.mtu, max_mru=s.mtu, min_peer_mru=s.mtu, hdlc=start.framing == "f5-hdlc", rx_accm=0,
            # Not asking for header compression, nor accepting OpenConnect's: it compresses what it sends
            # once we ack its own PFC/ACFC, and the codecs place records for the full 4-byte header.
            request_compression=False, accept_compression=False,
            ipv4=start.ipv4, local_ipv4=gateway.portal.pool4.gateway, peer_ipv4=lease.ipv4,
            dns=tuple(a for a in s.dns if a.version == 4), ipv6=ipv6,
            local_iid=interface_id(pool6.gateway) if ipv6 else None,
            peer_iid=interface_id(lease.ipv6) if ipv6 and lease.ipv6 is not None else None,
            echo_interval_s=s.echo_interval_s, echo_failures=s.echo_failures, timing=s.ppp_timing)

    # -- client -> TUN ------------------------------------------------------------------
    def admit(self, data) -> str | None:
        """None if ``data`` may go to the TUN, else why not."""
        version = data[0] >> 4 if len(data) else 0
        if version == 4:
            return _ipv4_reason(data, self._sources[0], self.mtu)
        if version == 6:
            return _ipv6_reason(data, self._sources[1], self.mtu)
        return "not an IP packet"

    def feed(self, data: bytes, now: float) -> None:
        """Bytes read with the tunnel request: copied into the codec (counted)."""
        view = memoryview(data)
        while len(view) and not self.closed:
            room = self.codec.want()
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.stats.handover_copy_bytes += n
            view = view[n:]
            self._received(n, now)
        self.port.flush()

    def readable(self, now: float) -> bool:
        """Read what TLS has (up to READ_BUDGET records); True if more may be waiting."""
        tls, codec = self.tls, self.codec
        for _ in range(READ_BUDGET):
            try:
                n = tls.recv_into(codec.want())
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, RingFull):
                self.port.flush()
                return False
            except (OSError, FramingError) as e:
                self.close(f"read failed: {e}")
                return False
            if n == 0:
                self.close("the client closed the connection")
                return False
            self._received(n, now)
            if self.closed:
                return False
        self.port.flush()
        return True

    def _received(self, n: int, now: float) -> None:
        try:
            events = self.codec.received(n)
        except FramingError as e:
            self.stats.drops["framing error"] += 1
            self.close(f"framing error: {e}")
            return
        for event in events:
            if type(event) is Control:
                self._send_controls(self.engine.receive(event.kind, event.payload, now))
            elif type(event) is Dropped:
                self.stats.drops[f"bad frame: {event.reason}"] += 1

    # -- TUN -> client ------------------------------------------------------------------
    def deliver(self, packet: Packet) -> None:
        """A packet the gateway routed to this client: encoded in place and written (not released here)."""
        data = packet.data
        version = data[0] >> 4
        if not (self.engine.ipv4_open if version == 4 else self.engine.ipv6_open) or self.closed:
            self.stats.drops["to the client before its network protocol is open"] += 1
            return
        self.stats.tx_packets += 1
        self.stats.tx_bytes += len(data)
        self._write(self.codec.encode(packet))

    def _send_controls(self, frames: list[Control]) -> None:
        codec = self.codec
        for frame in frames:
            if self.hdlc:  # RFC 1662 7.1: LCP with every control character escaped
                codec.tx_accm = ACCM_ALL if frame.kind == LCP else self.engine.tx_accm  # type: ignore[attr-defined]
            self._write(memoryview(codec.encode_control(frame)))
        self._engine_events()

    def _engine_events(self) -> None:
        engine = self.engine
        if self.hdlc:
            self.codec.rx_accm = engine.rx_accm  # type: ignore[attr-defined]
            self.codec.tx_accm = engine.tx_accm  # type: ignore[attr-defined]
        lease = self.login.lease
        for event in engine.take_events():
            if isinstance(event, LinkFinished):
                self.close(event.reason)
            elif isinstance(event, LayerUp) and event.protocol != LCP:
                log.info("%s: %s open", self.name, "IPv4" if event.protocol == 0x8021 else "IPv6")
        self._sources = (lease.ipv4.packed if lease and engine.ipv4_open else None,
                         lease.ipv6.packed if lease and lease.ipv6 and engine.ipv6_open else None)

    # -- TLS output ---------------------------------------------------------------------
    def _write(self, view) -> None:
        """Encrypt one record from ``view`` (packet memory, no copy); the gateway flushes."""
        tls = self.tls
        if tls.backed_up:
            self.stats.drops["TLS output backed up"] += 1
            return
        try:
            tls.write(view)
        except ssl.SSLError as e:
            self.close(f"TLS write failed: {e}")
            return
        self.gateway.dirty.add(self)

    def writable(self) -> None:
        """Send encrypted records to the socket (as much as it takes)."""
        try:
            self.tls.flush()
        except OSError as e:
            self.close(f"write failed: {e}")

    # -- time and the end ---------------------------------------------------------------
    def tick(self, now: float) -> None:
        engine = self.engine
        deadline = engine.deadline
        if deadline is not None and now >= deadline:
            self._send_controls(engine.tick(now))
        if not self.closed and not engine.network_open and now >= self.establish_deadline:
            self.close("the PPP negotiation did not finish in time")

    def terminate(self, now: float, reason: str) -> None:
        """End the link cleanly: LCP Terminate-Request (the engine finishes on the Ack or timeout)."""
        self._send_controls(self.engine.close(now, reason))

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self.port.flush()
        held = self.codec.packet  # the packet the next frame would have been read into
        if held is not None and held.state == ALLOCATED:
            self.port.cancel(held)
        self.port.close()
        self.tls.flush_quietly()  # best effort: a Terminate-Ack, the last records
        s = self.stats
        log.info("%s: tunnel closed (%s); in %d packets/%d bytes, out %d/%d, drops %s", self.name, reason,
                 s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes, dict(s.drops) or "none")
        self.gateway.link_closed(self)

"""A PPP engine (RFC 1661 LCP, RFC 1332/1877 IPCP, RFC 5072 IPV6CP), sans-I/O, for either end of a link.

The engine is fed the control frames a PPP codec surfaces (``Control(kind=protocol, payload)``
from :mod:`tunring.proto.ppp`, :mod:`~tunring.proto.f5`, :mod:`~tunring.proto.fortinet`,
:mod:`~tunring.proto.hdlc`) and the caller's clock, and returns the control frames to send, as
``Control(protocol, payload)`` for the codec's ``encode_control``.  It never touches a socket, a
thread or a clock: every call takes ``now`` (seconds, any monotonic origin) and
:attr:`PppEngine.deadline` says when :meth:`PppEngine.tick` is next due.  Data frames (IPv4,
IPv6) never pass through it: the codec delivers them; the caller asks :attr:`ipv4_open` /
:attr:`ipv6_open` whether their network protocol is open.

Roles come from :class:`PppConfig`: a gateway assigns the peer's IPv4 address (``peer_ipv4``: it
naks any other), offers DNS servers (RFC 1877) and suggests the peer's IPv6 interface identifier;
a client asks for an address (``local_ipv4=None`` sends 0.0.0.0 and adopts the address the peer
naks with) and can solicit DNS servers.  Each control protocol runs RFC 1661's automaton
(:mod:`tunring.proto.ppp_fsm`) with its restart timer and counters.

State changes surface as events (:meth:`take_events`): :class:`LayerUp` / :class:`LayerDown` per
protocol and :class:`LinkFinished` once, when the link is over (terminated by either side, timed
out, never agreed, looped back, or stopped answering echoes).
"""

from __future__ import annotations

import ipaddress
import logging
import random as _random
import struct
from dataclasses import dataclass, field

from .base import Control
from .ppp_fsm import (
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    DISCARD_REQUEST,
    ECHO_REPLY,
    ECHO_REQUEST,
    HEADER_BYTES,
    OPENED,
    PROTOCOL_REJECT,
    STARTING,
    Fsm,
    Option,
    Timing,
    pack_packet,
)

log = logging.getLogger(__name__)

LCP = 0xC021
IPCP = 0x8021
IPV6CP = 0x8057
IPV4 = 0x0021
IPV6 = 0x0057

# LCP options (RFC 1661 6, RFC 1662 7.1 for the ACCM)
MRU = 1
ACCM = 2
AUTH_PROTOCOL = 3
MAGIC_NUMBER = 5
PFC = 7
ACFC = 8
# IPCP options (RFC 1332, RFC 1877)
IP_ADDRESS = 3
PRIMARY_DNS = 129
SECONDARY_DNS = 131
# IPV6CP options (RFC 5072)
INTERFACE_ID = 1

DEFAULT_MRU = 1500
MIN_MRU = 128  # below this a link is useless: such an MRU is nak'd
ACCM_ALL = 0xFFFFFFFF
FULL_HEADER_BYTES = 4  # FF 03 + 2-byte protocol
_OPTION_BYTES = {MRU: 2, ACCM: 4, MAGIC_NUMBER: 4, PFC: 0, ACFC: 0}
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_ZERO4 = bytes(4)
_ZERO8 = bytes(8)

# Phases (RFC 1661 3.2; no Authenticate phase: the VPN's HTTP login did that)
DEAD, ESTABLISH, NETWORK, TERMINATE = "Dead", "Establish", "Network", "Terminate"


# -- events ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerUp:
    """A control protocol reached Opened: LCP (the link), IPCP (IPv4) or IPV6CP (IPv6)."""

    protocol: int


@dataclass(frozen=True)
class LayerDown:
    protocol: int


@dataclass(frozen=True)
class LinkFinished:
    """The link is over; nothing more will be sent.  ``reason`` says why, for the log."""

    reason: str


@dataclass
class PppStats:
    rx_frames: int = 0
    tx_frames: int = 0
    rx_malformed: int = 0  # too short, bad length field, bad options
    rx_ignored: int = 0  # stale replies, events the automaton has no entry for, NCP frames before LCP is up
    rx_unknown_protocol: int = 0  # answered with Protocol-Reject (or dropped before LCP is up)
    loopbacks: int = 0  # our own Magic-Number came back
    echo_requests: int = 0
    echo_replies: int = 0


@dataclass
class PppConfig:
    """What one end wants.  Addresses are ``ipaddress`` objects or strings; see the module docstring."""

    mru: int = DEFAULT_MRU  # asked of the peer (what we receive)
    max_mru: int = DEFAULT_MRU  # the largest MRU we adopt when the peer naks ours
    min_peer_mru: int = 0  # a smaller MRU from the peer is nak'd once with this value
    hdlc: bool = False  # negotiate an ACCM (HDLC-like framing)
    rx_accm: int = 0  # the ACCM we ask for (HDLC)
    magic: bool = True
    request_compression: bool = False  # ask for PFC/ACFC (the peer may then send compressed headers)
    accept_compression: bool = True  # ack the peer's PFC/ACFC (we may send compressed headers)
    ipv4: bool = True
    local_ipv4: ipaddress.IPv4Address | None = None  # None: ask for one (client); strings are parsed
    peer_ipv4: ipaddress.IPv4Address | None = None  # the address the peer must use (gateway)
    dns: tuple = ()  # IPv4 DNS servers offered (gateway)
    request_dns: bool = False  # solicit DNS servers (client)
    ipv6: bool = False
    local_iid: bytes | None = None  # our IPv6 interface identifier (8 bytes; None: random)
    peer_iid: bytes | None = None  # suggested to a peer that sends zero or ours (gateway)
    echo_interval_s: float = 0.0  # LCP Echo-Request period once open (0: none)
    echo_failures: int = 3  # unanswered echoes before the link is declared dead
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        self.local_ipv4 = None if self.local_ipv4 is None else ipaddress.IPv4Address(self.local_ipv4)
        self.peer_ipv4 = None if self.peer_ipv4 is None else ipaddress.IPv4Address(self.peer_ipv4)
        self.dns = tuple(ipaddress.IPv4Address(a) for a in self.dns)
        for name in ("local_iid", "peer_iid"):
            value = getattr(self, name)
            if value is not None and (len(value) != 8 or value == _ZERO8):
                raise ValueError(f"{name} must be 8 bytes, not all zero")


def _u16(value: bytes) -> int:
    return _U16.unpack(value)[0]


def _check_reply(options: list[Option], reject_naks: bool, rejects: list[Option],
                 naks: list[Option]) -> tuple[int, list[Option]]:
    """RFC 1661 5.2-5.4: rejects take precedence over naks, naks over an ack."""
    if rejects:
        return CONFIGURE_REJECT, rejects
    if naks:
        return (CONFIGURE_REJECT if reject_naks else CONFIGURE_NAK), naks
    return CONFIGURE_ACK, options


# -- LCP -------------------------------------------------------------------------------
class LcpOptions:
    """LCP's options: MRU, ACCM, Magic-Number, PFC, ACFC; anything else is rejected."""

    def __init__(self, config: PppConfig, rng: _random.Random) -> None:
        self.config = config
        self.rng = rng
        self.loopbacks = 0
        self.magic = 0
        self._mru_coaxed = False
        self.reset()
        self.agreed([])
        self.acked([])

    def new_magic(self) -> int:
        value = 0
        while value == 0 or value == self.magic:
            value = self.rng.getrandbits(32)
        return value

    def reset(self) -> None:
        c = self.config
        self.want = {MRU: c.mru != DEFAULT_MRU, ACCM: c.hdlc, MAGIC_NUMBER: c.magic,
                     PFC: c.request_compression, ACFC: c.request_compression}
        self.mru = c.mru
        self.accm = c.rx_accm
        self.magic = self.new_magic() if c.magic else 0

    def request(self) -> list[Option]:
        values = {MRU: _U16.pack(self.mru), ACCM: _U32.pack(self.accm), MAGIC_NUMBER: _U32.pack(self.magic),
                  PFC: b"", ACFC: b""}
        return [(kind, values[kind]) for kind in (MRU, ACCM, MAGIC_NUMBER, PFC, ACFC) if self.want[kind]]

    def check(self, options: list[Option], reject_naks: bool) -> tuple[int, list[Option]]:
        rejects: list[Option] = []
        naks: list[Option] = []
        c = self.config
        for kind, value in options:
            if _OPTION_BYTES.get(kind) != len(value) or (kind in (PFC, ACFC) and not c.accept_compression):
                rejects.append((kind, value))
            elif kind == MRU and _u16(value) < MIN_MRU:
                naks.append((MRU, _U16.pack(max(MIN_MRU, c.min_peer_mru or DEFAULT_MRU))))
            elif kind == MRU and _u16(value) < c.min_peer_mru and not self._mru_coaxed:
                self._mru_coaxed = True  # once: a peer that insists gets its way (as OpenConnect does)
                naks.append((MRU, _U16.pack(c.min_peer_mru)))
            elif kind == MAGIC_NUMBER and (value == _ZERO4 or (self.magic and _U32.unpack(value)[0] == self.magic)):
                if value != _ZERO4:
                    self.loopbacks += 1  # RFC 1661 6.4: our own number came back; both sides pick anew
                    self.magic = self.new_magic()
                naks.append((MAGIC_NUMBER, _U32.pack(self.new_magic())))
        return _check_reply(options, reject_naks, rejects, naks)

    def agreed(self, options: list[Option]) -> None:
        """We acked the peer's options: what we may send it."""
        got = dict(options)
        self.peer_mru = _u16(got[MRU]) if MRU in got else DEFAULT_MRU
        self.peer_accm = _U32.unpack(got[ACCM])[0] if ACCM in got else ACCM_ALL
        self.peer_magic = _U32.unpack(got[MAGIC_NUMBER])[0] if MAGIC_NUMBER in got else 0
        self.tx_pfc = PFC in got
        self.tx_acfc = ACFC in got

    def acked(self, options: list[Option]) -> None:
        """The peer acked ours: what it may send us."""
        got = dict(options)
        self.rx_mru = _u16(got[MRU]) if MRU in got else DEFAULT_MRU
        self.rx_accm_agreed = _U32.unpack(got[ACCM])[0] if ACCM in got else ACCM_ALL
        self.rx_pfc = PFC in got
        self.rx_acfc = ACFC in got

    def naked(self, options: list[Option], rejected: bool) -> bool:
        sent = {kind for kind, _ in self.request()}
        for kind, value in options:
            if kind not in sent:
                if rejected:
                    return False  # a Reject may only list options we sent
                continue  # a Nak may suggest options we did not send: we do not add any
            if rejected or kind in (PFC, ACFC) or len(value) != _OPTION_BYTES[kind]:
                self.want[kind] = False
            elif kind == MRU:
                suggested = _u16(value)
                if MIN_MRU <= suggested <= self.config.max_mru:
                    self.mru = suggested
            elif kind == ACCM:
                self.accm |= _U32.unpack(value)[0]  # the peer needs more characters escaped
            elif kind == MAGIC_NUMBER:
                self.magic = self.new_magic()
        return True


# -- IPCP -----------------------------------------------------------------------------
class IpcpOptions:
    """IPCP's IP-Address (3) and the RFC 1877 DNS options; IP-Compression and the rest are rejected."""

    def __init__(self, config: PppConfig) -> None:
        self.config = config
        self.peer_address: ipaddress.IPv4Address | None = None
        self.reset()

    def reset(self) -> None:
        c = self.config
        self.local = c.local_ipv4 or ipaddress.IPv4Address(0)
        self.send_address = True
        self.dns: dict[int, ipaddress.IPv4Address] = (
            {PRIMARY_DNS: ipaddress.IPv4Address(0), SECONDARY_DNS: ipaddress.IPv4Address(0)}
            if c.request_dns else {})
        self.local_acked = False

    def request(self) -> list[Option]:
        options = [(IP_ADDRESS, self.local.packed)] if self.send_address else []
        return options + [(kind, address.packed) for kind, address in self.dns.items()]

    def check(self, options: list[Option], reject_naks: bool) -> tuple[int, list[Option]]:
        rejects: list[Option] = []
        naks: list[Option] = []
        c = self.config
        offered = dict(zip((PRIMARY_DNS, SECONDARY_DNS), c.dns[:2], strict=False))
        for kind, value in options:
            if len(value) != 4 or kind not in (IP_ADDRESS, PRIMARY_DNS, SECONDARY_DNS):
                rejects.append((kind, value))
            elif kind == IP_ADDRESS:
                if c.peer_ipv4 is not None and value != c.peer_ipv4.packed:
                    naks.append((IP_ADDRESS, c.peer_ipv4.packed))
                elif c.peer_ipv4 is None and value == _ZERO4:
                    rejects.append((kind, value))  # asks us for an address, and we have none to give
            elif kind not in offered:
                rejects.append((kind, value))
            elif value != offered[kind].packed:
                naks.append((kind, offered[kind].packed))
        return _check_reply(options, reject_naks, rejects, naks)

    def agreed(self, options: list[Option]) -> None:
        got = dict(options)
        self.peer_address = ipaddress.IPv4Address(got[IP_ADDRESS]) if IP_ADDRESS in got else None

    def acked(self, options: list[Option]) -> None:
        self.local_acked = self.send_address

    def naked(self, options: list[Option], rejected: bool) -> bool:
        sent = {kind for kind, _ in self.request()}
        for kind, value in options:
            if kind not in sent or len(value) != 4:
                if rejected:
                    return False
                continue
            if kind == IP_ADDRESS:
                if rejected:
                    self.send_address = False
                elif self.config.local_ipv4 is None and value != _ZERO4:
                    self.local = ipaddress.IPv4Address(value)  # the address the peer assigns us
            elif rejected or value == _ZERO4:
                del self.dns[kind]
            else:
                self.dns[kind] = ipaddress.IPv4Address(value)
        return True


# -- IPV6CP ---------------------------------------------------------------------------
class Ipv6cpOptions:
    """IPV6CP's Interface-Identifier (RFC 5072 4.1); anything else is rejected."""

    def __init__(self, config: PppConfig, rng: _random.Random) -> None:
        self.config = config
        self.rng = rng
        self.peer_iid: bytes | None = None
        self.reset()

    def _random_iid(self, avoid: bytes | None) -> bytes:
        value = _ZERO8
        while value == _ZERO8 or value == avoid:
            value = self.rng.getrandbits(64).to_bytes(8, "big")
        return value

    def reset(self) -> None:
        self.local = self.config.local_iid or self._random_iid(None)
        self.send_iid = True

    def request(self) -> list[Option]:
        return [(INTERFACE_ID, self.local)] if self.send_iid else []

    def check(self, options: list[Option], reject_naks: bool) -> tuple[int, list[Option]]:
        rejects: list[Option] = []
        naks: list[Option] = []
        for kind, value in options:
            if kind != INTERFACE_ID or len(value) != 8:
                rejects.append((kind, value))
            elif value == _ZERO8 or value == self.local:
                suggestion = self.config.peer_iid
                if suggestion is None or suggestion == self.local:
                    suggestion = self._random_iid(self.local)
                naks.append((INTERFACE_ID, suggestion))
        return _check_reply(options, reject_naks, rejects, naks)

    def agreed(self, options: list[Option]) -> None:
        self.peer_iid = dict(options).get(INTERFACE_ID)

    def acked(self, options: list[Option]) -> None:
        pass

    def naked(self, options: list[Option], rejected: bool) -> bool:
        for kind, value in options:
            if kind != INTERFACE_ID or len(value) != 8:
                if rejected:
                    return False
                continue
            if rejected:
                self.send_iid = False
            elif value not in (_ZERO8, self.peer_iid):
                self.local = value
            else:
                self.local = self._random_iid(self.peer_iid)
        return True


# -- the engine ------------------------------------------------------------------------
_NCP_NAMES = {IPCP: "IPCP", IPV6CP: "IPV6CP"}


class PppEngine:
    """One end of a PPP link: LCP, then IPCP and/or IPV6CP, over whatever carries the frames.

    Call :meth:`start` once the transport is up (LCP sends its Configure-Request at once), then
    :meth:`receive` for each control frame, :meth:`tick` when :attr:`deadline` has passed, and
    :meth:`close` to terminate.  Each returns the frames to send, in order.  ``rng`` picks
    Magic-Numbers and interface identifiers (seed it for reproducible tests).
    """

    def __init__(self, config: PppConfig, *, rng: _random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or _random.SystemRandom()
        self.stats = PppStats()
        self.phase = DEAD
        self.reason = ""
        self.lcp_options = LcpOptions(config, self.rng)
        self.ipcp_options = IpcpOptions(config)
        self.ipv6cp_options = Ipv6cpOptions(config, self.rng)
        timing = config.timing
        self.lcp = Fsm(LCP, "LCP", self.lcp_options, timing, self._queue, self._layer)
        self.ncps: dict[int, Fsm] = {}
        if config.ipv4:
            self.ncps[IPCP] = Fsm(IPCP, "IPCP", self.ipcp_options, timing, self._queue, self._layer)
        if config.ipv6:
            self.ncps[IPV6CP] = Fsm(IPV6CP, "IPV6CP", self.ipv6cp_options, timing, self._queue, self._layer)
        self._fsms = {LCP: self.lcp, **self.ncps}
        self._out: list[Control] = []
        self._events: list[LayerUp | LayerDown | LinkFinished] = []
        self._now = 0.0
        self._echo: tuple[int, bytes] = (0, b"")  # the Echo-Request being answered
        self._echo_deadline: float | None = None
        self._echo_ident = -1
        self._echo_missed = 0

    # -- what the caller asks --------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        """When :meth:`tick` must next be called (None: nothing is timed)."""
        times = [f.deadline for f in self._fsms.values() if f.deadline is not None]
        if self._echo_deadline is not None:
            times.append(self._echo_deadline)
        return min(times, default=None)

    @property
    def finished(self) -> bool:
        return self.phase == DEAD and bool(self.reason)

    @property
    def ipv4_open(self) -> bool:
        fsm = self.ncps.get(IPCP)
        return fsm is not None and fsm.state == OPENED and self.phase == NETWORK

    @property
    def ipv6_open(self) -> bool:
        fsm = self.ncps.get(IPV6CP)
        return fsm is not None and fsm.state == OPENED and self.phase == NETWORK

    @property
    def network_open(self) -> bool:
        """Every network protocol that has not given up is open, and at least one is."""
        open_ = [f for f in self.ncps.values() if f.state == OPENED]
        return self.phase == NETWORK and bool(open_) and all(
            f.state == OPENED or f.reason for f in self.ncps.values())

    @property
    def rx_header_bytes(self) -> int:
        """The PPP header size of the data frames the peer sends, by RFC 1661's rules: 4, less 2
        if it agreed to our ACFC, less 1 if it agreed to our PFC (IPv4/IPv6 protocols fit a byte)."""
        o = self.lcp_options
        return FULL_HEADER_BYTES - (2 if o.rx_acfc else 0) - (1 if o.rx_pfc else 0)

    @property
    def tx_accm(self) -> int:
        """The ACCM for non-LCP frames we send over HDLC (LCP's own use all control characters)."""
        return self.lcp_options.peer_accm if self.lcp.state == OPENED else ACCM_ALL

    @property
    def rx_accm(self) -> int:
        """The ACCM the peer agreed to use for what it sends us (all control characters until then)."""
        return self.lcp_options.rx_accm_agreed if self.lcp.state == OPENED else ACCM_ALL

    def take_events(self) -> list[LayerUp | LayerDown | LinkFinished]:
        events, self._events = self._events, []
        return events

    # -- what the caller tells ---------------------------------------------------------
    def start(self, now: float) -> list[Control]:
        """The transport is up: open every protocol; LCP sends its first Configure-Request."""
        self._now = now
        for fsm in self.ncps.values():
            fsm.event("Open", now)
        self.lcp.event("Open", now)
        self.lcp.event("Up", now)
        return self._flush()

    def close(self, now: float, reason: str = "closed") -> list[Control]:
        """Terminate the link (Terminate-Request, then LinkFinished on the Ack or the timeout)."""
        self._now = now
        if not self.reason:
            self.reason = reason
        self.lcp.event("Close", now)
        return self._flush()

    def tick(self, now: float) -> list[Control]:
        """Run the timers due at ``now``."""
        self._now = now
        for fsm in list(self._fsms.values()):
            fsm.timeout(now)
        if self._echo_deadline is not None and now >= self._echo_deadline:
            self._keepalive(now)
        return self._flush()

    def receive(self, protocol: int, payload: bytes, now: float) -> list[Control]:
        """A control frame's protocol and payload (the information field after the PPP header)."""
        self._now = now
        self.stats.rx_frames += 1
        fsm = self._fsms.get(protocol)
        if fsm is None:
            self._unknown_protocol(protocol, payload)
        elif fsm is not self.lcp and self.phase != NETWORK:
            self.stats.rx_ignored += 1  # RFC 1661 3.4: NCP packets before the network phase are discarded
        else:
            self._packet(fsm, payload, now)
        if self.lcp_options.loopbacks > self.config.timing.max_failure and self.phase != DEAD:
            self._abandon("the link is looped back (our Magic-Number keeps coming back)")
        return self._flush()

    # -- inside ---------------------------------------------------------------------------
    def _packet(self, fsm: Fsm, payload: bytes, now: float) -> None:
        if len(payload) < HEADER_BYTES:
            self.stats.rx_malformed += 1
            return
        code, ident = payload[0], payload[1]
        length = _u16(payload[2:4])
        if not HEADER_BYTES <= length <= len(payload):
            self.stats.rx_malformed += 1
            return
        data = bytes(payload[HEADER_BYTES:length])  # octets past the length are padding (RFC 1661 5)
        ignored = fsm.ignored
        if fsm is self.lcp and PROTOCOL_REJECT <= code <= DISCARD_REQUEST:
            self._lcp_extra(code, ident, data, now)
        else:
            fsm.receive(code, ident, data, now)
        self.stats.rx_ignored += fsm.ignored - ignored

    def _unknown_protocol(self, protocol: int, payload: bytes) -> None:
        if protocol in (IPV4, IPV6):
            self.stats.rx_ignored += 1  # data frames belong to the codec; never ours to answer
            return
        self.stats.rx_unknown_protocol += 1
        if self.lcp.state != OPENED:
            return  # RFC 1661 5.7: Protocol-Reject only in the Opened state
        room = max(0, self.lcp_options.peer_mru - HEADER_BYTES - 2)
        rejected = _U16.pack(protocol) + bytes(payload[:room])
        self._queue(LCP, pack_packet(PROTOCOL_REJECT, self.lcp.next_ident(), rejected))

    def _lcp_extra(self, code: int, ident: int, data: bytes, now: float) -> None:
        """LCP's codes 8-11 (Protocol-Reject, Echo-Request/Reply, Discard-Request)."""
        if self.lcp.state != OPENED:
            self.stats.rx_ignored += 1
            return
        magic = self.lcp_options.magic
        looped = magic != 0 and len(data) >= 4 and _U32.unpack(data[:4])[0] == magic
        if code == PROTOCOL_REJECT:
            fsm = self.ncps.get(_u16(data[:2])) if len(data) >= 2 else None
            if fsm is not None:
                fsm.reason = f"{fsm.name}: the peer rejected the protocol"
                fsm.event("RXJ-", now)
            else:
                self.stats.rx_ignored += 1  # a protocol we never sent: RXJ+, nothing to do
        elif looped:
            self.stats.loopbacks += 1
            self.lcp_options.loopbacks += 1
        elif code == ECHO_REQUEST:
            self._echo = (ident, data[4:])
            self.lcp.event("RXR", now)
        elif code == ECHO_REPLY and ident == self._echo_ident:
            self.stats.echo_replies += 1
            self._echo_missed = 0

    def _keepalive(self, now: float) -> None:
        if self._echo_missed >= self.config.echo_failures:
            self._abandon(f"no Echo-Reply to {self._echo_missed} Echo-Requests")
            return
        self._echo_missed += 1
        self._echo_ident = self.lcp.next_ident()
        self.stats.echo_requests += 1
        self._queue(LCP, pack_packet(ECHO_REQUEST, self._echo_ident, _U32.pack(self.lcp_options.magic)))
        self._echo_deadline = now + self.config.echo_interval_s

    def _abandon(self, reason: str) -> None:
        """The link is unusable (dead peer, loop): down and closed without a Terminate exchange."""
        log.info("PPP: %s", reason)
        self.reason = self.reason or reason
        self.lcp.event("Down", self._now)
        self.lcp.event("Close", self._now)

    def _layer(self, action: str, fsm: Fsm) -> None:
        """This-Layer-Up/Down/Started/Finished (and echo answers) from an automaton."""
        if fsm is self.lcp:
            self._lcp_layer(action)
        elif action == "tlu":
            self._events.append(LayerUp(fsm.protocol))
        elif action == "tld":
            self._events.append(LayerDown(fsm.protocol))
        elif action == "tlf" and self.phase == NETWORK and all(f.reason for f in self.ncps.values()):
            # No network protocol is left to open: nothing to carry, so end the link.
            self.reason = self.reason or "; ".join(f.reason for f in self.ncps.values())
            self.lcp.event("Close", self._now)

    def _lcp_layer(self, action: str) -> None:
        now = self._now
        if action == "tls":
            self.phase = ESTABLISH
        elif action == "tlu":
            self.phase = NETWORK
            self._events.append(LayerUp(LCP))
            if self.config.echo_interval_s > 0:
                self._echo_deadline = now + self.config.echo_interval_s
                self._echo_missed = 0
            for ncp in self.ncps.values():
                ncp.reason = ""
                ncp.event("Up", now)
        elif action == "tld":
            self.phase = TERMINATE if self.reason else ESTABLISH
            self._echo_deadline = None
            for ncp in self.ncps.values():
                ncp.event("Down", now)
            self._events.append(LayerDown(LCP))
        elif action == "tlf":
            self.phase = DEAD
            self._echo_deadline = None
            self.reason = self.reason or self.lcp.reason or "the peer terminated the link"
            self._events.append(LinkFinished(self.reason))
        elif action == "ser":
            ident, data = self._echo
            self._queue(LCP, pack_packet(ECHO_REPLY, ident, _U32.pack(self.lcp_options.magic) + data))

    def _queue(self, protocol: int, payload: bytes) -> None:
        self.stats.tx_frames += 1
        self._out.append(Control(protocol, payload))

    def _flush(self) -> list[Control]:
        out, self._out = self._out, []
        return out


def ncp_name(protocol: int) -> str:
    """LCP, IPCP, IPV6CP or the protocol number in hex, for logs."""
    return {LCP: "LCP", **_NCP_NAMES}.get(protocol, f"{protocol:#06x}")


__all__ = ["PppEngine", "PppConfig", "PppStats", "Timing", "LayerUp", "LayerDown", "LinkFinished",
           "LCP", "IPCP", "IPV6CP", "IPV4", "IPV6", "STARTING"]

"""RFC 1661's option negotiation automaton, sans-I/O: one instance per control protocol (LCP, IPCP, IPV6CP).

The state table of RFC 1661 section 4.1 is :data:`TABLE`, written as data so it can be checked
against the RFC line by line: ``TABLE[event][state] = (actions, next state)``.  A state missing
from an event's row is the RFC's "-" (cannot happen): the event is ignored and counted.  What a
protocol adds (which options it asks for, how it answers the peer's) is a :class:`Negotiator`;
what the automaton tells the layer above (This-Layer-Up/Down/Started/Finished) goes to a
callback.  The automaton never reads a clock: every call takes the caller's ``now`` (seconds)
and :attr:`Fsm.deadline` says when :meth:`Fsm.timeout` is due.

Two bounds are added to the RFC's, so that a hostile peer cannot keep a negotiation going for
ever: the restart counter resets on every Configure-Nak/Reject the peer sends (RFC 1661 ``irc``
on RCN), so the automaton also counts *rounds* (Configure-Requests and Configure-Naks/Rejects it
sent since it was last Opened) and gives up, as on a final timeout, past ``max_rounds``; and
after ``max_failure`` Configure-Naks without an Ack it rejects what it would have nak'd (RFC 1661
Max-Failure).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# Codes (RFC 1661 section 5; 8-11 are LCP only).
CONFIGURE_REQUEST = 1
CONFIGURE_ACK = 2
CONFIGURE_NAK = 3
CONFIGURE_REJECT = 4
TERMINATE_REQUEST = 5
TERMINATE_ACK = 6
CODE_REJECT = 7
PROTOCOL_REJECT = 8
ECHO_REQUEST = 9
ECHO_REPLY = 10
DISCARD_REQUEST = 11

HEADER_BYTES = 4  # code, identifier, u16 length
STALE_WINDOW = 16  # a peer request numbered up to this many below the last one answered is a stale copy
_HEADER = struct.Struct(">BBH")

# States (RFC 1661 section 4.2).
INITIAL, STARTING, CLOSED, STOPPED, CLOSING, STOPPING, REQ_SENT, ACK_RCVD, ACK_SENT, OPENED = range(10)
STATE_NAMES = ("Initial", "Starting", "Closed", "Stopped", "Closing", "Stopping",
               "Req-Sent", "Ack-Rcvd", "Ack-Sent", "Opened")
_TIMED = frozenset((CLOSING, STOPPING, REQ_SENT, ACK_RCVD, ACK_SENT))  # states the restart timer runs in

_ = ()  # no action
_LINK_STATES = (CLOSED, STOPPED, CLOSING, STOPPING, REQ_SENT, ACK_RCVD, ACK_SENT, OPENED)

#: RFC 1661 4.1, row by row.  "r" (restart) and "p" (passive) options are not implemented: Open
#: in Stopped/Closing/Stopping keeps the state, as the RFC allows.
TABLE: dict[str, dict[int, tuple[tuple[str, ...], int]]] = {
    "Up": {INITIAL: (_, CLOSED), STARTING: (("irc", "scr"), REQ_SENT)},
    "Down": {CLOSED: (_, INITIAL), STOPPED: (("tls",), STARTING), CLOSING: (_, INITIAL),
             STOPPING: (_, STARTING), REQ_SENT: (_, STARTING), ACK_RCVD: (_, STARTING),
             ACK_SENT: (_, STARTING), OPENED: (("tld",), STARTING)},
    "Open": {INITIAL: (("tls",), STARTING), STARTING: (_, STARTING), CLOSED: (("irc", "scr"), REQ_SENT),
             STOPPED: (_, STOPPED), CLOSING: (_, STOPPING), STOPPING: (_, STOPPING),
             REQ_SENT: (_, REQ_SENT), ACK_RCVD: (_, ACK_RCVD), ACK_SENT: (_, ACK_SENT), OPENED: (_, OPENED)},
    "Close": {INITIAL: (_, INITIAL), STARTING: (("tlf",), INITIAL), CLOSED: (_, CLOSED), STOPPED: (_, CLOSED),
              CLOSING: (_, CLOSING), STOPPING: (_, CLOSING), REQ_SENT: (("irc", "str"), CLOSING),
              ACK_RCVD: (("irc", "str"), CLOSING), ACK_SENT: (("irc", "str"), CLOSING),
              OPENED: (("tld", "irc", "str"), CLOSING)},
    "TO+": {CLOSING: (("str",), CLOSING), STOPPING: (("str",), STOPPING), REQ_SENT: (("scr",), REQ_SENT),
            ACK_RCVD: (("scr",), REQ_SENT), ACK_SENT: (("scr",), ACK_SENT)},
    "TO-": {CLOSING: (("tlf",), CLOSED), STOPPING: (("tlf",), STOPPED), REQ_SENT: (("tlf",), STOPPED),
            ACK_RCVD: (("tlf",), STOPPED), ACK_SENT: (("tlf",), STOPPED)},
    "RCR+": {CLOSED: (("sta",), CLOSED), STOPPED: (("irc", "scr", "sca"), ACK_SENT), CLOSING: (_, CLOSING),
             STOPPING: (_, STOPPING), REQ_SENT: (("sca",), ACK_SENT), ACK_RCVD: (("sca", "tlu"), OPENED),
             ACK_SENT: (("sca",), ACK_SENT), OPENED: (("tld", "scr", "sca"), ACK_SENT)},
    "RCR-": {CLOSED: (("sta",), CLOSED), STOPPED: (("irc", "scr", "scn"), REQ_SENT), CLOSING: (_, CLOSING),
             STOPPING: (_, STOPPING), REQ_SENT: (("scn",), REQ_SENT), ACK_RCVD: (("scn",), ACK_RCVD),
             ACK_SENT: (("scn",), REQ_SENT), OPENED: (("tld", "scr", "scn"), REQ_SENT)},
    "RCA": {CLOSED: (("sta",), CLOSED), STOPPED: (("sta",), STOPPED), CLOSING: (_, CLOSING),
            STOPPING: (_, STOPPING), REQ_SENT: (("irc",), ACK_RCVD), ACK_RCVD: (("scr",), REQ_SENT),
            ACK_SENT: (("irc", "tlu"), OPENED), OPENED: (("tld", "scr"), REQ_SENT)},
    "RCN": {CLOSED: (("sta",), CLOSED), STOPPED: (("sta",), STOPPED), CLOSING: (_, CLOSING),
            STOPPING: (_, STOPPING), REQ_SENT: (("irc", "scr"), REQ_SENT), ACK_RCVD: (("scr",), REQ_SENT),
            ACK_SENT: (("irc", "scr"), ACK_SENT), OPENED: (("tld", "scr"), REQ_SENT)},
    "RTR": {CLOSED: (("sta",), CLOSED), STOPPED: (("sta",), STOPPED), CLOSING: (("sta",), CLOSING),
            STOPPING: (("sta",), STOPPING), REQ_SENT: (("sta",), REQ_SENT), ACK_RCVD: (("sta",), REQ_SENT),
            ACK_SENT: (("sta",), REQ_SENT), OPENED: (("tld", "zrc", "sta"), STOPPING)},
    "RTA": {CLOSED: (_, CLOSED), STOPPED: (_, STOPPED), CLOSING: (("tlf",), CLOSED), STOPPING: (("tlf",), STOPPED),
            REQ_SENT: (_, REQ_SENT), ACK_RCVD: (_, REQ_SENT), ACK_SENT: (_, ACK_SENT),
            OPENED: (("tld", "scr"), REQ_SENT)},
    "RUC": {s: (("scj",), s) for s in _LINK_STATES},
    "RXJ+": {CLOSED: (_, CLOSED), STOPPED: (_, STOPPED), CLOSING: (_, CLOSING), STOPPING: (_, STOPPING),
             REQ_SENT: (_, REQ_SENT), ACK_RCVD: (_, REQ_SENT), ACK_SENT: (_, ACK_SENT), OPENED: (_, OPENED)},
    "RXJ-": {CLOSED: (("tlf",), CLOSED), STOPPED: (("tlf",), STOPPED), CLOSING: (("tlf",), CLOSED),
             STOPPING: (("tlf",), STOPPED), REQ_SENT: (("tlf",), STOPPED), ACK_RCVD: (("tlf",), STOPPED),
             ACK_SENT: (("tlf",), STOPPED), OPENED: (("tld", "irc", "str"), STOPPING)},
    "RXR": {**{s: (_, s) for s in _LINK_STATES}, OPENED: (("ser",), OPENED)},
}


@dataclass(frozen=True)
class Timing:
    """RFC 1661 section 4.6's timer and counters, plus the round bound (see the module docstring)."""

    restart_s: float = 3.0
    max_terminate: int = 2
    max_configure: int = 10
    max_failure: int = 5
    max_rounds: int = 30

    def budget_s(self) -> float:
        """An upper bound on how long one automaton can negotiate before it opens or gives up:
        each restart period either sends a counted round or ends the negotiation."""
        return self.restart_s * (self.max_rounds + self.max_configure + self.max_terminate + 2)


Option = tuple[int, bytes]  # (type, data without the type and length bytes)


def parse_options(data: bytes) -> list[Option] | None:
    """The options of a Configure packet, or None if one is malformed (length < 2 or past the end)."""
    out: list[Option] = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 2 or not 2 <= data[pos + 1] <= end - pos:
            return None
        out.append((data[pos], data[pos + 2 : pos + data[pos + 1]]))
        pos += data[pos + 1]
    return out


def pack_options(options: list[Option]) -> bytes:
    return b"".join(bytes((kind, 2 + len(value))) + value for kind, value in options)


def pack_packet(code: int, ident: int, data: bytes = b"") -> bytes:
    """A control packet: code, identifier, u16 length (header included), data."""
    return _HEADER.pack(code, ident, HEADER_BYTES + len(data)) + data


class Negotiator(Protocol):
    """What a control protocol adds to the automaton: its options."""

    def reset(self) -> None:
        """Start a negotiation afresh (This-Layer-Started): ask for everything wanted again."""

    def request(self) -> list[Option]:
        """The options of our next Configure-Request."""

    def check(self, options: list[Option], reject_naks: bool) -> tuple[int, list[Option]]:
        """Judge the peer's Configure-Request: (CONFIGURE_ACK, options) to accept it, or
        (CONFIGURE_NAK | CONFIGURE_REJECT, the options to nak or reject).  ``reject_naks``:
        Max-Failure was reached, reject what would be nak'd."""

    def agreed(self, options: list[Option]) -> None:
        """We acknowledged the peer's request (these options): what we may send it."""

    def acked(self, options: list[Option]) -> None:
        """The peer acknowledged our request (the options we sent)."""

    def naked(self, options: list[Option], rejected: bool) -> bool:
        """Adjust our next request to the peer's Nak (or Reject); False if the packet is invalid."""


class Fsm:
    """One control protocol's automaton: feed it packets and timeouts, it sends through ``send``.

    ``send(protocol, payload)`` transmits a control packet; ``layer(name, fsm)`` receives
    "tlu", "tld", "tls" and "tlf" (This-Layer-Up/Down/Started/Finished).  ``reason`` is set when
    the automaton gives up (timeout, round bound, catastrophic reject).
    """

    def __init__(self, protocol: int, name: str, negotiator: Negotiator, timing: Timing,
                 send: Callable[[int, bytes], None], layer: Callable[[str, Fsm], None]) -> None:
        self.protocol = protocol
        self.name = name
        self.negotiator = negotiator
        self.timing = timing
        self.state = INITIAL
        self.deadline: float | None = None
        self.reason = ""
        self.ignored = 0  # events the table has no entry for (RFC "-"), and stale replies
        self._send_frame = send
        self._layer = layer
        self._restarts = 0
        self._ident = 0
        self._request: tuple[int, list[Option]] | None = None  # (identifier, options) of our last request
        self._reply: tuple[int, int, list[Option]] = (CONFIGURE_ACK, 0, [])  # what sca/scn send
        self._naks_sent = 0  # Configure-Naks sent since the last Configure-Ack we sent
        self._rounds = 0
        self._peer_ident = 0  # identifier of the peer's packet being answered (sta, scj)
        self._rejected = b""  # the packet scj rejects
        self._last_answered: int | None = None  # identifier of the peer's last Configure-Request answered

    @property
    def opened(self) -> bool:
        return self.state == OPENED

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFF
        return self._ident

    # -- events ------------------------------------------------------------------
    def event(self, name: str, now: float) -> None:
        """Apply one RFC 1661 event (Up, Down, Open, Close, TO+, RCR+, ...) to the automaton."""
        entry = TABLE[name].get(self.state)
        if entry is None:
            self.ignored += 1
            log.debug("%s: event %s in state %s ignored", self.name, name, STATE_NAMES[self.state])
            return
        actions, target = entry
        before = self.state
        for action in actions:
            if not getattr(self, "_" + action)(now, actions):
                return  # the action gave up the negotiation: the state was set already
        self.state = target
        if target not in _TIMED:
            self.deadline = None
        if before != target:
            log.debug("%s: %s -> %s on %s", self.name, STATE_NAMES[before], STATE_NAMES[target], name)

    def timeout(self, now: float) -> None:
        """The restart timer expired (call when ``now >= deadline``)."""
        if self.deadline is None or now < self.deadline:
            return
        self.deadline = None
        if self.state not in _TIMED:
            return
        if self._restarts > 0:
            self.event("TO+", now)
        else:
            awaited = "Terminate-Ack" if self.state in (CLOSING, STOPPING) else "Configure-Ack"
            self.reason = self.reason or f"{self.name}: no {awaited} from the peer"
            self.event("TO-", now)

    def receive(self, code: int, ident: int, data: bytes, now: float) -> None:
        """A packet of this protocol with code ``code``: classify it into an RFC event."""
        if code == CONFIGURE_REQUEST:
            self._configure_request(ident, data, now)
        elif code == CONFIGURE_ACK or code == CONFIGURE_NAK or code == CONFIGURE_REJECT:
            self._configure_reply(code, ident, data, now)
        elif code == TERMINATE_REQUEST:
            self._peer_ident = ident
            self.reason = self.reason or f"{self.name}: the peer sent Terminate-Request"
            self.event("RTR", now)
        elif code == TERMINATE_ACK:
            self.event("RTA", now)
        elif code == CODE_REJECT:
            # Rejecting a code of the negotiation itself leaves nothing to talk about.
            rejected = data[0] if data else 0
            self.reason = f"{self.name}: the peer rejected code {rejected}" if rejected <= CODE_REJECT else ""
            self.event("RXJ-" if 1 <= rejected <= CODE_REJECT else "RXJ+", now)
        else:
            self._peer_ident = ident
            self._rejected = pack_packet(code, ident, data)
            self.event("RUC", now)

    def _configure_request(self, ident: int, data: bytes, now: float) -> None:
        options = parse_options(data)
        if options is None:
            self.ignored += 1
            log.debug("%s: malformed Configure-Request options dropped", self.name)
            return
        last = self._last_answered
        if last is not None and 0 < (last - ident) & 0xFF <= STALE_WINDOW:
            # Older than the last request answered (a copy the link delayed or duplicated): the
            # peer has moved on, and answering it would make us agree to what it no longer asks.
            # Peers number their requests upwards (RFC 1661 only asks for a change); one that
            # numbers at random loses a request now and then to this rule, and retransmits it.
            self.ignored += 1
            return
        self._last_answered = ident
        if self.state in (CLOSED, STOPPED, OPENED) or self.state in _TIMED:
            code, reply = self.negotiator.check(options, self._naks_sent >= self.timing.max_failure)
        else:
            code, reply = CONFIGURE_ACK, options  # the table ignores it here anyway
        self._reply = (code, ident, reply)
        self.event("RCR+" if code == CONFIGURE_ACK else "RCR-", now)

    def _configure_reply(self, code: int, ident: int, data: bytes, now: float) -> None:
        request = self._request
        options = parse_options(data)
        if request is None or ident != request[0] or options is None:
            self.ignored += 1  # not an answer to our last request (RFC 1661 5.2-5.4: silently discard)
            return
        if code == CONFIGURE_ACK:
            if options != request[1]:
                self.ignored += 1
                return
            if self.state in _TIMED or self.state == OPENED:
                self.negotiator.acked(options)
            self._request = None
            self.event("RCA", now)
            return
        if self.state in _TIMED or self.state == OPENED:
            if not self.negotiator.naked(options, code == CONFIGURE_REJECT):
                self.ignored += 1
                return
        self._request = None
        self.event("RCN", now)

    # -- actions (each returns False when it gave the negotiation up) ---------------
    def _start_timer(self, now: float) -> None:
        self.deadline = now + self.timing.restart_s

    def _tlu(self, now: float, actions) -> bool:
        self._rounds = 0
        self.reason = ""
        self._layer("tlu", self)
        return True

    def _tld(self, now: float, actions) -> bool:
        self._layer("tld", self)
        return True

    def _tls(self, now: float, actions) -> bool:
        self.negotiator.reset()
        self._rounds = 0
        self._last_answered = None
        self._layer("tls", self)
        return True

    def _tlf(self, now: float, actions) -> bool:
        self._layer("tlf", self)
        return True

    def _irc(self, now: float, actions) -> bool:
        self._restarts = self.timing.max_terminate if "str" in actions else self.timing.max_configure
        return True

    def _zrc(self, now: float, actions) -> bool:
        self._restarts = 0
        self._start_timer(now)
        return True

    def _spend_round(self, now: float, what: str) -> bool:
        self._rounds += 1
        if self._rounds <= self.timing.max_rounds:
            return True
        self.reason = f"{self.name}: no agreement after {self.timing.max_rounds} rounds ({what})"
        log.info("%s", self.reason)
        self.state = STOPPED
        self.deadline = None
        self._layer("tlf", self)
        return False

    def _scr(self, now: float, actions) -> bool:
        if not self._spend_round(now, "Configure-Request"):
            return False
        options = self.negotiator.request()
        ident = self.next_ident()
        self._request = (ident, options)
        self._restarts -= 1
        self._start_timer(now)
        self._send(CONFIGURE_REQUEST, ident, pack_options(options))
        return True

    def _sca(self, now: float, actions) -> bool:
        _code, ident, options = self._reply
        self._naks_sent = 0
        self.negotiator.agreed(options)
        self._send(CONFIGURE_ACK, ident, pack_options(options))
        return True

    def _scn(self, now: float, actions) -> bool:
        code, ident, options = self._reply
        if not self._spend_round(now, "Configure-Nak/Reject"):
            return False
        if code == CONFIGURE_NAK:
            self._naks_sent += 1
        self._send(code, ident, pack_options(options))
        return True

    def _str(self, now: float, actions) -> bool:
        self._restarts -= 1
        self._start_timer(now)
        self._send(TERMINATE_REQUEST, self.next_ident())
        return True

    def _sta(self, now: float, actions) -> bool:
        self._send(TERMINATE_ACK, self._peer_ident)
        return True

    def _scj(self, now: float, actions) -> bool:
        self._send(CODE_REJECT, self.next_ident(), self._rejected)
        return True

    def _ser(self, now: float, actions) -> bool:
        self._layer("ser", self)  # Echo/Discard: only LCP has them; the engine answers
        return True

    def _send(self, code: int, ident: int, data: bytes = b"") -> None:
        self._send_frame(self.protocol, pack_packet(code, ident, data))

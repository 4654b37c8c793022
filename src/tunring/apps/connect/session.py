"""One CSTP session: records between the TLS connection and the TUN device, timers, control.

Receiving, each TLS read goes straight into a packet the codec allocated on
the TUN device (``tls.recv_into(codec.want())``): OpenSSL returns at most one
TLS record per read and ocserv sends one CSTP record per TLS record, so the
8-byte header lands in the packet's headroom, the IP packet where the kernel
will write it from, and nothing is copied.  Sending, the codec pushes the
header into the headroom of the packet the TUN device read, and that one
buffer goes to ``tls.send``.  Compressed records are decompressed into an
over-allocated packet that is then shrunk.

The loop polls the TLS socket, the TUN descriptor and a wake-up descriptor
(signals), and keeps the server's timers: a DPD request after ``dpd`` seconds
of silence, the session declared dead after twice that, a keepalive after
``keepalive`` seconds without sending.  :meth:`CstpSession.run` returns why it
stopped (see :class:`Stop`); it never raises for a peer's misbehaviour.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import select
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import FramingError, RingFull, TunringError
from ...linux.tun import TunDevice
from ...proto.base import CodecStats, Disconnect, DpdRequest, DpdResponse, Dropped, Event, Keepalive, Terminate
from ...proto.cisco import Cstp
from .dtls import DtlsLink
from .openssl import DtlsError
from .timers import PeerTimers
from .tunnel import TunnelConfig

log = logging.getLogger(__name__)

TLS_READS_PER_WAKE = 64  # records taken from TLS before looking at the TUN side again
TUN_BATCH = 64
WRITE_STALL_S = 30.0  # a TLS write that cannot proceed this long: the connection is dead
BYE_REASON = b"\xb0Aborted by caller"  # 0xb0: a log-out (ocserv invalidates the cookie)


class Stop(enum.Enum):
    """Why a session's loop ended."""

    SIGNAL = "disconnect requested"  # SIGINT/SIGTERM: say goodbye and quit
    HANGUP = "hangup"  # SIGHUP: quit without logging out (the cookie stays valid)
    RECONNECT = "reconnect requested"  # SIGUSR2
    LOST = "connection lost"  # TLS error, EOF, bad stream or DPD timeout: reconnect
    SERVER_DISCONNECT = "server disconnected"  # a CSTP disconnect/terminate record


@dataclass
class Totals:
    """Counters across sessions (reconnects start new codecs on the same TUN device)."""

    rx_packets: int = 0
    rx_bytes: int = 0  # IP bytes delivered to the TUN device
    rx_wire_bytes: int = 0  # record bytes read from TLS and DTLS, headers included
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_wire_bytes: int = 0
    copies: int = 0  # packets any byte of which was memcpy'd (codec rx/tx copies, setup leftovers)
    copy_bytes: int = 0
    drops: int = 0
    dpd_sent: int = 0
    keepalives_sent: int = 0
    reconnects: int = 0
    dtls_rx_packets: int = 0  # of rx_packets, those that came over DTLS
    dtls_tx_packets: int = 0

    def _add_channel(self, stats: CodecStats, rx_wire: int, tx_wire: int) -> None:
        self.rx_packets += stats.rx_packets
        self.rx_bytes += stats.rx_bytes
        self.tx_packets += stats.tx_packets
        self.tx_bytes += stats.tx_bytes
        self.copies += stats.rx_copies + stats.tx_copies
        self.copy_bytes += stats.rx_copy_bytes + stats.tx_copy_bytes
        self.drops += stats.rx_drops
        self.rx_wire_bytes += rx_wire
        self.tx_wire_bytes += tx_wire

    def add_session(self, session: CstpSession) -> None:
        """Add one session's counters: its CSTP codec's, its DTLS link's and its own."""
        self._add_channel(session.codec.stats, session.rx_wire_bytes, session.tx_wire_bytes)
        self.copies += session.leftover_copies
        self.copy_bytes += session.leftover_bytes
        self.dpd_sent += session.timers.dpd_sent
        self.keepalives_sent += session.timers.keepalives_sent
        dtls = session.dtls or session.dropped_dtls
        if dtls is not None:
            self._add_channel(dtls.codec.stats, dtls.rx_wire_bytes, dtls.tx_wire_bytes)
            self.drops += dtls.tx_drops
            self.dpd_sent += dtls.timers.dpd_sent
            self.keepalives_sent += dtls.timers.keepalives_sent
            self.dtls_rx_packets += dtls.codec.stats.rx_packets
            self.dtls_tx_packets += dtls.codec.stats.tx_packets


class CstpSession:
    """The data loop of one tunnel connection; ``signals()`` returns pending signal numbers."""

    def __init__(self, tls: ssl.SSLSocket, tun: TunDevice, cfg: TunnelConfig, wake_fd: int,
                 signals: Callable[[], list[str]], leftover: bytes = b"", tick: Callable[[], None] | None = None,
                 tick_s: float = 1.0, dtls: DtlsLink | None = None) -> None:
        self.tls = tls
        self.dtls = dtls
        self.tun = tun
        self.cfg = cfg
        self.codec = Cstp(tun, compression=cfg.compression, max_payload=tun.max_packet)
        self.wake_fd = wake_fd
        self._signals = signals
        self._tick = tick
        self._tick_s = tick_s
        self.rx_wire_bytes = 0
        self.tx_wire_bytes = 0
        self.leftover_copies = 0
        self.leftover_bytes = 0
        self._control: list[bytes] = []
        self.dropped_dtls: DtlsLink | None = None  # the DTLS link after it closed (its counters)
        self._stop: Stop | None = None
        self.reason = ""
        self.timers = PeerTimers(cfg.dpd_s, cfg.keepalive_s, time.monotonic())
        self.tls_pending = False  # records may wait inside OpenSSL (read-ahead): read before polling
        self._poller: select.poll | None = None
        tls.setblocking(False)
        if leftover:
            # Stream bytes that arrived with the CONNECT reply: copied once, and counted.
            self.leftover_copies, self.leftover_bytes = 1, len(leftover)
            self._handle(self.codec.feed(leftover))

    # -- the loop -------------------------------------------------------------------
    def run(self) -> Stop:
        """Move packets until a signal, the server or a failure stops the session."""
        self._poller = poller = select.poll()
        tls_fd, tun_fd = self.tls.fileno(), self.tun.fileno()
        poller.register(tls_fd, select.POLLIN)
        poller.register(tun_fd, select.POLLIN)
        poller.register(self.wake_fd, select.POLLIN)
        dtls_fd = self.dtls.fileno() if self.dtls is not None else -1
        if self.dtls is not None:
            poller.register(dtls_fd, select.POLLIN)
        next_tick = time.monotonic() + self._tick_s
        # Timers only move later as traffic flows, so a deadline computed once is never late:
        # they are looked at when it passes, not on every wake-up.
        due = min(self._next_due(), next_tick)
        while self._stop is None:
            ready = poller.poll(0 if self.tls_pending else max(0.0, due - time.monotonic()) * 1000)
            if self.tls_pending and not any(fd == tls_fd for fd, _ in ready):
                ready.append((tls_fd, select.POLLIN))
            for fd, _ in ready:
                if fd == tls_fd:
                    self._read_tls()
                elif fd == tun_fd:
                    self._read_tun()
                elif fd == dtls_fd:
                    if self.dtls is not None:  # (it may have died earlier in this round)
                        self._read_dtls()
                else:
                    self._take_signals()
                if self._stop is not None:
                    break
            if self._control and self._stop is None:
                self._flush_control()  # DPD answers
            now = time.monotonic()
            if now < due or self._stop is not None:
                continue
            self._timers(now)
            self._flush_control()
            if now >= next_tick:
                next_tick = now + self._tick_s
                if self._tick is not None:
                    self._tick()
            due = min(self._next_due(), next_tick)
        return self._stop

    def _lose(self, why: str, stop: Stop = Stop.LOST) -> None:
        if self._stop is None:
            self._stop, self.reason = stop, why
            log.log(logging.INFO if stop is Stop.LOST else logging.DEBUG, "session ends: %s", why)

    def _take_signals(self) -> None:
        try:
            os.read(self.wake_fd, 512)
        except BlockingIOError:
            pass
        for name in self._signals():
            stop = {"SIGINT": Stop.SIGNAL, "SIGTERM": Stop.SIGNAL, "SIGHUP": Stop.HANGUP,
                    "SIGUSR2": Stop.RECONNECT}.get(name)
            if stop is not None:
                self._lose(f"{name} received", stop)

    # -- TLS -> TUN -------------------------------------------------------------------
    def _read_tls(self) -> None:
        codec, recv_into = self.codec, self.tls.recv_into
        # With read-ahead OpenSSL may hold records poll() cannot see: until a read says
        # "want read", more may be waiting (the loop comes back at once).
        self.tls_pending = True
        try:
            for _ in range(TLS_READS_PER_WAKE):
                n = recv_into(codec.want())
                if n == 0:
                    self._lose(f"{self._peer()} closed the TLS connection")
                    return
                self.rx_wire_bytes += n
                events = codec.received(n)
                if events:
                    self._handle(events)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self.tls_pending = False
        except (ssl.SSLError, OSError) as e:
            self._lose(f"TLS read from {self._peer()} failed: {e}")
            return
        except FramingError as e:
            self._lose(f"{self._peer()} sent a broken CSTP stream: {e}")
            return
        except RingFull:
            # The kernel refused a write to the TUN device: the packet is dropped (counted).
            self.codec.stats.rx_drops += 1
        self.timers.last_rx = time.monotonic()
        if self.dtls is not None:
            self.codec.release_idle()  # the DTLS codec allocates on the same device

    def _handle(self, events: list[Event], dtls: DtlsLink | None = None) -> None:
        """React to control records (from DTLS when ``dtls`` is given: DPD is answered there)."""
        for event in events:
            if isinstance(event, DpdRequest):
                if dtls is not None:
                    dtls.send_control(DpdResponse(event.payload))
                else:
                    self._control.append(self.codec.encode_control(DpdResponse(event.payload)))
            elif isinstance(event, Disconnect | Terminate):
                raw = event.reason if isinstance(event, Disconnect) else event.payload
                text = raw[1:].decode(errors="replace") or "no reason given"  # a reason code, then text
                self._lose(f"{self._peer()} ended the session: {text}", Stop.SERVER_DISCONNECT)
            elif isinstance(event, Dropped):
                log.debug("dropped a record: %s", event.reason)
            elif not isinstance(event, DpdResponse | Keepalive):
                log.debug("ignored %s", event)

    # -- TUN -> TLS -------------------------------------------------------------------
    def _read_tun(self) -> None:
        tun = self.tun
        try:
            packets = tun.receive_many(TUN_BATCH)
        except TunringError as e:
            self._lose(f"reading {tun.name} failed: {e}")
            return
        try:
            if self.dtls is not None:
                send = self.dtls.send
                for p in packets:
                    send(p)
            else:
                encode, write = self.codec.encode, self._write
                for p in packets:
                    write(encode(p))
        except DtlsError as e:
            self._drop_dtls(str(e))
        finally:
            tun.release_many(packets)

    # -- DTLS ---------------------------------------------------------------------------
    def _read_dtls(self) -> None:
        assert self.dtls is not None
        self.codec.release_idle()  # the CSTP codec's idle packet must not sit under DTLS's
        try:
            events = self.dtls.read()
        except DtlsError as e:
            self._drop_dtls(str(e))
            return
        except FramingError as e:  # a bad compressed datagram: dropped, the channel goes on
            log.debug("DTLS: %s", e)
            return
        if events:
            self._handle(events, self.dtls)

    def _drop_dtls(self, why: str) -> None:
        """DTLS failed: carry on over CSTP (openconnect does the same)."""
        dtls, self.dtls = self.dtls, None
        if dtls is None:
            return
        log.warning("DTLS is down (%s): using CSTP", why)
        if self._poller is not None:
            self._poller.unregister(dtls.fileno())
        self.dropped_dtls = dtls
        dtls.close()

    def _write(self, record) -> None:
        """Write one record: SSL_write sends all of it or nothing (no partial-write mode)."""
        if self._stop is not None and self._stop is not Stop.SIGNAL:
            return
        view = memoryview(record)
        while view:
            try:
                n = self.tls.send(view)
            except ssl.SSLWantWriteError:
                self._wait_writable()
                continue
            except ssl.SSLWantReadError:
                self._wait_writable(read=True)
                continue
            except (ssl.SSLError, OSError) as e:
                if not isinstance(e, OSError) or e.errno != errno.EAGAIN:
                    self._lose(f"TLS write to {self._peer()} failed: {e}")
                    return
                self._wait_writable()
                continue
            self.tx_wire_bytes += n
            view = view[n:]
        self.timers.last_tx = time.monotonic()

    def _wait_writable(self, read: bool = False) -> None:
        """Wait for room in the TCP window, reading meanwhile (the server may be waiting on us)."""
        fd = self.tls.fileno()
        deadline = time.monotonic() + WRITE_STALL_S
        while self._stop is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._lose(f"{self._peer()} took nothing for {WRITE_STALL_S:g} s")
                return
            readable, writable, _ = select.select([fd], [] if read else [fd], [], left)
            if writable:
                return
            if readable:
                self._read_tls()
                if read:
                    return

    # -- timers -------------------------------------------------------------------------
    def _next_due(self) -> float:
        now = time.monotonic()
        due = self.timers.next_due(now)
        return min(due, self.dtls.timers.next_due(now)) if self.dtls is not None else due

    def _timers(self, now: float) -> None:
        due = self.timers.check(now)
        if due.dead_after_s:
            self._lose(f"no answer from {self._peer()} for {due.dead_after_s:.0f} s (DPD {self.cfg.dpd_s} s)")
            return
        if due.dpd:
            self._control.append(self.codec.encode_control(DpdRequest()))
        if due.keepalive:
            self._control.append(self.codec.encode_control(Keepalive()))
        if self.dtls is not None:
            try:
                dead = self.dtls.tick(now)
            except DtlsError as e:
                dead = str(e)
            if dead:
                self._drop_dtls(dead)

    def _flush_control(self) -> None:
        while self._control and self._stop is None:
            self._write(self._control.pop(0))

    # -- the end --------------------------------------------------------------------------
    def say_goodbye(self) -> None:
        """Tell the server we log out (CSTP disconnect, reason 0xb0), best effort."""
        try:
            self.tls.setblocking(True)
            self.tls.settimeout(2.0)
            self.tls.sendall(self.codec.encode_control(Disconnect(BYE_REASON)))
        except (OSError, ssl.SSLError) as e:
            log.debug("could not send the disconnect record: %s", e)

    def close(self) -> None:
        if self.dtls is not None:
            self.dropped_dtls, self.dtls = self.dtls, None
            self.dropped_dtls.close()
        try:
            self.codec.close()
        except FramingError:
            pass  # a record cut short by the end of the connection: nothing to deliver
        try:
            self.tls.close()
        except OSError:
            pass

    def _peer(self) -> str:
        try:
            return self.tls.getpeername()[0]
        except OSError:
            return "the server"

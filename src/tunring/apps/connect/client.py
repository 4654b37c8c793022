"""The whole client: log in, open the tunnel, bring up the TUN device, run, reconnect, tear down.

:class:`Client` follows openconnect's life cycle.  Authentication gives the
``webvpn`` cookie; CONNECT on a TLS connection gives the tunnel configuration;
the TUN device is created with the server's MTU and configured over netlink
(or by the vpnc-script with ``-s``); :class:`~.session.CstpSession` moves the
packets.  When the connection is lost (TLS error, EOF, DPD timeout) or on
SIGUSR2 it reconnects with the same cookie on a new TLS connection, asking for
the same addresses, retrying after 0, 10, 20 ... (at most 100) seconds until
``reconnect_timeout_s`` has passed.  SIGINT/SIGTERM log out (CSTP disconnect)
and remove the interface and routes; SIGHUP leaves without logging out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...errors import DeviceError
from ...linux.tun import TunDevice
from ...proto.base import DECOMPRESS_MIN_BYTES
from . import auth, netconf, openssl, script, tunnel
from .dtls import DtlsLink, dtls_mtu
from .errors import LocalSetupFailed, TunnelLost, Unreachable
from .http import BASE_HEADERS, HttpConnection
from .session import CstpSession, Stop
from .status import Reporter
from .tls import ServerUrl, Trust, open_tls

log = logging.getLogger(__name__)

RECONNECT_STEP_S = 10.0  # openconnect: wait 10 s more before each retry ...
RECONNECT_MAX_WAIT_S = 100.0  # ... up to 100 s
IP_MTU = 14  # getsockopt(IPPROTO_IP, IP_MTU): the path MTU of a connected socket (Linux)
IPV6_MTU = 24
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


@dataclass
class Options:
    """Everything the command line decides."""

    server: ServerUrl
    trust: Trust
    creds: auth.Credentials
    cookie: str | None = None
    interface: str | None = None
    script: str | None = None
    mtu: int | None = None
    compressions: tuple[str, ...] = tunnel.STATELESS
    dtls: bool = True
    reconnect_timeout_s: float = 300.0
    json_stats: str | None = None
    status: bool = True
    log_level: int = 1
    hostname: str = field(default_factory=socket.gethostname)


class Signals:
    """SIGINT/SIGTERM/SIGHUP/SIGUSR2 turned into names read by the loop, waking it via a pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._pending: list[str] = []
        self._old = {s: signal.signal(s, self._on_signal) for s in HANDLED_SIGNALS}
        self._old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, frame) -> None:
        self._pending.append(signal.Signals(signum).name)

    def take(self) -> list[str]:
        pending, self._pending = self._pending, []
        return pending

    def wait(self, timeout_s: float) -> list[str]:
        """Sleep up to ``timeout_s`` or until a signal comes; the signals that came."""
        if not self._pending:
            select.select([self.read_fd], [], [], max(0.0, timeout_s))
            with contextlib.suppress(BlockingIOError):
                os.read(self.read_fd, 512)
        return self.take()

    def close(self) -> None:
        signal.set_wakeup_fd(self._old_wakeup)
        for s, old in self._old.items():
            signal.signal(s, old)
        os.close(self.read_fd)
        os.close(self.write_fd)


@dataclass
class Tunnel:
    """One CONNECT's outcome: the TLS connection carrying CSTP, the configuration, the stream
    bytes that came with the reply, and the DTLS PSK exported from that TLS session (if any)."""

    tls: ssl.SSLSocket
    cfg: tunnel.TunnelConfig
    leftover: bytes = b""
    psk: bytes | None = None


def path_mtu(tls: ssl.SSLSocket) -> int | None:
    with contextlib.suppress(OSError):
        if tls.family == socket.AF_INET6:
            return tls.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return tls.getsockopt(socket.IPPROTO_IP, IP_MTU)
    return None


class Client:
    """One `tunring connect` run; ``run()`` returns the exit code or raises a ConnectError."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self._http: HttpConnection | None = None
        self.gateway = ""
        self.tun: TunDevice | None = None
        self.cfg: tunnel.TunnelConfig | None = None
        self.reporter = Reporter(opts.json_stats, status=opts.status)
        self.ready_callback: Callable[[], None] | None = None  # once the tunnel is up (the CLI's --background)

    # -- logging in and CONNECT ------------------------------------------------------
    def _connection(self) -> HttpConnection:
        if self._http is None:
            tls = open_tls(self.opts.server, self.opts.trust)
            self.gateway = tls.getpeername()[0]
            self._http = HttpConnection(tls, self.opts.server)
        return self._http

    def login(self) -> str:
        """Authenticate and return the cookie (the connection stays open for CONNECT)."""
        cookie = auth.authenticate(self._connection(), self.opts.creds)
        log.info("authenticated to %s", self.opts.server.host)
        return cookie

    def peer_certificate(self) -> bytes | None:
        """The server's certificate (DER) on the open login connection."""
        return self._http.tls.getpeercert(binary_form=True) if self._http is not None else None

    def close(self) -> None:
        """Close the login connection if it is still open (after --authenticate)."""
        if self._http is not None:
            self._http.tls.close()
            self._http = None

    def open_tunnel(self, cookie: str, previous: tunnel.TunnelConfig | None = None) -> Tunnel:
        """CONNECT on the login connection (or a new one)."""
        http, self._http = self._connection(), None
        base = tunnel.base_mtu_for(path_mtu(http.tls))
        mtu = self.opts.mtu or tunnel.tunnel_mtu_for(base, http.tls.family == socket.AF_INET6)
        secret = os.urandom(tunnel.DTLS_SECRET_BYTES) if self.opts.dtls else None
        headers = tunnel.connect_headers(http.server.host, cookie, hostname=self.opts.hostname, mtu=mtu,
                                         base_mtu=base, compressions=self.opts.compressions, previous=previous,
                                         dtls_secret=secret, dtls_compressions=self.opts.compressions)
        http.cookies.clear()  # CONNECT carries the webvpn cookie only
        try:
            reply = http.request("CONNECT", tunnel.TUNNEL_PATH, headers=BASE_HEADERS[:2] + headers,
                                 read_body=False)
            cfg = tunnel.parse_tunnel(reply, http.server.host)
        except BaseException:
            http.tls.close()
            raise
        log.info("tunnel: %s %s mtu %d, dpd %d s, keepalive %d s, compression %s, DTLS %s",
                 cfg.address4, cfg.address6 or "", cfg.mtu, cfg.dpd_s, cfg.keepalive_s, cfg.compression or "none",
                 f"offered on port {cfg.dtls.port}" if cfg.dtls else "not offered")
        if not cfg.base_mtu:
            cfg.base_mtu = base
        psk = None
        if cfg.dtls is not None and self.opts.dtls:
            try:
                psk = openssl.export_psk(http.tls)
            except openssl.Unavailable as e:
                log.warning("no DTLS (staying on CSTP): %s", e)
        openssl.enable_read_ahead(http.tls)
        return Tunnel(http.tls, cfg, http.leftover(), psk)

    def _open_dtls(self, t: Tunnel) -> DtlsLink | None:
        if t.psk is None or t.cfg.dtls is None or self.tun is None:
            return None
        return DtlsLink.open(self.gateway, t.cfg.dtls, t.psk, self.tun, t.cfg.base_mtu)

    @staticmethod
    def tun_mtu(cfg: tunnel.TunnelConfig, dtls: bool) -> int:
        """The interface MTU: the CSTP MTU, or less if DTLS's datagrams hold less (openconnect's rule)."""
        if dtls and cfg.dtls is not None:
            return min(cfg.mtu, cfg.dtls.mtu or dtls_mtu(cfg.base_mtu, 6 if ":" in cfg.dtls.app_id else 4))
        return cfg.mtu

    # -- the local side -----------------------------------------------------------------
    def _script_context(self) -> script.ScriptContext:
        return script.ScriptContext(gateway=self.gateway, tundev=self.tun.name if self.tun else self.opts.interface,
                                    log_level=self.opts.log_level, mtu=self.cfg.mtu if self.cfg else 0)

    def _run_script(self, reason: str, check: bool = True) -> None:
        if self.opts.script:
            script.run_script(self.opts.script, reason, self.cfg, self._script_context(), check=check)

    def _bring_up(self, cfg: tunnel.TunnelConfig) -> netconf.Applied | None:
        """Create the TUN device for ``cfg`` and configure it (netlink, or the script's connect)."""
        mtu = self.tun_mtu(cfg, self.opts.dtls)
        try:
            self.tun = TunDevice.create(self.opts.interface or "tun%d", mtu=mtu, up=not self.opts.script,
                                        max_packet=max(DECOMPRESS_MIN_BYTES, cfg.mtu))
        except DeviceError as e:
            raise LocalSetupFailed(f"cannot create the TUN interface: {e}") from None
        if self.opts.script:
            self._run_script("connect")
            return None
        return netconf.apply(self.tun.name, cfg, self.gateway, mtu)

    def _tear_down(self, applied: netconf.Applied | None) -> None:
        if self.opts.script:
            self._run_script("disconnect", check=False)
        if applied is not None:
            applied.undo()
        if self.tun is not None:
            self.tun.close()  # the kernel removes the interface and the routes through it
            log.info("removed %s", self.tun.name)

    # -- running ----------------------------------------------------------------------
    def run(self, cookie: str) -> int:
        """Bring the tunnel up with ``cookie``, run it until told to stop; 0 on a requested stop."""
        signals = Signals()
        applied = None
        try:
            self._run_script("pre-init")
            t = self.open_tunnel(cookie)
            self.cfg = t.cfg
            applied = self._bring_up(self.cfg)
            if self.ready_callback is not None:
                self.ready_callback()
            return self._loop(cookie, t, signals)
        finally:
            signals.close()
            self._tear_down(applied)
            summary = self.reporter.finish()
            log.info("totals: %s", summary)

    def _loop(self, cookie: str, t: Tunnel, signals: Signals) -> int:
        assert self.tun is not None and self.cfg is not None
        while True:
            session = CstpSession(t.tls, self.tun, self.cfg, signals.read_fd, signals.take, t.leftover,
                                  tick=self.reporter.tick, dtls=self._open_dtls(t))
            self.reporter.session = session
            try:
                stop = session.run()
                if stop is Stop.SIGNAL:
                    session.say_goodbye()
            finally:
                session.close()
                self.reporter.end_session(session)
            if stop in (Stop.SIGNAL, Stop.HANGUP):
                log.info("disconnected: %s", session.reason)
                return 0
            if stop is Stop.SERVER_DISCONNECT:
                raise TunnelLost(session.reason)
            log.warning("%s; reconnecting", session.reason)
            t = self._reconnect(cookie, signals)
            self.reporter.totals.reconnects += 1

    def _reconnect(self, cookie: str, signals: Signals) -> Tunnel:
        """A new TLS connection and CONNECT with the same cookie, retried within the timeout."""
        assert self.cfg is not None
        deadline = time.monotonic() + self.opts.reconnect_timeout_s
        wait_s, attempt, last = 0.0, 0, ""
        while True:
            pending = signals.wait(min(wait_s, max(0.0, deadline - time.monotonic()))) if wait_s else signals.take()
            if any(s in ("SIGINT", "SIGTERM", "SIGHUP") for s in pending):
                raise TunnelLost(f"gave up reconnecting on request (last error: {last or 'none'})")
            attempt += 1
            self._run_script("attempt-reconnect", check=False)
            try:
                t = self.open_tunnel(cookie, previous=self.cfg)
            except (Unreachable, TunnelLost) as e:
                last = str(e)
                log.warning("reconnect attempt %d failed: %s", attempt, e)
            else:
                self._check_same(t.cfg)
                self.cfg = t.cfg
                self._run_script("reconnect", check=False)
                log.warning("reconnected to %s (attempt %d)", self.opts.server.host, attempt)
                return t
            if time.monotonic() >= deadline:
                raise TunnelLost(f"the tunnel is down and reconnecting failed for "
                                 f"{self.opts.reconnect_timeout_s:g} s ({attempt} attempts): {last}")
            wait_s = min(wait_s + RECONNECT_STEP_S, RECONNECT_MAX_WAIT_S)

    def _check_same(self, cfg: tunnel.TunnelConfig) -> None:
        """openconnect's rule: a reconnect that changes the addresses is fatal."""
        old = self.cfg
        assert old is not None
        if (cfg.address4, cfg.address6) != (old.address4, old.address6):
            raise TunnelLost(f"the server gave new addresses on reconnect ({cfg.address4}, {cfg.address6} "
                             f"instead of {old.address4}, {old.address6})")

"""The gateway: one TLS listener, one TUN interface, many clients, one thread, one selector.

Connections start in the HTTP phase (:class:`Connection`): TLS handshake, then requests answered
by the :class:`~tunring.apps.serve.portal.Portal` until one asks for the tunnel, when the
connection becomes a :class:`~tunring.apps.serve.link.Link`.  The TUN interface carries the
gateway's address in each pool; packets the kernel routes to it are read in batches and handed
to the link whose client owns the destination address.  Everything is non-blocking and every
phase has a deadline, so a slow or hostile client holds nobody else up.
"""

from __future__ import annotations

import ipaddress
import logging
import selectors
import socket
import ssl
import time
from dataclasses import dataclass, field

from ...errors import RingFull, TunringError
from ...linux import TunDevice
from ...proto.ppp_fsm import Timing
from .addresses import AddressPool, Network
from .http import HttpError, RequestReader, Response
from .link import Link
from .portal import PORTALS, Portal, PortalSettings, TunnelStart
from .tls import TlsStream
from .users import User

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
HTTP_IDLE_TIMEOUT_S = 30.0
TIMER_PERIOD_S = 0.1  # PPP timers are seconds long: checking them ten times a second is plenty
TUN_BATCH = 64
TUN_PACKETS = 1024
HTTP_READ_BYTES = 16384


@dataclass
class ServeSettings:
    protocol: str  # "f5" or "fortinet"
    listen: tuple[str, int]
    cert: str
    key: str
    users: dict[str, User]
    pool: ipaddress.IPv4Network
    pool6: ipaddress.IPv6Network | None = None
    hdlc: bool = False
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    routes: tuple[Network, ...] = ()
    mtu: int = 1400
    tun_name: str = "tunring%d"
    echo_interval_s: float = 10.0
    echo_failures: int = 3
    ppp_timing: Timing = field(default_factory=Timing)


class Connection:
    """A client in the HTTP phase: TLS handshake, then portal requests."""

    def __init__(self, tls: TlsStream, address, now: float) -> None:
        self.tls = tls
        self.address = address
        self.handshaken = False
        self.reader = RequestReader()
        self.deadline = now + HANDSHAKE_TIMEOUT_S
        self.closed = False


class Gateway:
    """``Gateway(settings)`` opens the listener and the TUN; ``run(stop)`` serves until ``stop()``."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(settings.cert, settings.key)
        pool4 = AddressPool(settings.pool)
        pool6 = AddressPool(settings.pool6) if settings.pool6 is not None else None
        portal_settings = PortalSettings(hdlc=settings.hdlc, dns=settings.dns, routes=settings.routes)
        self.portal: Portal = PORTALS[settings.protocol](portal_settings, settings.users, pool4, pool6)
        addresses = [f"{pool4.gateway}/{settings.pool.prefixlen}"]
        if pool6 is not None and settings.pool6 is not None:
            addresses.append(f"{pool6.gateway}/{settings.pool6.prefixlen}")
        # offload: the virtio header lets a client's run of TCP segments go in as one GSO write;
        # tso=False: what the kernel sends us stays MTU-sized (no segmentation to do in Python).
        self.tun = TunDevice.create(settings.tun_name, addresses=addresses, mtu=settings.mtu, packets=TUN_PACKETS,
                             offload=True, tso=False)
        self.listener = socket.create_server(settings.listen, family=_family(settings.listen[0]), backlog=64)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, self.listener)
        self.selector.register(self.tun.fileno(), selectors.EVENT_READ, self.tun)
        self.connections: set[Connection] = set()
        self.links: set[Link] = set()
        self.routes: dict[bytes, Link] = {}  # packed client address -> its link
        self.no_route = 0
        self._hot: set[Link] = set()  # links whose TLS may hold more decrypted records
        self.dirty: set[Link] = set()  # links with records encrypted but not yet flushed
        self._next_timers = 0.0
        log.info("%s gateway on %s:%d, TUN %s %s", settings.protocol, *settings.listen, self.tun.name,
                 " ".join(addresses))

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    # -- the loop -----------------------------------------------------------------------
    def run(self, stop) -> None:
        """Serve until ``stop()`` is true (checked at least every TIMER_PERIOD_S)."""
        try:
            while not stop():
                self.step()
        finally:
            self.shutdown()

    def step(self) -> None:
        timeout = 0.0 if self._hot else TIMER_PERIOD_S
        for key, mask in self.selector.select(timeout):
            target = key.data
            if target is self.tun:
                self._tun_readable()
            elif target is self.listener:
                self._accept()
            elif isinstance(target, Link):
                self._link_ready(target, mask)
            else:
                self._connection_ready(target, mask)
        now = time.monotonic()
        for link in list(self._hot):
            self._hot.discard(link)
            if not link.closed and link.readable(now):
                self._hot.add(link)
        self._flush()
        if now >= self._next_timers:
            self._next_timers = now + TIMER_PERIOD_S
            self._timers(now)

    def _flush(self) -> None:
        """Send every record encrypted during this step: one system call per link and burst."""
        dirty, self.dirty = self.dirty, set()
        for link in dirty:
            if not link.closed:
                link.writable()
                self._want_write(link)

    def _timers(self, now: float) -> None:
        for link in list(self.links):
            link.tick(now)
        self._flush()
        for conn in list(self.connections):
            if now >= conn.deadline:
                log.info("%s: closed: %s", conn.address[0], "no TLS handshake" if not conn.handshaken else "idle")
                self._drop_connection(conn)
        self.portal.expire(now)

    def _tun_readable(self) -> None:
        tun = self.tun
        try:
            packets = tun.receive_many(TUN_BATCH)
        except RingFull:
            return
        routes = self.routes
        for p in packets:
            data = p.data
            version = data[0] >> 4 if len(data) else 0
            link = routes.get(bytes(data[16:20]) if version == 4 else bytes(data[24:40]) if version == 6 else b"")
            if link is None:
                self.no_route += 1
            else:
                link.deliver(p)
        tun.release_many(packets)

    # -- connections --------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(16):
            try:
                raw, address = self.listener.accept()
            except BlockingIOError:
                return
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(TlsStream(raw, self.context), address, time.monotonic())
            self.connections.add(conn)
            self.selector.register(raw, selectors.EVENT_READ, conn)

    def _connection_ready(self, conn: Connection, mask: int) -> None:
        tls = conn.tls
        try:
            if not conn.handshaken:
                if not tls.handshake():
                    if tls.eof:
                        self._drop_connection(conn)
                    else:
                        self._want_events(tls, conn)
                    return
                conn.handshaken = True
                conn.deadline = time.monotonic() + HTTP_IDLE_TIMEOUT_S
            self._http(conn)
            tls.flush()
        except (OSError, HttpError) as e:
            log.info("%s: connection closed: %s", conn.address[0], e)
            if isinstance(e, HttpError):
                tls.write(Response(400, b"bad request").to_bytes())
                tls.flush_quietly()
            self._drop_connection(conn)
            return
        if not conn.closed:
            self._want_events(tls, conn)
        if tls.eof and not conn.closed:
            self._drop_connection(conn)

    def _want_events(self, tls: TlsStream, target) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if tls.wants_write else 0)
        if self.selector.get_key(tls.sock).events != events:
            self.selector.modify(tls.sock, events, target)

    def _http(self, conn: Connection) -> None:
        while not conn.closed:
            try:
                data = conn.tls.recv(HTTP_READ_BYTES)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not data:
                self._drop_connection(conn)
                return
            now = time.monotonic()
            conn.deadline = now + HTTP_IDLE_TIMEOUT_S
            for request in conn.reader.feed(data):
                answer = self.portal.handle(request, now)
                if isinstance(answer, TunnelStart):
                    self._start_tunnel(conn, answer, now)
                    return
                log.debug("%s: %s %s -> %d", conn.address[0], request.method, request.path, answer.status)
                conn.tls.write(answer.to_bytes())

    def _start_tunnel(self, conn: Connection, start: TunnelStart, now: float) -> None:
        self.connections.discard(conn)
        conn.closed = True
        if start.head:
            conn.tls.write(start.head)
        self.portal.tunnel_opened(start.login)
        link = Link(conn.tls, start, self, now)
        self.links.add(link)
        lease = start.login.lease
        assert lease is not None
        self.routes[lease.ipv4.packed] = link
        if lease.ipv6 is not None:
            self.routes[lease.ipv6.packed] = link
        self.selector.modify(conn.tls.sock, selectors.EVENT_READ, link)
        if conn.reader.rest:
            link.feed(conn.reader.rest, now)
        self._hot.add(link)  # TLS may hold records read along with the request
        self.dirty.add(link)

    def _drop_connection(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.connections.discard(conn)
        self._unregister_close(conn.tls)

    # -- links --------------------------------------------------------------------------
    def _link_ready(self, link: Link, mask: int) -> None:
        now = time.monotonic()
        if mask & selectors.EVENT_WRITE:
            self.dirty.add(link)
        if mask & selectors.EVENT_READ and not link.closed and link.readable(now):
            self._hot.add(link)

    def _want_write(self, link: Link) -> None:
        if not link.closed:
            self._want_events(link.tls, link)

    def link_closed(self, link: Link) -> None:
        """Called by a link once it is closed: its addresses and login go back to the portal."""
        self.links.discard(link)
        self._hot.discard(link)
        lease = link.login.lease
        if lease is not None:
            for address in (lease.ipv4, lease.ipv6):
                if address is not None and self.routes.get(address.packed) is link:
                    del self.routes[address.packed]
        self.portal.tunnel_closed(link.login)
        self._unregister_close(link.tls)

    def _unregister_close(self, tls: TlsStream) -> None:
        try:
            self.selector.unregister(tls.sock)
        except (KeyError, ValueError):
            pass
        try:
            tls.close()
        except OSError:
            pass

    def shutdown(self) -> None:
        """Terminate every link (LCP Terminate-Request, sent best effort) and close everything."""
        now = time.monotonic()
        for link in list(self.links):
            link.terminate(now, "the gateway is shutting down")
            link.close("the gateway is shutting down")
        for conn in list(self.connections):
            self._drop_connection(conn)
        self.selector.close()
        self.listener.close()
        self.tun.close()


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


__all__ = ["Gateway", "ServeSettings", "TunringError"]

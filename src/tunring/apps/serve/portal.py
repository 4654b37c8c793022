"""The login and configuration steps of F5 and Fortinet, sans-I/O: requests in, responses out.

A :class:`Portal` answers the HTTP requests the stock ``openconnect --protocol=f5|fortinet``
client makes before its tunnel (APPS.md sections 6 and 7): the login form or login check
(passwords from the users file), the configuration document (the client's addresses from the
pool, DNS servers, routes) and finally the tunnel request, which it answers with a
:class:`TunnelStart` instead of a response.  Logins that never open a tunnel expire.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from .addresses import AddressPool, Lease, Network, PoolExhausted
from .http import Request, Response, tunnel_head
from .users import User, check_password

log = logging.getLogger(__name__)

LOGIN_TTL_S = 120.0  # a login must open its tunnel within this time
IDLE_TIMEOUT_S = 3600
F5_RESOURCE = "/Common/tunring"


@dataclass
class Login:
    user: str
    token: str  # the session cookie's value
    created_s: float
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))  # F5's Session_ID
    z: str = field(default_factory=lambda: secrets.token_hex(8))  # F5's ur_Z
    lease: Lease | None = None
    tunnels: int = 0  # tunnels open on this login


@dataclass(frozen=True)
class TunnelStart:
    """The connection becomes a PPP tunnel: send ``head`` first, then PPP in ``framing``."""

    login: Login
    framing: str  # a tunring.proto.FRAMINGS name: "f5", "f5-hdlc" or "fortinet"
    ipv4: bool
    ipv6: bool
    head: bytes = b""


@dataclass
class PortalSettings:
    hdlc: bool = False  # F5: tell clients to use HDLC framing
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    routes: tuple[Network, ...] = ()


class Portal:
    """What both gateways share: users, leases, logins."""

    def __init__(self, settings: PortalSettings, users: dict[str, User], pool4: AddressPool,
                 pool6: AddressPool | None = None) -> None:
        self.settings = settings
        self.users = users
        self.pool4 = pool4
        self.pool6 = pool6
        self.logins: dict[str, Login] = {}  # by token
        self.failed_logins = 0

    # -- what the gateway calls --------------------------------------------------------
    def handle(self, request: Request, now: float) -> Response | TunnelStart:
        raise NotImplementedError

    def tunnel_opened(self, login: Login) -> None:
        login.tunnels += 1

    def tunnel_closed(self, login: Login) -> None:
        """A tunnel ended (closed or died): its login and addresses are given back."""
        login.tunnels -= 1
        if login.tunnels <= 0:
            self.end(login)

    def expire(self, now: float) -> None:
        for login in [x for x in self.logins.values() if not x.tunnels and now - x.created_s > LOGIN_TTL_S]:
            log.info("login of %s expired without a tunnel", login.user)
            self.end(login)

    def end(self, login: Login) -> None:
        self.logins.pop(login.token, None)
        if login.lease is not None:
            self.pool4.free(login.lease.ipv4)
            if login.lease.ipv6 is not None and self.pool6 is not None:
                self.pool6.free(login.lease.ipv6)
            login.lease = None

    # -- helpers ----------------------------------------------------------------------
    def _login(self, user: str, password: str, now: float) -> Login | None:
        if not check_password(self.users, user, password):
            self.failed_logins += 1
            log.warning("login failed for user %r", user)
            return None
        login = Login(user, secrets.token_urlsafe(24), now)
        self.logins[login.token] = login
        log.info("user %s logged in", user)
        return login

    def _lease(self, login: Login) -> Lease | None:
        """The login's addresses, allocated on first use; None if the pool is exhausted."""
        if login.lease is None:
            try:
                ipv4 = self.pool4.allocate()
            except PoolExhausted as e:
                log.warning("%s: %s", login.user, e)
                return None
            ipv6 = None
            if self.pool6 is not None:
                try:
                    ipv6 = self.pool6.allocate()
                except PoolExhausted as e:
                    log.warning("%s: %s (IPv4 only)", login.user, e)
            login.lease = Lease(ipv4, ipv6)  # type: ignore[arg-type]
        return login.lease

    def _routes(self, version: int) -> list[Network]:
        pools = [p.network for p in (self.pool4, self.pool6) if p is not None]
        return [n for n in pools + list(self.settings.routes) if n.version == version]

    def _dns(self, version: int) -> list[str]:
        return [str(a) for a in self.settings.dns if a.version == version]


def _xml(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


class F5Portal(Portal):
    """F5 BIG-IP APM as openconnect's f5.c sees it."""

    LOGIN_FORM = (b'<html><body><form id="auth_form" method="post">'
                  b'<input type="text" name="username"/><input type="password" name="password"/>'
                  b"</form></body></html>")

    def handle(self, request: Request, now: float) -> Response | TunnelStart:
        path = request.path
        if path == "/myvpn":
            return self._tunnel(request)
        if path == "/my.policy" and request.method == "POST":
            return self._check(request, now)
        if path in ("/", "/my.policy"):
            if path == "/":
                return Response(302, headers=[("Location", "/my.policy")])
            return Response(200, self.LOGIN_FORM)
        login = self.logins.get(request.cookies.get("MRHSession", ""))
        if path == "/vdesk/hangup.php3":
            if login is not None and not login.tunnels:
                self.end(login)
            return Response(200, b"logged out", headers=[("Set-Cookie", "MRHSession=deleted; path=/")])
        if login is None:
            return Response(302, headers=[("Location", "/my.policy")])
        if path == "/vdesk/webtop.eui":
            return Response(200, b"<html><body>tunring webtop</body></html>")
        if path == "/vdesk/vpn/index.php3":
            return Response(200, self._favorites().encode(), content_type="application/xml")
        if path == "/vdesk/vpn/connect.php3":
            return self._options(login)
        return Response(404, b"not found")

    def _check(self, request: Request, now: float) -> Response:
        form = request.form
        login = self._login(form.get("username", ""), form.get("password", ""), now)
        if login is None:
            return Response(200, self.LOGIN_FORM)  # the form again: the client asks once more or gives up
        st = f"1z1z1z{int(time.time())}z{int(LOGIN_TTL_S)}"
        return Response(302, headers=[("Set-Cookie", f"MRHSession={login.token}; path=/; secure"),
                                      ("Set-Cookie", f"F5_ST={st}; path=/; secure"),
                                      ("Location", "/vdesk/webtop.eui")])

    def _favorites(self) -> str:
        return ('<?xml version="1.0" encoding="utf-8"?><favorites type="VPN" limited="YES">'
                f'<favorite id={quoteattr(F5_RESOURCE)}>{_xml("caption", "tunring")}{_xml("name", F5_RESOURCE)}'
                f'{_xml("params", "resourcename=" + F5_RESOURCE)}</favorite></favorites>')

    def _options(self, login: Login) -> Response:
        lease = self._lease(login)
        if lease is None:
            return Response(503, b"address pool exhausted")
        parts = [_xml("ur_Z", login.z), _xml("Session_ID", login.session_id), _xml("ur_name", F5_RESOURCE),
                 _xml("idle_session_timeout", IDLE_TIMEOUT_S), _xml("IPV4_0", 1),
                 _xml("IPV6_0", int(lease.ipv6 is not None)), _xml("tunnel_dtls", 0),
                 _xml("UseDefaultGateway0", 0), _xml("SplitTunneling0", 2),
                 _xml("hdlc_framing", "yes" if self.settings.hdlc else "no")]
        parts += [_xml(f"DNS{i}", a) for i, a in enumerate(self._dns(4))]
        parts += [_xml(f"DNS6_{i}", a) for i, a in enumerate(self._dns(6))]
        parts.append(_xml("LAN0", " ".join(str(n) for n in self._routes(4))))
        if lease.ipv6 is not None:
            parts.append(_xml("LAN6_0", " ".join(str(n) for n in self._routes(6))))
        body = ('<?xml version="1.0" encoding="UTF-8" ?><favorite><object ID="ur_Host">'
                + "".join(parts) + "</object></favorite>")
        return Response(200, body.encode(), content_type="application/xml")

    def _tunnel(self, request: Request) -> Response | TunnelStart:
        q = request.query
        login = next((x for x in self.logins.values() if x.session_id == q.get("sess")), None)
        if login is None or login.lease is None or q.get("Z") != login.z:
            return Response(504, b"no such session")
        try:
            hostname = base64.b64decode(q.get("hostname", ""), validate=True).decode("utf-8", "replace")
        except ValueError:
            hostname = "?"
        hdlc = q.get("hdlc_framing") == "yes"
        ipv6 = q.get("ipv6") == "yes" and login.lease.ipv6 is not None
        headers = [("X-VPN-client-IP", str(login.lease.ipv4))]
        if ipv6:
            headers.append(("X-VPN-client-IPv6", str(login.lease.ipv6)))
        log.info("%s (%s): F5 tunnel, %s framing", login.user, hostname, "HDLC" if hdlc else "plain PPP")
        return TunnelStart(login, "f5-hdlc" if hdlc else "f5", q.get("ipv4", "yes") == "yes", ipv6,
                           tunnel_head(200, headers))


class FortinetPortal(Portal):
    """FortiGate SSL VPN as openconnect's fortinet.c sees it."""

    def handle(self, request: Request, now: float) -> Response | TunnelStart:
        path = request.path
        if path == "/remote/logincheck" and request.method == "POST":
            form = request.form
            login = self._login(form.get("username", ""), form.get("credential", ""), now)
            if login is None:
                return Response(405, b"ret=0")
            return Response(200, b"ret=1,redir=/remote/fortisslvpn_xml", content_type="text/plain",
                            headers=[("Set-Cookie", f"SVPNCOOKIE={login.token}; path=/; secure; httponly")])
        if path == "/remote/login":
            return Response(200, b"<html><body>tunring login</body></html>")
        login = self.logins.get(request.cookies.get("SVPNCOOKIE", ""))
        if path == "/remote/logout":
            if login is not None and not login.tunnels:
                self.end(login)
            return Response(200, b"logged out", headers=[("Set-Cookie", "SVPNCOOKIE=; path=/")])
        if path == "/remote/sslvpn-tunnel":
            if login is None or login.lease is None:
                return Response(403, b"no such session")
            log.info("%s: Fortinet tunnel", login.user)
            return TunnelStart(login, "fortinet", True, login.lease.ipv6 is not None)
        if login is None or path != "/remote/fortisslvpn_xml":
            return Response(302, headers=[("Location", "/remote/login?lang=en")])
        lease = self._lease(login)
        if lease is None:
            return Response(503, b"address pool exhausted")
        return Response(200, self._config(lease).encode(), content_type="application/xml")

    def _config(self, lease: Lease) -> str:
        v4 = "".join(f"<dns ip={quoteattr(a)}/>" for a in self._dns(4))
        v4 += f"<assigned-addr ipv4={quoteattr(str(lease.ipv4))}/><split-tunnel-info>"
        v4 += "".join(f"<addr ip={quoteattr(str(n.network_address))} mask={quoteattr(str(n.netmask))}/>"
                      for n in self._routes(4))
        doc = ['<?xml version="1.0" encoding="utf-8"?><sslvpn-tunnel ver="2" dtls="0" patch="1">',
               '<auth-ses check-src-ip="0" tun-connect-without-reauth="0" tun-user-ses-timeout="240"/>',
               f"<ipv4>{v4}</split-tunnel-info></ipv4>"]
        if lease.ipv6 is not None and self.pool6 is not None:
            v6 = "".join(f"<dns ipv6={quoteattr(a)}/>" for a in self._dns(6))
            v6 += (f"<assigned-addr ipv6={quoteattr(str(lease.ipv6))} "
                   f"prefix-len={quoteattr(str(self.pool6.network.prefixlen))}/><split-tunnel-info>")
            v6 += "".join(f"<addr ipv6={quoteattr(str(n.network_address))} prefix-len={quoteattr(str(n.prefixlen))}/>"
                          for n in self._routes(6))
            doc.append(f"<ipv6>{v6}</split-tunnel-info></ipv6>")
        doc.append(f'<idle-timeout val="{IDLE_TIMEOUT_S}"/><auth-timeout val="{int(LOGIN_TTL_S)}"/></sslvpn-tunnel>')
        return "".join(doc)


PORTALS: dict[str, type[Portal]] = {"f5": F5Portal, "fortinet": FortinetPortal}

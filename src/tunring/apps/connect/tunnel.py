"""The tunnel request: ``CONNECT /CSCOSSLC/tunnel`` and what its ``X-CSTP-*``/``X-DTLS-*`` answers mean.

:func:`connect_headers` builds the request openconnect sends (with the cookie,
our MTU, the compressions we accept and, for DTLS, the PSK-NEGOTIATE offer);
:func:`parse_tunnel` turns the reply into a :class:`TunnelConfig`: addresses,
routes, DNS, MTU, timers, compression and the DTLS offer.  Pure functions.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import AuthFailed, NotAnyConnect, TunnelLost
from .http import Reply

log = logging.getLogger(__name__)

TUNNEL_PATH = "/CSCOSSLC/tunnel"
#: X-CSTP-Content-Encoding / X-CSTP-Accept-Encoding names -> tunring.proto.compress names.
COMPRESSIONS = {"oc-lz4": "lz4", "lzs": "lzs", "deflate": "deflate"}
DTLS_SECRET_BYTES = 48  # X-DTLS-Master-Secret: legacy DTLS's; PSK-NEGOTIATE servers ignore it
STATELESS = ("oc-lz4", "lzs")  # openconnect's default offer; deflate only when asked (-d)
DEFAULT_BASE_MTU = 1406  # openconnect's fallback when the path MTU is unknown
MIN_MTU = 576
MIN_BASE_MTU = 1280
MAX_BASE_MTU = 9000  # jumbo frames; a larger path MTU (loopback: 65536) is clamped
# Cisco's overhead estimate between base and tunnel MTU: TLS record + CSTP header (openconnect uses it).
CSTP_OVERHEAD = 82 + 8
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class DtlsOffer:
    """What the server offers for DTLS (X-DTLS-*): port, IDs, suite, timers."""

    port: int
    app_id: str = ""  # PSK-NEGOTIATE: the ClientHello's session ID (hex)
    session_id: str = ""  # legacy: the session the client resumes (hex)
    cipher_suite: str = ""
    dtls12: bool = False
    dpd_s: int = 0
    keepalive_s: int = 0
    mtu: int = 0
    compression: str | None = None


@dataclass
class TunnelConfig:
    """The server's answer to CONNECT, parsed; ``options`` keeps every X-CSTP/X-DTLS header seen."""

    address4: ipaddress.IPv4Interface | None = None
    address6: ipaddress.IPv6Interface | None = None
    dns: list[str] = field(default_factory=list)
    nbns: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    split_dns: list[str] = field(default_factory=list)
    split_include: list[Network] = field(default_factory=list)
    split_exclude: list[Network] = field(default_factory=list)
    banner: str = ""
    proxy_pac: str = ""
    mtu: int = 0
    base_mtu: int = 0
    dpd_s: int = 0
    keepalive_s: int = 0
    idle_timeout_s: int = 0
    session_timeout_s: int = 0
    rekey_s: int = 0
    rekey_method: str = ""
    compression: str | None = None  # tunring.proto.compress name
    dtls: DtlsOffer | None = None
    options: list[tuple[str, str]] = field(default_factory=list)

    @property
    def routes(self) -> list[Network]:
        return self.split_include


def connect_headers(host: str, cookie: str, *, hostname: str, mtu: int, base_mtu: int,
                    compressions: tuple[str, ...] = STATELESS, dtls_secret: bytes | None = None,
                    dtls_compressions: tuple[str, ...] = STATELESS,
                    previous: TunnelConfig | None = None) -> tuple[tuple[str, str], ...]:
    """The CONNECT request's headers (after Host/User-Agent), as openconnect sends them.

    ``previous`` (on reconnect) asks for the same addresses again; ``dtls_secret``
    (48 bytes) offers DTLS with PSK-NEGOTIATE.
    """
    headers = [("Cookie", f"webvpn={cookie}"), ("X-CSTP-Version", "1"), ("X-CSTP-Hostname", hostname)]
    if compressions:
        headers.append(("X-CSTP-Accept-Encoding", ",".join(compressions)))
    headers += [("X-CSTP-Base-MTU", str(base_mtu)), ("X-CSTP-MTU", str(mtu)),
                ("X-CSTP-Address-Type", "IPv6,IPv4")]
    if previous is not None:
        for addr in (previous.address4, previous.address6):
            if addr is not None:
                headers.append(("X-CSTP-Address", str(addr.ip)))
    headers.append(("X-CSTP-Full-IPv6-Capability", "true"))
    if dtls_secret is not None:
        headers += [("X-DTLS-Master-Secret", dtls_secret.hex().upper()),
                    ("X-DTLS-CipherSuite", "PSK-NEGOTIATE"),
                    ("X-DTLS12-CipherSuite", "PSK-NEGOTIATE")]
        stateless = tuple(c for c in dtls_compressions if c in STATELESS)  # no deflate over datagrams
        if stateless:
            headers.append(("X-DTLS-Accept-Encoding", ",".join(stateless)))
    return tuple(headers)


def _network(value: str) -> Network:
    """``a.b.c.d/m.m.m.m``, ``a.b.c.d/len`` or ``v6/len`` (host bits cleared, as the vpnc-script wants)."""
    return ipaddress.ip_network(value.strip(), strict=False)


def _int(value: str) -> int:
    """A timer or size: digits, or "none"/"" for none (0)."""
    value = value.strip()
    return int(value) if value.isdigit() else 0


def check_reply(reply: Reply, host: str) -> None:
    """Refusals of CONNECT, each as its own error: 401 a dead cookie, 503 a full or refusing server."""
    if reply.status == 200:
        return
    why = reply.header("X-Reason") or reply.reason
    if reply.status == 401:
        raise AuthFailed(f"{host} refused the session cookie (401 {why}): log in again")
    if reply.status == 503:
        raise TunnelLost(f"{host} refused the tunnel: 503 {why}")
    raise NotAnyConnect(f"{host} answered CONNECT with {reply.status} {why}: not an AnyConnect server")


def parse_tunnel(reply: Reply, host: str = "the server") -> TunnelConfig:
    """A TunnelConfig from the CONNECT reply; NotAnyConnect if it lacks an MTU or an address."""
    check_reply(reply, host)
    cfg = TunnelConfig()
    netmask = None
    dtls: dict[str, str] = {}
    for name, value in reply.headers:
        lname = name.lower()
        if lname.startswith("x-dtls"):
            cfg.options.append((name, value))
            dtls[lname] = value
            continue
        if not lname.startswith("x-cstp-"):
            continue
        cfg.options.append((name, value))
        key = lname[len("x-cstp-"):]
        try:
            if key == "netmask":
                netmask = value
            else:
                _cstp_header(cfg, key, value)
        except ValueError as e:
            raise NotAnyConnect(f"{host} sent an unusable {name}: {value!r} ({e})") from None
    if cfg.address4 is not None and netmask:
        try:
            cfg.address4 = ipaddress.IPv4Interface(f"{cfg.address4.ip}/{netmask}")
        except ValueError:
            raise NotAnyConnect(f"{host} sent an unusable X-CSTP-Netmask: {netmask!r}") from None
    if not cfg.mtu:
        raise NotAnyConnect(f"{host} sent no X-CSTP-MTU in its CONNECT reply")
    if cfg.address4 is None and cfg.address6 is None:
        raise NotAnyConnect(f"{host} sent no X-CSTP-Address in its CONNECT reply")
    cfg.dtls = _dtls_offer(dtls)
    return cfg


# X-CSTP-<key>: a number of seconds or bytes ("none" = 0) -> the TunnelConfig field.
_NUMBERS = {"mtu": "mtu", "base-mtu": "base_mtu", "dpd": "dpd_s", "keepalive": "keepalive_s",
            "idle-timeout": "idle_timeout_s", "session-timeout": "session_timeout_s", "rekey-time": "rekey_s"}


def _cstp_header(cfg: TunnelConfig, key: str, value: str) -> None:
    if key == "address":
        addr = ipaddress.ip_address(value.strip())
        if addr.version == 4:
            cfg.address4 = ipaddress.IPv4Interface(f"{addr}/32")
        elif cfg.address6 is None:
            cfg.address6 = ipaddress.IPv6Interface(f"{addr}/128")
    elif key == "address-ip6":
        cfg.address6 = ipaddress.IPv6Interface(value.strip())
    elif key in ("dns", "dns-ip6"):
        cfg.dns.append(str(ipaddress.ip_address(value.strip())))
    elif key == "nbns":
        cfg.nbns.append(str(ipaddress.ip_address(value.strip())))
    elif key == "default-domain":
        cfg.domains += value.split()
    elif key == "split-dns":
        cfg.split_dns += [d for d in value.replace(",", " ").split() if d]
    elif key in ("split-include", "split-include-ip6"):
        cfg.split_include.append(_network(value))
    elif key in ("split-exclude", "split-exclude-ip6"):
        cfg.split_exclude.append(_network(value))
    elif key == "banner":
        cfg.banner = unquote(value)
    elif key == "msie-proxy-pac-url":
        cfg.proxy_pac = value
    elif key in _NUMBERS:
        setattr(cfg, _NUMBERS[key], _int(value))
    elif key == "rekey-method":
        cfg.rekey_method = value.strip()
    elif key == "content-encoding":
        if value.strip() not in COMPRESSIONS:
            raise ValueError("a compression tunring does not offer")
        cfg.compression = COMPRESSIONS[value.strip()]


def _dtls_offer(h: dict[str, str]) -> DtlsOffer | None:
    """The DTLS offer, or None without a port and an ID (openconnect: no DTLS then)."""
    port = _int(h.get("x-dtls-port", ""))
    app_id = h.get("x-dtls-app-id", "")
    session_id = h.get("x-dtls-session-id", "")
    if not port or not (app_id or session_id):
        return None
    suite = h.get("x-dtls12-ciphersuite") or h.get("x-dtls-ciphersuite", "")
    encoding = h.get("x-dtls-content-encoding", "").strip()
    return DtlsOffer(port, app_id, session_id, suite, "x-dtls12-ciphersuite" in h,
                     _int(h.get("x-dtls-dpd", "")), _int(h.get("x-dtls-keepalive", "")),
                     _int(h.get("x-dtls-mtu", "")), COMPRESSIONS.get(encoding))


def base_mtu_for(path_mtu: int | None) -> int:
    """X-CSTP-Base-MTU: the path MTU when known (clamped to jumbo frames: loopback reports
    65536), else openconnect's 1406."""
    if not path_mtu:
        return DEFAULT_BASE_MTU
    return max(MIN_BASE_MTU, min(path_mtu, MAX_BASE_MTU))


def tunnel_mtu_for(base_mtu: int, ipv6_transport: bool = False) -> int:
    """X-CSTP-MTU to ask for: base MTU less TLS, CSTP and IP/TCP overhead (openconnect's estimate)."""
    return max(MIN_MTU, base_mtu - CSTP_OVERHEAD - (40 if ipv6_transport else 20))

"""Interface configuration over rtnetlink (pyroute2): addresses, MTU, routes, link state.

Small wrappers that turn netlink failures into :class:`~tunring.errors.DeviceError`
messages naming the interface and what was being done, and a context manager
that runs a block inside a named network namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Iterable, Iterator

from ..errors import DeviceError

log = logging.getLogger(__name__)

IFNAMSIZ = 16
MIN_MTU = 68  # RFC 791 minimum, and the TUN driver's
MAX_MTU = 65535
MIN_IPV6_MTU = 1280  # RFC 8200: below it the kernel disables IPv6 on the link
IFA_F_NODAD = 0x02  # usable at once: no duplicate address detection on a point-to-point TUN

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ipr():
    from pyroute2 import IPRoute

    return IPRoute()


def check_name(name: str) -> None:
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name) \
            or name in (".", ".."):
        raise DeviceError(f"interface name {name!r} is not valid: 1 to {IFNAMSIZ - 1} bytes, "
                          "no '/', no white space")


def check_mtu(mtu: int, ipv6: bool = False) -> None:
    low = MIN_IPV6_MTU if ipv6 else MIN_MTU
    if not low <= mtu <= MAX_MTU:
        why = " (the interface has IPv6 addresses)" if ipv6 else ""
        raise DeviceError(f"MTU {mtu} is out of range: {low} to {MAX_MTU}{why}")


def parse_addresses(addresses: Iterable[str | Address]) -> list[Address]:
    out = []
    for a in addresses:
        try:
            out.append(ipaddress.ip_interface(a))
        except ValueError:
            raise DeviceError(f"cannot parse interface address {a!r}: expected e.g. "
                              "'10.0.0.1/24' or 'fd00::1/64'") from None
    return out


def parse_routes(routes: Iterable[str | Network]) -> list[Network]:
    out = []
    for r in routes:
        try:
            out.append(ipaddress.ip_network(r, strict=False))
        except ValueError:
            raise DeviceError(f"cannot parse route {r!r}: expected e.g. '10.9.0.0/16' or 'fd00:9::/64'") from None
    return out


def link_index(name: str) -> int | None:
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def configure(name: str, *, mtu: int | None = None, addresses: Iterable[Address] = (),
              routes: Iterable[Network] = (), up: bool = True) -> int:
    """Set MTU, add addresses and routes and bring ``name`` up; returns its ifindex."""
    from pyroute2 import NetlinkError

    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise DeviceError(f"interface {name} vanished while being configured")
        index = found[0]
        step = ""
        try:
            if mtu is not None:
                step = f"setting MTU {mtu}"
                ipr.link("set", index=index, mtu=mtu)
            for a in addresses:
                step = f"adding address {a}"
                kw = {"flags": IFA_F_NODAD} if a.version == 6 else {}
                ipr.addr("add", index=index, address=str(a.ip), prefixlen=a.network.prefixlen, **kw)
            if up:
                step = "bringing the link up"
                ipr.link("set", index=index, state="up")
            for r in routes:
                step = f"adding route {r}"
                ipr.route("add", dst=str(r), oif=index, family=10 if r.version == 6 else 2)
        except NetlinkError as e:
            raise DeviceError(e.code, f"netlink refused {step} on {name}: {os.strerror(e.code)}") from None
    log.debug("configured %s: mtu=%s addresses=%s routes=%s up=%s", name, mtu, addresses, routes, up)
    return index


@contextlib.contextmanager
def netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread inside network namespace ``name`` (None: stay).

    Sockets and TUN descriptors opened inside keep that namespace afterwards.
    """
    if name is None:
        yield
        return
    from pyroute2 import netns as ns

    if name not in ns.listnetns():
        raise DeviceError(f"network namespace {name!r} does not exist (see `ip netns list`)")
    ns.pushns(name)
    try:
        yield
    finally:
        ns.popns()

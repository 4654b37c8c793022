"""Apply a TunnelConfig to the TUN interface over netlink, and undo it (no vpnc-script).

What the stock vpnc-script would do, without a shell: the tunnel addresses (the
IPv4 one with the server's netmask, so the tunnel network is on-link), the
split-include routes through the interface, or, without split-includes,
the whole address space as two halves (``0.0.0.0/1`` and ``128.0.0.0/1``, so the
existing default route stays and needs no restoring) plus a host route to the
VPN server along the path it had.  Split-excludes go along the path they had
before, or become ``throw`` routes (never into the tunnel) when there was none.
Routes through the interface vanish with it; :meth:`Applied.undo` removes the
others.  DNS servers and domains are only logged: changing the resolver is a
vpnc-script's job (use ``-s``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field

from ...errors import DeviceError
from ...linux import netlink
from .errors import LocalSetupFailed
from .tunnel import Network, TunnelConfig

log = logging.getLogger(__name__)

HALVES = {4: ("0.0.0.0/1", "128.0.0.0/1"), 6: ("::/1", "8000::/1")}
RTN_THROW = 9  # rtnetlink route type: "no route here, fail the lookup in this table"


@dataclass
class Plan:
    """What to configure: tunnel routes, and routes that must keep their old path."""

    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    tunnel_routes: list[Network] = field(default_factory=list)
    bypass: list[Network] = field(default_factory=list)  # the server itself, and split-excludes


def plan(cfg: TunnelConfig, gateway: str) -> Plan:
    """The addresses and routes for ``cfg`` (pure: no netlink)."""
    p = Plan()
    families = []
    if cfg.address4 is not None:
        p.addresses.append(cfg.address4)
        families.append(4)
    if cfg.address6 is not None:
        p.addresses.append(cfg.address6)
        families.append(6)
    for family in families:
        included = [n for n in cfg.split_include if n.version == family]
        if included:
            p.tunnel_routes += included
        else:
            p.tunnel_routes += [ipaddress.ip_network(h) for h in HALVES[family]]
            gw = ipaddress.ip_address(gateway)
            if gw.version == family:
                p.bypass.append(ipaddress.ip_network(f"{gw}/{gw.max_prefixlen}"))
        p.bypass += [n for n in cfg.split_exclude if n.version == family]
    return p


@dataclass
class Applied:
    """Routes added outside the TUN interface, to delete at the end."""

    routes: list[dict] = field(default_factory=list)

    def undo(self) -> None:
        from pyroute2 import IPRoute, NetlinkError

        with IPRoute() as ipr:
            for spec in reversed(self.routes):
                try:
                    ipr.route("del", **spec)
                except NetlinkError as e:
                    log.debug("route %s was already gone: %s", spec.get("dst"), os.strerror(e.code))
        self.routes.clear()


def _current_path(ipr, net: Network, avoid_index: int) -> dict | None:
    """How the kernel routes ``net``'s first address now, as route attributes (None: no route)."""
    from pyroute2 import NetlinkError

    try:
        found = ipr.route("get", dst=str(net.network_address), family=10 if net.version == 6 else 2)
    except NetlinkError:
        return None
    if not found:
        return None
    oif = found[0].get_attr("RTA_OIF")
    if oif is None or oif == avoid_index:
        return None
    spec: dict = {"oif": oif}
    via = found[0].get_attr("RTA_GATEWAY")
    if via:
        spec["gateway"] = via
    return spec


def apply(name: str, cfg: TunnelConfig, gateway: str, mtu: int) -> Applied:
    """Configure interface ``name`` for ``cfg``; LocalSetupFailed if the kernel refuses."""
    from pyroute2 import IPRoute, NetlinkError

    p = plan(cfg, gateway)
    applied = Applied()
    try:
        with IPRoute() as ipr:
            index = netlink.link_index(name)
            if index is None:
                raise DeviceError(f"interface {name} vanished")
            # The old paths are looked up before our routes exist.
            bypass = [(net, _current_path(ipr, net, index)) for net in p.bypass]
            netlink.configure(name, mtu=mtu, addresses=p.addresses, routes=p.tunnel_routes)
            for net, path in bypass:
                spec = {"dst": str(net), "family": 10 if net.version == 6 else 2}
                spec.update(path if path is not None else {"type": RTN_THROW})
                try:
                    ipr.route("add", **spec)
                    applied.routes.append(spec)
                except NetlinkError as e:
                    log.warning("cannot add route %s outside the tunnel: %s", net, os.strerror(e.code))
    except DeviceError as e:
        applied.undo()
        raise LocalSetupFailed(f"configuring {name}: {e}") from None
    log.info("%s: addresses %s, routes %s, outside the tunnel %s", name, ", ".join(map(str, p.addresses)),
             ", ".join(map(str, p.tunnel_routes)), ", ".join(map(str, p.bypass)) or "none")
    if cfg.dns or cfg.domains:
        log.info("DNS %s, domains %s: not applied without a vpnc-script (-s)", " ".join(cfg.dns) or "none",
                 " ".join(cfg.domains) or "none")
    return applied

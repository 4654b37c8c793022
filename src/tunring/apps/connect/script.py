"""openconnect's vpnc-script contract: the environment a ``-s SCRIPT`` is called with, and the call.

The script runs as ``/bin/sh -c SCRIPT`` with our environment plus ``reason``
(``pre-init`` before the TUN device exists, ``connect`` once it does,
``attempt-reconnect``/``reconnect`` around a reconnection, ``disconnect`` at
exit) and the variables openconnect sets (``TUNDEV``, ``VPNGATEWAY``,
``INTERNAL_IP4_*``, ``INTERNAL_IP6_*``, ``CISCO_*``), so the stock vpnc-script
and tools written for it (vpn-slice) work unchanged.  :func:`script_env` is pure.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LocalSetupFailed
from .tunnel import Network, TunnelConfig

log = logging.getLogger(__name__)

DEFAULT_SCRIPT = "/usr/share/vpnc-scripts/vpnc-script"  # Debian's vpnc-scripts package
SCRIPT_TIMEOUT_S = 60.0
# Variables this module sets: cleared from the inherited environment first, so a
# stale one (from a parent tunring or openconnect) never leaks into the script.
_PREFIXES = ("INTERNAL_IP4_", "INTERNAL_IP6_", "CISCO_")
_NAMES = ("reason", "TUNDEV", "VPNGATEWAY", "VPNPID", "LOG_LEVEL", "IDLE_TIMEOUT")


@dataclass
class ScriptContext:
    """What the script needs besides the tunnel configuration."""

    gateway: str  # the server's IP address
    tundev: str | None = None
    pid: int = 0
    log_level: int = 1  # openconnect's 0 (errors) to 3 (trace)
    mtu: int = 0


def _split_vars(prefix: str, networks: Sequence[Network], with_mask: bool) -> dict[str, str]:
    env = {prefix: str(len(networks))}
    for i, net in enumerate(networks):
        env[f"{prefix}_{i}_ADDR"] = str(net.network_address)
        if with_mask:
            env[f"{prefix}_{i}_MASK"] = str(net.netmask)
        env[f"{prefix}_{i}_MASKLEN"] = str(net.prefixlen)
    return env


def _routes_env(cfg: TunnelConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, nets in (("SPLIT_INC", cfg.split_include), ("SPLIT_EXC", cfg.split_exclude)):
        v4 = [n for n in nets if n.version == 4]
        v6 = [n for n in nets if n.version == 6]
        if v4:
            env.update(_split_vars(f"CISCO_{name}", v4, True))
        if v6:
            env.update(_split_vars(f"CISCO_IPV6_{name}", v6, False))
    return env


def _address_env(cfg: TunnelConfig, mtu: int) -> dict[str, str]:
    env: dict[str, str] = {}
    if mtu:
        env["INTERNAL_IP4_MTU"] = str(mtu)
    a4 = cfg.address4
    if a4 is not None:
        env["INTERNAL_IP4_ADDRESS"] = str(a4.ip)
        if a4.network.prefixlen < 32:  # openconnect passes a netmask only when the server sent a valid one
            env["INTERNAL_IP4_NETMASK"] = str(a4.netmask)
            env["INTERNAL_IP4_NETMASKLEN"] = str(a4.network.prefixlen)
            env["INTERNAL_IP4_NETADDR"] = str(a4.network.network_address)
    a6 = cfg.address6
    if a6 is not None:
        env["INTERNAL_IP6_ADDRESS"] = str(a6.ip)
        env["INTERNAL_IP6_NETMASK"] = f"{a6.ip}/{a6.network.prefixlen}"
    if cfg.dns:
        env["INTERNAL_IP4_DNS"] = " ".join(cfg.dns)  # openconnect puts IPv6 servers here too
    if cfg.nbns:
        env["INTERNAL_IP4_NBNS"] = " ".join(cfg.nbns)
    return env


def _cisco_env(cfg: TunnelConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    if cfg.domains:
        env["CISCO_DEF_DOMAIN"] = " ".join(cfg.domains)
    if cfg.banner:
        env["CISCO_BANNER"] = cfg.banner
    if cfg.proxy_pac:
        env["CISCO_PROXY_PAC"] = cfg.proxy_pac
    if cfg.split_dns:
        env["CISCO_SPLIT_DNS"] = ",".join(cfg.split_dns)
    cstp = [f"{name[len('X-CSTP-'):]}={value}" for name, value in cfg.options if name.lower().startswith("x-cstp-")]
    if cstp:
        env["CISCO_CSTP_OPTIONS"] = "\n".join(cstp) + "\n"
    return env


def script_env(reason: str, cfg: TunnelConfig | None, ctx: ScriptContext,
               base: dict[str, str] | None = None) -> dict[str, str]:
    """The script's environment for ``reason``: ``base`` (default os.environ) less stale
    VPN variables, plus the contract's variables (``cfg`` is None before CONNECT)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in _NAMES and not k.startswith(_PREFIXES)}
    env["reason"] = reason
    env["VPNGATEWAY"] = ctx.gateway
    env["VPNPID"] = str(ctx.pid or os.getpid())
    env["LOG_LEVEL"] = str(ctx.log_level)
    if ctx.tundev:
        env["TUNDEV"] = ctx.tundev
    if cfg is not None:
        if cfg.idle_timeout_s:
            env["IDLE_TIMEOUT"] = str(cfg.idle_timeout_s)
        env.update(_address_env(cfg, ctx.mtu or cfg.mtu))
        env.update(_cisco_env(cfg))
        env.update(_routes_env(cfg))
    return env


def run_script(script: str, reason: str, cfg: TunnelConfig | None, ctx: ScriptContext,
               timeout_s: float = SCRIPT_TIMEOUT_S, check: bool = True) -> int:
    """Run ``script`` for ``reason``; a failure raises LocalSetupFailed when ``check``, else is logged."""
    env = script_env(reason, cfg, ctx)
    log.info("running %s (reason=%s)", script, reason)
    try:
        done = subprocess.run(["/bin/sh", "-c", script], env=env, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        message = f"vpnc-script {script!r} (reason={reason}) did not finish within {timeout_s:g} s"
        if check:
            raise LocalSetupFailed(message) from None
        log.error("%s", message)
        return -1
    if done.returncode != 0:
        message = f"vpnc-script {script!r} (reason={reason}) exited with status {done.returncode}"
        if check:
            raise LocalSetupFailed(message)
        log.error("%s", message)
    return done.returncode



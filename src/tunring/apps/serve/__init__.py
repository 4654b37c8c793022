"""`tunring serve --protocol f5|fortinet`: a PPP gateway that the stock openconnect client logs in to.

TLS with the operator's certificate and key; the F5 or Fortinet HTTP login (users from an
ocpasswd file) and configuration document (addresses from ``--pool``/``--pool6``, ``--dns``,
``--route``); then PPP over the TLS stream, F5's plain or HDLC framing as the client asks
(``--hdlc`` tells F5 clients to ask for HDLC), every client's IP traffic to one TUN interface.
Needs root (CAP_NET_ADMIN) for the TUN interface.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys

from ...errors import TunringError

log = logging.getLogger(__name__)


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="F5/Fortinet PPP gateway for the openconnect client (root: needs a TUN)",
                       description=(__doc__ or "").split("\n\n")[1])
    p.add_argument("--protocol", required=True, choices=["f5", "fortinet"], help="which VPN the gateway plays")
    p.add_argument("--listen", required=True, type=_host_port, metavar="HOST:PORT", help="TLS listening address")
    p.add_argument("--cert", required=True, metavar="PEM", help="the server certificate (chain), PEM")
    p.add_argument("--key", required=True, metavar="PEM", help="its private key, PEM")
    p.add_argument("--users", required=True, metavar="FILE", help="user:group:crypt-hash lines, as ocpasswd writes")
    p.add_argument("--pool", required=True, type=ipaddress.IPv4Network, metavar="CIDR",
                   help="IPv4 pool: the first host is the gateway's TUN address, clients get the next ones")
    p.add_argument("--pool6", type=ipaddress.IPv6Network, metavar="CIDR", help="IPv6 pool (enables IPv6)")
    p.add_argument("--hdlc", action="store_true", help="F5: tell clients to use HDLC framing")
    p.add_argument("--dns", action="append", default=[], type=ipaddress.ip_address, metavar="IP",
                   help="DNS server handed to clients (repeatable)")
    p.add_argument("--route", action="append", default=[], type=lambda s: ipaddress.ip_network(s, strict=False),
                   metavar="CIDR", help="route handed to clients besides the pools (repeatable)")
    p.add_argument("--mtu", type=int, default=1400, metavar="N", help="TUN MTU and PPP MRU (default 1400)")
    p.add_argument("--tun-name", default="tunring%d", metavar="NAME", help="TUN interface name (default tunring%%d)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .gateway import Gateway, ServeSettings
    from .users import load_users

    if args.hdlc and args.protocol != "f5":
        print("tunring serve: --hdlc is an F5 option (Fortinet has no HDLC framing)", file=sys.stderr)
        return 2
    if not 576 <= args.mtu <= 16384:
        print(f"tunring serve: --mtu {args.mtu} is out of range (576 to 16384)", file=sys.stderr)
        return 2
    try:
        settings = ServeSettings(
            protocol=args.protocol, listen=args.listen, cert=args.cert, key=args.key,
            users=load_users(args.users), pool=args.pool, pool6=args.pool6, hdlc=args.hdlc,
            dns=tuple(args.dns), routes=tuple(args.route), mtu=args.mtu, tun_name=args.tun_name)
        gateway = Gateway(settings)
    except (TunringError, OSError, ValueError) as e:
        print(f"tunring serve: {e}", file=sys.stderr)
        return 1
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    print(f"tunring serve: {args.protocol} gateway listening on {args.listen[0]}:{gateway.address[1]}, "
          f"TUN {gateway.tun.name}", file=sys.stderr, flush=True)
    gateway.run(lambda: bool(stopping))
    return 0

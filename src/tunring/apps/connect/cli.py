"""`tunring connect [options] https://server[:port][/group]`: the AnyConnect client's command line.

Option names are openconnect's wherever openconnect has the option.  Every
failure ends with one line on stderr and an exit code from
:mod:`tunring.apps.connect.errors` (the README has the table).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ...errors import TunringError
from . import auth, tunnel
from .client import Client, Options
from .errors import EXIT_LOCAL, EXIT_OK, BadInput, ConnectError
from .tls import Trust, parse_pin, parse_url, pin_of

log = logging.getLogger("tunring.apps.connect")

COMPRESSION_MODES = {"off": (), "stateless": tunnel.STATELESS, "all": tunnel.STATELESS + ("deflate",)}


def add_parser(sub) -> None:
    p = sub.add_parser("connect", help="connect to an AnyConnect VPN server (ocserv, Cisco ASA), openconnect-style",
                       description=__doc__.split("\n")[0])
    p.add_argument("server", metavar="URL", help="https://server[:port][/group]")
    p.add_argument("-u", "--user", help="user name")
    p.add_argument("--passwd-on-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--password", help="the password (visible to other users in ps: prefer --passwd-on-stdin)")
    p.add_argument("--authgroup", help="the login group to choose")
    p.add_argument("--cafile", help="trust the CAs in this PEM file instead of the system store")
    p.add_argument("--servercert", action="append", default=[], metavar="FINGERPRINT",
                   help="accept only a certificate with this pin: pin-sha256:BASE64, sha256:HEX, sha1:HEX")
    p.add_argument("--cookie-on-stdin", action="store_true", help="read the webvpn cookie from standard input")
    p.add_argument("-C", "--cookie", help="use this webvpn cookie instead of logging in")
    p.add_argument("--authenticate", action="store_true", help="log in, print the cookie and exit")
    p.add_argument("--no-dtls", action="store_true", help="use CSTP over TLS only (no DTLS with PSK-NEGOTIATE)")
    p.add_argument("-i", "--interface", help="name of the TUN interface (default: tunN)")
    p.add_argument("-s", "--script", help="a vpnc-script to configure the interface (default: tunring over netlink)")
    p.add_argument("-b", "--background", action="store_true", help="continue in the background once connected")
    p.add_argument("--pid-file", help="write the process id here")
    p.add_argument("-m", "--mtu", type=int, help="the tunnel MTU to ask the server for")
    p.add_argument("--compression", default="stateless",
                   help="off, stateless (oc-lz4,lzs; the default), all (and deflate), "
                        "or a comma list of oc-lz4,lzs,deflate")
    p.add_argument("-d", "--deflate", action="store_true", help="also offer deflate (as --compression all)")
    p.add_argument("-D", "--no-deflate", action="store_true", help="no compression at all (as --compression off)")
    p.add_argument("--reconnect-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="give up reconnecting after this long (default 300)")
    p.add_argument("--json-stats", metavar="FILE", help="rewrite FILE with the counters every second")
    p.add_argument("-v", "--verbose", action="count", default=0, dest="connect_verbose", help="more logging")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only, no status line")
    p.set_defaults(func=main)


def compressions(args: argparse.Namespace) -> tuple[str, ...]:
    """The X-CSTP-Accept-Encoding list the options ask for."""
    if args.no_deflate:
        return ()
    mode = "all" if args.deflate else args.compression
    if mode in COMPRESSION_MODES:
        return COMPRESSION_MODES[mode]
    names = tuple(n.strip() for n in mode.split(",") if n.strip())
    bad = [n for n in names if n not in tunnel.COMPRESSIONS]
    if bad or not names:
        raise BadInput(f"--compression {mode!r}: expected off, stateless, all or a list of "
                       f"{', '.join(tunnel.COMPRESSIONS)}")
    return names


def _set_logging(args: argparse.Namespace) -> int:
    level = logging.ERROR if args.quiet else (logging.DEBUG if args.connect_verbose else logging.INFO)
    log.setLevel(level)
    if args.connect_verbose > 1:
        logging.getLogger().setLevel(logging.DEBUG)
    return 0 if args.quiet else min(3, 1 + args.connect_verbose)  # openconnect's LOG_LEVEL for the script


def _read_line(what: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise BadInput(f"standard input ended before the {what}")
    return line.rstrip("\r\n")


def options(args: argparse.Namespace) -> Options:
    """Options from the parsed command line; BadInput for what argparse cannot check."""
    server = parse_url(args.server)
    pins = tuple(parse_pin(p) for p in args.servercert)
    if args.cafile and not os.path.isfile(args.cafile):
        raise BadInput(f"--cafile {args.cafile}: no such file")
    if args.mtu is not None and not tunnel.MIN_MTU <= args.mtu <= 65535:
        raise BadInput(f"--mtu {args.mtu}: expected {tunnel.MIN_MTU} to 65535")
    cookie = args.cookie
    if args.cookie_on_stdin:
        cookie = _read_line("cookie")
    if cookie is not None:
        cookie = cookie.strip().removeprefix("webvpn=")
        if not cookie or any(c in cookie for c in "\r\n;"):
            raise BadInput("the cookie is empty or has characters a cookie cannot have")
    password = _read_line("password") if args.passwd_on_stdin else args.password
    creds = auth.Credentials.from_terminal(args.user, password, args.authgroup)
    return Options(server=server, trust=Trust(args.cafile, pins), creds=creds, cookie=cookie,
                   interface=args.interface, script=args.script, mtu=args.mtu, compressions=compressions(args),
                   dtls=not args.no_dtls,
                   reconnect_timeout_s=args.reconnect_timeout, json_stats=args.json_stats, status=not args.quiet)


def _authenticate_only(client: Client, opts: Options) -> int:
    """--authenticate: log in and print what openconnect prints, as shell assignments."""
    cookie = client.login()
    cert = client.peer_certificate()
    client.close()
    print(f"COOKIE='webvpn={cookie}'")
    print(f"HOST='{opts.server.host}'")
    print(f"CONNECT_URL='{opts.server.url}'")
    if cert:
        print(f"FINGERPRINT='{pin_of(cert)}'")
    return EXIT_OK


def _write_pid(path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")


def _daemonize(pid_file: str | None) -> None:
    """--background: the parent exits 0 now the tunnel is up; the child carries on detached."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        os._exit(EXIT_OK)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    _write_pid(pid_file)


def main(args: argparse.Namespace) -> int:
    log_level = _set_logging(args)
    try:
        opts = options(args)
        opts.log_level = log_level
        client = Client(opts)
        if args.authenticate:
            return _authenticate_only(client, opts)
        cookie = opts.cookie or client.login()
        if args.background:
            client.ready_callback = lambda: _daemonize(args.pid_file)
        else:
            _write_pid(args.pid_file)
        try:
            return client.run(cookie)
        finally:
            if args.pid_file and os.path.exists(args.pid_file):
                os.unlink(args.pid_file)
    except ConnectError as e:
        print(f"tunring connect: {e}", file=sys.stderr)
        return e.exit_code
    except TunringError as e:  # a device or codec refusal not already classified
        print(f"tunring connect: {e}", file=sys.stderr)
        return EXIT_LOCAL

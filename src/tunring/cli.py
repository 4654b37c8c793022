"""`tunring ...`: the command line.  Each command lives in its own module under
tunring.apps (or tunring.linux) and registers itself through ``add_parser``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module with add_parser(subparsers) that sets func=handler(args) -> int
COMMANDS = {
    "demo": "tunring.apps.demo",
    "bench": "tunring.apps.bench",
    "decode": "tunring.apps.decode",
    "encode": "tunring.apps.encode",
    "adapter": "tunring.linux.bridge",
    "connect": "tunring.apps.connect.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunring", description="Zero-copy IP packet rings (Wintun's protocol, with header room) for VPN clients.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

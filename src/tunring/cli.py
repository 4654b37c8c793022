"""`tunring ...`: the command line.  Each command lives in its own module under
tunring.apps (or tunring.linux) and registers itself through ``add_parser``.

An ordinary mistake ends in one line on stderr, never a traceback, and one of two exit
statuses: 2 (``USAGE``) when what was typed is wrong (an option's value, a file that cannot
be opened or created, a combination the command does not have), 1 (``BAD_INPUT``) when what
the input holds is wrong (a stream or pcap tunring cannot read, a client that broke its ring).
A command raises :class:`CommandError` for these; argparse's own errors get the same one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from . import __version__, _impl

USAGE = 2
BAD_INPUT = 1
MIN_MTU_BYTES = 68  # RFC 791's smallest IPv4 MTU, Linux's ETH_MIN_MTU
MAX_MTU_BYTES = 0xFFFF  # the largest IP packet

# name -> module with add_parser(subparsers) that sets func=handler(args) -> int
COMMANDS = {
    "demo": "tunring.apps.demo",
    "bench": "tunring.apps.bench",
    "decode": "tunring.apps.decode",
    "encode": "tunring.apps.encode",
    "adapter": "tunring.linux.bridge",
    "serve": "tunring.apps.serve",
    "connect": "tunring.apps.connect.cli",
}


class CommandError(Exception):
    """An ordinary mistake: ``main`` prints ``tunring COMMAND: message`` on stderr and exits
    with ``status`` (USAGE or BAD_INPUT)."""

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse with a mistake reported in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``low..high`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is not in {span}")
        return value

    return parse


def seconds_in(low: float, *, low_ok: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a number of seconds above ``low`` (or equal to it, with ``low_ok``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or not (value >= low if low_ok else value > low):
            raise argparse.ArgumentTypeError(f"{text} is not {'at least' if low_ok else 'more than'} {low:g} s")
        return value

    return parse


#: The argparse ``type`` of every ``--mtu``.
mtu_bytes = int_in(MIN_MTU_BYTES, MAX_MTU_BYTES)

class _Version(argparse.Action):
    """--version: one unwrapped line, "tunring X.Y.Z (native core)" or "(pure Python: why)"."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        sys.stdout.write(f"tunring {__version__} ({_impl.describe()})\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tunring", description="Zero-copy IP packet rings (Wintun's protocol, with header room) for VPN clients.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print the version and which path is active (native core or pure Python), then exit")
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
    except CommandError as err:
        print(f"tunring {args.command}: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:  # the reader of our output went away (`| head`): not worth a word
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush is quiet too
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m tunring.cli` runs this file as __main__, a second copy of the module: run the
    # package's own, whose CommandError is the one the commands raise.
    from tunring.cli import main as package_main

    sys.exit(package_main())

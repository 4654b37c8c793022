"""What `tunring decode` and `tunring encode` share: framing choice, the in-process ring, files."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
from collections.abc import Iterator

from ..cli import CommandError, mtu_bytes
from ..proto import FRAMINGS, Codec
from ..proto.base import STREAM_MIN_PAYLOAD_BYTES
from .ringpair import ring_pair

COMPRESSIONS = ("lzs", "lz4", "deflate")
CAPACITY_BYTES = 0x400000


def add_framing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framing", required=True, choices=sorted(FRAMINGS), help="the wire format")
    parser.add_argument("--datagram", action="store_true",
                        help="the DTLS form of a framing that has both (f5, fortinet, array): one record per line")
    parser.add_argument("--mtu", type=mtu_bytes, default=1500, help="the tunnel MTU (default 1500)")
    parser.add_argument("--compression", choices=COMPRESSIONS,
                        help="algorithm of compressed CSTP/DTLS records (type 8)")


def make_codec(args: argparse.Namespace):
    """(codec, session, adapter) for the framing the arguments name; CommandError (usage)
    for combinations the framing does not have."""
    cls: type[Codec] = FRAMINGS[args.framing]
    datagram = True if args.datagram else None
    session, adapter = ring_pair(lead=cls.session_lead(), trail=cls.tailroom, mtu=args.mtu,
                                 capacity=CAPACITY_BYTES)
    try:
        codec = cls(session, datagram=datagram, compression=args.compression,
                    max_payload=max(STREAM_MIN_PAYLOAD_BYTES, args.mtu))
    except ValueError as err:
        raise CommandError(str(err)) from None
    return codec, session, adapter


def open_input(path: str) -> io.BufferedReader:
    """``path`` opened for reading; CommandError (usage) naming it and why when it cannot be."""
    with _naming(path, "read"):
        return open(path, "rb")


def open_output(path: str, input_path: str) -> io.BufferedWriter:
    """``path`` created (or emptied) for writing; CommandError (usage) when it cannot be, or
    when it is the input itself (emptying it would lose the input)."""
    try:
        same = os.path.samefile(path, input_path)
    except OSError:  # one of them does not exist: they are not the same file
        same = False
    if same:
        raise CommandError(f"the output {path} is the input: it would be emptied before it is read")
    with _naming(path, "write"):
        return open(path, "wb")


@contextlib.contextmanager
def _naming(path: str, verb: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise CommandError(f"cannot {verb} {path}: {err.strerror or err}") from None

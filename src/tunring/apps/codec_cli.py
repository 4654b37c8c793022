"""What `tunring decode` and `tunring encode` share: framing choice, the in-process ring."""

from __future__ import annotations

import argparse
import sys

from ..proto import FRAMINGS, Codec
from ..proto.base import STREAM_MIN_PAYLOAD_BYTES
from .ringpair import ring_pair

COMPRESSIONS = ("lzs", "lz4", "deflate")


def add_framing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--framing", required=True, choices=sorted(FRAMINGS), help="the wire format")
    parser.add_argument("--datagram", action="store_true",
                        help="the DTLS form of a framing that has both (f5, fortinet, array): one record per line")
    parser.add_argument("--mtu", type=int, default=1500, help="the tunnel MTU (default 1500)")
    parser.add_argument("--compression", choices=COMPRESSIONS,
                        help="algorithm of compressed CSTP/DTLS records (type 8)")


def make_codec(args: argparse.Namespace):
    """(codec, session, adapter) for the framing the arguments name; SystemExit(2) with a
    message for combinations the framing does not have."""
    cls: type[Codec] = FRAMINGS[args.framing]
    datagram = True if args.datagram else None
    session, adapter = ring_pair(lead=cls.session_lead(), trail=cls.tailroom, mtu=args.mtu,
                                 capacity=0x400000)
    try:
        codec = cls(session, datagram=datagram, compression=args.compression,
                    max_payload=max(STREAM_MIN_PAYLOAD_BYTES, args.mtu))
    except ValueError as err:
        print(f"tunring: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return codec, session, adapter

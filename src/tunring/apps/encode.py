"""`tunring encode`: a pcap of IP packets -> the VPN byte stream (or hex datagrams) carrying them.

The reverse of `tunring decode`: each packet is put in the ring as the
operating system would send it, framed in place by the codec (its header
pushed into the packet's headroom) and written out.  Stream framings write
the raw stream; datagram framings write one record per line in hex.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import FramingError
from .codec_cli import add_framing_arguments, make_codec
from .pcap import read_packets


def add_parser(sub) -> None:
    parser = sub.add_parser("encode", help="frame the IP packets of a pcap as a VPN stream",
                            description=__doc__.split("\n\n")[1])
    add_framing_arguments(parser)
    parser.add_argument("input", metavar="INPUT.pcap", help="pcap of IP packets (raw IP or Ethernet)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="stream file, or hex records one per line for datagram framings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    codec, session, adapter = make_codec(args)
    with open(args.input, "rb") as f:
        data = f.read()
    count = 0
    try:
        with open(args.output, "wb") as out:
            for ip in read_packets(data):
                adapter.deliver(ip)
                p = session.receive()
                wire = codec.encode(p)
                if codec.datagram:
                    out.write(bytes(wire).hex().encode() + b"\n")
                else:
                    out.write(wire)
                session.release(p)
                count += 1
    except FramingError as err:
        print(f"tunring encode: {args.input}: {err}", file=sys.stderr)
        return 1
    stats = codec.stats
    print(f"{args.framing}: {count} IP packets ({stats.tx_bytes:,} bytes) -> {args.output}; "
          f"built in place: {count - stats.tx_copies - stats.tx_compressed}, "
          f"compressed: {stats.tx_compressed}, copied: {stats.tx_copies}")
    return 0

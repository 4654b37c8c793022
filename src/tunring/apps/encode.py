"""`tunring encode`: a pcap of IP packets -> the VPN byte stream (or hex datagrams) carrying them.

The reverse of `tunring decode`: each packet is put in the ring as the
operating system would send it, framed in place by the codec (its header
pushed into the packet's headroom) and written out.  Stream framings write
the raw stream; datagram framings write one record per line in hex.  A
record the ring would not carry (not IPv4/IPv6, or over 65535 bytes) is left
out and the first one named, with exit status 1; 2 when INPUT cannot be read
or OUTPUT cannot be written.
"""

from __future__ import annotations

import argparse
import sys

from .. import layout as L
from ..cli import BAD_INPUT
from ..errors import FramingError
from .codec_cli import add_framing_arguments, make_codec, open_input, open_output
from .pcap import read_records


def add_parser(sub) -> None:
    parser = sub.add_parser("encode", help="frame the IP packets of a pcap as a VPN stream",
                            description=__doc__.split("\n\n")[1])
    add_framing_arguments(parser)
    parser.add_argument("input", metavar="INPUT.pcap", help="pcap of IP packets (raw IP or Ethernet)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="stream file, or hex records one per line for datagram framings")
    parser.set_defaults(func=run)


def not_ip(packet: bytes) -> str | None:
    """Why the ring would not carry ``packet`` (the driver's rule: IPv4 of at least 20 bytes or
    IPv6 of at least 40, at most 65535 bytes), or None when it would."""
    if len(packet) > L.MAX_IP_PACKET_SIZE:
        return f"holds {len(packet)} bytes, more than an IP packet's {L.MAX_IP_PACKET_SIZE}"
    version = packet[0] >> 4 if packet else 0
    if (version == 4 and len(packet) >= 20) or (version == 6 and len(packet) >= 40):
        return None
    return f"is not an IPv4/IPv6 packet ({len(packet)} bytes, IP version {version})"


def run(args: argparse.Namespace) -> int:
    codec, session, adapter = make_codec(args)
    with open_input(args.input) as f:
        data = f.read()
    count = skipped = 0
    first_bad = ""
    try:
        records = read_records(data)  # a file that is no pcap fails here, before the output exists
        with open_output(args.output, args.input) as out:
            for offset, ip in records:
                why = not_ip(ip)
                if why is not None:  # skipped, as the ring would skip it, and named below
                    skipped += 1
                    first_bad = first_bad or f"the pcap record at offset {offset} {why}"
                    continue
                adapter.deliver(ip)
                p = session.receive()
                assert p is not None  # just delivered
                wire = codec.encode(p)
                out.write(bytes(wire).hex().encode() + b"\n" if codec.datagram else wire)
                session.release(p)
                count += 1
    except FramingError as err:
        print(f"tunring encode: {args.input}: {err}", file=sys.stderr)
        return BAD_INPUT
    stats = codec.stats
    print(f"{args.framing}: {count} IP packets ({stats.tx_bytes:,} bytes) -> {args.output}; "
          f"built in place: {count - stats.tx_copies - stats.tx_compressed}, "
          f"compressed: {stats.tx_compressed}, copied: {stats.tx_copies}")
    if first_bad:
        print(f"tunring encode: {args.input}: {first_bad}; {skipped} such records left out", file=sys.stderr)
        return BAD_INPUT
    return 0

"""`tunring decode`: a captured VPN byte stream (or hex datagrams) -> a pcap of its IP packets.

INPUT is the decrypted TLS stream as a file, or, for datagram framings, one
record per line in hex (blank lines and lines starting with # are skipped).
The stream is read with ``readinto`` straight into ring packets, as a VPN
client would read its socket (header first, then exactly the rest of the
record, so nothing is copied).  Prints a summary of packets, control messages
and errors; exit status 0 when every byte was understood, 1 otherwise with
the offset of the first byte that was not.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from ..errors import FramingError
from ..proto import Dropped
from .codec_cli import add_framing_arguments, make_codec
from .pcap import PcapWriter


def add_parser(sub) -> None:
    parser = sub.add_parser("decode", help="decode a captured VPN stream into a pcap of IP packets",
                            description=__doc__.split("\n\n")[1])
    add_framing_arguments(parser)
    parser.add_argument("input", metavar="INPUT", help="stream file, or hex records one per line")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.pcap", help="pcap to write")
    parser.set_defaults(func=run)


class _Outcome:
    def __init__(self) -> None:
        self.controls: Counter[str] = Counter()
        self.first_bad: tuple[int, str] | None = None  # (offset, why)
        self.drops = 0

    def take(self, events, where) -> None:
        for event in events:
            if isinstance(event, Dropped):
                self.drops += 1
                self.bad(where(event.offset), event.reason)
            else:
                self.controls[type(event).__name__ if not hasattr(event, "kind") else
                              f"{type(event).__name__}({event.kind:#x})"] += 1

    def bad(self, place: str, why: str) -> None:
        if self.first_bad is None:
            self.first_bad = (place, why)


def run(args: argparse.Namespace) -> int:
    codec, session, adapter = make_codec(args)
    outcome = _Outcome()
    with open(args.output, "wb") as out:
        pcap = PcapWriter(out)

        def drain() -> None:
            while (p := adapter.receive()) is not None:
                pcap.write(p.data)
                adapter.release(p)

        if codec.datagram:
            _decode_datagrams(args.input, codec, outcome, drain)
        else:
            _decode_stream(args.input, codec, outcome, drain)
        drain()
    stats = codec.stats
    print(f"{args.framing}: {pcap.count} IP packets ({stats.rx_bytes:,} bytes) -> {args.output}")
    if outcome.controls:
        print("control: " + ", ".join(f"{name} x{n}" for name, n in sorted(outcome.controls.items())))
    print(f"copies: {stats.rx_copies} packets, {stats.rx_copy_bytes:,} bytes; "
          f"decompressed: {stats.rx_decompressed}; dropped: {outcome.drops}")
    discards = adapter.stats.discards
    if discards:
        outcome.bad("(unknown)", f"{discards} data records did not hold an IPv4/IPv6 packet")
    if outcome.first_bad is not None:
        place, why = outcome.first_bad
        print(f"tunring decode: first byte not understood at {place}: {why}", file=sys.stderr)
        return 1
    return 0


def _decode_stream(path: str, codec, outcome: _Outcome, drain) -> None:
    def where(offset: int) -> str:
        return f"offset {offset}"

    with open(path, "rb") as f:
        n = -1
        while True:
            try:
                view = codec.want(exact=True)  # header, then the rest: every record in place
                n = f.readinto(view)
                if not n:
                    outcome.take(codec.close(), where)
                    break
                outcome.take(codec.received(n), where)
            except FramingError as err:
                outcome.bad(where(getattr(err, "offset", codec.offset)), getattr(err, "reason", str(err)))
                if codec.failed or not n:
                    break
            finally:
                drain()


def _decode_datagrams(path: str, codec, outcome: _Outcome, drain) -> None:
    lines: list[int] = []  # line number of each datagram, to name places

    def where(index: int) -> str:
        line = lines[index] if 0 <= index < len(lines) else "?"
        return f"datagram {index} (line {line})"

    with open(path, encoding="ascii", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                record = bytes.fromhex(text)
            except ValueError:
                outcome.bad(f"line {number}", "not a record in hex")
                return
            lines.append(number)
            try:
                outcome.take(codec.feed(record), where)
            except FramingError as err:
                outcome.bad(where(len(lines) - 1), getattr(err, "reason", str(err)))
            drain()

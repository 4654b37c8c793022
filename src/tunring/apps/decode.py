"""`tunring decode`: a captured VPN byte stream (or hex datagrams) -> a pcap of its IP packets.

INPUT is the decrypted TLS stream as a file, or, for datagram framings, one
record per line in hex (blank lines and lines starting with # are skipped).
The stream is read with ``readinto`` straight into ring packets, as a VPN
client would read its socket (header first, then exactly the rest of the
record, so nothing is copied).  Prints a summary of packets, control messages
and errors; exit status 0 when every byte was understood, 1 otherwise with
the offset of the first byte that was not, 2 when INPUT cannot be read or
OUTPUT cannot be written (then nothing is written).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from io import BufferedReader

from ..cli import BAD_INPUT
from ..errors import FramingError
from ..proto import Codec, Dropped
from .codec_cli import add_framing_arguments, make_codec, open_input, open_output
from .pcap import PcapWriter


def add_parser(sub) -> None:
    parser = sub.add_parser("decode", help="decode a captured VPN stream into a pcap of IP packets",
                            description=__doc__.split("\n\n")[1])
    add_framing_arguments(parser)
    parser.add_argument("input", metavar="INPUT", help="stream file, or hex records one per line")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT.pcap", help="pcap to write")
    parser.set_defaults(func=run)


class _Outcome:
    """What the decode met besides IP packets: control events, and the first byte not understood."""

    def __init__(self) -> None:
        self.controls: Counter[str] = Counter()
        self.first_bad: tuple[str, str] | None = None  # (place, why)

    def take(self, events, where: Callable[[int], str]) -> None:
        for event in events:
            if isinstance(event, Dropped):
                self.bad(where(event.offset), event.reason)
            else:
                self.controls[type(event).__name__ if not hasattr(event, "kind") else
                              f"{type(event).__name__}({event.kind:#x})"] += 1

    def error(self, place: str, err: FramingError) -> None:
        self.bad(place, getattr(err, "reason", str(err)))

    def bad(self, place: str, why: str) -> None:
        if self.first_bad is None:
            self.first_bad = (place, why)


def run(args: argparse.Namespace) -> int:
    codec, session, adapter = make_codec(args)
    outcome = _Outcome()
    # The input is opened first: a mistyped input must not leave an empty pcap behind.
    with open_input(args.input) as source, open_output(args.output, args.input) as out:
        pcap = PcapWriter(out)

        def drain() -> None:
            while (p := adapter.receive()) is not None:
                pcap.write(p.data)
                adapter.release(p)

        (_decode_datagrams if codec.datagram else _decode_stream)(source, codec, outcome, drain)
        drain()
    stats = codec.stats
    print(f"{args.framing}: {pcap.count} IP packets ({stats.rx_bytes:,} bytes) -> {args.output}")
    if outcome.controls:
        print("control: " + ", ".join(f"{name} x{n}" for name, n in sorted(outcome.controls.items())))
    print(f"copies: {stats.rx_copies} packets, {stats.rx_copy_bytes:,} bytes; "
          f"decompressed: {stats.rx_decompressed}; dropped: {stats.rx_drops}")
    discards = adapter.stats.discards
    if discards:
        outcome.bad("(unknown)", f"{discards} data records did not hold an IPv4/IPv6 packet")
    if outcome.first_bad is not None:
        place, why = outcome.first_bad
        print(f"tunring decode: first byte not understood at {place}: {why}", file=sys.stderr)
        return BAD_INPUT
    return 0


def _decode_stream(source: BufferedReader, codec: Codec, outcome: _Outcome, drain: Callable[[], None]) -> None:
    def where(offset: int) -> str:
        return f"offset {offset}"

    n = -1
    while n:
        try:
            view = codec.want(exact=True)  # header, then the rest: every record in place
            n = source.readinto(view)
            outcome.take(codec.received(n) if n else codec.close(), where)
        except FramingError as err:
            outcome.error(where(getattr(err, "offset", codec.offset)), err)
            if codec.failed:
                break
        finally:
            drain()


def _decode_datagrams(source: BufferedReader, codec: Codec, outcome: _Outcome, drain: Callable[[], None]) -> None:
    lines: list[int] = []  # line number of each datagram, to name places

    def where(index: int) -> str:
        line = lines[index] if 0 <= index < len(lines) else "?"
        return f"datagram {index} (line {line})"

    for number, line in enumerate(source, 1):
        text = line.decode("ascii", "replace").strip()  # a non-ASCII line is "not hex", not a crash
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
            outcome.error(where(len(lines) - 1), err)
        drain()
    try:
        outcome.take(codec.close(), where)  # end of input: what the codec still held
    except FramingError as err:
        outcome.error(where(len(lines) - 1), err)

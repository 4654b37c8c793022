"""What every benchmark shares: its rows, its table of implementations, best-of rounds, packets.

A benchmark lists what it measures as a table of :class:`Impl` entries: the name its rows
carry (``"tunring"``, a peer's name, ``"c"`` for a native anchor, ``"tunring-py"`` for the
pure-Python fallback), the function that measures it, and the Python modules and programs it
needs.  :func:`measure_table` runs a table, making an entry whose needs are missing a skipped
row that says why; :func:`best_of` repeats a whole round and keeps each row's best.  Adding
an implementation to a benchmark is one more entry in its table.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ... import layout as L
from ...cli import int_in
from ...linux.offload import ipv4_header_checksum
from ..ringpair import drain, ring_pair

__all__ = ["Impl", "Result", "add_sizes_argument", "available", "best_of", "drain", "ipv4", "ipv4_udp",
           "measure_table", "result", "ring_pair", "skipped"]

LOCAL4, PEER4 = "10.0.0.1", "10.0.0.2"
UDP, TCP = 17, 6
IPV4_HEADER_BYTES = 20
UDP4_HEADER_BYTES = 28  # IPv4 + UDP: the smallest packet ipv4_udp builds
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_DONT_FRAGMENT = 0x4000


@dataclass
class Result:
    """One row: ``impl`` is "tunring" for ours, the peer's name otherwise; a skipped row has
    ``pps`` 0 and its reason in ``extra["skipped"]``."""

    case: str
    impl: str
    packet_size: int
    pps: float
    gbps: float
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def result(case: str, impl: str, packet_size: int, packets: float, seconds: float, **extra) -> Result:
    """A Result from a count of packets of ``packet_size`` bytes moved in ``seconds``."""
    pps = packets / seconds if seconds > 0 else 0.0
    return Result(case, impl, packet_size, pps, pps * packet_size * 8 / 1e9, dict(extra))


def skipped(case: str, impl: str, packet_size: int, reason: str) -> Result:
    """The row of an implementation that could not run, and why."""
    return Result(case, impl, packet_size, 0.0, 0.0, {"skipped": reason})


# -- the table of implementations ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Impl:
    """One entry of a benchmark's table.

    ``measure`` is what the benchmark calls to time it (each benchmark documents its
    signature).  ``variant`` is appended to the case ("1proc" + "-batch"): several rows of
    tunring beside one row of a peer, which the table's ratio column understands.
    ``modules`` and ``programs`` are what it needs; ``extra`` goes into each of its rows.
    """

    impl: str
    measure: Callable[..., Any]
    variant: str = ""
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def case(self, case: str) -> str:
        return f"{case}-{self.variant}" if self.variant else case

    def missing(self) -> str | None:
        """Why this entry cannot run here (a module that does not import, a program not on
        PATH), or None."""
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as err:
                return f"needs the Python module {module} ({err})"
        for program in self.programs:
            if shutil.which(program) is None:
                return f"needs the program {program} on PATH"
        return None

    def result(self, case: str, packet_size: int, packets: float, seconds: float, **extra) -> Result:
        """This entry's row for ``case``: ``packets`` of ``packet_size`` bytes in ``seconds``."""
        return result(self.case(case), self.impl, packet_size, packets, seconds, **self.extra, **extra)


def available(table: Iterable[Impl], case: str, packet_size: int) -> tuple[list[Impl], list[Result]]:
    """The entries of ``table`` that can run, and a skipped row for each one that cannot."""
    ready: list[Impl] = []
    rows: list[Result] = []
    for entry in table:
        reason = entry.missing()
        if reason is None:
            ready.append(entry)
        else:
            rows.append(skipped(entry.case(case), entry.impl, packet_size, reason))
    return ready, rows


def measure_table(table: Iterable[Impl], case: str, packet_size: int,
                  run: Callable[[Impl], Result]) -> list[Result]:
    """``run(entry)`` for each entry of ``table`` that can run, in order, then the skipped rows."""
    ready, rows = available(table, case, packet_size)
    return [run(entry) for entry in ready] + rows


def best_of(rounds: int, measure_round: Callable[[], Iterable[Result]], *, warmup: int = 0) -> list[Result]:
    """Run ``measure_round`` ``warmup + rounds`` times; per (case, impl, packet_size) keep the row
    with the highest pps, in the order rows first came.  The machine is shared: the best run is
    the least disturbed one.  Warm-up rounds are run and not counted."""
    best: dict[tuple[str, str, int], Result] = {}
    for round_ in range(warmup + rounds):
        rows = list(measure_round())
        if round_ < warmup:
            continue
        for row in rows:
            key = (row.case, row.impl, row.packet_size)
            if key not in best or row.pps > best[key].pps:
                best[key] = row
    return list(best.values())


# -- packets ----------------------------------------------------------------------------------
def ipv4(payload: bytes, *, protocol: int = UDP, src: str = LOCAL4, dst: str = PEER4, ident: int = 0,
         dont_fragment: bool = False) -> bytes:
    """An IPv4 packet (20-byte header, its checksum right) carrying ``payload``."""
    header = bytearray(_IPV4.pack(0x45, 0, IPV4_HEADER_BYTES + len(payload), ident & 0xFFFF,
                                  _DONT_FRAGMENT if dont_fragment else 0, 64, protocol, 0,
                                  socket.inet_aton(src), socket.inet_aton(dst)))
    ipv4_header_checksum(memoryview(header), IPV4_HEADER_BYTES)
    return bytes(header) + payload


def ipv4_udp(size: int, *, fill: int = 0, sport: int = 1, dport: int = 2, **ip: Any) -> bytes:
    """An IPv4/UDP packet of ``size`` bytes (28..65535) whose payload bytes are all ``fill``;
    the UDP checksum is 0 (none).  ``ip`` goes to :func:`ipv4` (addresses, ident, DF)."""
    if not UDP4_HEADER_BYTES <= size <= L.MAX_IP_PACKET_SIZE:
        raise ValueError(f"an IPv4/UDP packet has {UDP4_HEADER_BYTES}..{L.MAX_IP_PACKET_SIZE} bytes, not {size}")
    udp = _UDP.pack(sport, dport, size - IPV4_HEADER_BYTES, 0) + bytes([fill]) * (size - UDP4_HEADER_BYTES)
    return ipv4(udp, **ip)


# -- arguments --------------------------------------------------------------------------------
class _Concatenate(argparse.Action):
    """``--sizes 64 512`` and ``--sizes 64,512`` alike: one flat list."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, [n for group in values for n in group])


def add_sizes_argument(parser: argparse.ArgumentParser, default: Sequence[int], high: int,
                       what: str = "IP packet sizes in bytes") -> None:
    """``--sizes``: packet sizes from the smallest IPv4/UDP packet up to ``high``."""
    one_size = int_in(UDP4_HEADER_BYTES, high)

    def sizes(text: str) -> list[int]:
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{text!r} names no size")
        return [one_size(part) for part in parts]

    parser.add_argument("--sizes", nargs="+", type=sizes, action=_Concatenate, default=list(default),
                        metavar="N[,N]",
                        help=f"{what}, {UDP4_HEADER_BYTES}..{high}, comma or space separated "
                             f"(default {','.join(map(str, default))})")

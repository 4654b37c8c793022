"""`tunring bench NAME`: benchmarks that run tunring and its peers in the same run.

Each benchmark module has ``add_arguments(parser)`` and ``run(args) -> list[Result]``, and
builds its rows with :mod:`.common` (its table of implementations, best-of rounds, packets).
Results print as a table (with each peer's ratio to tunring; a skipped row with its reason)
or, with ``--json``, as one object ``{"bench": NAME, "results": [...]}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from .common import Result, result

__all__ = ["BENCHES", "Result", "add_parser", "render_table", "result"]

BENCHES: dict[str, str] = {
    "ring": "tunring.apps.bench.ring",
    "esp": "tunring.apps.bench.esp",
    "codecs": "tunring.apps.bench.codecs",
    "tun": "tunring.apps.bench.tun",
    "ppp": "tunring.apps.bench.ppp",
    "connect": "tunring.apps.bench.connect",
}


def render_table(name: str, results: list[Result]) -> str:
    """A human table.  A peer's "tunring x" is tunring's best pps over the peer's, among
    tunring rows of the same size whose case is the peer's case or starts with it plus "-"."""

    def best_ours(peer: Result) -> float:
        return max((r.pps for r in results if r.impl == "tunring" and r.packet_size == peer.packet_size
                    and (r.case == peer.case or r.case.startswith(peer.case + "-"))), default=0.0)

    lines = [f"tunring bench {name}",
             f"{'case':<28} {'impl':<12} {'size':>6} {'pps':>12} {'Gbit/s':>8} {'tunring x':>10}"]
    for r in results:
        if "skipped" in r.extra:
            lines.append(f"{r.case:<28} {r.impl:<12} {r.packet_size:>6} skipped: {r.extra['skipped']}")
            continue
        base = best_ours(r) if r.impl != "tunring" else 0.0
        ratio = f"{base / r.pps:.2f}" if base and r.pps and r.impl != "tunring" else ""
        lines.append(f"{r.case:<28} {r.impl:<12} {r.packet_size:>6} {r.pps:>12,.0f} {r.gbps:>8.3f} {ratio:>10}")
    return "\n".join(lines)


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="measure tunring against its peers in the same run")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="NAME")
    for name, module in BENCHES.items():
        mod = importlib.import_module(module)
        p = benches.add_parser(name, help=(mod.__doc__ or "").strip().split("\n")[0])
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        mod.add_arguments(p)
        p.set_defaults(func=lambda args, mod=mod, name=name: _run(name, mod, args))


def _run(name: str, mod, args: argparse.Namespace) -> int:
    results = mod.run(args)
    if args.json:
        json.dump({"bench": name, "results": [r.to_json() for r in results]}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(render_table(name, results))
    return 0

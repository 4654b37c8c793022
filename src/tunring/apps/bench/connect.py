"""AnyConnect client: iperf3 TCP both ways and ping latency through `tunring connect` and openconnect.

Needs root, ocserv, openconnect and iperf3.  One ocserv (tunring.apps.connect.lab)
serves both clients in the same run, one client at a time, on the same path:
``cstp`` (CSTP over TLS, no compression), ``cstp-lz4`` (oc-lz4 compression; iperf3's
payload is compressible, so this measures the compressor too), and ``dtls``
(DTLS 1.2 with PSK-NEGOTIATE, no compression).  Both clients run with
``--no-dtls`` on the CSTP cases.  Each row's ``gbps`` is
iperf3's receiver rate; ``pps`` expresses it as packets of the tunnel MTU so the
table's ratio column compares the two clients.  ``--profile DIR`` records
py-spy profiles of tunring's client during the transfers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from . import Result, result

DIRECTIONS = ("up", "down")  # up: client namespace -> server; down: iperf3 -R
CASES = {
    # case: (tunring's options, openconnect's options)
    "cstp": (["--no-dtls", "--compression", "off"], ["--no-dtls", "--compression", "off"]),
    "cstp-lz4": (["--no-dtls", "--compression", "oc-lz4"], ["--no-dtls", "--compression", "stateless"]),
    "dtls": (["--compression", "off"], ["--compression", "off"]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 duration per direction")
    parser.add_argument("--cases", default=",".join(CASES), help="cases, comma separated: " + ", ".join(CASES))
    parser.add_argument("--pings", type=int, default=50, help="pings per latency measurement")
    parser.add_argument("--profile", metavar="DIR", help="write py-spy profiles of tunring's client here")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _iperf(lab, seconds: float, reverse: bool) -> tuple[float, int]:
    """(receiver bits per second, retransmits) of one iperf3 TCP run to the server side."""
    from ..connect.lab import INSIDE_IP4

    server = subprocess.Popen(["ip", "netns", "exec", lab.server_ns, "iperf3", "-s", "-1", "-B", INSIDE_IP4],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = lab.run_client(["iperf3", "-c", INSIDE_IP4, "-t", str(seconds), "-J", *(["-R"] if reverse else [])],
                             timeout_s=seconds + 30)
        report = json.loads(out.stdout or "{}")
        if "error" in report or "end" not in report:
            raise RuntimeError(f"iperf3: {report.get('error', out.stderr.strip())}")
        end = report["end"]
        return end["sum_received"]["bits_per_second"], end.get("sum_sent", {}).get("retransmits", 0)
    finally:
        server.wait(10)


def _rtt_ms(lab, count: int) -> float:
    from ..connect.lab import INSIDE_IP4

    out = lab.run_client(["ping", "-c", str(count), "-i", "0.02", "-q", INSIDE_IP4], timeout_s=count + 20).stdout
    found = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(found.group(1)) if found else float("nan")


def _profile(proc: subprocess.Popen, path: str, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return None
    return subprocess.Popen([spy, "record", "-p", str(proc.pid), "-d", str(max(1, int(seconds))), "-f", "raw",
                             "-o", path, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _measure(lab, impl: str, case: str, options: list[str], args: argparse.Namespace) -> list[Result]:
    iface = f"bench{impl[:2]}0"
    argv = lab.tunring_argv("-q", *options, iface=iface) if impl == "tunring" else \
        lab.openconnect_argv("-q", *options, iface=iface)
    proc = lab.start_client(argv, iface)
    rows = []
    try:
        mtu = int(lab.run_client(["cat", f"/sys/class/net/{iface}/mtu"]).stdout)
        rtt = _rtt_ms(lab, args.pings)
        for direction in DIRECTIONS:
            spy = None
            if args.profile and impl == "tunring":
                os.makedirs(args.profile, exist_ok=True)
                spy = _profile(proc, os.path.join(args.profile, f"{case}-{direction}.txt"), args.seconds)
            bps, retransmits = _iperf(lab, args.seconds, reverse=direction == "down")
            if spy is not None:
                spy.wait(30)
            rows.append(result(f"{case}-{direction}", impl, mtu, int(bps / 8 / mtu * args.seconds), args.seconds,
                               mbit_s=round(bps / 1e6, 1), rtt_ms=rtt, retransmits=retransmits))
    finally:
        _stop(proc)
    return rows


def _skipped(case: str, impl: str, reason: str) -> list[Result]:
    return [result(f"{case}-{d}", impl, 0, 0, 1.0, skipped=reason) for d in DIRECTIONS]


def run(args: argparse.Namespace) -> list[Result]:
    from ..connect.lab import Lab

    if os.geteuid() != 0:
        raise SystemExit("tunring bench connect needs root (network namespaces, TUN devices)")
    for tool, package in (("ocserv", "ocserv"), ("iperf3", "iperf3"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {package} (scripts/bootstrap test)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}: choose from {', '.join(CASES)}")
    results: list[Result] = []
    with Lab(dtls="dtls" in cases, compression=True) as lab:
        for case in cases:
            for impl, options in zip(("tunring", "openconnect"), CASES[case], strict=True):
                if impl == "openconnect" and shutil.which("openconnect") is None:
                    results += _skipped(case, impl, "openconnect is not installed")
                else:
                    results += _measure(lab, impl, case, options, args)
    return results

"""PPP gateways: iperf3 TCP through stock openconnect -> `tunring serve`, F5 plain, F5 HDLC, Fortinet.

Needs root, openconnect and iperf3.  The gateway (the CLI, as an operator runs it) lives in a
namespace the benchmark makes, the client in another, joined by a veth pair
(:mod:`tunring.apps.serve.rig`).  Each case runs iperf3 from the client to an iperf3 server on
the gateway's TUN address (``upload``) and back (``download``, ``-R``).  Rows carry the
gateway's CPU seconds per GB carried (from /proc, which the load of a shared machine does not
skew as it does throughput) and, for HDLC uploads, the share of the gateway's busy time spent
un-HDLC-ing, from a separate run under cProfile (``unhdlc_share``: rfc1662.scan and decode_frame
over all time not spent waiting in the selector).  The peer is the C gateway the project
measures itself against: openconnect -> ocserv over CSTP (``impl`` ``ocserv``; a skipped row
when ocserv is not installed), run in the same namespaces and the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import Result, result

VARIANTS = {"f5": ("f5", []), "f5-hdlc": ("f5", ["--hdlc"]), "fortinet": ("fortinet", [])}
POOL, GATEWAY4 = "10.9.0.0/24", "10.9.0.1"
OCSERV_NET, OCSERV_GATEWAY4 = "10.10.0", "10.10.0.1"
PORT, OCSERV_PORT = 4443, 4444
MTU = 1400
USER, PASSWORD = "bench", "bench password"
NETNS = f"tunring-bench-ppp-{os.getpid()}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 duration per direction")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which gateways, comma separated")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run of the HDLC gateway")
    parser.add_argument("--no-ocserv", action="store_true", help="skip the ocserv reference")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextlib.contextmanager
def _process(args: list[str], log_path: str, ready: str, timeout_s: float = 20.0):
    """A server process whose stderr/stdout goes to ``log_path``; ready once ``ready`` is logged."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while ready not in open(log_path, errors="replace").read():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not start:\n{open(log_path, errors='replace').read()[-2000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _iperf(ns, server_ip: str, seconds: float, reverse: bool) -> dict:
    cmd = ["iperf3", "-c", server_ip, "-t", str(seconds), "-J", "--connect-timeout", "5000"]
    out = ns.run(*cmd, *(["-R"] if reverse else []), timeout_s=seconds + 30)
    report = json.loads(out.stdout or "{}")
    if "error" in report or "end" not in report:
        raise RuntimeError(f"iperf3: {report.get('error', out.stderr)}")
    return report["end"]["sum_received"]


def _measure(ns, pid: int, server_ip: str, seconds: float, case: str, impl: str, **extra) -> list[Result]:
    rows = []
    for direction, reverse in (("upload", False), ("download", True)):
        cpu0 = _cpu_s(pid)
        got = _iperf(ns, server_ip, seconds, reverse)
        cpu = _cpu_s(pid) - cpu0
        gb = got["bytes"] / 1e9
        rows.append(result(f"{case} {direction}", impl, MTU, int(got["bytes"] / MTU), got["seconds"],
                           mbit_s=round(got["bits_per_second"] / 1e6, 1),
                           gateway_cpu_s_per_gb=round(cpu / gb, 3) if gb else None, **extra))
    return rows


def _serve_args(protocol: str, extra: list[str], files: tuple[str, str, str], profile: str | None) -> list[str]:
    cert, key, users = files
    head = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else []) + ["-m", "tunring.cli"]
    return head + ["serve", "--protocol", protocol, "--listen", f"0.0.0.0:{PORT}", "--cert", cert, "--key", key,
                   "--users", users, "--pool", POOL, "--mtu", str(MTU), *extra]


def _tunring_case(name: str, ns, files, pin: str, workdir: str, seconds: float) -> list[Result]:
    protocol, extra = VARIANTS[name]
    with _process(_serve_args(protocol, extra, files, None), os.path.join(workdir, f"{name}.log"), "listening on") \
            as proc, _iperf_server(workdir):
        client = ns.connect(protocol, USER, PASSWORD, pin, PORT)
        try:
            return _measure(ns, proc.pid, GATEWAY4, seconds, name, "tunring")
        finally:
            client.stop()


def _unhdlc_share(ns, files, pin: str, workdir: str, seconds: float) -> float:
    """The share of the HDLC gateway's busy time spent in rfc1662.scan/decode_frame, under cProfile."""
    profile = os.path.join(workdir, "hdlc.prof")
    protocol, extra = VARIANTS["f5-hdlc"]
    with _process(_serve_args(protocol, extra, files, profile), os.path.join(workdir, "profiled.log"),
                  "listening on"), _iperf_server(workdir):
        client = ns.connect(protocol, USER, PASSWORD, pin, PORT)
        try:
            _iperf(ns, GATEWAY4, seconds, reverse=False)
        finally:
            client.stop()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.values())
    idle = sum(tt for (_f, _l, fn), (_cc, _nc, tt, _ct, _c) in stats.items() if "poll" in fn and "epoll" in fn)
    unhdlc = sum(ct for (f, _l, fn), (_cc, _nc, _tt, ct, _c) in stats.items()
                 if f.endswith("rfc1662.py") and fn in ("scan", "decode_frame"))
    return unhdlc / (total - idle) if total > idle else 0.0


@contextlib.contextmanager
def _iperf_server(workdir: str):
    with _process(["iperf3", "-s", "--forceflush"], os.path.join(workdir, "iperf3.log"), "Server listening"):
        yield


OCSERV_CONF = """auth = "plain[passwd={users}]"
tcp-port = {port}
socket-file = {dir}/ocserv.sock
pid-file = {dir}/ocserv.pid
server-cert = {cert}
server-key = {key}
run-as-user = nobody
run-as-group = nogroup
isolate-workers = false
max-clients = 4
max-same-clients = 4
keepalive = 300
dpd = 60
try-mtu-discovery = false
auth-timeout = 240
cookie-timeout = 300
rekey-time = 172800
rekey-method = ssl
use-occtl = false
device = vpns
predictable-ips = true
ipv4-network = {net}.0
ipv4-netmask = 255.255.255.0
route = {net}.0/255.255.255.0
ping-leases = false
cisco-client-compat = true
mtu = {mtu}
"""


def _ocserv_case(ns, files, pin: str, workdir: str, seconds: float) -> list[Result]:
    cert, key, users = files
    conf = os.path.join(workdir, "ocserv.conf")
    with open(conf, "w") as f:
        f.write(OCSERV_CONF.format(users=users, port=OCSERV_PORT, dir=workdir, cert=cert, key=key,
                                   net=OCSERV_NET, mtu=MTU))
    with _process(["ocserv", "-f", "-c", conf], os.path.join(workdir, "ocserv.log"), "listening"), \
            _iperf_server(workdir):
        client = ns.connect("anyconnect", USER, PASSWORD, pin, OCSERV_PORT)
        try:
            pid = int(open(os.path.join(workdir, "ocserv.pid")).read())
            workers = _ocserv_workers(pid)
            rows = _measure(ns, workers[0] if workers else pid, OCSERV_GATEWAY4, seconds, "anyconnect cstp",
                            "ocserv")
        finally:
            client.stop()
    return rows


def _ocserv_workers(pid: int) -> list[int]:
    """ocserv's per-client worker processes (children of the main one), which carry the traffic."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    children = [int(p) for p in out.stdout.split()]
    grand = [int(p) for c in children for p in
             subprocess.run(["pgrep", "-P", str(c)], capture_output=True, text=True).stdout.split()]
    workers = [p for p in children + grand if "worker" in open(f"/proc/{p}/cmdline").read()]
    return workers


@contextlib.contextmanager
def _namespace():
    """Run the block in a fresh namespace (lo up), removed afterwards."""
    from pyroute2 import netns

    from ...linux import netlink

    netns.create(NETNS)
    try:
        with netlink.netns(NETNS):
            netlink.configure("lo")
            yield
    finally:
        netns.remove(NETNS)


def run(args: argparse.Namespace) -> list[Result]:
    if os.geteuid() != 0:
        raise SystemExit("tunring bench ppp needs root (TUN devices, network namespaces)")
    for tool in ("openconnect", "iperf3"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install {tool} (scripts/bootstrap test)")
    from ..serve import rig

    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tunring-bench-ppp-") as workdir, _namespace():
        os.chmod(workdir, 0o755)  # ocserv's workers run as nobody and read the certificate
        ns = rig.ClientNamespace(1)
        try:
            cert, key, users, pin = rig.credentials(workdir, {USER: PASSWORD}, ns.gateway_ip)
            for path in (cert, key, users):
                os.chmod(path, 0o644)
            files = (cert, key, users)
            for name in variants:
                results += _tunring_case(name, ns, files, pin, workdir, args.seconds)
            if "f5-hdlc" in variants and not args.no_profile:
                share = _unhdlc_share(ns, files, pin, workdir, args.seconds)
                for row in results:
                    if row.case == "f5-hdlc upload":
                        row.extra["unhdlc_share"] = round(share, 3)
            results += _reference(args, ns, files, pin, workdir)
        finally:
            ns.close()
    return results


def _reference(args, ns, files, pin: str, workdir: str) -> list[Result]:
    reason = ("--no-ocserv" if args.no_ocserv else
              "ocserv is not installed (apt-get install ocserv)" if shutil.which("ocserv") is None else "")
    if not reason:
        try:
            return _ocserv_case(ns, files, pin, workdir, args.seconds)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            reason = f"ocserv run failed: {str(e)[-300:]}"
    return [Result(f"anyconnect cstp {d}", "ocserv", MTU, 0.0, 0.0, {"skipped": reason})
            for d in ("upload", "download")]

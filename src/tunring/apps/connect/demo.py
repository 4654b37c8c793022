"""The root demo behind `make demo`: `tunring connect` against a real ocserv, in namespaces it makes.

It starts ocserv in a network namespace (a throwaway CA, certificate and user),
runs ``tunring connect`` in a second namespace joined to the first by a veth
pair, pings through the tunnel (IPv4 and IPv6), echoes a TCP stream through it
and checks every byte, prints what the client counted (packets, bytes,
compression, copies), disconnects with SIGTERM and removes everything.
:func:`missing` says what the demo would need when it cannot run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess

from .lab import INSIDE_IP4, INSIDE_IP6, Lab

ECHO_BYTES = 20 * 1024 * 1024


def missing() -> str | None:
    """Why the VPN demo cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "root (network namespaces and TUN devices)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun"
    tools = [t for t in ("ocserv", "ocpasswd", "ip", "ping") if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} (Debian: apt-get install ocserv iproute2 iputils-ping)"
    return None


def _rtt(out: str) -> str:
    found = re.search(r"= ([\d.]+)/([\d.]+)/", out)
    return f"{found.group(2)} ms" if found else "?"


def run(echo_bytes: int = ECHO_BYTES) -> int:
    """The demo; 0 if every check passed."""
    with Lab() as lab:
        print(f"tunring demo: ocserv in namespace {lab.server_ns}, `tunring connect` in {lab.client_ns}")
        stats_path = os.path.join(lab.dir, "stats.json")
        proc = lab.start_client(lab.tunring_argv("-q", "--json-stats", stats_path, iface="vpn0"), "vpn0")
        ok = True
        try:
            addr = lab.run_client(["ip", "-brief", "addr", "show", "dev", "vpn0"]).stdout.split()[2:]
            print(f"  connected: vpn0 {' '.join(addr)}, split-include route to {INSIDE_IP4} through it")
            for address in (INSIDE_IP4, INSIDE_IP6):
                out = lab.ping(address, count=5)
                ok &= out.returncode == 0
                said = f"5/5 answered, rtt {_rtt(out.stdout)}" if out.returncode == 0 else "FAILED"
                print(f"  ping {address}: {said}")
            seconds = lab.echo(INSIDE_IP4, echo_bytes)
            print(f"  TCP echo of {echo_bytes >> 20} MiB each way through the tunnel: every byte checked, "
                  f"{2 * echo_bytes * 8 / seconds / 1e6:.0f} Mbit/s both ways together")
        except AssertionError as e:
            ok = False
            print(f"  FAILED: {e}")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        with open(stats_path) as f:
            s = json.load(f)
        print(f"  client counted: in {s['rx_packets']} packets {s['rx_bytes'] / 1e6:.1f} MB, out {s['tx_packets']} "
              f"packets {s['tx_bytes'] / 1e6:.1f} MB, compression {s['compression'] or 'none'} "
              f"(x{s['rx_compression_ratio']:.2f} in), copies {s['copies']}")
        gone = lab.route_dev(INSIDE_IP4) == ""
        print(f"  SIGTERM: exit code {code}, vpn0 {'removed' if gone else 'STILL THERE'}; "
              "removing ocserv and the namespaces")
        ok &= code == 0 and gone
    print("  every check passed" if ok else "  FAILED")
    return 0 if ok else 1

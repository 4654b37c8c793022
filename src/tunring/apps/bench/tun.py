"""TUN I/O: packets per second writing to and reading from a TUN interface, and TCP through it.

Needs root.  Everything runs inside a network namespace the benchmark creates
and removes.  Per-packet cases (no offloads): ``write`` sends prebuilt UDP
packets into the kernel, ``read`` drains packets the kernel queued on the
interface beforehand; tunring goes through the Device API (allocate_many + copy
into packet memory + send_many; receive_many + release_many), ``os`` is a
plain ``os.write``/``os.read`` loop on the descriptor, ``pytun`` is
python-pytun's ``write``/``read``.  The ``tcp`` case runs iperf3 between two
sockets of the namespace through a reflector (:mod:`tunring.apps.reflect`)
on the interface: tunring with offloads (``tunring``: virtio header and GRO
writes, ``tunring-tso``: also TSO/USO reads split in Python) and without
(``tunring-plain``) against the same reflector written as an os.read/os.write
loop (``os``) and with python-pytun (``pytun``), all on the same kind of
interface.  Throughput on a shared machine swings with the load; the JSON
rows also carry ``reflector_cpu_s_per_gb``, the reflector's own CPU time per
GB carried, which does not.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import multiprocessing
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

from ...cli import BAD_INPUT, CommandError, int_in
from ..reflect import reflect, serve
from .common import Impl, Result, add_sizes_argument, best_of, ipv4_udp, measure_table

LOCAL4, PEER4 = "10.0.0.1", "10.1.10.2"
ADDRESSES = [f"{LOCAL4}/8"]
IFNAME = "trbench0"
NETNS = f"tunring-bench-{os.getpid()}"
MTU = 1500  # the interface's: the largest packet a case sends
BATCH = 64
READ_BYTES = 2048  # what the peers read per packet: more than the MTU (1500) carries
REFLECT_BATCH = 256
POLL_S = 0.05
CASES = ("write", "read", "tcp")
TCP_CASE = "tcp iperf3 via reflector"
SO_SNDBUFFORCE = 32
IPERF3 = ("iperf3",)
IPERF3_GRACE_S = 30  # how much longer than its run iperf3 may take


def _case_list(text: str) -> list[str]:
    cases = [case for case in text.split(",") if case]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"{text!r}: the cases are {', '.join(CASES)}")
    return cases


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int_in(BATCH), default=100_000, help="packets per write/read case")
    add_sizes_argument(parser, (100, 1400), MTU, "IP packet sizes in bytes, up to the interface's MTU")
    parser.add_argument("--tcp-seconds", type=int_in(0), default=4,
                        help="iperf3 duration per run in whole seconds, as iperf3 takes it (0: skip TCP)")
    parser.add_argument("--rounds", type=int_in(1), default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--cases", type=_case_list, default=list(CASES),
                        help="which cases to run, comma separated (write,read,tcp)")


def _udp4(size: int) -> bytes:
    """A valid IPv4 UDP packet of ``size`` bytes to the reflector's peer (dropped by the kernel:
    the namespace does not forward)."""
    return ipv4_udp(size, src=LOCAL4, dst=PEER4, sport=5000, dport=9, dont_fragment=True)


# -- the implementations: each opens its own interface named IFNAME ------------------------------
class Tun(Protocol):
    def write(self, packet: bytes, count: int) -> None: ...
    def read(self, count: int) -> int: ...
    def reflect(self, stop: Callable[[], bool]) -> None: ...
    def close(self) -> None: ...


class TunringTun:
    """tunring's Device API on a TunDevice: allocate_many + copy + send_many, receive_many + release_many."""

    def __init__(self, offload: bool = False, tso: bool = True) -> None:
        from ...linux import TunDevice

        self.dev = TunDevice.create(IFNAME, addresses=ADDRESSES, offload=offload, tso=tso, packets=1024)

    def write(self, packet: bytes, count: int) -> None:
        dev, size = self.dev, len(packet)
        for _ in range(count // BATCH):
            out = dev.allocate_many(size, BATCH)
            for p in out:
                p.buf[p.start : p.end] = packet
            dev.send_many(out)

    def read(self, count: int) -> int:
        dev = self.dev
        got = 0
        while got < count:
            ps = dev.receive_many(BATCH)
            if not ps:
                break
            got += len(ps)
            dev.release_many(ps)
        return got

    def reflect(self, stop: Callable[[], bool]) -> None:
        serve(self.dev, stop, batch=REFLECT_BATCH)

    def close(self) -> None:
        self.dev.close()


def _configure() -> None:
    from ...linux import netlink

    netlink.configure(IFNAME, addresses=netlink.parse_addresses(ADDRESSES))


class OsTun:
    """The plain program: os.write/os.read on a /dev/net/tun descriptor it set up itself."""

    def __init__(self) -> None:
        import fcntl
        import struct

        from ...linux.tun import IFF_NO_PI, IFF_TUN, TUNSETIFF

        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        ifreq = struct.pack("16sH22x", IFNAME.encode(), IFF_TUN | IFF_NO_PI)  # struct ifreq: name, flags
        fcntl.ioctl(self.fd, TUNSETIFF, ifreq)
        _configure()
        os.set_blocking(self.fd, False)

    def write(self, packet: bytes, count: int) -> None:
        fd, write = self.fd, os.write
        for _ in range(count):
            write(fd, packet)

    def read(self, count: int) -> int:
        fd, read = self.fd, os.read
        got = 0
        try:
            while got < count:
                read(fd, READ_BYTES)
                got += 1
        except BlockingIOError:
            pass
        return got

    def reflect(self, stop: Callable[[], bool]) -> None:
        fd = self.fd
        while not stop():
            try:
                b = bytearray(os.read(fd, READ_BYTES))
            except BlockingIOError:
                select.select([fd], [], [], POLL_S)
                continue
            if reflect(memoryview(b)):
                os.write(fd, b)

    def close(self) -> None:
        os.close(self.fd)


class PytunTun:
    """python-pytun's TunTapDevice: its write and read."""

    def __init__(self) -> None:
        import pytun

        self.error = pytun.Error
        self.dev = pytun.TunTapDevice(name=IFNAME, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        _configure()

    def write(self, packet: bytes, count: int) -> None:
        write = self.dev.write
        for _ in range(count):
            write(packet)

    def read(self, count: int) -> int:
        os.set_blocking(self.dev.fileno(), False)
        read = self.dev.read
        got = 0
        try:
            while got < count:
                read(READ_BYTES)
                got += 1
        except self.error as e:  # pytun's own error, also for EAGAIN
            if e.args[0] != errno.EAGAIN:
                raise
        return got

    def reflect(self, stop: Callable[[], bool]) -> None:
        dev, fd = self.dev, self.dev.fileno()
        while not stop():
            if not select.select([fd], [], [], POLL_S)[0]:
                continue
            b = bytearray(dev.read(READ_BYTES))
            if reflect(memoryview(b)):
                dev.write(bytes(b))  # pytun takes read-only bytes only

    def close(self) -> None:
        self.dev.close()


# -- per-packet cases --------------------------------------------------------------------------
def _set_txqlen(n: int) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=IFNAME)[0], txqlen=n)


def _fill(count: int, size: int) -> None:
    """Queue ``count`` packets of ``size`` bytes on the interface (the kernel sends them out of it)."""
    _set_txqlen(count + 1000)
    payload = bytes(size - 28)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 1 << 26)
        for _ in range(count):
            s.sendto(payload, (PEER4, 9))


def _write_case(kind: Callable[[], Tun], size: int, count: int) -> float:
    """Seconds to write ``count`` prebuilt UDP packets into the kernel."""
    packet = _udp4(size)
    with contextlib.closing(kind()) as tun:
        t0 = time.perf_counter()
        tun.write(packet, count)
        return time.perf_counter() - t0


def _read_case(kind: Callable[[], Tun], size: int, count: int) -> float:
    """Seconds to read ``count`` packets the kernel queued on the interface beforehand."""
    with contextlib.closing(kind()) as tun:
        _fill(count, size)
        t0 = time.perf_counter()
        got = tun.read(count)
        seconds = time.perf_counter() - t0
    # IPv6 chatter on the link may add a packet or two; fewer would mean the queue dropped.
    if got < count * 0.99:
        raise CommandError(f"only {got} of {count} queued packets could be read: try fewer --packets", BAD_INPUT)
    return seconds * count / got


# -- TCP through a reflector ---------------------------------------------------------------
def _timed(target: Callable[[Callable[[], bool]], None], cpu, stop) -> None:
    """Run a reflector and report the CPU seconds it used (the work it costs, whatever the load)."""
    t0 = time.process_time()
    target(stop.is_set)
    cpu.put(time.process_time() - t0)


def _iperf3(impl: str, seconds: int) -> dict:
    """iperf3's ``sum_received`` for a TCP run from PEER4's side to a server on LOCAL4."""
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", LOCAL4], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["iperf3", "-c", PEER4, "-t", str(seconds), "-J", "--connect-timeout", "3000"],
                             capture_output=True, text=True, timeout=seconds + IPERF3_GRACE_S)
    except subprocess.TimeoutExpired:
        raise CommandError(f"iperf3 ({impl}) did not finish within {seconds + IPERF3_GRACE_S} s", BAD_INPUT) from None
    finally:
        server.kill()
        server.wait()
    try:
        report = json.loads(out.stdout)
    except ValueError:
        raise CommandError(f"iperf3 ({impl}) said no JSON: {out.stderr.strip()[:200]}", BAD_INPUT) from None
    if "error" in report:
        raise CommandError(f"iperf3 ({impl}): {report['error']}", BAD_INPUT)
    return report["end"]["sum_received"]


def _tcp_case(impl: str, kind: Callable[[], Tun], seconds: int) -> tuple[float, float]:
    """iperf3 Gbit/s through a reflector of ``kind``, and the reflector's CPU seconds per GB."""
    ctx = multiprocessing.get_context("fork")
    stop, cpu = ctx.Event(), ctx.Queue()
    with contextlib.closing(kind()) as tun:
        proc = ctx.Process(target=_timed, args=(tun.reflect, cpu, stop))
        proc.start()
        try:
            received = _iperf3(impl, seconds)
        finally:
            stop.set()
            try:
                cpu_s = cpu.get(timeout=10)
            finally:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
    return received["bits_per_second"] / 1e9, cpu_s / (received["bytes"] / 1e9)


# -- the tables ------------------------------------------------------------------------------
# measure() -> an open Tun of that kind, on IFNAME
PACKET_IMPLS = [
    Impl("tunring", TunringTun),
    Impl("os", OsTun),
    Impl("pytun", PytunTun, modules=("pytun",)),
]
# tunring's TCP configurations: offloads with GRO writes only (the kernel segments and checksums
# what it sends), full wireguard-go-style offloads (TSO/USO reads split in Python), none.
TCP_IMPLS = [
    Impl("tunring", partial(TunringTun, offload=True, tso=False), programs=IPERF3,
         extra={"offload": True, "tso": False}),
    Impl("tunring-tso", partial(TunringTun, offload=True, tso=True), programs=IPERF3,
         extra={"offload": True, "tso": True}),
    Impl("tunring-plain", partial(TunringTun, offload=False), programs=IPERF3, extra={"offload": False}),
    Impl("os", OsTun, programs=IPERF3, extra={"offload": False}),
    Impl("pytun", PytunTun, modules=("pytun",), programs=IPERF3, extra={"offload": False}),
]
PACKET_CASES: dict[str, tuple[Callable[[Callable[[], Tun], int, int], float], Callable[[int], int]]] = {
    # case: (measure, how many packets it moves of --packets)
    "write": (_write_case, lambda packets: packets // BATCH * BATCH),
    "read": (_read_case, lambda packets: packets),
}


def _packet_round(args: argparse.Namespace) -> list[Result]:
    rows: list[Result] = []
    for size in args.sizes:
        for case in (c for c in PACKET_CASES if c in args.cases):
            measure, moved = PACKET_CASES[case]
            count = moved(args.packets)
            rows += measure_table(PACKET_IMPLS, case, size, partial(_packet_row, measure, case, size, count))
    return rows


def _packet_row(measure: Callable[[Callable[[], Tun], int, int], float], case: str, size: int, count: int,
                entry: Impl) -> Result:
    return entry.result(case, size, count, measure(entry.measure, size, count))


def _tcp_row(seconds: int, entry: Impl) -> Result:
    gbps, cpu_s_per_gb = _tcp_case(entry.impl, entry.measure, seconds)
    # Express a bit rate as full-MTU packets per second so the table's ratio column works.
    return entry.result(TCP_CASE, MTU, gbps * 1e9 / (MTU * 8), 1.0, reflector_cpu_s_per_gb=round(cpu_s_per_gb, 3))


@contextlib.contextmanager
def _namespace() -> Iterator[None]:
    from pyroute2 import netns

    from ...linux import netlink

    netns.create(NETNS)
    try:
        netns.pushns(NETNS)
        try:
            netlink.configure("lo")
            yield
        finally:
            netns.popns()
    finally:
        netns.remove(NETNS)


def run(args: argparse.Namespace) -> list[Result]:
    if os.geteuid() != 0:
        raise CommandError("bench tun needs root (TUN devices, network namespaces)")
    results: list[Result] = []
    with _namespace():
        results += best_of(args.rounds, partial(_packet_round, args))
        if args.tcp_seconds > 0 and "tcp" in args.cases:
            results += best_of(args.rounds, lambda: measure_table(TCP_IMPLS, TCP_CASE, MTU,
                                                                  partial(_tcp_row, args.tcp_seconds)))
    return results

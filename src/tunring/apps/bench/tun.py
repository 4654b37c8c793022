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
import shutil
import socket
import struct
import subprocess
import time

from . import Result, result

LOCAL4, PEER4 = "10.0.0.1", "10.1.10.2"
ADDRESSES = [f"{LOCAL4}/8"]
IFNAME = "trbench0"
NETNS = f"tunring-bench-{os.getpid()}"
BATCH = 64
READ_BYTES = 2048  # what the peers read per packet: more than the MTU (1500) carries
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int, default=100_000, help="packets per write/read case")
    parser.add_argument("--sizes", default="100,1400", help="IP packet sizes, comma separated")
    parser.add_argument("--tcp-seconds", type=float, default=4.0, help="iperf3 duration per run (0: skip TCP)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--cases", default="write,read,tcp", help="which cases to run, comma separated")


# -- helpers -----------------------------------------------------------------------------------
def _udp4(size: int) -> bytes:
    """A valid IPv4 UDP packet of ``size`` bytes to the reflector's peer (dropped by the kernel:
    the namespace does not forward)."""
    total = max(size, 28)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                               socket.inet_aton(LOCAL4), socket.inet_aton(PEER4)))
    s = sum(struct.unpack("!10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    ip[10:12] = struct.pack("!H", ~((s & 0xFFFF) + (s >> 16)) & 0xFFFF)
    return bytes(ip) + struct.pack("!HHHH", 5000, 9, total - 20, 0) + bytes(total - 28)


def _plain_fd() -> int:
    import fcntl

    from ...linux import netlink
    from ...linux.tun import _IFREQ, TUNSETIFF

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(IFNAME.encode(), IFF_TUN | IFF_NO_PI))
    netlink.configure(IFNAME, addresses=netlink.parse_addresses(ADDRESSES))
    return fd


def _pytun():
    import pytun

    from ...linux import netlink

    dev = pytun.TunTapDevice(name=IFNAME, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
    netlink.configure(IFNAME, addresses=netlink.parse_addresses(ADDRESSES))
    return dev


def _tunring(offload: bool = False, tso: bool = True):
    from ...linux import TunDevice

    return TunDevice.create(IFNAME, addresses=ADDRESSES, offload=offload, tso=tso, packets=1024)


def _set_txqlen(n: int) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=IFNAME)[0], txqlen=n)


def _fill(count: int, size: int) -> None:
    """Queue ``count`` packets of ``size`` bytes on the interface (the kernel sends them out of it)."""
    _set_txqlen(count + 1000)
    payload = bytes(size - 28)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, 32, 1 << 26)  # SO_SNDBUFFORCE
        for _ in range(count):
            s.sendto(payload, (PEER4, 9))


# -- per-packet cases --------------------------------------------------------------------------
def _write_case(impl: str, size: int, count: int) -> float:
    pkt = _udp4(size)
    if impl == "tunring":
        dev = _tunring()
        try:
            t0 = time.perf_counter()
            for _ in range(count // BATCH):
                out = dev.allocate_many(size, BATCH)
                for p in out:
                    p.buf[p.start : p.end] = pkt
                dev.send_many(out)
            return time.perf_counter() - t0
        finally:
            dev.close()
    if impl == "os":
        fd = _plain_fd()
        write = os.write
        try:
            t0 = time.perf_counter()
            for _ in range(count // BATCH * BATCH):
                write(fd, pkt)
            return time.perf_counter() - t0
        finally:
            os.close(fd)
    dev = _pytun()
    try:
        write = dev.write
        t0 = time.perf_counter()
        for _ in range(count // BATCH * BATCH):
            write(pkt)
        return time.perf_counter() - t0
    finally:
        dev.close()


def _read_case(impl: str, size: int, count: int) -> float:
    if impl == "tunring":
        dev = _tunring()
        try:
            _fill(count, size)
            t0 = time.perf_counter()
            got = 0
            while got < count:
                ps = dev.receive_many(BATCH)
                if not ps:
                    break
                got += len(ps)
                dev.release_many(ps)
            return _checked(time.perf_counter() - t0, got, count)
        finally:
            dev.close()
    if impl == "os":
        fd = _plain_fd()
        os.set_blocking(fd, False)
        read = os.read
        try:
            _fill(count, size)
            t0 = time.perf_counter()
            got = 0
            try:
                while got < count:
                    read(fd, READ_BYTES)
                    got += 1
            except BlockingIOError:
                pass
            return _checked(time.perf_counter() - t0, got, count)
        finally:
            os.close(fd)
    dev = _pytun()
    try:
        os.set_blocking(dev.fileno(), False)
        _fill(count, size)
        read = dev.read
        t0 = time.perf_counter()
        got = 0
        import pytun

        try:
            while got < count:
                read(READ_BYTES)
                got += 1
        except pytun.Error as e:  # pytun's own error, also for EAGAIN
            if e.args[0] != errno.EAGAIN:
                raise
        return _checked(time.perf_counter() - t0, got, count)
    finally:
        dev.close()


def _checked(seconds: float, got: int, count: int) -> float:
    # IPv6 chatter on the link may add a packet or two; fewer would mean the queue dropped.
    if got < count * 0.99:
        raise RuntimeError(f"only {got} of {count} queued packets were read")
    return seconds * count / got


# -- TCP through a reflector ---------------------------------------------------------------
# tunring's TCP configurations: offloads with GRO writes only (the kernel segments and checksums
# what it sends), full wireguard-go-style offloads (TSO/USO reads split in Python), none.
TCP_TUNRING = {
    "tunring": dict(offload=True, tso=False),
    "tunring-tso": dict(offload=True, tso=True),
    "tunring-plain": dict(offload=False),
}
def _reflect_os(fd: int, stop) -> None:
    from ..reflect import reflect

    while not stop.is_set():
        try:
            b = bytearray(os.read(fd, READ_BYTES))
        except BlockingIOError:
            import select

            select.select([fd], [], [], 0.05)
            continue
        if reflect(memoryview(b)):
            os.write(fd, b)


def _reflect_pytun(dev, stop) -> None:
    import select

    from ..reflect import reflect

    fd = dev.fileno()
    while not stop.is_set():
        if not select.select([fd], [], [], 0.05)[0]:
            continue
        b = bytearray(dev.read(READ_BYTES))
        if reflect(memoryview(b)):
            dev.write(bytes(b))  # pytun takes read-only bytes only


def _timed(target, cpu, *args) -> None:
    """Run a reflector and report the CPU seconds it used (the work it costs, whatever the load)."""
    t0 = time.process_time()
    target(*args)
    cpu.put(time.process_time() - t0)


def _tcp_case(impl: str, seconds: float) -> tuple[float, float]:
    """iperf3 Gbit/s through a reflector of kind ``impl``, and the reflector's CPU seconds per GB."""
    from ..reflect import serve

    ctx = multiprocessing.get_context("fork")
    stop, cpu = ctx.Event(), ctx.Queue()
    if impl in TCP_TUNRING:
        dev = _tunring(**TCP_TUNRING[impl])
        target, args, close = (lambda d, s: serve(d, s.is_set, batch=256)), (dev, stop), dev.close
    elif impl == "os":
        fd = _plain_fd()
        os.set_blocking(fd, False)
        target, args, close = _reflect_os, (fd, stop), (lambda: os.close(fd))
    else:
        dev = _pytun()
        target, args, close = _reflect_pytun, (dev, stop), dev.close
    proc = ctx.Process(target=_timed, args=(target, cpu, *args))
    proc.start()
    server = subprocess.Popen(["iperf3", "-s", "-1", "-B", LOCAL4], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["iperf3", "-c", PEER4, "-t", str(seconds), "-J", "--connect-timeout", "3000"],
                             capture_output=True, text=True, timeout=seconds + 30)
        report = json.loads(out.stdout)
        if "error" in report:
            raise RuntimeError(f"iperf3 ({impl}): {report['error']}")
        received = report["end"]["sum_received"]
    finally:
        server.kill()
        server.wait()
        stop.set()
        try:
            cpu_s = cpu.get(timeout=10)
        finally:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            close()
    return received["bits_per_second"] / 1e9, cpu_s / (received["bytes"] / 1e9)


@contextlib.contextmanager
def _namespace():
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
        raise SystemExit("tunring bench tun needs root (TUN devices, network namespaces)")
    sizes = [int(s) for s in args.sizes.split(",")]
    cases = set(args.cases.split(","))
    impls = ["tunring", "os", "pytun"]
    packet_cases = [(c, fn) for c, fn in (("write", _write_case), ("read", _read_case)) if c in cases]
    best: dict[tuple[str, str, int], float] = {}
    with _namespace():
        for _ in range(args.rounds):
            for size in sizes:
                for case, fn in packet_cases:
                    for impl in impls:
                        t = fn(impl, size, args.packets)
                        key = (case, impl, size)
                        best[key] = min(best.get(key, t), t)
        tcp: dict[str, tuple[float, float]] = {}
        if args.tcp_seconds > 0 and "tcp" in cases:
            if shutil.which("iperf3") is None:
                raise SystemExit("iperf3 is missing: apt-get install iperf3 (scripts/bootstrap test)")
            for _ in range(args.rounds):
                for impl in (*TCP_TUNRING, "os", "pytun"):
                    gbps, cpu_s_per_gb = _tcp_case(impl, args.tcp_seconds)
                    if gbps > tcp.get(impl, (0.0, 0.0))[0]:
                        tcp[impl] = (gbps, cpu_s_per_gb)
    results = []
    for size in sizes:
        for case, _ in packet_cases:
            for impl in impls:
                results.append(result(case, impl, size, args.packets // BATCH * BATCH if case == "write"
                                      else args.packets, best[(case, impl, size)]))
    mtu = 1500
    for impl, (g, cpu_s_per_gb) in tcp.items():
        # Express a bit rate as full-MTU packets per second so the table's ratio column works.
        results.append(result("tcp iperf3 via reflector", impl, mtu, g * 1e9 / (mtu * 8), 1.0,
                              reflector_cpu_s_per_gb=round(cpu_s_per_gb, 3),
                              **TCP_TUNRING.get(impl, {"offload": False})))
    return results

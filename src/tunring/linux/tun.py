"""TunDevice: a Linux TUN interface behind the :class:`~tunring.device.Device` API.

The descriptor is ``/dev/net/tun`` opened with ``IFF_TUN | IFF_NO_PI`` (plus
``IFF_VNET_HDR`` with offloads, ``IFF_MULTI_QUEUE`` with several queues); the
interface is configured over rtnetlink (:mod:`tunring.linux.netlink`).  Packets
live in a preallocated :class:`~tunring.pool.PacketPool`: ``receive`` reads
with ``os.readv`` straight into a packet's slot and ``send`` writes with
``os.write``/``os.writev`` straight from packet memory.  The interface exists
as long as the descriptor is open: ``close()`` or the death of the process
removes it.

Offloads (``offload=True``) work as wireguard-go's on Linux: TUNSETOFFLOAD
with checksum, TSO4/TSO6 and, where the kernel has it, USO; the 10-byte
virtio-net header lives in the packet headroom; large GSO reads are split into
MTU-sized packets and ``send_many`` coalesces consecutive TCP segments of one
flow into one write (see :mod:`tunring.linux.offload`).  ``tso=False`` keeps
the write side (GRO) but leaves segmentation and checksums of what the kernel
sends to the kernel.  Measure before choosing (``tunring bench tun``): in
Python the per-segment work of splitting (above all the checksums) costs more
than the read system calls TSO saves, and coalescing about what the writes
save, so on the machine this was written on neither setting beat a plain
device for TCP throughput; what offloads do buy is fewer, larger system calls
and kernel packets.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DeviceError, PacketError, RingClosed, RingFull
from ..packet import ALLOCATED, DONE, RECEIVED, Packet
from ..pool import PacketPool, PoolDevice
from . import netlink, offload
from .offload import NEEDS_CSUM, VNET_HDR, VNET_HDR_LEN, ZERO_HDR

log = logging.getLogger(__name__)
new = object.__new__

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNGETFEATURES = 0x800454CF
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, flags, rest of the union

DEFAULT_PACKETS = 512
DEFAULT_HEADROOM = 32  # room for a VPN header (ESP's 24) and the virtio header
DEFAULT_TAILROOM = 32  # room for a trailer (ESP padding + ICV)
MAX_GSO_PACKET = 0xFFFF  # the largest packet a TSO/USO read may carry (IPv4 total length)
_SEND_BLOCKED = (errno.EAGAIN, errno.ENOBUFS)


@dataclass
class TunStats:
    """Counters: reads/writes are system calls, rx/tx packets what the Device API saw."""

    reads: int = 0
    read_bytes: int = 0
    writes: int = 0
    write_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    gso_splits: int = 0  # large reads cut into several packets
    gro_runs: int = 0  # writes that carried several packets
    rx_dropped: int = 0  # reads that could not be delivered (oversize, bad GSO, pool empty)
    tx_dropped: int = 0  # packets the kernel refused


def _open_tun(name: str, flags: int) -> tuple[int, str]:
    """Open /dev/net/tun and attach it to interface ``name``; returns (fd, actual name)."""
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DeviceError(errno.ENOENT, f"{TUN_PATH} does not exist: load the tun module "
                          "(modprobe tun) or give the container the device (--device /dev/net/tun)") from None
    except PermissionError:
        raise DeviceError(errno.EACCES, f"no permission to open {TUN_PATH}: run as root "
                          "or with CAP_NET_ADMIN") from None
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EPERM:
            raise DeviceError(e.errno, f"creating TUN interface {name} needs CAP_NET_ADMIN "
                              "(run as root or grant the capability)") from None
        if e.errno == errno.EBUSY:
            raise DeviceError(e.errno, f"interface name {name} is in use by another TUN device") from None
        if e.errno == errno.EINVAL and netlink.link_index(name) is not None:
            raise DeviceError(e.errno, f"interface name {name} is in use (by a device that is not "
                              "a TUN with these flags)") from None
        raise DeviceError(e.errno, f"TUNSETIFF {name}: {e.strerror}") from None
    return fd, _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()


class TunDevice(PoolDevice):
    """A TUN interface as a Device: packets are windows into a preallocated pool.

    ``TunDevice("tun0", addresses=["10.0.0.1/24"], mtu=1400)`` creates and
    configures the interface (root or CAP_NET_ADMIN); ``netns`` creates it
    inside that named network namespace.  Allocated and received packets have
    ``headroom`` bytes before the data (at least the virtio header's 10 with
    offloads; it is overwritten at send) and at least ``tailroom`` after.  A
    full kernel queue raises RingFull from send (back-pressure: wait_writable
    and retry); reads never block.  ``offload``/``tso``: see the module
    docstring.  ``max_packet`` (default: the MTU) is the largest ``allocate()``,
    for codecs that over-allocate and shrink.  ``queues > 1`` makes a multiqueue interface
    whose extra queues are ``self.queues[1:]``, each its own TunDevice.
    """

    def __init__(
        self,
        name: str = "tun%d",
        *,
        addresses: Iterable[str] = (),
        routes: Iterable[str] = (),
        mtu: int = 1500,
        up: bool = True,
        headroom: int = DEFAULT_HEADROOM,
        tailroom: int = DEFAULT_TAILROOM,
        packets: int = DEFAULT_PACKETS,
        offload: bool = False,
        tso: bool = True,
        queues: int = 1,
        netns: str | None = None,
        max_packet: int | None = None,
    ) -> None:
        if "%" not in name:
            netlink.check_name(name)
        addrs = netlink.parse_addresses(addresses)
        nets = netlink.parse_routes(routes)
        netlink.check_mtu(mtu, ipv6=any(a.version == 6 for a in addrs))
        if queues < 1:
            raise DeviceError(f"queues must be at least 1, got {queues}")
        if offload and headroom < VNET_HDR_LEN:
            headroom = VNET_HDR_LEN
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0) | (IFF_MULTI_QUEUE if queues > 1 else 0)
        self.mtu = mtu
        self.offload = offload
        self.netns = netns
        self._gso = offload and tso
        self._setup(mtu, headroom, tailroom, packets, max_packet)
        with netlink.netns(netns):
            if "%" not in name and netlink.link_index(name) is not None:
                raise DeviceError(errno.EEXIST, f"interface name {name} is in use")
            self._fd, self.name = _open_tun(name, flags)
            try:
                self.offloads = self._enable_offloads(tso) if offload else 0
                self.queues: list[TunDevice] = [self]
                for _ in range(queues - 1):
                    self.queues.append(self._sibling(flags, headroom, tailroom, packets))
                self.index = netlink.configure(self.name, mtu=mtu, addresses=addrs, routes=nets, up=up)
            except BaseException:
                self.close()
                raise
        log.info("opened TUN %s (mtu %d, offloads %#x, %d queue(s))", self.name, mtu, self.offloads, queues)

    def _setup(self, mtu: int, headroom: int, tailroom: int, packets: int, max_packet: int | None = None) -> None:
        self.headroom = headroom
        self.tailroom = tailroom
        self.stats = TunStats()
        self._fd = -1
        self._closed = False
        self.queues = [self]
        # A read lands in a slot whole: one byte more than the largest packet expected, so
        # that a longer one (which the kernel truncates to fit) shows as too long.  With TSO
        # that is a 64 KiB GSO packet: the slots are that big, but the mapping only takes
        # memory where packets were written.  Allocations stay limited to the MTU.
        read_room = (MAX_GSO_PACKET if self._gso else mtu) + 1
        # allocate() may ask for more than the MTU (``max_packet``): codecs over-allocate for a
        # record of unknown length, or for decompression, and shrink the packet afterwards.
        self.max_packet = max(mtu, max_packet or 0)
        self._pool = PacketPool(packets, max(read_room, self.max_packet), headroom, tailroom, self)
        self._ready: deque[Packet] = deque()  # segments of a split GSO read not yet handed out
        self._last: Packet | None = None
        pool, vlen = self._pool, VNET_HDR_LEN if self.offload else 0
        # Per-slot read buffers (virtio header included), made once: a read is one readv into
        # one buffer, and a GSO read is split straight from its slot.
        self._read_iovs = {lo: [pool.buf[lo + headroom - vlen : lo + headroom + read_room]]
                           for lo in range(0, pool.count * pool.slot_bytes, pool.slot_bytes)}

    def _sibling(self, flags: int, headroom: int, tailroom: int, packets: int) -> TunDevice:
        """Another queue of this multiqueue interface, with its own descriptor and pool."""
        q = TunDevice.__new__(TunDevice)
        q.mtu, q.offload, q.netns, q.name, q.index = self.mtu, self.offload, self.netns, self.name, 0
        q._gso = self._gso
        q._setup(self.mtu, headroom, tailroom, packets)
        q._fd, _ = _open_tun(self.name, flags)
        q.offloads = q._enable_offloads(self.offloads != 0) if self.offload else 0
        return q

    def _enable_offloads(self, tso: bool) -> int:
        base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
        for wanted in (base | TUN_F_USO4 | TUN_F_USO6, base) if tso else (0,):
            try:
                fcntl.ioctl(self._fd, TUNSETOFFLOAD, wanted)
                return wanted
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise DeviceError(e.errno, f"TUNSETOFFLOAD on {self.name}: {e.strerror}") from None
        raise DeviceError(errno.EINVAL, f"the kernel refuses checksum/TSO offloads on {self.name}")

    # -- sending (allocate, shrink_and_send, cancel: PoolDevice) -----------------
    def _closed_error(self) -> RingClosed:
        return RingClosed(f"TUN device {self.name} is closed")

    def _write(self, packet: Packet, iov: list | None = None) -> bool:
        """One write; False if the kernel queue is full (the packet stays the caller's)."""
        try:
            if iov is not None:
                n = os.writev(self._fd, iov)
            elif self.offload:
                start = packet.start
                if start - packet.lo < VNET_HDR_LEN:
                    raise PacketError(f"send: {VNET_HDR_LEN} bytes of headroom are needed for the virtio header")
                packet.buf[start - VNET_HDR_LEN : start] = ZERO_HDR
                n = os.write(self._fd, packet.buf[start - VNET_HDR_LEN : packet.end])
            else:
                n = os.write(self._fd, packet.buf[packet.start : packet.end])
        except OSError as e:
            if e.errno in _SEND_BLOCKED:
                return False
            if e.errno == errno.EBADF and self._closed:
                raise RingClosed(f"TUN device {self.name} is closed") from None
            self.stats.tx_dropped += 1
            log.debug("%s: kernel refused a %d-byte packet: %s", self.name, len(packet), e.strerror)
            return True
        self.stats.writes += 1
        self.stats.write_bytes += n
        return True

    def _done(self, packet: Packet) -> None:
        if self._last is packet:
            self._last = None
        self.stats.tx_packets += 1
        self._pool.give(packet)

    def send(self, packet: Packet) -> None:
        self._check(packet, ALLOCATED, "send")
        if not self._write(packet):
            raise RingFull(f"{self.name}: the kernel queue is full; wait_writable() and send again")
        self._done(packet)

    def send_many(self, packets: list[Packet]) -> None:
        """Send a batch; with offloads, runs of one TCP flow go out as one GSO write.

        On a full kernel queue RingFull is raised: the packets before the one
        that did not fit are sent, it and those after it are still the caller's.
        """
        if not self.offload:
            self._send_plain(packets)
            return
        for p in packets:
            self._check(p, ALLOCATED, "send_many")
            if p.start - p.lo < VNET_HDR_LEN:  # the virtio header must stay inside the packet's memory
                raise PacketError(f"send_many: {VNET_HDR_LEN} bytes of headroom are needed for the virtio header")
        for run in offload.coalesce(packets):
            head = run[0]
            if len(run) == 1:
                if not self._write(head):
                    raise RingFull(f"{self.name}: the kernel queue is full; wait_writable() and send again")
                self._done(head)
                continue
            data = head.data
            saved = bytes(data[: (40 if data[0] >> 4 == 6 else 20) + 60])  # headers, restored on EAGAIN
            vhdr = offload.coalesced_header(run)
            hdr_len = VNET_HDR.unpack(vhdr)[2]
            head.buf[head.start - VNET_HDR_LEN : head.start] = vhdr
            iov = [head.buf[head.start - VNET_HDR_LEN : head.end]]
            iov.extend(p.buf[p.start + hdr_len : p.end] for p in run[1:])
            if not self._write(head, iov):
                data[: len(saved)] = saved
                raise RingFull(f"{self.name}: the kernel queue is full; wait_writable() and send again")
            self.stats.gro_runs += 1
            for p in run:
                self._done(p)

    def _send_plain(self, packets: list[Packet]) -> None:
        """send_many without offloads: one write per packet, the loop kept tight (it is the hot path)."""
        fd, write, free, stats = self._fd, os.write, self._pool.free, self.stats
        sent = dropped = nbytes = 0
        try:
            for p in packets:
                if p.owner is not self or p.state != ALLOCATED:
                    self._check(p, ALLOCATED, "send_many")
                try:
                    nbytes += write(fd, p.buf[p.start : p.end])
                except OSError as e:
                    if e.errno in _SEND_BLOCKED:
                        raise RingFull(f"{self.name}: the kernel queue is full; wait_writable() and send again")
                    if self._closed:
                        raise RingClosed(f"TUN device {self.name} is closed") from None
                    dropped += 1
                    log.debug("%s: kernel refused a %d-byte packet: %s", self.name, len(p), e.strerror)
                p.state = DONE
                free.append(p.lo)
                sent += 1
        finally:
            stats.writes += sent - dropped
            stats.write_bytes += nbytes
            stats.tx_packets += sent - dropped
            stats.tx_dropped += dropped
            if self._last is not None and self._last.state == DONE:
                self._last = None

    def wait_writable(self, size: int = 0, timeout_s: float | None = None) -> bool:
        """Wait until the kernel takes writes again; False on timeout (``size`` as in Session's, unused)."""
        ready = select.select([], [self._fd], [], timeout_s)[1]
        return bool(ready)

    # -- raw I/O into and out of someone else's packet memory (the ring bridge) ------
    def read_into(self, buf: memoryview) -> int | None:
        """Read one packet into ``buf``; its length, or None if the kernel has none queued.

        For bridges whose packets live elsewhere (ring slots); needs offload=False.
        A packet longer than ``buf`` is cut by the kernel: give MTU-sized buffers.
        """
        if self.offload:
            raise PacketError("read_into: reads from an offloading device carry a virtio header")
        try:
            n = os.readv(self._fd, [buf])
        except BlockingIOError:
            return None
        except OSError as e:
            if self._closed:
                raise RingClosed(f"TUN device {self.name} is closed") from None
            raise DeviceError(e.errno, f"reading from {self.name}: {e.strerror}") from None
        self.stats.reads += 1
        self.stats.read_bytes += n
        self.stats.rx_packets += 1
        return n

    def write_from(self, data: memoryview) -> bool:
        """Write one packet from ``data``; False if the kernel queue is full (try again).

        A packet the kernel refuses is dropped and counted in ``stats.tx_dropped``.
        """
        try:
            n = os.write(self._fd, data)
        except OSError as e:
            if e.errno in _SEND_BLOCKED:
                return False
            if self._closed:
                raise RingClosed(f"TUN device {self.name} is closed") from None
            self.stats.tx_dropped += 1
            log.debug("%s: kernel refused a %d-byte packet: %s", self.name, len(data), e.strerror)
            return True
        self.stats.writes += 1
        self.stats.write_bytes += n
        self.stats.tx_packets += 1
        return True

    # -- receiving ---------------------------------------------------------------
    def receive(self) -> Packet | None:
        if self._ready:
            return self._ready.popleft()
        got = self.receive_many(1)
        return got[0] if got else None

    def _receive_vnet(self, lo: int, start: int, n: int) -> Packet | None:
        """A read with a virtio header that asks for work: finish its checksum or split it."""
        pool = self._pool
        view = self._read_iovs[lo][0]
        flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(view)
        try:
            if n < VNET_HDR_LEN:
                raise PacketError(f"a {n}-byte read is shorter than the virtio header")
            if n >= len(view):
                raise PacketError("a read filled its whole buffer: the packet was truncated")
            pkt = view[VNET_HDR_LEN:n]
            if gso_type == offload.GSO_NONE:
                if len(pkt) > self.mtu:
                    raise PacketError(f"a {len(pkt)}-byte packet without GSO exceeds the MTU")
                if flags & NEEDS_CSUM:
                    offload.complete_checksum(pkt, csum_start, csum_offset)
                self.stats.rx_packets += 1
                return Packet(pool.buf, start, start + len(pkt), lo, lo + pool.slot_bytes, self, RECEIVED)
            hdr = csum_start + (((pkt[csum_start + 12] >> 4) * 4) if gso_type & ~offload.GSO_ECN in
                                (offload.GSO_TCPV4, offload.GSO_TCPV6) else 8)
            needed = -(-(len(pkt) - hdr) // gso_size) if gso_size else 0
            if needed > len(pool.free):
                raise PacketError(f"a GSO read needs {needed} packets, {len(pool.free)} are free")
            # The segments go to other slots; this one is given back once they are cut.
            segments = offload.split(pkt, gso_type, gso_size, csum_start, lambda size: pool.take(size, RECEIVED))
        except (PacketError, IndexError) as e:
            pool.free.append(lo)
            self.stats.rx_dropped += 1
            log.debug("%s: dropped a read: %s", self.name, e)
            return None
        pool.free.append(lo)
        self.stats.gso_splits += 1
        self.stats.rx_packets += len(segments)
        self._ready.extend(segments[1:])
        return segments[0] if segments else None

    def receive_many(self, max_count: int) -> list[Packet]:
        """Up to ``max_count`` packets: a tight loop of readv, one packet per read into its slot.

        With offloads a read whose virtio header asks for nothing (no GSO, no
        checksum to finish) is a packet as it stands; anything else goes
        through :meth:`_receive_vnet` (checksum completion, GSO split).
        """
        out: list[Packet] = []
        ready = self._ready
        while ready and len(out) < max_count:
            out.append(ready.popleft())
        if self._closed and not out:
            raise RingClosed(f"TUN device {self.name} is closed")
        pool, stats = self._pool, self.stats
        fd, readv, free, iovs, buf = self._fd, os.readv, pool.free, self._read_iovs, pool.buf
        headroom, slot = self.headroom, pool.slot_bytes
        vlen = VNET_HDR_LEN if self.offload else 0
        limit = self.mtu + vlen
        reads = nbytes = plain = 0
        if not vlen:
            # No virtio header: every read is one packet as it stands (the hottest loop).
            dropped = 0
            append = out.append
            try:
                for _ in range(min(max_count - len(out), len(free))):
                    lo = free.pop()
                    try:
                        n = readv(fd, iovs[lo])
                    except BlockingIOError:
                        free.append(lo)
                        break
                    nbytes += n
                    if n > limit:
                        free.append(lo)
                        dropped += 1
                        continue
                    start = lo + headroom
                    packet = new(Packet)  # Packet(...) spelled out, as the ring does
                    packet.buf = buf
                    packet.start = start
                    packet.end = start + n
                    packet.lo = lo
                    packet.hi = lo + slot
                    packet.owner = self
                    packet.state = RECEIVED
                    append(packet)
            except OSError as e:
                free.append(lo)
                raise DeviceError(e.errno, f"reading from {self.name}: {e.strerror}") from None
            finally:
                stats.reads += len(out) + dropped
                stats.read_bytes += nbytes
                stats.rx_packets += len(out)
                stats.rx_dropped += dropped
            if not out and not free:
                raise RingFull(f"packet pool exhausted: all {pool.count} packets are out; release some first")
            return out
        try:
            while len(out) < max_count and free:
                # Plain reads in a tight loop; a GSO read breaks out to be split.
                for _ in range(min(max_count - len(out), len(free))):
                    lo = free.pop()
                    iov = iovs[lo]
                    try:
                        n = readv(fd, iov)
                    except BlockingIOError:
                        free.append(lo)
                        return out
                    except OSError as e:
                        free.append(lo)
                        raise DeviceError(e.errno, f"reading from {self.name}: {e.strerror}") from None
                    reads += 1
                    nbytes += n
                    if vlen <= n <= limit and not (iov[0][0] or iov[0][1]):  # the header asks for nothing
                        start = lo + headroom
                        out.append(Packet(buf, start, start + n - vlen, lo, lo + slot, self, RECEIVED))
                        plain += 1
                        continue
                    packet = self._receive_vnet(lo, lo + headroom, n)  # counts what it hands out
                    if packet is not None:
                        out.append(packet)
                        while ready and len(out) < max_count:
                            out.append(ready.popleft())
                        break
        finally:
            stats.reads += reads
            stats.read_bytes += nbytes
            stats.rx_packets += plain
        if not out and not free:
            raise RingFull(f"packet pool exhausted: all {pool.count} packets are out; release some first")
        return out

    def release(self, packet: Packet) -> None:
        self._check(packet, RECEIVED, "release")
        self._pool.give(packet)

    def release_many(self, packets: list[Packet]) -> None:
        free = self._pool.free
        for p in packets:
            if p.owner is not self or p.state != RECEIVED:
                self._check(p, RECEIVED, "release_many")
            p.state = DONE
            free.append(p.lo)

    def wait(self, timeout_s: float | None = None) -> bool:
        if self._ready:
            return True
        if self._closed:
            raise RingClosed(f"TUN device {self.name} is closed")
        return bool(select.select([self._fd], [], [], timeout_s)[0])

    def arm(self) -> bool:
        return bool(self._ready)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        """Close the descriptor(s); the kernel removes the interface with the last one."""
        if self._closed:
            return
        self._closed = True
        for q in self.queues:
            if q is not self:
                q.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._ready.clear()

    def __repr__(self) -> str:
        return f"<TunDevice {self.name} mtu={self.mtu} offload={self.offload} queues={len(self.queues)}>"

"""TunDevice: a Linux TUN interface behind the :class:`~tunring.device.Device` API.

In parts, each usable on its own:

- :func:`open_tun` opens ``/dev/net/tun`` and attaches the descriptor to an
  interface (``TUNSETIFF`` with ``IFF_TUN | IFF_NO_PI``, plus ``IFF_VNET_HDR``
  for offloads and ``IFF_MULTI_QUEUE`` for several queues);
- :func:`set_offloads` turns on checksum, TSO and USO offloads (``TUNSETOFFLOAD``);
- :class:`TunDevice` is the Device over one open descriptor;
- :func:`tunring.linux.netlink.configure` sets addresses, MTU, routes and link state.

:meth:`TunDevice.create` does all of it: the convenient way to get a
configured interface.  Packets live in a preallocated
:class:`~tunring.pool.PacketPool`: ``receive`` reads with ``os.readv``
straight into a packet's slot and ``send`` writes with ``os.write``/
``os.writev`` straight from packet memory.  The interface exists as long as a
descriptor is open: ``close()`` or the death of the process removes it.

Offloads work as wireguard-go's on Linux: checksum, TSO4/TSO6 and, where the
kernel has it, USO; the 10-byte virtio-net header lives in the packet
headroom; large GSO reads are split into MTU-sized packets and ``send_many``
coalesces consecutive TCP segments of one flow into one write (see
:mod:`tunring.linux.offload`).  ``tso=False`` keeps the write side (GRO) but
leaves segmentation and checksums of what the kernel sends to the kernel.
Splitting copies every segment into a packet of its own: counted in
``copies``/``copy_bytes``, as ``write`` (the copying send) is; nothing else on
the read and write paths copies.  Measure before choosing (``tunring bench
tun``): in Python the per-segment work of splitting (above all the checksums)
costs more than the read system calls TSO saves, and coalescing about what the
writes save, so on the machine this was written on neither setting beat a
plain device for TCP throughput; what offloads do buy is fewer, larger system
calls and kernel packets.
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
TUN_F_SEGMENTATION = TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6  # reads may be GSO packets
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, flags, rest of the union

DEFAULT_PACKETS = 512
DEFAULT_HEADROOM = 32  # room for a VPN header (ESP's 24) and the virtio header
DEFAULT_TAILROOM = 32  # room for a trailer (ESP padding + ICV)
MAX_GSO_PACKET = 0xFFFF  # the largest packet a TSO/USO read may carry (IPv4 total length)
#: errnos of a write the kernel did not take for now (its queue is full): back-pressure, not loss.
SEND_BLOCKED = (errno.EAGAIN, errno.ENOBUFS)


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


# -- the creating functions ------------------------------------------------------------
def open_tun(name: str, flags: int = IFF_TUN | IFF_NO_PI) -> tuple[int, str]:
    """Open /dev/net/tun (non-blocking) and attach it to interface ``name``; returns (fd, actual name).

    ``name`` may hold ``%d`` for the kernel to pick a number.  Creating an
    interface needs CAP_NET_ADMIN; every failure is a DeviceError that says why.
    """
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
        raise _attach_error(name, e) from None
    return fd, _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()


def _attach_error(name: str, e: OSError) -> DeviceError:
    if e.errno == errno.EPERM:
        return DeviceError(e.errno, f"creating TUN interface {name} needs CAP_NET_ADMIN "
                           "(run as root or grant the capability)")
    if e.errno == errno.EBUSY:
        return DeviceError(e.errno, f"interface name {name} is in use by another TUN device")
    if e.errno == errno.EINVAL and netlink.link_index(name) is not None:
        return DeviceError(e.errno, f"interface name {name} is in use (by a device that is not "
                           "a TUN with these flags)")
    return DeviceError(e.errno, f"TUNSETIFF {name}: {e.strerror}")


def set_offloads(fd: int, name: str, tso: bool = True) -> int:
    """Turn on checksum offload and, with ``tso``, TSO4/TSO6 and USO where the kernel has it.

    Returns the TUN_F_* mask the kernel took (0 with ``tso=False``: only the
    virtio header, which GRO writes need).  The descriptor must have IFF_VNET_HDR.
    """
    base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
    for wanted in (base | TUN_F_USO4 | TUN_F_USO6, base) if tso else (0,):
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, wanted)
            return wanted
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise DeviceError(e.errno, f"TUNSETOFFLOAD on {name}: {e.strerror}") from None
    raise DeviceError(errno.EINVAL, f"the kernel refuses checksum/TSO offloads on {name}")


def _descriptor_info(fd: int) -> tuple[str, int]:
    """(interface name, IFF_* flags) of an attached TUN descriptor (TUNGETIFF)."""
    try:
        ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    except OSError as e:
        raise DeviceError(e.errno, f"descriptor {fd} is not an attached TUN device: {e.strerror}") from None
    name, flags = _IFREQ.unpack(ifr)
    if flags & (IFF_TUN | IFF_NO_PI) != IFF_TUN | IFF_NO_PI:
        raise DeviceError(errno.EINVAL, f"descriptor {fd} is not IFF_TUN | IFF_NO_PI (flags {flags:#x})")
    return name.rstrip(b"\0").decode(), flags


def _checked_config(name: str, addresses: Iterable[str], routes: Iterable[str], mtu: int,
                    queues: int) -> tuple[list[netlink.Address], list[netlink.Network]]:
    """Everything create() can check before touching the kernel, as DeviceErrors."""
    if "%" not in name:
        netlink.check_name(name)
    addrs = netlink.parse_addresses(addresses)
    nets = netlink.parse_routes(routes)
    netlink.check_mtu(mtu, ipv6=any(a.version == 6 for a in addrs))
    if queues < 1:
        raise DeviceError(f"queues must be at least 1, got {queues}")
    return addrs, nets


class TunDevice(PoolDevice):
    """A TUN descriptor as a Device: packets are windows into a preallocated pool.

    ``TunDevice(fd, mtu=1400)`` wraps a descriptor attached with
    :func:`open_tun` (its name and IFF_VNET_HDR are read from it; it is made
    non-blocking); ``offloads`` is the mask :func:`set_offloads` returned, which
    says whether reads may be GSO packets.  :meth:`create` makes and configures
    the interface.  Allocated and received packets have ``headroom`` bytes before
    the data (at least the virtio header's 10 with IFF_VNET_HDR; it is
    overwritten at send) and at least ``tailroom`` after.  A full kernel queue
    raises RingFull from send (back-pressure: wait_writable and retry); reads
    never block.  ``queues`` lists the interface's queues (a multiqueue
    interface from :meth:`create`; closing the first closes them all).
    ``netns`` and ``index`` are what :meth:`create` made it in (None, 0 when unknown).
    """

    def __init__(self, fd: int, *, mtu: int = 1500, offloads: int = 0, headroom: int = DEFAULT_HEADROOM,
                 tailroom: int = DEFAULT_TAILROOM, packets: int = DEFAULT_PACKETS,
                 max_packet: int | None = None) -> None:
        self.name, flags = _descriptor_info(fd)
        os.set_blocking(fd, False)
        self.offload = bool(flags & IFF_VNET_HDR)
        self.offloads = offloads
        self.mtu = mtu
        self.headroom = max(headroom, VNET_HDR_LEN) if self.offload else headroom
        self.tailroom = tailroom
        self.netns: str | None = None
        self.index = 0
        self.queues: list[TunDevice] = [self]
        self.stats = TunStats()
        self.copies = 0  # packets memcpy'd: GSO segments and write()
        self.copy_bytes = 0
        self._fd = fd
        self._closed = False
        # A read lands in a slot whole: one byte more than the largest packet expected, so
        # that a longer one (which the kernel truncates to fit) shows as too long.  With TSO
        # that is a 64 KiB GSO packet: the slots are that big, but the mapping only takes
        # memory where packets were written.  allocate() may ask for up to ``max_packet`` (default
        # the MTU): codecs over-allocate for a record of unknown length or for decompression, and
        # shrink the packet afterwards.
        read_room = (MAX_GSO_PACKET if offloads & TUN_F_SEGMENTATION else mtu) + 1
        self.max_packet = max(mtu, max_packet or 0)
        self._pool = pool = PacketPool(packets, max(read_room, self.max_packet), self.headroom, tailroom, self)
        self._ready: deque[Packet] = deque()  # segments of a split GSO read not yet handed out
        self._last: Packet | None = None
        # Per-slot read buffers (virtio header included), made once: a read is one readv into
        # one buffer, and a GSO read is split straight from its slot.
        data, vnet = self.headroom, VNET_HDR_LEN if self.offload else 0
        self._read_iovs = {lo: [pool.buf[lo + data - vnet : lo + data + read_room]]
                           for lo in range(0, pool.count * pool.slot_bytes, pool.slot_bytes)}

    @classmethod
    def create(
        cls,
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
    ) -> TunDevice:
        """Create a TUN interface, configure it and return its (first) queue's device.

        ``TunDevice.create("tun0", addresses=["10.0.0.1/24"], mtu=1400)`` needs
        root or CAP_NET_ADMIN; ``netns`` creates it inside that named network
        namespace.  ``offload``/``tso``: see the module docstring.  ``queues > 1``
        makes a multiqueue interface whose extra queues are ``queues[1:]``.  ``max_packet``
        (default: the MTU) is the largest ``allocate()``, for codecs that over-allocate and shrink.
        """
        addrs, nets = _checked_config(name, addresses, routes, mtu, queues)
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0) | (IFF_MULTI_QUEUE if queues > 1 else 0)
        devices: list[TunDevice] = []
        with netlink.netns(netns):
            if "%" not in name and netlink.link_index(name) is not None:
                raise DeviceError(errno.EEXIST, f"interface name {name} is in use")
            try:
                for _ in range(queues):  # the first queue names the interface, the others join it
                    fd, name = open_tun(name, flags)
                    try:
                        offloads = set_offloads(fd, name, tso) if offload else 0
                        devices.append(cls(fd, mtu=mtu, offloads=offloads, headroom=headroom, tailroom=tailroom,
                                           packets=packets, max_packet=max_packet))
                    except BaseException:
                        os.close(fd)
                        raise
                index = netlink.configure(name, mtu=mtu, addresses=addrs, routes=nets, up=up)
            except BaseException:
                for device in devices:
                    device.close()
                raise
        for device in devices:
            device.netns, device.index = netns, index
        devices[0].queues = devices
        log.info("opened TUN %s (mtu %d, offloads %#x, %d queue(s))", name, mtu, devices[0].offloads, queues)
        return devices[0]

    # -- sending (allocate, shrink_and_send, cancel: PoolDevice) -----------------
    def _closed_error(self) -> RingClosed:
        return RingClosed(f"TUN device {self.name} is closed")

    def _queue_full(self) -> RingFull:
        return RingFull(f"{self.name}: the kernel queue is full; wait_writable() and send again")

    def _write_failed(self, e: OSError, nbytes: int) -> bool:
        """What a failed write means: False if the kernel queue is full (the packet stays the
        caller's), True if the kernel refused the packet (dropped and counted); RingClosed once closed."""
        if e.errno in SEND_BLOCKED:
            return False
        if self._closed:
            raise self._closed_error() from None
        self.stats.tx_dropped += 1
        log.debug("%s: kernel refused a %d-byte packet: %s", self.name, nbytes, e.strerror)
        return True

    def _write(self, packet: Packet, iov: list[memoryview] | None = None) -> bool:
        """One write of ``packet`` (or of ``iov``, a coalesced run); False if the kernel queue is full."""
        try:
            if iov is not None:
                n = os.writev(self._fd, iov)
            elif self.offload:
                start = packet.start
                packet.buf[start - VNET_HDR_LEN : start] = ZERO_HDR
                n = os.write(self._fd, packet.buf[start - VNET_HDR_LEN : packet.end])
            else:
                n = os.write(self._fd, packet.buf[packet.start : packet.end])
        except OSError as e:
            return self._write_failed(e, len(packet))
        self.stats.writes += 1
        self.stats.write_bytes += n
        return True

    def _check_vnet_room(self, packet: Packet, verb: str) -> None:
        if self.offload and packet.start - packet.lo < VNET_HDR_LEN:  # the header must stay in the packet's memory
            raise PacketError(f"{verb}: {VNET_HDR_LEN} bytes of headroom are needed for the virtio header")

    def _done(self, packet: Packet) -> None:
        if self._last is packet:
            self._last = None
        self.stats.tx_packets += 1
        self._pool.give(packet)

    def send(self, packet: Packet) -> None:
        self._check(packet, ALLOCATED, "send")
        self._check_vnet_room(packet, "send")
        if not self._write(packet):
            raise self._queue_full()
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
            self._check_vnet_room(p, "send_many")
        for run in offload.coalesce(packets):
            if len(run) == 1:
                if not self._write(run[0]):
                    raise self._queue_full()
                self._done(run[0])
                continue
            self._send_run(run)

    def _send_run(self, run: list[Packet]) -> None:
        """One GSO write for a coalesced run: the head's headers describe it, the others add their payloads."""
        head = run[0]
        fields = offload.head_fields(head.data)  # put back if the write does not happen
        vhdr = offload.coalesced_header(run)
        hdr_len = VNET_HDR.unpack(vhdr)[2]
        head.buf[head.start - VNET_HDR_LEN : head.start] = vhdr
        iov = [head.buf[head.start - VNET_HDR_LEN : head.end]]
        iov.extend(p.buf[p.start + hdr_len : p.end] for p in run[1:])
        if not self._write(head, iov):
            offload.restore_head(head.data, fields)
            raise self._queue_full()
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
                    if not self._write_failed(e, len(p)):
                        raise self._queue_full() from None
                    dropped += 1
                p.state = DONE
                free.append(p.lo)
                sent += 1
        finally:
            stats.writes += sent - dropped
            stats.write_bytes += nbytes
            stats.tx_packets += sent - dropped
            if self._last is not None and self._last.state == DONE:
                self._last = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into a new packet and send it (the copying path; counted)."""
        super().write(data)
        self.copy_bytes += len(data)

    def wait_writable(self, size: int = 0, timeout_s: float | None = None) -> bool:
        """Wait until the kernel takes writes again; False on timeout (``size`` as in Session's, unused)."""
        ready = select.select([], [self._fd], [], timeout_s)[1]
        return bool(ready)

    # -- receiving ---------------------------------------------------------------
    def receive(self) -> Packet | None:
        if self._ready:
            return self._ready.popleft()
        got = self.receive_many(1)
        return got[0] if got else None

    def receive_many(self, max_count: int) -> list[Packet]:
        """Up to ``max_count`` packets, each read by one readv straight into its slot.

        Segments of a split GSO read come first; then :meth:`_read_plain` or,
        with the virtio header, :meth:`_read_vnet` read what the kernel has.
        """
        out: list[Packet] = []
        ready = self._ready
        while ready and len(out) < max_count:
            out.append(ready.popleft())
        if self._closed and not out:
            raise self._closed_error()
        if len(out) < max_count:
            if self.offload:
                self._read_vnet(out, max_count)
            else:
                self._read_plain(out, max_count)
        if not out and not self._pool.free:
            self._refuse(0)  # RingFull: the pool is exhausted
        return out

    def _read_error(self, e: OSError) -> Exception:
        if self._closed:
            return self._closed_error()
        return DeviceError(e.errno, f"reading from {self.name}: {e.strerror}")

    def _read_plain(self, out: list[Packet], max_count: int) -> None:
        """Reads without a virtio header: each is one packet as it stands, in its slot (the hottest loop)."""
        pool, stats = self._pool, self.stats
        fd, readv, free, iovs, buf = self._fd, os.readv, pool.free, self._read_iovs, pool.buf
        headroom, slot, limit, append = self.headroom, pool.slot_bytes, self.mtu, out.append
        reads = nbytes = dropped = 0
        try:
            for _ in range(min(max_count - len(out), len(free))):
                lo = free.pop()
                n = readv(fd, iovs[lo])
                reads += 1
                nbytes += n
                if n > limit:  # the kernel cut a packet longer than the MTU to the slot
                    free.append(lo)
                    dropped += 1
                    continue
                start = lo + headroom
                packet = new(Packet)  # Packet(...) spelled out, as the ring does
                packet.buf, packet.start, packet.end, packet.lo, packet.hi = buf, start, start + n, lo, lo + slot
                packet.owner, packet.state = self, RECEIVED
                append(packet)
        except BlockingIOError:
            free.append(lo)
        except OSError as e:
            free.append(lo)
            raise self._read_error(e) from None
        finally:
            stats.reads += reads
            stats.read_bytes += nbytes
            stats.rx_packets += reads - dropped
            stats.rx_dropped += dropped

    def _read_vnet(self, out: list[Packet], max_count: int) -> None:
        """Reads with the virtio header in the headroom: one that asks for nothing (no GSO, no
        checksum to finish) is a packet as it stands; the others go to :meth:`_finish_vnet`."""
        pool, stats = self._pool, self.stats
        fd, readv, free, iovs, buf = self._fd, os.readv, pool.free, self._read_iovs, pool.buf
        headroom, slot, limit = self.headroom, pool.slot_bytes, self.mtu + VNET_HDR_LEN
        reads = nbytes = plain = 0
        try:
            while len(out) < max_count and free:
                lo = free.pop()
                iov = iovs[lo]
                try:
                    n = readv(fd, iov)
                except BlockingIOError:
                    free.append(lo)
                    return
                except OSError as e:
                    free.append(lo)
                    raise self._read_error(e) from None
                reads += 1
                nbytes += n
                if VNET_HDR_LEN <= n <= limit and not (iov[0][0] or iov[0][1]):  # flags, gso_type: nothing asked
                    start = lo + headroom
                    out.append(Packet(buf, start, start + n - VNET_HDR_LEN, lo, lo + slot, self, RECEIVED))
                    plain += 1
                    continue
                packets = self._finish_vnet(lo, n)  # counts what it hands out
                room = max_count - len(out)
                out.extend(packets[:room])
                self._ready.extend(packets[room:])
        finally:
            stats.reads += reads
            stats.read_bytes += nbytes
            stats.rx_packets += plain

    def _finish_vnet(self, lo: int, n: int) -> list[Packet]:
        """A read whose virtio header asks for work: finish its checksum, or split its GSO packet.

        The packets it stands for, counted; none (the read dropped and
        counted) if the header or the packet is inconsistent.
        """
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
                start = lo + self.headroom
                return [Packet(pool.buf, start, start + len(pkt), lo, lo + pool.slot_bytes, self, RECEIVED)]
            segments = self._split(pkt, gso_type, gso_size, csum_start)
        except (PacketError, IndexError) as e:
            pool.free.append(lo)
            self.stats.rx_dropped += 1
            log.debug("%s: dropped a read: %s", self.name, e)
            return []
        pool.free.append(lo)  # the segments are in other slots: this one is free again
        return segments

    def _split(self, pkt: memoryview, gso_type: int, gso_size: int, csum_start: int) -> list[Packet]:
        """Cut a GSO packet into new packets of the pool: each segment is a copy, counted."""
        pool = self._pool
        needed = offload.segment_count(pkt, gso_type, gso_size, csum_start)
        if needed > len(pool.free):
            raise PacketError(f"a GSO read needs {needed} packets, {len(pool.free)} are free")
        segments = offload.split(pkt, gso_type, gso_size, csum_start, lambda size: pool.take(size, RECEIVED))
        stats = self.stats
        stats.gso_splits += 1
        stats.rx_packets += len(segments)
        self.copies += len(segments)
        self.copy_bytes += sum(p.end - p.start for p in segments)
        return segments

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
            raise self._closed_error()
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
        os.close(self._fd)
        self._ready.clear()

    def __repr__(self) -> str:
        return f"<TunDevice {self.name} mtu={self.mtu} offload={self.offload} queues={len(self.queues)}>"

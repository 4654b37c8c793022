"""TUN offloads: the virtio-net header, GSO splitting and TCP GRO coalescing (sans-I/O).

With ``IFF_VNET_HDR`` every packet crossing the TUN descriptor is preceded by
a 10-byte ``virtio_net_hdr`` (host byte order).  The kernel may then hand us
one large TCP (or UDP, with USO) packet standing for many MTU-sized ones
("GSO"); :func:`split` cuts it into the packets it stands for, with correct
IP/TCP/UDP headers and full checksums.  In the other direction
:func:`coalesce` finds runs of consecutive segments of one TCP flow in a batch
so that the device writes each run as one large packet ("GRO"), and
:func:`complete_checksum` finishes a checksum the kernel left partial.

Checksums are Internet (ones' complement) sums computed at C speed: since
``2**16 == 1 (mod 0xFFFF)``, the sum of a buffer's 16-bit big-endian words is
``int.from_bytes(buffer) % 0xFFFF`` up to the one's complement zero.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from ..errors import PacketError
from ..packet import Packet

# struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size  # 10
NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
ZERO_HDR = bytes(VNET_HDR_LEN)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = 1, 2, 4, 8, 16, 32, 64, 128
TCP_CSUM_OFFSET = 16
UDP_CSUM_OFFSET = 6
MAX_COALESCED_BYTES = 0xFFFF  # IPv4 total length / what one virtio GSO packet may carry
MAX_COALESCED_SEGMENTS = 64

_U16 = struct.Struct("!H")
_IP4_LEN_ID = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_SEQ_FLAGS_CHECK = struct.Struct("!I4xHxxH")  # TCP seq, data offset + flags, checksum (from offset 4)


def csum_sum(data: memoryview | bytes | bytearray, initial: int = 0) -> int:
    """Ones' complement sum of ``data`` (padded to even length) plus ``initial``, mod 0xFFFF.

    ``data`` must start at an even offset of the checksummed region.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return (value + initial) % 0xFFFF


def csum_fold(total: int) -> int:
    """The checksum field for a sum from :func:`csum_sum` (never 0 when the data is not all zero)."""
    total %= 0xFFFF
    return 0xFFFF - total if total else 0


def pseudo_sum(pkt: memoryview, proto: int, length: int) -> int:
    """Sum of the IPv4/IPv6 pseudo-header of ``pkt`` for an upper layer of ``length`` bytes."""
    if pkt[0] >> 4 == 4:
        addrs = pkt[12:20]
    else:
        addrs = pkt[8:40]
    return (int.from_bytes(addrs, "big") + proto + length) % 0xFFFF


def ipv4_header_checksum(pkt: memoryview, ihl: int) -> None:
    """Recompute an IPv4 header's checksum in place."""
    pkt[10:12] = b"\0\0"
    _U16.pack_into(pkt, 10, csum_fold(csum_sum(pkt[:ihl])))


def complete_checksum(pkt: memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a NEEDS_CSUM packet: sum from csum_start (the field holds the pseudo-header sum)."""
    where = csum_start + csum_offset
    if where + 2 > len(pkt):
        raise PacketError(f"virtio header puts the checksum at {where}, past the {len(pkt)}-byte packet")
    check = csum_fold(csum_sum(pkt[csum_start:]))
    if check == 0 and csum_offset == UDP_CSUM_OFFSET:
        check = 0xFFFF  # UDP: zero means "no checksum"
    _U16.pack_into(pkt, where, check)


def _l3(pkt: memoryview) -> tuple[int, int]:
    """(IP header length, upper protocol) for IPv4 without fragments or IPv6 without extension headers."""
    version = pkt[0] >> 4
    if version == 4:
        return (pkt[0] & 15) * 4, pkt[9]
    if version == 6:
        return 40, pkt[6]
    raise PacketError(f"GSO packet is IP version {version}")


def gso_headers(pkt: memoryview, gso_type: int, csum_start: int) -> tuple[int, int]:
    """(IP header length, IP + TCP/UDP header length) of a GSO packet, checked against its virtio header."""
    gso_type &= ~GSO_ECN
    iphl, proto = _l3(pkt)
    if csum_start != iphl:
        raise PacketError(f"GSO packet's transport header at {csum_start}, IP header is {iphl} bytes")
    if gso_type in (GSO_TCPV4, GSO_TCPV6):
        if proto != IPPROTO_TCP or (pkt[0] >> 4 == 4) != (gso_type == GSO_TCPV4):
            raise PacketError(f"GSO type {gso_type} does not match the packet (IPv{pkt[0] >> 4}, protocol {proto})")
        hdr = iphl + (pkt[iphl + 12] >> 4) * 4
    elif gso_type == GSO_UDP_L4:  # not GSO_UDP (UFO: IP fragmentation), which we never enable
        if proto != IPPROTO_UDP:
            raise PacketError(f"UDP GSO packet carries protocol {proto}")
        hdr = iphl + 8
    else:
        raise PacketError(f"unknown GSO type {gso_type}")
    if hdr > len(pkt):
        raise PacketError(f"GSO packet of {len(pkt)} bytes with headers of {hdr}")
    return iphl, hdr


def segment_count(pkt: memoryview, gso_type: int, gso_size: int, csum_start: int) -> int:
    """How many packets :func:`split` makes of this GSO packet (PacketError if it is inconsistent)."""
    _, hdr = gso_headers(pkt, gso_type, csum_start)
    if gso_size <= 0:
        raise PacketError(f"GSO segment size {gso_size}")
    return -(-(len(pkt) - hdr) // gso_size)


def _template_sums(pkt: memoryview, iphl: int, hdr: int, tcp: bool) -> tuple[int, int]:
    """Sums of the GSO packet's IPv4 header and pseudo-header + transport header without the
    fields that differ per segment (IP length, ID and checksum; TCP seq, flags and checksum;
    UDP length and checksum): each segment adds its own values to these.  A field's words are
    subtracted rather than zeroed in a copy: checksums are sums of 16-bit words."""
    ip_base = 0
    if pkt[0] >> 4 == 4:
        total, ip_id = _IP4_LEN_ID.unpack_from(pkt, 2)
        ip_base = (csum_sum(pkt[:iphl]) - total - ip_id - _U16.unpack_from(pkt, 10)[0]) % 0xFFFF
        addrs = pkt[12:20]
    else:
        addrs = pkt[8:40]
    if tcp:
        seq = _U32.unpack_from(pkt, iphl + 4)[0]
        varying = (seq >> 16) + (seq & 0xFFFF) + pkt[iphl + 13] + _U16.unpack_from(pkt, iphl + TCP_CSUM_OFFSET)[0]
        proto = IPPROTO_TCP
    else:
        varying = _U16.unpack_from(pkt, iphl + 4)[0] + _U16.unpack_from(pkt, iphl + UDP_CSUM_OFFSET)[0]
        proto = IPPROTO_UDP
    l4_base = (csum_sum(pkt[iphl:hdr]) - varying + int.from_bytes(addrs, "big") + proto) % 0xFFFF
    return ip_base, l4_base


def split(pkt: memoryview, gso_type: int, gso_size: int, csum_start: int,
          take: Callable[[int], Packet]) -> list[Packet]:
    """Cut one GSO packet into the packets it stands for; ``take(size)`` gives each one's memory.

    Each segment is a copy: the headers, then its part of the payload.  TCP
    segments get consecutive sequence numbers, FIN/PSH only on the last and
    CWR only on the first; IPv4 packets get consecutive IDs; every segment gets
    a full IP, TCP or UDP checksum.
    """
    n = len(pkt)
    count = segment_count(pkt, gso_type, gso_size, csum_start)
    iphl, hdr = gso_headers(pkt, gso_type, csum_start)
    tcp = gso_type & ~GSO_ECN != GSO_UDP_L4
    v4 = pkt[0] >> 4 == 4
    ip_base, l4_base = _template_sums(pkt, iphl, hdr, tcp)
    ip_id = _U16.unpack_from(pkt, 4)[0] if v4 else 0
    seq = _U32.unpack_from(pkt, iphl + 4)[0] if tcp else 0
    flags = pkt[iphl + 13] if tcp else 0
    out: list[Packet] = []
    for i in range(count):
        off = hdr + i * gso_size
        chunk = min(gso_size, n - off)
        seg = take(hdr + chunk)
        buf, s = seg.buf, seg.start
        buf[s : s + hdr] = pkt[:hdr]
        buf[s + hdr : s + hdr + chunk] = pkt[off : off + chunk]
        l4_len = hdr - iphl + chunk
        if v4:
            pid = (ip_id + i) & 0xFFFF
            _IP4_LEN_ID.pack_into(buf, s + 2, hdr + chunk, pid)
            _U16.pack_into(buf, s + 10, csum_fold(ip_base + hdr + chunk + pid))
        else:
            _U16.pack_into(buf, s + 4, l4_len)
        at = s + iphl
        if tcp:
            sq = (seq + off - hdr) & 0xFFFFFFFF
            f = flags if i == count - 1 else flags & ~(TCP_FIN | TCP_PSH)
            f = f if i == 0 else f & ~TCP_CWR
            _U32.pack_into(buf, at + 4, sq)
            buf[at + 13] = f
            check = csum_fold(csum_sum(pkt[off : off + chunk], l4_base + (sq >> 16) + (sq & 0xFFFF) + f + l4_len))
            _U16.pack_into(buf, at + TCP_CSUM_OFFSET, check)
        else:
            _U16.pack_into(buf, at + 4, l4_len)
            check = csum_fold(csum_sum(pkt[off : off + chunk], l4_base + 2 * l4_len)) or 0xFFFF
            _U16.pack_into(buf, at + UDP_CSUM_OFFSET, check)
        out.append(seg)
    return out


def _tcp_key(pkt: memoryview) -> tuple[bytes, int, int, int, int] | None:
    """(flow key, IP header length, TCP header length, seq, flags) of a coalescable TCP segment."""
    n = len(pkt)
    if n < 40:
        return None
    first = pkt[0]
    if first == 0x45:
        iphl = 20
    elif first >> 4 == 6 and n >= 60:
        iphl = 40
    else:
        return None  # not IP, or IPv4 with options: left alone, as the kernel's GRO mostly does
    tcphl = (pkt[iphl + 12] >> 4) * 4
    if tcphl < 20 or iphl + tcphl >= n:
        return None
    h = bytes(pkt[: iphl + tcphl])
    if iphl == 20:
        # TCP, no fragments, and the length must be the packet's.
        if h[9] != IPPROTO_TCP or _U16.unpack_from(h, 6)[0] & 0x3FFF or _U16.unpack_from(h, 2)[0] != n:
            return None
        ipkey = h[1:2] + h[6:9]
    else:
        if h[6] != IPPROTO_TCP or 40 + _U16.unpack_from(h, 4)[0] != n:
            return None
        ipkey = h[0:4] + h[6:8]
    flags = h[iphl + 13]
    if flags & ~TCP_PSH != TCP_ACK or h[iphl + 18] or h[iphl + 19]:
        return None
    # Addresses, ports, ack, data offset, window and options must all match.
    key = ipkey + h[iphl - (8 if iphl == 20 else 32) : iphl + 4] + h[iphl + 8 : iphl + 13] + \
        h[iphl + 14 : iphl + 16] + h[iphl + 20 :]
    return key, iphl, tcphl, _U32.unpack_from(h, iphl + 4)[0], flags


def coalesce(packets: Sequence[Packet]) -> list[list[Packet]]:
    """Group a batch into runs to write as one: consecutive segments of one TCP flow.

    A run has contiguous sequence numbers, equal-sized payloads (only the last
    may be shorter), PSH only on its last segment and at most
    MAX_COALESCED_BYTES in all; anything else is a run of one.
    """
    runs: list[list[Packet]] = []
    run: list[Packet] = []
    key = None
    next_seq = mss = total = 0
    closed = True
    for p in packets:
        data = p.data
        info = _tcp_key(data)
        if info is not None:
            k, iphl, tcphl, seq, flags = info
            payload = len(data) - iphl - tcphl
            if (not closed and k == key and seq == next_seq and payload <= mss
                    and total + payload <= MAX_COALESCED_BYTES and len(run) < MAX_COALESCED_SEGMENTS):
                run.append(p)
                next_seq = (seq + payload) & 0xFFFFFFFF
                total += payload
                closed = payload < mss or bool(flags & TCP_PSH)
                continue
            if run:
                runs.append(run)
            run = [p]
            key, next_seq, mss, total = k, (seq + payload) & 0xFFFFFFFF, payload, len(data)
            closed = bool(flags & TCP_PSH)
            continue
        if run:
            runs.append(run)
            run = []
        closed = True
        runs.append([p])
    if run:
        runs.append(run)
    return runs


def coalesced_header(run: Sequence[Packet]) -> bytes:
    """Turn ``run[0]`` into the head of one GSO write for the whole run; return its virtio header.

    The head's IP length (and IPv4 header checksum) cover the run and PSH is
    set if the last segment had it.  The TCP checksum becomes the full
    checksum of the coalesced packet, derived from the segments' own
    checksums and headers without reading a payload byte; the virtio header
    does not claim NEEDS_CSUM, so the kernel verifies it (in C) as it would
    have verified each segment: one damaged segment makes the whole run fail
    its check and be dropped, never accepted.  (wireguard-go instead checks
    every segment before merging and sends NEEDS_CSUM; in Python that check
    costs more than the system calls coalescing saves.)
    """
    head = run[0].data
    v4 = head[0] >> 4 == 4
    iphl = 20 if v4 else 40
    tcphl = (head[iphl + 12] >> 4) * 4
    hdr = iphl + tcphl
    mss = len(head) - hdr
    # Each segment's checksum is right iff pseudo + header + payload == 0 (mod 0xFFFF), so its
    # payload's sum is -(pseudo + header).  Headers differ only in seq, flags and checksum.
    template = bytearray(head[iphl:hdr])
    template[4:8] = b"\0\0\0\0"
    template[13] = 0
    template[16:18] = b"\0\0"
    base = csum_sum(template)
    addrs = (int.from_bytes(head[12:20] if v4 else head[8:40], "big") + IPPROTO_TCP) % 0xFFFF
    payload_sum = 0
    offset = 0  # of this segment's payload in the coalesced payload: odd offsets swap bytes
    for p in run:
        d = p.data
        seq, flags_word, check = _SEQ_FLAGS_CHECK.unpack_from(d, iphl + 4)
        n = len(d) - hdr
        seg = -(addrs + tcphl + n + base + (seq >> 16) + (seq & 0xFFFF) + (flags_word & 0xFF) + check) % 0xFFFF
        payload_sum += ((seg & 0xFF) << 8 | seg >> 8) if offset & 1 else seg
        offset += n
    total = hdr + offset
    if v4:
        _U16.pack_into(head, 2, total)
        ipv4_header_checksum(head, iphl)
    else:
        _U16.pack_into(head, 4, total - 40)
    head[iphl + 13] |= run[-1].data[iphl + 13] & TCP_PSH
    seq = _U32.unpack_from(head, iphl + 4)[0]
    check = -(addrs + tcphl + offset + base + (seq >> 16) + (seq & 0xFFFF) + head[iphl + 13] + payload_sum) % 0xFFFF
    _U16.pack_into(head, iphl + TCP_CSUM_OFFSET, check)
    return VNET_HDR.pack(0, GSO_TCPV4 if v4 else GSO_TCPV6, hdr, mss, 0, 0)


def head_fields(head: memoryview) -> tuple[int, int, int, int]:
    """The fields of a run's head that :func:`coalesced_header` changes: IP length, IPv4 header
    checksum, TCP flags and TCP checksum (kept as numbers: to undo the change, nothing is copied)."""
    v4 = head[0] >> 4 == 4
    iphl = 20 if v4 else 40
    return (_U16.unpack_from(head, 2 if v4 else 4)[0], _U16.unpack_from(head, 10)[0] if v4 else 0,
            head[iphl + 13], _U16.unpack_from(head, iphl + TCP_CSUM_OFFSET)[0])


def restore_head(head: memoryview, fields: tuple[int, int, int, int]) -> None:
    """Put back what :func:`head_fields` saved: the head is the segment it was (a write that did not happen)."""
    length, ip_check, flags, tcp_check = fields
    v4 = head[0] >> 4 == 4
    iphl = 20 if v4 else 40
    _U16.pack_into(head, 2 if v4 else 4, length)
    if v4:
        _U16.pack_into(head, 10, ip_check)
    head[iphl + 13] = flags
    _U16.pack_into(head, iphl + TCP_CSUM_OFFSET, tcp_check)

"""TUN offloads against the kernel: GSO reads split like the kernel splits, GRO writes, 50 MB byte-exact."""

from __future__ import annotations

import socket
import struct

import pytest

from tunring.linux import TunDevice
from tunring.linux import tun as tunmod

from tun_traffic import ADDRESSES, LOCAL4, LOCAL6, PEER4, PEER6, bulk_tcp, reflecting

pytestmark = pytest.mark.net

BULK_BYTES = 50 * 1000 * 1000
UDP_SEGMENT = 103
PSH = 0x08  # socket option: send one large datagram cut into segments of this size


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_tcp_50mb_through_offloads_is_exact_with_fewer_larger_reads(netns, family):
    stats, copies = {}, {}
    for offload in (False, True):
        with TunDevice.create("tro0", addresses=ADDRESSES, offload=offload) as dev, reflecting(dev) as result:
            bulk_tcp(family, BULK_BYTES)
        stats[offload], copies[offload] = result["stats"], result["copies"]
    plain, off = stats[False], stats[True]
    assert off["gso_splits"] > 0 and off["gro_runs"] > 0 and off["rx_dropped"] == 0
    # Every segment of a split read is a copy; every other read is delivered where it landed.
    segments = off["rx_packets"] - (off["reads"] - off["rx_dropped"] - off["gso_splits"])
    assert copies[True]["device"] == segments > 0 and copies[True]["device_bytes"] > 40 * segments
    assert copies[False]["device"] == copies[False]["device_bytes"] == 0
    # The reflector copies each packet it turns around once, and says so.
    assert copies[True]["reflector"] == off["tx_packets"] and copies[True]["reflector_bytes"] >= BULK_BYTES
    # The read path: fewer system calls, each carrying more.
    assert off["reads"] < plain["reads"] / 4
    assert off["read_bytes"] / off["reads"] > 4 * plain["read_bytes"] / plain["reads"]
    # The write path too: coalesced runs mean fewer writes than packets.
    assert off["writes"] < off["tx_packets"] / 4


def test_tcp_50mb_with_gro_writes_only_is_exact(netns):
    """tso=False: the kernel sends plain packets, our writes still go out coalesced."""
    with TunDevice.create("tro1", addresses=ADDRESSES, offload=True, tso=False) as dev, reflecting(dev) as result:
        assert dev.offloads == 0
        bulk_tcp(socket.AF_INET, BULK_BYTES)
    stats = result["stats"]
    assert stats["gso_splits"] == 0 and stats["reads"] == stats["rx_packets"]
    assert stats["gro_runs"] > 0 and stats["writes"] < stats["tx_packets"] / 4


def _collect(dev: TunDevice, want: int, port: int) -> list[bytes]:
    """UDP packets to ``port`` the device receives, as bytes, until ``want`` payload bytes came."""
    out, have = [], 0
    while have < want:
        assert dev.wait(5), f"only {have} of {want} bytes arrived"
        while (p := dev.receive()) is not None:
            data = bytes(p.data)
            dev.release(p)
            ihl = 20 if data[0] >> 4 == 4 else 40
            if data[(9 if ihl == 20 else 6)] == 17 and struct.unpack_from("!H", data, ihl + 2)[0] == port:
                out.append(data)
                have += len(data) - ihl - 8
    return out


def _reference_checksum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way, independent of tunring.linux.offload."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_udp_gso_split_matches_the_kernels_own_segmentation(netns, family):
    """The same UDP_SEGMENT send through a plain TUN (the kernel segments) and a USO one (we do)."""
    local, peer = (LOCAL4, PEER4) if family == socket.AF_INET else (LOCAL6, PEER6)
    payload = bytes(range(256)) * 40 + b"tail"  # 10244 bytes: 7 segments of 1400 and a short one
    seen = {}
    for offload in (False, True):
        with TunDevice.create("tru0", addresses=ADDRESSES, offload=offload) as dev:
            if offload:
                assert dev.offloads & tunmod.TUN_F_USO4, "this kernel has no USO: the comparison would be empty"
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.bind((local, 40000))
                s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1400)
                s.sendto(payload, (peer, 9999))
                seen[offload] = _collect(dev, len(payload), 9999)
            if offload:
                assert dev.stats.gso_splits == 1
    plain, ours = seen[False], seen[True]
    assert len(plain) == len(ours) == 8
    for a, b in zip(plain, ours):
        if family == socket.AF_INET:
            # IP IDs are the sending socket's (they differ between the two sends); compare the rest.
            assert a[:4] + a[6:10] + a[12:] == b[:4] + b[6:10] + b[12:]
            assert _reference_checksum(b[:20]) == 0xFFFF
            assert struct.unpack_from("!H", b, 4)[0] - struct.unpack_from("!H", ours[0], 4)[0] == ours.index(b)
        else:
            assert a == b
    ihl = 20 if family == socket.AF_INET else 40
    for b in ours:
        addrs = b[12:20] if ihl == 20 else b[8:40]
        pseudo = addrs + struct.pack("!HH", 17, len(b) - ihl)
        assert _reference_checksum(pseudo + b[ihl:]) == 0xFFFF
    assert b"".join(b[ihl + 8:] for b in ours) == payload


def _record_and_reflect(dev, stop, port: int, records, done) -> None:
    """reflect.serve, keeping a copy of every TCP packet with data sent to ``port``; then its GSO splits."""
    from tunring.apps.reflect import reflect

    while not stop.is_set():
        if not dev.wait(0.05):
            continue
        received = dev.receive_many(64)
        out = []
        for p in received:
            data = p.data
            ihl = 20 if data[0] >> 4 == 4 else 40
            proto = data[9] if ihl == 20 else data[6]
            if proto == 6 and struct.unpack_from("!H", data, ihl + 2)[0] == port \
                    and len(data) > ihl + (data[ihl + 12] >> 4) * 4:
                records.put(bytes(data))
            if reflect(data):
                q = dev.allocate(len(data))
                q.buf[q.start : q.end] = data
                out.append(q)
        dev.release_many(received)
        dev.send_many(out)
    done.put(dev.stats.gso_splits)


def _segments(family: int, offload: bool, nbytes: int) -> tuple[list[tuple], list[bytes], int]:
    """Send ``nbytes`` in one go on a fresh connection; the data segments the device read, normalised."""
    import multiprocessing
    import time

    local, peer = (LOCAL4, PEER4) if family == socket.AF_INET else (LOCAL6, PEER6)
    ctx = multiprocessing.get_context("fork")
    stop, records, done = ctx.Event(), ctx.Queue(), ctx.Queue()
    with TunDevice.create("trs0", addresses=ADDRESSES, offload=offload) as dev, \
            socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((local, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        child = ctx.Process(target=_record_and_reflect, args=(dev, stop, port, records, done))
        child.start()
        try:
            with socket.create_connection((peer, port), timeout=5) as client:
                conn, _ = listener.accept()
                time.sleep(0.2)  # handshake done, nothing in flight
                # Corked, the send becomes one skb whatever the timing: one GSO packet with
                # TSO, cut by the kernel's software GSO for the plain TUN.
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                client.sendall(bytes(range(256)) * (nbytes // 256))
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                got = 0
                conn.settimeout(5)
                while got < nbytes:
                    got += len(conn.recv(65536))
                conn.close()
            seen = []
            while len(b"".join(seen)) < nbytes:  # headers included: enough once the payload is there
                seen.append(records.get(timeout=5))
        finally:
            stop.set()
            splits = done.get(timeout=5)
            child.join(5)
            if child.is_alive():
                child.kill()
    ihl = 20 if family == socket.AF_INET else 40
    isn = struct.unpack_from("!I", seen[0], ihl + 4)[0]
    shape = []
    for d in seen:
        thl = (d[ihl + 12] >> 4) * 4
        shape.append((struct.unpack_from("!I", d, ihl + 4)[0] - isn, len(d) - ihl - thl, d[ihl + 13], thl))
    return shape, seen, splits


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_tcp_segments_match_what_a_plain_tun_delivers(netns, family):
    """One corked send of 8 KiB: the kernel segments it for a plain TUN; with TSO we split its GSO packets."""
    plain, _, _ = _segments(family, False, 8192)
    ours, raw, splits = _segments(family, True, 8192)
    assert splits >= 1  # it came as GSO packets, which we split
    # Where the kernel cuts the stream into skbs (and so where PSH lands) depends on its TSO
    # autosizing and timing, in both runs; everything else must be identical.
    assert [(seq, n, flags & ~PSH, thl) for seq, n, flags, thl in ours] == \
        [(seq, n, flags & ~PSH, thl) for seq, n, flags, thl in plain]
    assert ours[-1][2] & PSH and plain[-1][2] & PSH
    assert sum(length for _, length, _, _ in ours) == 8192 and len(ours) > 1
    ihl = 20 if family == socket.AF_INET else 40
    for d in raw:
        if ihl == 20:
            assert _reference_checksum(d[:20]) == 0xFFFF
        addrs = d[12:20] if ihl == 20 else d[8:40]
        assert _reference_checksum(addrs + struct.pack("!HH", 6, len(d) - ihl) + d[ihl:]) == 0xFFFF


def _tcp4(src: str, dst: str, sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    """An ACK segment with right checksums, built without tunring."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    th = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x10, 1000, 0, 0))
    th[16:18] = struct.pack("!H", 0xFFFF - _reference_checksum(s + d + struct.pack("!HH", 6, 20 + len(payload))
                                                               + bytes(th) + payload))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0, s, d))
    ip[10:12] = struct.pack("!H", 0xFFFF - _reference_checksum(bytes(ip)))
    return bytes(ip) + bytes(th) + payload


def _tcp_checksum_errors() -> int:
    with open("/proc/thread-self/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("InCsumErrors")])


def test_a_damaged_segment_makes_the_kernel_drop_its_coalesced_run(netns):
    """GRO writes leave checking to the kernel: a good run is taken, a run with one bad segment is not."""
    import time

    with TunDevice.create("trc0", addresses=ADDRESSES, offload=True, tso=False) as dev:
        for damaged in (False, True):
            errors = _tcp_checksum_errors()
            segments = [_tcp4(PEER4, LOCAL4, 40000, 9, 1000 + 1000 * i, bytes([i]) * 1000) for i in range(4)]
            if damaged:
                bad = bytearray(segments[2])
                bad[500] ^= 0x04
                segments[2] = bytes(bad)
            packets = []
            for seg in segments:
                p = dev.allocate(len(seg))
                p.data[:] = seg
                packets.append(p)
            runs = dev.stats.gro_runs
            dev.send_many(packets)
            assert dev.stats.gro_runs == runs + 1  # the four went out as one write
            # Port 9 is closed: a segment the kernel accepts is answered with a reset.
            deadline = time.monotonic() + (0.5 if damaged else 5)
            reset = False
            while not reset and time.monotonic() < deadline:
                if dev.wait(0.1):
                    for p in dev.receive_many(16):
                        d = p.data
                        reset |= d[0] == 0x45 and d[9] == 6 and struct.unpack_from("!H", d, 22)[0] == 40000 \
                            and bool(d[33] & 0x04)
                        dev.release(p)
            assert reset is not damaged
            assert _tcp_checksum_errors() == errors + (1 if damaged else 0)

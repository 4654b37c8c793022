"""TunDevice against the real kernel, inside a test-made network namespace."""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import socket
import time

import pytest

from tunring import DeviceError, PacketError, RingFull
from tunring.linux import TunDevice, netlink
from tunring.linux import tun as tunmod

from tun_traffic import ADDRESSES, LOCAL4, PEER4, PEER6, ping, reflecting, tcp_echo, udp4, udp_exchange

pytestmark = pytest.mark.net


@pytest.mark.parametrize("offload", [False, True], ids=["plain", "offload"])
def test_ping_udp_tcp_through_reflector(netns, offload):
    with TunDevice.create("trt0", addresses=ADDRESSES, offload=offload) as dev, reflecting(dev) as result:
        ping(PEER4)
        ping(PEER6)
        udp_exchange(socket.AF_INET)
        udp_exchange(socket.AF_INET6)
        tcp_echo(socket.AF_INET, 1 << 20)
        tcp_echo(socket.AF_INET6, 1 << 20)
    assert result["count"] > 2 * (1 << 20) // 1500
    assert result["stats"]["rx_dropped"] == 0


def test_interface_exists_while_open_and_goes_with_close(netns):
    dev = TunDevice.create("trt1", addresses=["10.3.0.1/24"], mtu=1400)
    try:
        assert dev.name == "trt1" and netlink.link_index("trt1") == dev.index
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            link = ipr.get_links(dev.index)[0]
            assert link.get_attr("IFLA_MTU") == 1400
            assert link.get_attr("IFLA_OPERSTATE") in ("UNKNOWN", "UP")
            assert [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=dev.index, family=socket.AF_INET)] == ["10.3.0.1"]
    finally:
        dev.close()
    assert netlink.link_index("trt1") is None


def test_kernel_picks_the_name_and_routes_are_installed(netns):
    with TunDevice.create(addresses=["10.4.0.1/32"], routes=["10.5.0.0/16", "fd05::/64"]) as dev:
        assert dev.name.startswith("tun")
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            routes = {(r.get_attr("RTA_DST"), r["dst_len"]) for r in ipr.get_routes(oif=dev.index, table=254)}
            routes |= {(r.get_attr("RTA_DST"), r["dst_len"]) for r in ipr.get_routes(family=10, oif=dev.index)}
        assert ("10.5.0.0", 16) in routes and ("fd05::", 64) in routes


def test_interface_goes_when_its_process_dies(netns):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()

    def owner() -> None:
        TunDevice.create("trt2", addresses=["10.6.0.1/24"])
        ready.set()
        time.sleep(60)

    proc = ctx.Process(target=owner, daemon=True)
    proc.start()
    try:
        assert ready.wait(10)
        assert netlink.link_index("trt2") is not None
        proc.kill()
        proc.join(5)
        deadline = time.monotonic() + 1.0
        while netlink.link_index("trt2") is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert netlink.link_index("trt2") is None
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()


def test_bad_conditions_are_clear_errors(netns):
    with TunDevice.create("trt3") as dev:
        with pytest.raises(DeviceError, match="trt3 is in use"):
            TunDevice.create("trt3")
        assert netlink.link_index(dev.name) is not None
    with pytest.raises(DeviceError, match="lo is in use"):
        TunDevice.create("lo")
    with pytest.raises(DeviceError, match="MTU 20 is out of range: 68 to 65535"):
        TunDevice.create("trt4", mtu=20)
    with pytest.raises(DeviceError, match="MTU 70000 is out of range"):
        TunDevice.create("trt4", mtu=70000)
    with pytest.raises(DeviceError, match="1280 to 65535 .the interface has IPv6"):
        TunDevice.create("trt4", mtu=1000, addresses=["fd00::1/64"])
    with pytest.raises(DeviceError, match="cannot parse interface address '10.0.0.300/24'"):
        TunDevice.create("trt4", addresses=["10.0.0.300/24"])
    with pytest.raises(DeviceError, match="cannot parse route"):
        TunDevice.create("trt4", routes=["fd00::zz/64"])
    with pytest.raises(DeviceError, match="is not valid"):
        TunDevice.create("a-much-too-long-name")
    with pytest.raises(DeviceError, match="namespace 'no-such-ns' does not exist"):
        TunDevice.create("trt4", netns="no-such-ns")
    # Nothing was left behind by the failures.
    assert netlink.link_index("trt4") is None


def test_missing_dev_net_tun_says_so(netns, monkeypatch):
    monkeypatch.setattr(tunmod, "TUN_PATH", "/nonexistent/tun")
    with pytest.raises(DeviceError, match="does not exist: load the tun module") as e:
        TunDevice.create("trt5")
    assert e.value.errno == errno.ENOENT


def test_without_cap_net_admin_says_so(netns):
    ctx = multiprocessing.get_context("fork")
    r, w = os.pipe()

    def unprivileged() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)  # drops every capability
        try:
            TunDevice.create("trt6")
            msg = "created"
        except DeviceError as e:
            msg = str(e)
        os.write(w, msg.encode())

    proc = ctx.Process(target=unprivileged)
    proc.start()
    proc.join(10)
    os.close(w)
    msg = os.read(r, 4096).decode()
    os.close(r)
    assert "CAP_NET_ADMIN" in msg


def test_full_kernel_queue_is_back_pressure(netns):
    """Nobody reads: the kernel drops at its queue, the device survives and works afterwards."""
    with TunDevice.create("trt7", addresses=ADDRESSES, packets=1024) as dev:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            sent = 0
            for i in range(5000):
                try:
                    s.sendto(i.to_bytes(4, "big") * 100, (PEER4, 9))
                    sent += 1
                except BlockingIOError:
                    pass
        got = []
        while (p := dev.receive()) is not None:
            if p.data[0] == 0x45 and p.data[9] == 17:  # ours, not the kernel's IPv6 chatter
                got.append(int.from_bytes(p.data[28:32], "big"))
            dev.release(p)
        assert 0 < len(got) < sent  # the queue held some and dropped the rest
        assert got == sorted(got)  # what was kept arrives in order
        with reflecting(dev):
            udp_exchange(socket.AF_INET)


def test_packet_api_on_tun(netns):
    with TunDevice.create("trt8", addresses=ADDRESSES, headroom=24, tailroom=20, packets=4) as dev:
        # Pool: four packets, then RingFull; cancel gives one back.
        ps = dev.allocate_many(100, 10)
        assert len(ps) == 4
        with pytest.raises(RingFull, match="pool exhausted"):
            dev.allocate(100)
        with pytest.raises(PacketError, match="last allocated"):
            dev.shrink_and_send(ps[0], 50)
        for p in ps:
            dev.cancel(p)
        with pytest.raises(PacketError, match="already sent"):
            dev.cancel(ps[0])
        with pytest.raises(PacketError, match="0 to 1500"):
            dev.allocate(1501)
        # A UDP packet written from packet memory reaches a kernel socket.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((LOCAL4, 7777))
            s.settimeout(5)
            p = dev.allocate(1500)
            assert p.headroom == 24 and p.tailroom >= 20
            udp = udp4(PEER4, LOCAL4, 5555, 7777, b"hello tun")
            p.data[: len(udp)] = udp
            dev.shrink_and_send(p, len(udp))
            assert s.recvfrom(100) == (b"hello tun", (PEER4, 5555))
            # And one the kernel sends arrives through asyncio with the same room.
            s.sendto(b"to the tun", (PEER4, 5555))

            async def one():
                while True:  # skip what the kernel says on its own (IPv6 router solicitations...)
                    packet = await asyncio.wait_for(dev.areceive(), 5)
                    if packet.data[0] == 0x45 and packet.data[9] == 17:
                        return packet
                    dev.release(packet)

            q = asyncio.run(one())
            assert bytes(q.data[28:]) == b"to the tun" and q.headroom == 24 and q.tailroom >= 20
            q.push(8)[:] = b"VPNHDR!!"
            q.put(4)[:] = b"TAIL"
            assert bytes(q.data[:8]) == b"VPNHDR!!" and bytes(q.data[-4:]) == b"TAIL"
            dev.release(q)
        assert dev.stats.tx_packets == 1 and dev.stats.rx_packets >= 1
        # Something that is not IP: the kernel refuses it, the device counts a drop and goes on.
        junk = dev.allocate(20)
        junk.data[:] = bytes(20)
        dev.send_many([junk])
        assert dev.stats.tx_dropped == 1 and dev.stats.tx_packets == 1
        dev.write(bytes(20))
        assert dev.stats.tx_dropped == 2



def test_created_inside_another_namespace(netns):
    from pyroute2 import netns as ns

    other = netns + "-b"
    ns.create(other)
    try:
        with TunDevice.create("trt9", addresses=["10.9.0.1/24"], netns=other) as dev:
            assert dev.netns == other
            assert netlink.link_index("trt9") is None  # not here ...
            with netlink.netns(other):
                assert netlink.link_index("trt9") == dev.index  # ... there
        with netlink.netns(other):
            assert netlink.link_index("trt9") is None
    finally:
        ns.remove(other)


def test_send_on_a_full_kernel_queue_is_back_pressure(netns, monkeypatch):
    """EAGAIN from the kernel: RingFull, the packet stays the caller's, sending again works."""
    with TunDevice.create("trt10", addresses=ADDRESSES) as dev, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL4, 7778))
        s.settimeout(5)
        packets = []
        for i in range(3):
            udp = udp4(PEER4, LOCAL4, 5555, 7778, b"pkt%d......" % i)
            p = dev.allocate(len(udp))
            p.data[:] = udp
            packets.append(p)
        real_write = os.write
        calls = []

        def full_after_one(fd, data):
            calls.append(fd)
            if len(calls) > 1:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", full_after_one)
        with pytest.raises(RingFull, match="kernel queue is full"):
            dev.send_many(packets)
        monkeypatch.setattr(os, "write", real_write)
        assert [p.state for p in packets] == [3, 1, 1]  # DONE, then still ALLOCATED
        assert dev.wait_writable(40, 1.0)
        dev.send_many(packets[1:])
        assert [s.recv(100)[:4] for _ in range(3)] == [b"pkt0", b"pkt1", b"pkt2"]
        assert dev.stats.tx_packets == 3

"""Zero-copy proof for `tunring connect`'s data path, against ocserv, by memory addresses and tracemalloc.

The client's session runs in this process on a real TLS connection to ocserv
and a real TUN device while ``ping -f`` with 8000-byte packets (a 9000-byte link MTU) goes through it:

- every IP packet written to the TUN device starts exactly 8 bytes (the CSTP
  header) after the address the TLS read was given, so the record was read in
  place and delivered from where it landed;
- every record written to TLS starts exactly 8 bytes before the address the
  TUN read put the packet at: the header was pushed into the headroom;
- tracemalloc's transient peak (above what is still live at the end) is the
  same for 200- and 8000-byte packets: no Python-level copy of a packet
  existed at any moment.
"""

from __future__ import annotations

import array
import ctypes
import os
import shutil
import subprocess
import tracemalloc

import pytest

from tunring.apps.connect import auth, netconf
from tunring.apps.connect.client import Client, Options
from tunring.apps.connect.lab import INSIDE_IP4, Lab
from tunring.apps.connect.session import CstpSession, Stop
from tunring.apps.connect.tls import Trust, parse_url
from tunring.linux.tun import TunDevice
from tunring.proto.base import DECOMPRESS_MIN_BYTES

pytestmark = pytest.mark.net
PING_BYTES = 8000  # jumbo frames: far above the loop's own few kB of transient memory
SMALL_BYTES = 200
PINGS = 2000


def address(view) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


class Addresses:
    """Addresses noted into memory allocated up front, so noting them allocates nothing that
    stays (the floor tracemalloc measures against must not grow during the run)."""

    def __init__(self, capacity: int = 8 * PINGS) -> None:
        self.values = array.array("Q", bytes(8 * capacity))
        self.count = 0

    def add(self, value: int) -> None:
        self.values[self.count] = value
        self.count += 1

    def all(self) -> list[int]:
        return list(self.values[: self.count])


class RecordingTun(TunDevice):
    """A TunDevice that notes where the packets it sends and receives live."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.sent_at = Addresses()
        self.received_at = Addresses()

    def send(self, packet) -> None:
        self.sent_at.add(address(packet.buf[packet.start : packet.end]))
        super().send(packet)

    def receive_many(self, max_count):
        packets = super().receive_many(max_count)
        for p in packets:
            self.received_at.add(address(p.buf[p.start : p.end]))
        return packets


class RecordingTls:
    """The TLS socket, noting the buffers it reads into and writes from."""

    def __init__(self, tls) -> None:
        self._tls = tls
        self.read_into = Addresses(64 * PINGS)  # reads that found nothing are noted too
        self.wrote_from = Addresses()

    def recv_into(self, view, *args):
        self.read_into.add(address(view))
        return self._tls.recv_into(view, *args)

    def send(self, view):
        if isinstance(view, memoryview) and not view.readonly:
            self.wrote_from.add(address(view))
        return self._tls.send(view)

    def __getattr__(self, name):
        return getattr(self._tls, name)


def run_pings(lab: Lab, client: Client, cookie: str, size: int, iface: str):
    """One session carrying ``ping -f`` of ``size``-byte packets; (recorder, tun, session, transient bytes)."""
    t = client.open_tunnel(cookie)
    tls, cfg = t.tls, t.cfg
    assert t.leftover == b""
    tun = RecordingTun.create(iface, mtu=cfg.mtu, max_packet=max(DECOMPRESS_MIN_BYTES, cfg.mtu))
    wake_r, wake_w = os.pipe()
    try:
        netconf.apply(tun.name, cfg, client.gateway, cfg.mtu)
        pinger = lab.client(["ping", "-f", "-q", "-c", str(PINGS), "-s", str(size - 28), INSIDE_IP4],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        done: list[str] = []
        window = [0, 0]  # the current traced memory when the window began, the largest excess seen

        def tick() -> None:
            # Each tick closes a window: its peak above the memory in use when it began.
            current, peak = tracemalloc.get_traced_memory()
            window[1] = max(window[1], peak - window[0])
            tracemalloc.reset_peak()
            window[0] = tracemalloc.get_traced_memory()[0]
            if pinger.poll() is not None and not done:
                done.append("SIGINT")
                os.write(wake_w, b"x")

        recorder = RecordingTls(tls)
        session = CstpSession(recorder, tun, cfg, wake_r, lambda: done, tick=tick, tick_s=0.2)
        tracemalloc.start()
        window[0] = tracemalloc.get_traced_memory()[0]
        stop = session.run()
        tracemalloc.stop()
        session.close()  # no log-out: the cookie serves the next session
        out = pinger.communicate()[0]
    finally:
        tun.close()
        os.close(wake_r)
        os.close(wake_w)
    assert stop is Stop.SIGNAL
    assert pinger.returncode == 0 and f"{PINGS} received" in out, out
    return recorder, tun, session, window[1]


def test_records_are_read_and_sent_in_place():
    if os.geteuid() != 0 or shutil.which("ocserv") is None:
        pytest.skip("needs root and ocserv")
    with Lab(compression=False, link_mtu=9000, mtu=9000) as lab, lab.in_client():
        opts = Options(server=parse_url(lab.url), trust=Trust(lab.pki.ca),
                       creds=auth.Credentials(lab.user, lab.password), compressions=(), dtls=False)
        client = Client(opts)
        cookie = client.login()
        _, _, _, small = run_pings(lab, client, cookie, SMALL_BYTES, "vpnzs")
        recorder, tun, session, big = run_pings(lab, client, cookie, PING_BYTES, "vpnzc")
    reads = set(recorder.read_into.all())
    assert tun.sent_at.count >= PINGS and tun.received_at.count >= PINGS
    assert all(a - 8 in reads for a in tun.sent_at.all()), "a packet was delivered from memory TLS did not read into"
    assert set(recorder.wrote_from.all()) >= {a - 8 for a in tun.received_at.all()}, "a record was sent from a copy"
    assert session.codec.stats.rx_copies == session.codec.stats.tx_copies == 0 and tun.copies == 0
    # A copy of each packet would make the transient peak grow with the packet size; the
    # loop's own fixed needs (poll results, event lists) do not.  (Checked: a bytes() copy
    # in RecordingTun.send fails this.)
    assert big - small < (PING_BYTES - SMALL_BYTES) // 2, f"transient peak {small} -> {big} bytes: packets copied"

"""`tunring adapter`: the Wintun driver's role in user space, bridging a ring Session to a TUN.

The adapter creates a TUN interface, listens on an AF_UNIX socket and waits
for one client, which hands over its :class:`~tunring.session.Session` with
SCM_RIGHTS (:func:`connect` does that).  From then on packets the client sends
into the Receive ring are validated by :class:`~tunring.adapter.Adapter`
(non-IP slots skipped and counted, corruption stops the session) and written
to the kernel straight from ring memory; packets the kernel sends out of the
interface are read straight into a reserved Send-ring slot and committed
(dropped and counted when the ring is full).  When the client closes its
session or dies (its pidfd fires) the adapter drains what the client had
published, closes the interface (the kernel removes it) and exits.

Client side::

    session = connect("/run/tunring.sock", lead=16)   # a Session, mtu set
"""

from __future__ import annotations

import argparse
import enum
import json
import logging
import os
import select
import signal
import socket
import stat
import struct
import time
from dataclasses import dataclass

from ..adapter import Adapter
from ..cli import BAD_INPUT, CommandError, mtu_bytes
from ..errors import DeviceError, RingClosed, RingCorrupt, RingFull, TunringError
from ..session import DEFAULT_CAPACITY, Session
from ..shm import SessionHandle
from .tun import SEND_BLOCKED, TunDevice

log = logging.getLogger(__name__)

BATCH = 64  # packets per direction before looking at the other one
POLL_MS = 1000  # sleep bound: the pidfd wakes us on client death anyway
DEATH_CHECK_S = 0.1  # while busy, how often to look whether the client has died
CONNECT_TIMEOUT_S = 10.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Stop(enum.Enum):
    """Why a bridge stopped."""

    CLOSED = "the session ended"
    EXITED = "the client process has exited"
    CORRUPT = "the client corrupted its ring"


@dataclass(frozen=True)
class Stopped:
    """What :meth:`Bridge.run` (and :func:`serve`) report: the cause and its details.

    ``failed`` is True when the client broke the ring protocol: the adapter
    stopped because of the client, and a command should exit non-zero.
    """

    cause: Stop
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.cause is Stop.CORRUPT

    def __str__(self) -> str:
        return f"{self.cause.value}: {self.detail}" if self.detail else self.cause.value


class Bridge:
    """Moves packets between an attached Adapter and a TunDevice until the client goes.

    ``run()`` returns when the client closed its session or died, after the
    packets it had already published have been written to the kernel whole,
    or when the client corrupted its ring.  Packets go between ring memory and
    the TUN descriptor with no copy: ``os.write`` from a ring slot, ``os.readv``
    into a reserved one.  ``stats`` is the Adapter's; ``dropped`` counts
    kernel packets lost to a full Send ring, ``refused`` client packets the
    kernel would not take.
    """

    def __init__(self, adapter: Adapter, tun: TunDevice, client_pid: int | None = None) -> None:
        if tun.offload:
            raise DeviceError("the ring bridge needs a TUN device without offloads")
        self.adapter = adapter
        self.tun = tun
        self.dropped = 0
        self.refused = 0
        self._scratch = memoryview(bytearray(0xFFFF))  # a packet with no room in the Send ring is read here, dropped
        self._tun_fd = tun.fileno()
        fds = adapter.wait_fds()
        self._ring_fd = fds[0]
        self._pidfd = fds[1] if len(fds) > 1 else None
        self._own_pidfd = False
        if self._pidfd is None and client_pid:
            self._pidfd = os.pidfd_open(client_pid)
            self._own_pidfd = True

    def _read_into(self, view: memoryview) -> int | None:
        """One packet from the kernel straight into ``view``; None if it has none queued."""
        try:
            return os.readv(self._tun_fd, [view])
        except BlockingIOError:
            return None
        except OSError as e:
            raise DeviceError(e.errno, f"reading from {self.tun.name}: {e.strerror}") from None

    def _write_from(self, view: memoryview) -> bool:
        """One packet from ring memory to the kernel; False if its queue is full (try again)."""
        try:
            os.write(self._tun_fd, view)
        except OSError as e:
            if e.errno in SEND_BLOCKED:
                return False
            self.refused += 1
            log.debug("%s: kernel refused a %d-byte packet: %s", self.tun.name, len(view), e.strerror)
        return True

    def to_kernel(self) -> int:
        """Write what the client published to the kernel; the count written."""
        adapter, tun = self.adapter, self.tun
        packets = adapter.receive_many(BATCH)
        for p in packets:
            while not self._write_from(p.buf[p.start : p.end]):
                tun.wait_writable(len(p), 0.1)  # kernel back-pressure: hold the packet, do not drop it
        adapter.release_many(packets)
        return len(packets)

    def to_client(self) -> int:
        """Read what the kernel sent into reserved Send-ring slots; the count read."""
        adapter, mtu = self.adapter, self.tun.mtu
        count = 0
        while count < BATCH:
            try:
                p = adapter.reserve(mtu)
            except RingFull:
                if self._read_into(self._scratch) is None:
                    break
                self.dropped += 1
                count += 1
                continue
            n = self._read_into(p.buf[p.start : p.end])
            if n is None:
                adapter.cancel(p)
                break
            adapter.commit(p, n)
            count += 1
        return count

    def run(self) -> Stopped:
        """Bridge until the client leaves or breaks its ring; returns why it stopped."""
        poller = select.poll()
        poller.register(self.tun.fileno(), select.POLLIN)
        poller.register(self._ring_fd, select.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        adapter = self.adapter
        next_check = time.monotonic() + DEATH_CHECK_S
        try:
            while True:
                if self.to_kernel() + self.to_client():
                    # Busy (the kernel may keep sending to a dead client): look at the pidfd now and then.
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + DEATH_CHECK_S
                        if self._client_exited(0):
                            return self._drain()
                    continue
                if adapter.arm():
                    adapter.disarm()
                    continue
                try:
                    events = poller.poll(POLL_MS)
                finally:
                    adapter.disarm()
                if self._pidfd is not None and any(fd == self._pidfd for fd, _ in events):
                    return self._drain()
        except RingClosed as e:
            return Stopped(Stop.CLOSED, str(e))
        except RingCorrupt as e:
            log.error("client corrupted its ring: %s", e)
            return Stopped(Stop.CORRUPT, str(e))

    def _client_exited(self, timeout_s: float) -> bool:
        return self._pidfd is not None and bool(select.select([self._pidfd], [], [], timeout_s)[0])

    def _drain(self) -> Stopped:
        """The client died: what it had published was accepted, so deliver it whole."""
        while self.to_kernel():
            pass
        return Stopped(Stop.EXITED)

    def close(self) -> None:
        if self._own_pidfd and self._pidfd is not None:
            os.close(self._pidfd)
        self.adapter.close()
        self.tun.close()


def serve(socket_path: str, tun: TunDevice, *, accept_timeout_s: float | None = None) -> Stopped:
    """Accept one client on ``socket_path``, bridge its session to ``tun`` until it leaves; why it stopped."""
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(socket_path)
        os.chmod(socket_path, 0o600)
        listener.listen(1)
        listener.settimeout(accept_timeout_s)
        log.info("adapter for %s waiting for a client on %s", tun.name, socket_path)
        conn, _ = listener.accept()
    finally:
        listener.close()
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
    with conn:
        pid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))[0]
        with SessionHandle.recv(conn) as handle:  # attach duplicates what it keeps
            adapter = Adapter.attach(handle)
        bridge = Bridge(adapter, tun, pid)
        conn.sendall(json.dumps({"name": tun.name, "mtu": tun.mtu}).encode() + b"\n")
    log.info("client %d attached to %s", pid, tun.name)
    try:
        why = bridge.run()
    finally:
        bridge.close()
    log.info("%s removed: %s (%d to kernel, %d to client, %d discarded, %d dropped, %d refused)", tun.name, why,
             adapter.stats.rx_packets, adapter.stats.tx_packets, adapter.stats.discards, bridge.dropped,
             bridge.refused)
    return why


def connect(socket_path: str, capacity: int = DEFAULT_CAPACITY, lead: int = 0, trail: int = 0, *,
            overallocate: bool = False, timeout_s: float = CONNECT_TIMEOUT_S) -> Session:
    """Create a Session and hand it to the adapter listening on ``socket_path``.

    Waits up to ``timeout_s`` for the adapter to be listening.  The returned
    session's ``mtu`` is the interface's.
    """
    deadline = time.monotonic() + timeout_s
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            try:
                sock.connect(socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise DeviceError(f"no tunring adapter is listening on {socket_path}") from None
                time.sleep(0.02)
        session = Session.create(capacity, lead, trail, overallocate=overallocate)
        try:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            session.handle().send(sock)
            reply = sock.makefile("rb").readline()
            info = json.loads(reply) if reply else None
            if not info:
                raise DeviceError(f"the adapter on {socket_path} closed the connection without attaching")
        except BaseException:
            session.close()
            raise
    finally:
        sock.close()
    session.mtu = int(info["mtu"])
    log.info("attached to the adapter of %s (mtu %d) on %s", info["name"], session.mtu, socket_path)
    return session


def add_parser(sub) -> None:
    p = sub.add_parser(
        "adapter", help="bridge a ring session from another process to a TUN interface",
        description="Create a TUN interface, wait for one client on SOCKET (it hands over its ring "
                    "session), bridge packets both ways until the client closes or dies, then remove "
                    "the interface and exit.  Exit status 1 when the client broke its ring.  "
                    "Needs root or CAP_NET_ADMIN.")
    p.add_argument("socket", help="AF_UNIX socket path the client connects to (tunring.linux.bridge.connect)")
    p.add_argument("--name", default="tunring%d", help="interface name (default: tunring%%d)")
    p.add_argument("--address", action="append", default=[], help="address/prefix, repeatable (IPv4 or IPv6)")
    p.add_argument("--route", action="append", default=[], help="route via the interface, repeatable")
    p.add_argument("--mtu", type=mtu_bytes, default=1500, help="interface MTU (default 1500)")
    p.add_argument("--netns", help="create the interface in this named network namespace")
    p.set_defaults(func=_main)


def _unwind(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C: the socket is unlinked and the interface closed."""
    raise KeyboardInterrupt


SUN_PATH_BYTES = 108  # sizeof(sockaddr_un.sun_path), its terminating NUL included


def socket_path_problem(path: str) -> str | None:
    """What keeps ``path`` from becoming the adapter's listening socket, or None.

    Checked before the interface is made, so a mistyped path costs nothing; an
    existing file that is not a socket is refused, never replaced.
    """
    size = len(os.fsencode(path))
    if not size:
        return "the socket path is empty"
    if size >= SUN_PATH_BYTES:
        return f"a socket path holds at most {SUN_PATH_BYTES - 1} bytes, this one {size}"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"{folder} is not a folder" if os.path.exists(folder) else f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create a socket in {folder}: permission denied"
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        return "exists and is not a socket (only a stale socket is replaced)"
    return None


def _main(args: argparse.Namespace) -> int:
    problem = socket_path_problem(args.socket)
    if problem is not None:
        raise CommandError(f"{args.socket}: {problem}")
    signal.signal(signal.SIGTERM, _unwind)
    try:
        tun = TunDevice.create(args.name, addresses=args.address, routes=args.route, mtu=args.mtu, netns=args.netns)
    except DeviceError as e:
        raise CommandError(str(e.strerror or e)) from None
    try:
        stopped = serve(args.socket, tun)
    except TunringError as e:  # what the client handed over is not a session we can attach
        raise CommandError(f"the client's session is not usable: {e}", BAD_INPUT) from None
    except OSError as e:  # the socket could not be made after all (the checks above race)
        raise CommandError(f"{args.socket}: {e.strerror or e}", BAD_INPUT) from None
    finally:
        tun.close()
    # Bridge.run has logged why a broken ring stopped it; the status says it too.
    return BAD_INPUT if stopped.failed else 0

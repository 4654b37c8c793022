"""Shared memory for a ring pair, its wake-up events, and handing it to another process.

One memfd (mode 0600, sealed against resizing) holds a 64-byte control block
followed by the Send ring and the Receive ring, each 64-byte aligned.  The
rings themselves are exactly Wintun's; the control block carries what Wintun
keeps in its driver registration (capacity, paddings) plus what it has no
field for: the two processes' pids (so each side can notice the other dying)
and the "waiting for space" flags of the two writers.

Four eventfds go with it, one per (ring, direction):

- ``send_tail``: adapter -> client, "the Send ring's Tail moved" (Wintun's TailMoved);
- ``receive_tail``: client -> adapter, "the Receive ring's Tail moved";
- ``send_head`` / ``receive_head``: the reader freed space in that ring.
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
from dataclasses import dataclass

from . import layout as L
from .errors import RingCorrupt

MAGIC = 0x524E5554  # "TUNR"
VERSION = 1
CONTROL_SIZE = 64
RING_ALIGN = 64
FLAG_OVERALLOCATE = 1

# Control block: magic, version, capacity, lead, trail, flags, client pid,
# adapter pid, send-ring space flag, receive-ring space flag.
_CONTROL = struct.Struct("<10I")
CLIENT_PID = 24
ADAPTER_PID = 28
SEND_SPACE_ALERTABLE = 32
RECEIVE_SPACE_ALERTABLE = 36

EVENTS = ("send_tail", "receive_tail", "send_head", "receive_head")


def _align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Geometry:
    """Where everything lies in the mapping."""

    capacity: int
    lead: int
    trail: int
    overallocate: bool

    @property
    def ring_bytes(self) -> int:
        return L.ring_size(self.capacity, self.lead, self.trail)

    @property
    def send_base(self) -> int:
        return CONTROL_SIZE

    @property
    def receive_base(self) -> int:
        return _align_up(self.send_base + self.ring_bytes, RING_ALIGN)

    @property
    def total(self) -> int:
        return _align_up(self.receive_base + self.ring_bytes, mmap.PAGESIZE)


def create_mapping(geometry: Geometry) -> tuple[int, mmap.mmap]:
    """A new zeroed memfd of the right size, its control block written."""
    L.check_capacity(geometry.capacity)
    L.check_padding(geometry.lead, geometry.trail)
    fd = os.memfd_create("tunring-session", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, geometry.total)
        # The client must not be able to shrink the file under the adapter (SIGBUS).
        _seal(fd)
        mapping = mmap.mmap(fd, geometry.total)
    except BaseException:
        os.close(fd)
        raise
    _CONTROL.pack_into(
        mapping, 0, MAGIC, VERSION, geometry.capacity, geometry.lead, geometry.trail,
        FLAG_OVERALLOCATE if geometry.overallocate else 0, os.getpid(), 0, 0, 0,
    )
    return fd, mapping


def _seal(fd: int) -> None:
    import fcntl

    F_ADD_SEALS = 1033
    F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL = 0x0002, 0x0004, 0x0001
    fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)


def open_mapping(fd: int) -> tuple[Geometry, mmap.mmap]:
    """Map a session created by another process, checking everything it claims."""
    size = os.fstat(fd).st_size
    if size < CONTROL_SIZE:
        raise RingCorrupt(f"session memory is {size} bytes, too small for a control block")
    mapping = mmap.mmap(fd, size)
    try:
        magic, version, capacity, lead, trail, flags, *_ = _CONTROL.unpack_from(mapping, 0)
        if magic != MAGIC or version != VERSION:
            raise RingCorrupt(f"not a tunring session (magic {magic:#x}, version {version})")
        try:
            L.check_capacity(capacity)
            L.check_padding(lead, trail)
        except ValueError as e:
            raise RingCorrupt(f"session control block is invalid: {e}") from None
        geometry = Geometry(capacity, lead, trail, bool(flags & FLAG_OVERALLOCATE))
        if geometry.total > size:
            raise RingCorrupt(f"session memory is {size} bytes, its geometry needs {geometry.total}")
    except BaseException:
        mapping.close()
        raise
    return geometry, mapping


def unmap(mapping: mmap.mmap | None, mem: memoryview | None) -> None:
    """Unmap now unless the caller still holds views of it (then garbage collection will)."""
    if mem is not None:
        mem.release()
    if mapping is not None:
        try:
            mapping.close()
        except BufferError:
            pass


def peer_pidfd(pid: int) -> int | None:
    """A pidfd that becomes readable when ``pid`` exits, or None if it cannot be had."""
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


@dataclass
class SessionHandle:
    """Everything another process needs to attach an Adapter: the memfd and the eventfds.

    Hand it over with :meth:`send`/:meth:`recv` on an AF_UNIX socket (SCM_RIGHTS),
    or pass it as an argument to a ``multiprocessing.Process`` (it pickles by
    duplicating its descriptors, through multiprocessing's own fd passing).
    ``Adapter.attach`` duplicates what it needs; a handle that was received
    (``recv``, unpickled) owns its descriptors and should be closed after attaching
    (it is a context manager).  ``Session.handle()`` returns the session's own
    descriptors: do not close those.
    """

    memfd: int
    events: tuple[int, int, int, int]  # in the order of EVENTS

    def fds(self) -> list[int]:
        return [self.memfd, *self.events]

    def send(self, sock: socket.socket) -> None:
        socket.send_fds(sock, [b"TUNRING-SESSION"], self.fds())

    @classmethod
    def recv(cls, sock: socket.socket) -> SessionHandle:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 5)
        if msg != b"TUNRING-SESSION" or len(fds) != 5:
            for fd in fds:
                os.close(fd)
            raise RingCorrupt(f"expected a session handle (5 descriptors), got {len(fds)} and {msg[:32]!r}")
        return cls(fds[0], tuple(fds[1:]))  # type: ignore[arg-type]

    def close(self) -> None:
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        from multiprocessing.reduction import DupFd

        return (_rebuild_handle, (DupFd(self.memfd), tuple(DupFd(fd) for fd in self.events)))


def _rebuild_handle(memfd, events) -> SessionHandle:
    return SessionHandle(memfd.detach(), tuple(e.detach() for e in events))  # type: ignore[arg-type]


def new_events() -> tuple[int, int, int, int]:
    return tuple(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in EVENTS)  # type: ignore[return-value]

"""200,000 packets each way between a client and an adapter in another process.

Every packet carries a sequence number and a CRC32: none may be lost, damaged
or reordered.  Both directions run at once; the session is handed over once as
a multiprocessing argument and once by SCM_RIGHTS over an AF_UNIX socket.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time

import pytest

from tunring import Adapter, RingClosed, RingFull, Session, SessionHandle

from ringutil import check_stamped, stamped

COUNT = 200_000
BATCH = 32


def sizes(seq: int) -> int:
    return 28 + (seq * 7919) % 1473  # 28..1500, mixed


def pump(tx_allocate, tx_commit, rx_receive, rx_release, wait, count: int) -> tuple[int, int]:
    """Send ``count`` stamped packets and receive ``count``, checking order; returns (sent, received)."""
    sent = received = 0
    while sent < count or received < count:
        progressed = False
        while sent < count:
            size = sizes(sent)
            try:
                p = tx_allocate(size)
            except RingFull:
                break
            p.data[:] = stamped(size, sent)
            tx_commit(p)
            sent += 1
            progressed = True
            if sent % BATCH == 0:
                break
        got = rx_receive(BATCH)
        for p in got:
            seq = check_stamped(p.data)
            assert seq == received, f"expected packet {received}, got {seq}"
            assert len(p) == sizes(seq)
            received += 1
        if got:
            rx_release(got)
            progressed = True
        if not progressed:
            wait(0.005)
    return sent, received


def adapter_side(handle: SessionHandle, count: int, conn) -> None:
    try:
        with handle:
            adapter = Adapter.attach(handle)
        result = pump(adapter.reserve, adapter.commit, adapter.receive_many, adapter.release_many,
                      adapter.wait, count)
        assert adapter.flush(10.0), "the client did not take everything"
        conn.send(("ok", result, adapter.stats.discards))
        adapter.close()
    except BaseException as e:  # report, do not hang the parent
        conn.send(("error", repr(e), 0))


def adapter_over_socket(path: str, count: int, conn) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        handle = SessionHandle.recv(sock)
    adapter_side(handle, count, conn)


def run_client(session: Session, proc, parent, count: int) -> None:
    try:
        result = pump(session.allocate, session.send, session.receive_many, session.release_many,
                      session.wait, count)
        status, peer, discards = parent.recv()
        assert status == "ok", peer
        assert result == (count, count) and tuple(peer) == (count, count)
        assert discards == 0
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        session.close()


@pytest.mark.parametrize("lead,trail", [(0, 0), (16, 24)])
def test_two_processes_multiprocessing_handle(lead, trail):
    ctx = mp.get_context("spawn")  # the handle is pickled: its fds cross by fd passing
    session = Session.create(0x40000, lead, trail)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=adapter_side, args=(session.handle(), COUNT, child))
    proc.start()
    run_client(session, proc, parent, COUNT)


def test_two_processes_scm_rights(tmp_path):
    ctx = mp.get_context("fork")
    session = Session.create(0x40000, 8, 8)
    path = str(tmp_path / "adapter.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=adapter_over_socket, args=(path, COUNT, child))
        proc.start()
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            session.handle().send(conn)
    run_client(session, proc, parent, COUNT)


def _attach_and_hang(handle, conn) -> None:
    with handle:
        adapter = Adapter.attach(handle)
    conn.send("attached")
    time.sleep(60)
    adapter.close()


def test_session_notices_a_dead_adapter_within_a_second():
    ctx = mp.get_context("fork")
    session = Session.create(0x20000)
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_attach_and_hang, args=(session.handle(), child))
    proc.start()
    try:
        assert parent.recv() == "attached"
        assert session.wait(0.05) is False  # alive, just quiet
        os.kill(proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(RingClosed, match="exited"):
            session.wait(5.0)
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.join(5)
        session.close()


def _client_then_die(conn) -> None:
    session = Session.create(0x20000)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(conn)
        session.handle().send(sock)
        sock.recv(1)  # wait for the go-ahead, then die without closing anything
    os._exit(0)


def test_adapter_notices_a_dead_client_within_a_second(tmp_path):
    ctx = mp.get_context("fork")
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        proc = ctx.Process(target=_client_then_die, args=(path,))
        proc.start()
        conn, _ = server.accept()
        with conn, SessionHandle.recv(conn) as handle:
            adapter = Adapter.attach(handle)
            assert adapter.wait(0.05) is False
            conn.send(b"x")
            t0 = time.monotonic()
            with pytest.raises(RingClosed, match="exited"):
                adapter.wait(5.0)
            assert time.monotonic() - t0 < 1.0
            adapter.close()
    proc.join(5)

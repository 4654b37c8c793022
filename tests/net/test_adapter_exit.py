"""`tunring adapter`'s exit status when the client is at fault: 1, one line on stderr, no traceback,
and the interface removed all the same."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from tunring import layout as L
from tunring.linux import netlink

pytestmark = pytest.mark.net

NAME = "trexit0"


@pytest.fixture
def adapter(netns, tmp_path):
    """`tunring adapter` (default verbosity) on a fresh socket; yields (process, socket path)."""
    path = str(tmp_path / "adapter.sock")
    proc = subprocess.Popen([sys.executable, "-m", "tunring.cli", "adapter", path, "--name", NAME,
                             "--address", "10.77.0.1/24"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stderr.close()


def assert_exit_1_saying(proc: subprocess.Popen, fragment: str) -> None:
    """The adapter exits 1 with one line on stderr that says ``fragment``, its interface gone."""
    status = proc.wait(10)
    err = proc.stderr.read()
    assert status == 1, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert fragment in err, err
    assert netlink.link_index(NAME) is None


def test_client_that_corrupts_its_ring_makes_the_adapter_exit_1(adapter):
    from tunring.linux.bridge import connect

    proc, path = adapter
    session = connect(path, timeout_s=10)
    try:
        assert netlink.link_index(NAME) is not None
        # The client writes a Tail no slot can end at (not 4-byte aligned) and wakes the adapter.
        struct.pack_into("<I", session.receive_ring, L.TAIL, 3)
        os.eventfd_write(session.handle().events[1], 1)  # receive_tail: "the Receive ring's Tail moved"
        assert_exit_1_saying(proc, "corrupted its ring")
    finally:
        session.close()


def test_client_that_sends_no_session_makes_the_adapter_exit_1(adapter):
    proc, path = adapter
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b"hello, I am not a session\n")
        assert_exit_1_saying(proc, "tunring adapter: the client's session is not usable: expected a session handle")


def test_client_that_closes_its_session_makes_the_adapter_exit_0(adapter):
    from tunring.linux.bridge import connect

    proc, path = adapter
    connect(path, timeout_s=10).close()
    assert proc.wait(10) == 0
    assert proc.stderr.read() == ""

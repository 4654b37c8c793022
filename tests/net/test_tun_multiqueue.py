"""A multiqueue TUN served by one worker process per queue: traffic spreads, nothing is lost."""

from __future__ import annotations

import socket
import struct

import pytest

from tunring.apps.reflect import serve
from tunring.linux import TunDevice
from tunring.linux.multiqueue import QueueWorkers

from tun_traffic import ADDRESSES, LOCAL4, PEER4

pytestmark = pytest.mark.net

FLOWS = 16
ROUNDS = 150


def test_flows_spread_over_two_queues_and_nothing_is_lost(netns):
    with TunDevice.create("trm0", addresses=ADDRESSES, queues=2) as dev:
        assert len(dev.queues) == 2 and dev.queues[1].fileno() != dev.fileno()
        workers = QueueWorkers(dev, serve).start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
                server.bind((LOCAL4, 7000))
                server.settimeout(5)
                clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(FLOWS)]
                try:
                    seen = set()
                    for r in range(ROUNDS):
                        for i, c in enumerate(clients):
                            c.sendto(struct.pack("!II", i, r) * 50, (PEER4, 7000))
                        for _ in clients:  # lock-step: every datagram of the round must come back
                            data = server.recv(2048)
                            assert data == data[:8] * 50
                            seen.add(struct.unpack_from("!II", data))
                finally:
                    for c in clients:
                        c.close()
        finally:
            counts = workers.stop()
    assert seen == {(i, r) for i in range(FLOWS) for r in range(ROUNDS)}
    counts = [c.packets for c in counts]
    assert sum(counts) == FLOWS * ROUNDS
    assert all(c > 0 for c in counts), f"per-queue counts {counts}: traffic did not spread"

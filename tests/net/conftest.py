"""Fixtures for tests that need root: a fresh network namespace per test, removed even on failure.

The ``netns`` fixture moves the test's thread into a new named namespace (with
``lo`` up) for the duration of the test, so sockets, TUN devices and child
processes the test makes live there; afterwards the thread goes back and the
namespace is deleted, taking any interface left in it along.
"""

from __future__ import annotations

import itertools
import os

import pytest

_counter = itertools.count()

def _need_root() -> None:
    # Outside CI these tests skip without root; under CI=true tests/conftest.py turns
    # any skip into a failure, so they can never silently not run there.
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN) for TUN devices and network namespaces")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")


@pytest.fixture
def netns():
    """Name of a new network namespace the test runs in (lo up); deleted afterwards."""
    _need_root()
    from pyroute2 import netns as ns

    from tunring.linux import netlink

    name = f"tunring-test-{os.getpid()}-{next(_counter)}"
    ns.create(name)
    try:
        ns.pushns(name)
        try:
            netlink.configure("lo")
            yield name
        finally:
            ns.popns()
    finally:
        ns.remove(name)

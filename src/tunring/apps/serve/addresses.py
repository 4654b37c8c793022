"""The address pool: the gateway's own address and one address per client, IPv4 and IPv6."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...errors import TunringError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PoolExhausted(TunringError):
    """Every address of the pool is in use."""


class AddressPool:
    """Hands out the hosts of ``network``; the first host is the gateway's (its TUN address)."""

    def __init__(self, network: Network) -> None:
        if network.num_addresses < 4:
            raise ValueError(f"pool {network} is too small: it needs the gateway and at least one client")
        self.network = network
        first = network.network_address + 1
        self.gateway: Address = first
        self._next = int(first) + 1
        self._last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        self._free: list[int] = []
        self.in_use: set[Address] = set()

    def allocate(self) -> Address:
        """A free address (the lowest freed one first, then fresh ones); PoolExhausted if none."""
        if self._free:
            self._free.sort(reverse=True)
            value = self._free.pop()
        elif self._next <= self._last:
            value, self._next = self._next, self._next + 1
        else:
            raise PoolExhausted(f"address pool {self.network} is exhausted ({len(self.in_use)} clients)")
        address = ipaddress.ip_address(value)
        self.in_use.add(address)
        return address

    def free(self, address: Address) -> None:
        if address in self.in_use:
            self.in_use.remove(address)
            self._free.append(int(address))


@dataclass
class Lease:
    """The addresses one login holds (IPv6 only with a --pool6)."""

    ipv4: ipaddress.IPv4Address
    ipv6: ipaddress.IPv6Address | None = None


def interface_id(address: ipaddress.IPv6Address) -> bytes:
    """The low 64 bits of an IPv6 address: the RFC 5072 Interface-Identifier of its owner."""
    return address.packed[8:]

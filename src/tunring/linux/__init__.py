"""Linux backends: the TUN device, its netlink configuration, and the ring<->TUN adapter."""

from .tun import TunDevice, TunStats

__all__ = ["TunDevice", "TunStats"]

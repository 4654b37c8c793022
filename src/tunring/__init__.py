"""tunring: zero-copy IP packet rings (Wintun's protocol, with header room) for VPN clients."""

from .adapter import Adapter, AdapterStats
from .device import Device
from .errors import (
    AuthError,
    DeviceError,
    FramingError,
    PacketError,
    ReplayError,
    RingClosed,
    RingCorrupt,
    RingError,
    RingFull,
    TunringError,
)
from .packet import Packet
from .session import Session
from .shm import SessionHandle

__all__ = [
    "Adapter", "AdapterStats", "AuthError", "Device", "DeviceError", "FramingError", "Packet",
    "PacketError", "ReplayError", "RingClosed", "RingCorrupt", "RingError", "RingFull", "Session",
    "SessionHandle", "TunringError",
]
__version__ = "0.1.0"

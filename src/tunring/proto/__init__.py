"""Sans-I/O codecs: OpenConnect's framings and ESP, decoded into ring packets and built in place.

``FRAMINGS`` maps the command-line names to codec classes; see
:mod:`tunring.proto.base` for the interface they share.
"""

from __future__ import annotations

from .array import Array
from .base import Codec, CodecStats, Control, Disconnect, DpdRequest, DpdResponse, Dropped, Event, Keepalive, Terminate
from .cisco import Cstp, Dtls
from .f5 import F5
from .fortinet import Fortinet
from .gpst import Gpst
from .hdlc import F5Hdlc, Hdlc
from .oncp import Oncp
from .ppp import RawPpp
from .pulse import Pulse

FRAMINGS: dict[str, type[Codec]] = {
    "cstp": Cstp,
    "dtls": Dtls,
    "gpst": Gpst,
    "pulse": Pulse,
    "oncp": Oncp,
    "array": Array,
    "f5": F5,
    "f5-hdlc": F5Hdlc,
    "fortinet": Fortinet,
    "ppp": RawPpp,
    "hdlc": Hdlc,
}

__all__ = ["FRAMINGS", "Codec", "CodecStats", "Event", "DpdRequest", "DpdResponse", "Keepalive",
           "Disconnect", "Terminate", "Control", "Dropped"]

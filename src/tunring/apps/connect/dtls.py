"""The DTLS data path beside a CSTP session: datagrams straight into TUN packets, and back.

Once PSK-NEGOTIATE's handshake is done (:class:`~.openssl.DtlsChannel`), IP
packets travel as Cisco DTLS records (a 1-byte type header) in both
directions while CSTP keeps carrying control.  Each DTLS read goes straight
into a packet the :class:`~tunring.proto.cisco.Dtls` codec allocated on the TUN
device (the type byte lands in the headroom) and each sent packet gets its
type byte pushed into its headroom, so nothing is copied here either.  The
link keeps its own timers (X-DTLS-DPD, X-DTLS-Keepalive); when it dies the
session carries on over CSTP.
"""

from __future__ import annotations

import logging
import time

from ...linux.tun import TunDevice
from ...packet import Packet
from ...proto.base import DpdRequest, Event, Keepalive
from ...proto.cisco import Dtls
from .openssl import DTLS_RECORD_OVERHEAD, DtlsChannel, DtlsError, Unavailable
from .timers import PeerTimers
from .tunnel import DtlsOffer

log = logging.getLogger(__name__)

READS_PER_WAKE = 64
IP_UDP_HEADERS = {4: 20 + 8, 6: 40 + 8}


def dtls_mtu(base_mtu: int, ip_version: int = 4) -> int:
    """The tunnel MTU over DTLS: link MTU less IP, UDP, the DTLS record and the type byte."""
    return base_mtu - IP_UDP_HEADERS[ip_version] - DTLS_RECORD_OVERHEAD - 1


class DtlsLink:
    """One DTLS channel with its codec on the TUN device, and its dead-peer timers."""

    def __init__(self, channel: DtlsChannel, tun: TunDevice, offer: DtlsOffer) -> None:
        self.channel = channel
        self.offer = offer
        self.codec = Dtls(tun, compression=offer.compression, max_payload=tun.max_packet)
        self.timers = PeerTimers(offer.dpd_s, offer.keepalive_s, time.monotonic())
        self.rx_wire_bytes = self.tx_wire_bytes = self.tx_drops = 0

    @classmethod
    def open(cls, gateway: str, offer: DtlsOffer, psk: bytes, tun: TunDevice, base_mtu: int) -> DtlsLink | None:
        """Handshake with the server's DTLS port; None (and a warning) if DTLS cannot be had."""
        try:
            channel = DtlsChannel((gateway, offer.port), psk, bytes.fromhex(offer.app_id),
                                  base_mtu - IP_UDP_HEADERS[6 if ":" in gateway else 4])
        except (Unavailable, OSError, ValueError) as e:
            log.warning("no DTLS (staying on CSTP): %s", e)
            return None
        try:
            cipher = channel.handshake()
        except DtlsError as e:
            channel.close()
            log.warning("no DTLS (staying on CSTP): %s", e)
            return None
        log.info("DTLS 1.2 to %s:%d: %s", gateway, offer.port, cipher)
        return cls(channel, tun, offer)

    def fileno(self) -> int:
        return self.channel.fileno()

    def read(self) -> list[Event]:
        """Take every waiting datagram; their IP packets go to the TUN device.  DtlsError if dead."""
        codec, recv_into = self.codec, self.channel.recv_into
        events: list[Event] = []
        for _ in range(READS_PER_WAKE):
            n = recv_into(codec.want())
            if not n:
                break
            self.rx_wire_bytes += n
            events += codec.received(n)
            self.timers.last_rx = time.monotonic()
        codec.release_idle()  # CSTP's codec allocates on the same device
        return events

    def send(self, packet: Packet) -> None:
        """Send one IP packet (its type byte pushed into the headroom); a full socket drops it."""
        wire = self.codec.encode(packet)
        if self.channel.send(wire):
            self.tx_wire_bytes += len(wire)
        else:
            self.tx_drops += 1  # a datagram, as a router would drop it: TCP resends
        self.timers.last_tx = time.monotonic()

    def send_control(self, event: Event) -> None:
        self.channel.send_bytes(self.codec.encode_control(event))

    def tick(self, now: float) -> str | None:
        """Send DPD and keepalives on X-DTLS's timers; the reason if the channel is dead."""
        due = self.timers.check(now)
        if due.dead_after_s:
            return f"no DTLS traffic from the server for {due.dead_after_s:.0f} s (DTLS DPD {self.offer.dpd_s} s)"
        if due.dpd:
            self.send_control(DpdRequest())
        if due.keepalive:
            self.send_control(Keepalive())
        return None

    def close(self) -> None:
        self.codec.release_idle()
        self.channel.close()

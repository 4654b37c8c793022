"""ESP (RFC 4303) in tunnel mode, decrypted and encrypted in the packet's own memory.

Sans-I/O: nothing here touches a socket or a clock.  The transport hands in
datagrams it has read *into packets of a Device* and takes out one contiguous
memoryview per packet to send.

Receive (network -> OS)::

    packet = inbound.allocate(device, max_datagram_bytes)
    nbytes = sock.recv_into(inbound.datagram_view(packet))
    inbound.receive(device, packet, nbytes)   # delivered, or cancelled and counted

or, in batches from a non-blocking socket::

    inbound.receive_from(device, sock.recv_into, max_datagram_bytes, max_count=64)

The datagram lands so that the ESP header (SPI, sequence number, IV) lies in
the packet's headroom and the inner IP packet starts exactly where the slot's
data starts.  The packet is authenticated and decrypted in place, the trailer
(padding, pad length, next header, ICV) is checked and cut off by
``shrink_and_send``.  Bad input is counted in ``inbound.stats`` by reason and
the packet is cancelled, so nothing is delivered and no slot leaks.

Transmit (OS -> network)::

    packet = device.receive()
    sock.send(outbound.encrypt(packet))      # header pushed, trailer put, encrypted
    device.release(packet)

(``encrypt_many`` for a list from ``device.receive_many``.)

A Session needs ``lead >= ESP_LEAD`` (the header is at most 24 bytes, the slot's
4-byte Size field counts as headroom) and ``trail >= ESP_TRAIL``.

Transforms: AES-GCM-128/256 (RFC 4106: 4-byte salt at the end of the key, 8-byte
explicit IV, 16-byte ICV) and AES-CBC-128/256 with HMAC-SHA1-96 or
HMAC-SHA256-128 (RFC 3602/2404/4868; the ICV is checked before decrypting).
Anti-replay (RFC 4303 3.4.3) with a window of 1..65536 packets, checked and
advanced only after authentication; extended sequence numbers (RFC 4303 2.2.1,
Appendix A) optional.  ESP in UDP (RFC 3948): the non-ESP marker and the
one-byte NAT keepalive are recognised and never reach a decryptor.

How the crypto stays in place (measured, see tests/proto/test_esp_zerocopy.py):

- AES-GCM: ``AESGCM.decrypt_into``/``encrypt_into`` (cryptography >= 47) with
  input and output views that start at the same address: exact in-place
  operation, which OpenSSL supports (partial overlap is what it does not).
- AES-CBC: ``update_into`` needs an output buffer 15 bytes longer than its
  input, and a CBC context cannot be re-keyed with a new IV, so one context
  per direction lives for the whole SA.  Decrypting, the IV block is fed in
  front of the ciphertext: that sets the chaining value to the IV (its own
  output is garbage written over the IV, in the headroom).  Encrypting, a
  random block R is written where the IV goes and encrypted with the
  ciphertext: the IV on the wire is ``E(R xor previous block)``, fresh and
  unpredictable as RFC 3602 asks (the "encrypt a nonce" method of NIST SP
  800-38A Appendix C), and the receiver decrypts it as ordinary CBC.  Only
  whole blocks are ever fed in, so OpenSSL never holds a partial block back
  (the one case where in-place ``update_into`` goes wrong).

What is still copied per packet: 12 bytes of nonce, the 8/12 bytes of AAD with
ESN, the HMAC digest and the 1..255 bytes of trailer; never the payload.
SecurityAssociation(s) objects are not thread-safe: one thread per direction.
"""

from __future__ import annotations

import hmac as _stdlib_hmac
import logging
import os
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import layout as L
from ..device import Device
from ..errors import FramingError, PacketError, SequenceOverflow
from ..packet import Packet

log = logging.getLogger(__name__)

# -- wire constants ------------------------------------------------------------
SPI_BYTES = 4
SEQ_BYTES = 4
NEXT_IPV4 = 4
NEXT_IPV6 = 41
NEXT_NONE = 59  # RFC 4303 2.6: a dummy packet, to be dropped silently
MAX_PAD_BYTES = 255
NAT_KEEPALIVE = 0xFF  # RFC 3948 2.3: one byte 0xFF
NON_ESP_SPI = 0  # RFC 3948 2.2: four zero bytes where an SPI would be mark an IKE message
MAX_SEQ_32 = 0xFFFFFFFF
MAX_SEQ_64 = 0xFFFFFFFFFFFFFFFF
DEFAULT_REPLAY_WINDOW = 64
MAX_REPLAY_WINDOW = 1 << 16
AES_BLOCK_BYTES = 16
# update_into wants an output buffer block_size - 1 bytes longer than its input.
CIPHER_SLACK_BYTES = AES_BLOCK_BYTES - 1

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_SPI_SEQ = struct.Struct(">II")
_GCM_HEADER = struct.Struct(">IIQ")  # SPI, low 32 bits of seq, IV = the 64-bit seq
_GCM_NONCE = struct.Struct(">4sQ")  # salt, explicit IV
_ESN_AAD = struct.Struct(">III")  # SPI, high 32 bits, low 32 bits (RFC 4106 5)
_PAD = bytes(range(1, MAX_PAD_BYTES + 1))  # RFC 4303 2.4: pad bytes are 1, 2, 3, ...
_PADDINGS = [_PAD[:n] for n in range(MAX_PAD_BYTES + 1)]
_RANDOM_POOL_BYTES = 4096


@dataclass(frozen=True)
class Transform:
    """An ESP cipher suite: key sizes, IV/ICV lengths and the padding block."""

    name: str
    aead: bool
    key_bytes: int  # for AES-GCM: the AES key plus the 4-byte salt (RFC 4106 8.1)
    iv_bytes: int
    icv_bytes: int
    block_bytes: int  # the ciphertext is padded to a multiple of this
    auth_hash: type[hashes.HashAlgorithm] | None = None
    auth_key_bytes: int = 0

    @property
    def header_bytes(self) -> int:
        """SPI + sequence number + IV: what lands in the headroom."""
        return SPI_BYTES + SEQ_BYTES + self.iv_bytes


AES_GCM_128 = Transform("aes-gcm-128", True, 16 + 4, 8, 16, 4)
AES_GCM_256 = Transform("aes-gcm-256", True, 32 + 4, 8, 16, 4)
AES_CBC_128_HMAC_SHA1_96 = Transform("aes-cbc-128-hmac-sha1-96", False, 16, 16, 12, 16, hashes.SHA1, 20)
AES_CBC_256_HMAC_SHA1_96 = Transform("aes-cbc-256-hmac-sha1-96", False, 32, 16, 12, 16, hashes.SHA1, 20)
AES_CBC_128_HMAC_SHA256_128 = Transform("aes-cbc-128-hmac-sha256-128", False, 16, 16, 16, 16, hashes.SHA256, 32)
AES_CBC_256_HMAC_SHA256_128 = Transform("aes-cbc-256-hmac-sha256-128", False, 32, 16, 16, 16, hashes.SHA256, 32)

TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (AES_GCM_128, AES_GCM_256, AES_CBC_128_HMAC_SHA1_96, AES_CBC_256_HMAC_SHA1_96,
              AES_CBC_128_HMAC_SHA256_128, AES_CBC_256_HMAC_SHA256_128)
}

#: Session ``lead`` that fits every transform's header (24 bytes, minus the Size field).
ESP_LEAD = max(t.header_bytes for t in TRANSFORMS.values()) - L.SIZE_FIELD
#: Session ``trail`` that fits every trailer without TFC padding: the most padding
#: (block - 1), pad length, next header, ICV, and for CBC update_into's output slack.
ESP_TRAIL = max(
    t.block_bytes - 1 + 2 + t.icv_bytes + (0 if t.aead else max(0, CIPHER_SLACK_BYTES - t.icv_bytes))
    for t in TRANSFORMS.values()
)

# Why a datagram was dropped: the keys of EspStats.drops.
SHORT = "short"  # shorter than a header, ICV and trailer
BAD_LENGTH = "bad_length"  # ciphertext not a multiple of the cipher's block
UNKNOWN_SPI = "unknown_spi"
BAD_ICV = "bad_icv"
REPLAY = "replay"  # already received
TOO_OLD = "too_old"  # left of the replay window
BAD_PADDING = "bad_padding"
NEXT_HEADER = "next_header"  # not IPv4 (4) or IPv6 (41)
BAD_INNER = "bad_inner"  # the inner IP header disagrees with next header or length
DUMMY = "dummy"  # next header 59: traffic-flow-confidentiality dummy packet
DROP_REASONS = (SHORT, BAD_LENGTH, UNKNOWN_SPI, BAD_ICV, REPLAY, TOO_OLD, BAD_PADDING,
                NEXT_HEADER, BAD_INNER, DUMMY)

# What receive() returns.
DELIVERED = 0
DROPPED = 1
KEEPALIVE = 2  # RFC 3948 NAT keepalive
CONTROL = 3  # non-ESP marker: an IKE message, queued in SecurityAssociations.control


class ReplayWindow:
    """RFC 4303 3.4.3 sliding window over 64-bit sequence numbers, as a bitmap.

    ``infer`` turns a received low 32 bits into a full sequence number
    (Appendix A2.1 with ESN, the identity without); ``accept`` checks a number
    and, if it is new, records it.  Call ``accept`` only for authenticated
    packets: that is what keeps forged packets from moving the window.
    """

    __slots__ = ("size", "esn", "top", "bitmap", "_mask")

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW, esn: bool = False) -> None:
        if not 1 <= size <= MAX_REPLAY_WINDOW:
            raise ValueError(f"replay window must be 1..{MAX_REPLAY_WINDOW} packets, got {size}")
        self.size = size
        self.esn = esn
        self.top = 0  # highest sequence number accepted; 0 = none yet (0 is never sent)
        self.bitmap = 0  # bit i set: top - i was accepted
        self._mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int:
        """The 64-bit sequence number a received low 32 bits most likely stand for."""
        if not self.esn:
            return seq_low
        top = self.top
        top_low = top & MAX_SEQ_32
        top_high = top >> 32
        bottom = top_low - self.size + 1
        if bottom >= 0:  # case A: the window lies within one 2^32 subspace
            high = top_high if seq_low >= bottom else top_high + 1
        else:  # case B: the window straddles a 2^32 boundary
            high = top_high - 1 if seq_low >= bottom + (1 << 32) and top_high else top_high
        return (high << 32) | seq_low

    def check(self, seq: int) -> str | None:
        """None if ``seq`` would be accepted, else REPLAY or TOO_OLD; changes nothing."""
        if seq > self.top:
            return None
        behind = self.top - seq
        if behind >= self.size or seq == 0:
            return TOO_OLD
        if (self.bitmap >> behind) & 1:
            return REPLAY
        return None

    def accept(self, seq: int) -> str | None:
        """Record ``seq`` if it is new (None); REPLAY or TOO_OLD otherwise."""
        top = self.top
        if seq > top:
            ahead = seq - top
            self.bitmap = ((self.bitmap << ahead) | 1) & self._mask if ahead < self.size else 1
            self.top = seq
            return None
        behind = top - seq
        if behind >= self.size or seq == 0:
            return TOO_OLD
        bit = 1 << behind
        if self.bitmap & bit:
            return REPLAY
        self.bitmap |= bit
        return None


class SecurityAssociation:
    """One direction of an ESP security association (RFC 4303 tunnel mode).

    Outbound: ``encrypt(packet)`` builds ESP around a received packet in place
    and returns the datagram.  Inbound: add it to a :class:`SecurityAssociations`,
    which owns the receive path.  Keys are raw bytes; for AES-GCM ``enc_key`` ends
    with the 4-byte salt (as RFC 4106 keying material and scapy have it).
    ``seq`` is the last sequence number sent (0: none yet), ``window`` the
    inbound :class:`ReplayWindow`; after SequenceOverflow ``stopped`` is True.
    """

    def __init__(
        self,
        spi: int,
        transform: Transform | str,
        enc_key: bytes,
        auth_key: bytes = b"",
        *,
        esn: bool = False,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        seq: int = 0,
    ) -> None:
        if isinstance(transform, str):
            try:
                transform = TRANSFORMS[transform]
            except KeyError:
                raise ValueError(f"unknown ESP transform {transform!r}; known: {', '.join(TRANSFORMS)}") from None
        if not 256 <= spi <= MAX_SEQ_32:
            # RFC 4303 2.1: 1..255 are reserved by IANA, 0 is local-use only.
            raise ValueError(f"SPI must be in 256..0xFFFFFFFF, got {spi:#x}")
        if len(enc_key) != transform.key_bytes:
            raise ValueError(f"{transform.name} needs a {transform.key_bytes}-byte key, got {len(enc_key)}")
        if len(auth_key) != transform.auth_key_bytes:
            raise ValueError(f"{transform.name} needs a {transform.auth_key_bytes}-byte authentication key, "
                             f"got {len(auth_key)}")
        self.spi = spi
        self.transform = transform
        self.esn = esn
        self.seq = seq  # the last sequence number sent (outbound)
        self.seq_max = MAX_SEQ_64 if esn else MAX_SEQ_32
        self.stopped = False
        self.window = ReplayWindow(replay_window, esn)
        self.header_bytes = transform.header_bytes
        self.icv_bytes = transform.icv_bytes
        # ICV, plus for CBC what update_into's output buffer must have beyond it.
        self._tail_extra = self.icv_bytes + (0 if transform.aead else max(0, CIPHER_SLACK_BYTES - self.icv_bytes))
        if transform.aead:
            self._aead = AESGCM(enc_key[:-4])
            self._salt = bytes(enc_key[-4:])
            self._open = self._open_gcm
            self._seal = self._seal_gcm
        else:
            aes = algorithms.AES(enc_key)
            zero_iv = modes.CBC(bytes(AES_BLOCK_BYTES))
            # One context per direction for the SA's lifetime (see the module docstring).
            self._decryptor = Cipher(aes, zero_iv).decryptor()
            self._encryptor = Cipher(aes, zero_iv).encryptor()
            self._mac = _hmac.HMAC(auth_key, transform.auth_hash())
            self._random = b""  # a pool of random first blocks (bytes: slicing it is cheaper than a view)
            self._random_at = 0
            self._open = self._open_cbc
            self._seal = self._seal_cbc
        # Trailers per pad length: pad bytes, pad length, next header.
        self._trailers_ipv4 = [_PAD[:pad] + bytes((pad, NEXT_IPV4)) for pad in range(MAX_PAD_BYTES + 1)]
        self._trailers_ipv6 = [_PAD[:pad] + bytes((pad, NEXT_IPV6)) for pad in range(MAX_PAD_BYTES + 1)]
        self._block_mask = transform.block_bytes - 1  # block sizes are powers of two

    # -- outbound --------------------------------------------------------------
    def tailroom_needed(self, payload_bytes: int, pad_to: int = 0) -> int:
        """Tailroom ``encrypt`` needs for a ``payload_bytes`` packet."""
        pad = self._pad_bytes(payload_bytes, pad_to)
        return pad + 2 + self._tail_extra

    def _pad_bytes(self, payload_bytes: int, pad_to: int) -> int:
        block = self.transform.block_bytes
        pad = -(payload_bytes + 2) % block
        if pad_to and pad_to != block:
            # Traffic-flow confidentiality: round up to pad_to (a multiple of the
            # block), as far as the one-byte pad length allows.
            if pad_to % block:
                raise ValueError(f"pad_to must be a multiple of {block}, got {pad_to}")
            pad = -(payload_bytes + 2) % pad_to
            while pad > MAX_PAD_BYTES:
                pad -= block
        return pad

    def next_seq(self) -> int:
        """Take the next outbound sequence number; SequenceOverflow when none is left."""
        seq = self.seq + 1
        if seq > self.seq_max or self.stopped:
            self._stop()
        self.seq = seq
        return seq

    def _stop(self) -> None:
        self.stopped = True
        raise SequenceOverflow(
            f"ESP SA {self.spi:#010x} has sent all {MAX_SEQ_64 if self.esn else MAX_SEQ_32:#x} sequence numbers "
            f"({'64' if self.esn else '32'}-bit); it is stopped: rekey and use a new SA"
        )

    def encrypt(self, packet: Packet, pad_to: int = 0) -> memoryview:
        """Turn an IP packet into an ESP datagram in its own memory; return the datagram.

        The header is pushed into the headroom, padding, trailer and ICV are put
        into the tailroom, and the payload is encrypted where it lies.  The view
        is valid until the packet is released.  ``pad_to`` (a multiple of the
        block size) pads for traffic-flow confidentiality.
        """
        buf = packet.buf
        start = packet.start
        end = packet.end
        length = end - start
        version = buf[start] >> 4 if length else 0
        if version == 4 and length >= 20:
            trailers = self._trailers_ipv4
        elif version == 6 and length >= 40:
            trailers = self._trailers_ipv6
        else:
            raise FramingError(f"ESP carries IPv4 or IPv6 packets; got {length} bytes of version {version}")
        pad = self._pad_bytes(length, pad_to) if pad_to else -(length + 2) & self._block_mask
        tail = end + pad + 2  # end of the ciphertext; the ICV follows
        head = start - self.header_bytes
        if tail + self._tail_extra > packet.hi or head < packet.lo:
            raise PacketError(
                f"ESP needs {self.header_bytes} bytes of headroom and {tail + self._tail_extra - end} of "
                f"tailroom; the packet has {start - packet.lo} and {packet.hi - end} "
                f"(Session lead >= {ESP_LEAD}, trail >= {ESP_TRAIL})"
            )
        seq = self.seq + 1
        if seq > self.seq_max or self.stopped:
            self._stop()
        self.seq = seq
        buf[end:tail] = trailers[pad]
        self._seal(buf, head, tail, seq)
        # Equivalent to push(header_bytes) and put(pad + 2 + icv), without the views.
        end = tail + self.icv_bytes
        packet.start = head
        packet.end = end
        return buf[head:end]

    def encrypt_many(self, packets: Iterable[Packet], pad_to: int = 0) -> list[memoryview]:
        """``encrypt`` each packet (the batch form, for sendmmsg-style transports)."""
        encrypt = self.encrypt
        return [encrypt(packet, pad_to) for packet in packets]

    def _seal_gcm(self, buf: memoryview, head: int, end: int, seq: int) -> None:
        _GCM_HEADER.pack_into(buf, head, self.spi, seq & MAX_SEQ_32, seq)
        # AAD = SPI || seq (|| high bits with ESN): packing 8 bytes is cheaper than a view of them.
        if self.esn:
            aad = _ESN_AAD.pack(self.spi, seq >> 32, seq & MAX_SEQ_32)
        else:
            aad = _SPI_SEQ.pack(self.spi, seq)
        start = head + 16
        # Input and output start at the same address: OpenSSL's in-place mode.
        self._aead.encrypt_into(_GCM_NONCE.pack(self._salt, seq), buf[start:end], aad, buf[start : end + 16])

    def _seal_cbc(self, buf: memoryview, head: int, end: int, seq: int) -> None:
        _SPI_SEQ.pack_into(buf, head, self.spi, seq & MAX_SEQ_32)
        iv = head + 8
        at = self._random_at
        if at + AES_BLOCK_BYTES > len(self._random):
            self._random = os.urandom(_RANDOM_POOL_BYTES)
            at = 0
        self._random_at = at + AES_BLOCK_BYTES
        buf[iv : iv + AES_BLOCK_BYTES] = self._random[at : at + AES_BLOCK_BYTES]
        # Encrypting R || payload: the first output block, written over R, is the IV.
        self._encryptor.update_into(buf[iv:end], buf[iv : end + CIPHER_SLACK_BYTES])
        mac = self._mac.copy()
        mac.update(buf[head:end])
        if self.esn:
            mac.update(_U32.pack(seq >> 32))
        buf[end : end + self.icv_bytes] = mac.finalize()[: self.icv_bytes]

    # -- inbound (called by SecurityAssociations) ------------------------------
    def _open_gcm(self, buf: memoryview, head: int, datagram_bytes: int, seq_low: int) -> int | str:
        start = head + 16
        end = head + datagram_bytes - 16
        if end - start < 4:
            return SHORT
        if (end - start) & 3:
            return BAD_LENGTH
        window = self.window
        if self.esn:
            seq = window.infer(seq_low)
            aad = _ESN_AAD.pack(self.spi, seq >> 32, seq_low)
        else:
            seq = seq_low
            aad = _SPI_SEQ.pack(self.spi, seq_low)
        try:
            self._aead.decrypt_into(self._salt + buf[head + 8 : start], buf[start : end + 16], aad, buf[start:end])
        except InvalidTag:
            return BAD_ICV
        top = window.top
        if top < seq < top + window.size:
            # In order, ahead of the window (the usual case): ReplayWindow.accept, inlined.
            window.bitmap = ((window.bitmap << (seq - top)) | 1) & window._mask
            window.top = seq
            return end - start
        return window.accept(seq) or end - start

    def _open_cbc(self, buf: memoryview, head: int, datagram_bytes: int, seq_low: int) -> int | str:
        iv = head + 8
        start = iv + AES_BLOCK_BYTES
        icv = self.icv_bytes
        end = head + datagram_bytes - icv
        if end - start < AES_BLOCK_BYTES:
            return SHORT
        if (end - start) & (AES_BLOCK_BYTES - 1):
            return BAD_LENGTH
        window = self.window
        seq = window.infer(seq_low) if self.esn else seq_low
        mac = self._mac.copy()
        mac.update(buf[head:end])
        if self.esn:
            mac.update(_U32.pack(seq >> 32))
        if not _stdlib_hmac.compare_digest(mac.finalize()[:icv], buf[end : end + icv]):
            return BAD_ICV
        top = window.top
        if top < seq < top + window.size:
            # In order, ahead of the window (the usual case): ReplayWindow.accept, inlined.
            window.bitmap = ((window.bitmap << (seq - top)) | 1) & window._mask
            window.top = seq
        else:
            why = window.accept(seq)
            if why:
                return why
        # IV || ciphertext through the long-lived context: the IV block sets the
        # chaining value (its garbage output overwrites the IV, in the headroom).
        self._decryptor.update_into(buf[iv:end], buf[iv : end + CIPHER_SLACK_BYTES])
        return end - start

    def __repr__(self) -> str:
        return f"<SecurityAssociation spi={self.spi:#010x} {self.transform.name} esn={self.esn} seq={self.seq}>"


@dataclass
class EspStats:
    """Inbound counters: what was delivered, and every drop by reason."""

    delivered_packets: int = 0
    delivered_bytes: int = 0
    keepalives: int = 0
    control: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


class SecurityAssociations:
    """The inbound side: SAs by SPI and the receive path into a Device.

    ``allocate`` a packet, read one datagram into ``datagram_view(packet)``,
    call ``receive``: the inner IP packet is sent to the device in the slot it
    was read into, or the packet is cancelled and the reason counted in
    ``stats.drops``.  All SAs must share one header length (the IV length),
    since the datagram's position is fixed before its SPI is known.  With
    ``udp_encap`` (RFC 3948) NAT keepalives are counted and IKE messages after
    a non-ESP marker are queued (copied) in ``control``.
    """

    def __init__(self, sas: Iterable[SecurityAssociation] = (), *, udp_encap: bool = False,
                 max_control_messages: int = 64) -> None:
        self.udp_encap = udp_encap
        self.header_bytes = 0
        self.stats = EspStats()
        self.control: deque[bytes] = deque(maxlen=max_control_messages)
        self._by_spi: dict[int, SecurityAssociation] = {}
        self._roomy_device: Device | None = None
        for sa in sas:
            self.add(sa)

    def add(self, sa: SecurityAssociation) -> None:
        if self.header_bytes and sa.header_bytes != self.header_bytes:
            raise ValueError(f"SA {sa.spi:#x} has a {sa.header_bytes}-byte header, the others {self.header_bytes}")
        if sa.spi in self._by_spi:
            raise ValueError(f"SPI {sa.spi:#x} is already in use")
        self.header_bytes = sa.header_bytes
        self._by_spi[sa.spi] = sa
        self._roomy_device = None

    def remove(self, spi: int) -> SecurityAssociation:
        sa = self._by_spi.pop(spi)
        if not self._by_spi:
            self.header_bytes = 0
        return sa

    def __getitem__(self, spi: int) -> SecurityAssociation:
        return self._by_spi[spi]

    def __len__(self) -> int:
        return len(self._by_spi)

    def allocate(self, device: Device, max_datagram_bytes: int) -> Packet:
        """A packet to read one datagram of up to ``max_datagram_bytes`` into."""
        if not self.header_bytes:
            raise ValueError("add a SecurityAssociation first: its header length places the datagram")
        if max_datagram_bytes < self.header_bytes:
            raise ValueError(f"max_datagram_bytes must be at least {self.header_bytes}")
        packet = device.allocate(max_datagram_bytes - self.header_bytes + CIPHER_SLACK_BYTES)
        if device is self._roomy_device:
            return packet
        if packet.start - packet.lo < self.header_bytes:
            device.cancel(packet)
            raise PacketError(
                f"ESP needs {self.header_bytes} bytes of headroom, the device gives {packet.start - packet.lo} "
                f"(Session lead >= {self.header_bytes - L.SIZE_FIELD})"
            )
        # A device gives every packet the same headroom: check it once.
        self._roomy_device = device
        return packet

    def datagram_view(self, packet: Packet) -> memoryview:
        """Where the datagram goes: the header in the headroom, the payload at the data."""
        return packet.buf[packet.start - self.header_bytes : packet.end - CIPHER_SLACK_BYTES]

    def receive(self, device: Device, packet: Packet, datagram_bytes: int) -> int:
        """Authenticate, decrypt and deliver the datagram read into ``packet``.

        Returns DELIVERED, DROPPED (counted in ``stats.drops``), KEEPALIVE or
        CONTROL.  Anything but DELIVERED cancels the packet.
        """
        buf = packet.buf
        start = packet.start
        head = start - self.header_bytes
        if datagram_bytes > packet.end - CIPHER_SLACK_BYTES - head or datagram_bytes < 0:
            device.cancel(packet)
            raise PacketError(f"{datagram_bytes} bytes do not fit the datagram view of this packet")
        if datagram_bytes < 8:
            if self.udp_encap and datagram_bytes == 1 and buf[head] == NAT_KEEPALIVE:
                self.stats.keepalives += 1
                device.cancel(packet)
                return KEEPALIVE
            return self._drop(device, packet, SHORT)
        spi, seq_low = _SPI_SEQ.unpack_from(buf, head)
        sa = self._by_spi.get(spi)
        if sa is None:
            if spi == NON_ESP_SPI and self.udp_encap:
                self.control.append(bytes(buf[head + 4 : head + datagram_bytes]))
                self.stats.control += 1
                device.cancel(packet)
                return CONTROL
            return self._drop(device, packet, UNKNOWN_SPI)
        got = sa._open(buf, head, datagram_bytes, seq_low)
        if got.__class__ is str:
            return self._drop(device, packet, got)
        # Trailer: ... pad bytes 1, 2, 3, ..., pad length, next header.
        pad = buf[start + got - 2]
        nh = buf[start + got - 1]
        payload = got - 2 - pad
        if payload < 0 or (pad and buf[start + payload : start + got - 2] != _PADDINGS[pad]):
            return self._drop(device, packet, BAD_PADDING)
        if nh == NEXT_IPV4:
            if payload < 20 or buf[start] >> 4 != 4:
                return self._drop(device, packet, BAD_INNER)
            length = _U16.unpack_from(buf, start + 2)[0]
            if not 20 <= length <= payload:
                return self._drop(device, packet, BAD_INNER)
        elif nh == NEXT_IPV6:
            if payload < 40 or buf[start] >> 4 != 6:
                return self._drop(device, packet, BAD_INNER)
            length = 40 + _U16.unpack_from(buf, start + 4)[0]
            if length > payload:
                return self._drop(device, packet, BAD_INNER)
        elif nh == NEXT_NONE:
            return self._drop(device, packet, DUMMY)
        else:
            return self._drop(device, packet, NEXT_HEADER)
        # Anything after the inner packet's own length is TFC padding (RFC 4303 2.7).
        device.shrink_and_send(packet, length)
        stats = self.stats
        stats.delivered_packets += 1
        stats.delivered_bytes += length
        return DELIVERED

    def receive_from(self, device: Device, recv_into: Callable[[memoryview], int | None], max_datagram_bytes: int,
                     max_count: int = 64) -> int:
        """Read up to ``max_count`` datagrams, each straight into a packet, and ``receive`` them.

        ``recv_into(view) -> nbytes`` is the transport's read, typically a
        non-blocking UDP socket's ``recv_into``; BlockingIOError or None means
        nothing is left.  The batch form of allocate / read / receive, with the
        per-call lookups done once.  Returns how many datagrams were read
        (delivered or not: see ``stats``).  RingFull from the device propagates.
        """
        header = self.header_bytes
        allocate = device.allocate
        receive = self.receive
        cancel = device.cancel
        size = max_datagram_bytes - header + CIPHER_SLACK_BYTES
        count = 0
        while count < max_count:
            # The first allocation goes through allocate() for its headroom check.
            packet = allocate(size) if device is self._roomy_device else self.allocate(device, max_datagram_bytes)
            try:
                n = recv_into(packet.buf[packet.start - header : packet.end - CIPHER_SLACK_BYTES])
            except BlockingIOError:
                n = None
            except BaseException:
                cancel(packet)
                raise
            if n is None:
                cancel(packet)
                break
            receive(device, packet, n)
            count += 1
        return count

    def receive_datagram(self, device: Device, datagram: bytes | bytearray | memoryview) -> int:
        """Copy a datagram that arrived elsewhere into a new packet and ``receive`` it."""
        packet = self.allocate(device, max(len(datagram), self.header_bytes))
        view = self.datagram_view(packet)
        view[: len(datagram)] = datagram
        return self.receive(device, packet, len(datagram))

    def _drop(self, device: Device, packet: Packet, reason: str) -> int:
        self.stats.drops[reason] += 1
        device.cancel(packet)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ESP datagram dropped: %s", reason)
        return DROPPED

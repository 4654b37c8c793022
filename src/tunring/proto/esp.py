"""ESP (RFC 4303) in tunnel mode, decrypted and encrypted in the packet's own memory.

Sans-I/O, in the codecs' style (:mod:`tunring.proto.base`): nothing here
touches a socket or a clock, the inbound side is bound to one Device, and what
is not an IP packet is reported with the codecs' events.

Receive (network -> OS)::

    inbound = SecurityAssociations(device, [sa])  # SAs by SPI, bound to the device
    n = sock.recv_into(inbound.want())            # a view inside a fresh packet
    for event in inbound.received(n):             # the inner packet is already sent
        ...                                       # Dropped(reason), Keepalive, Control(IKE_MESSAGE, ...)

or, in batches from a non-blocking socket::

    count, events = inbound.receive_from(sock.recv_into, max_count=64)

The datagram lands so that the ESP header (SPI, sequence number, IV) lies in
the packet's headroom and the inner IP packet starts exactly where the slot's
data starts.  The receive steps, one function each and in this order
(``SecurityAssociations._receive``): parse the SPI and sequence number, look
up the SA, check the length, authenticate (``sa.authenticate``), check and
advance the replay window (``ReplayWindow.accept``), decrypt in place
(``sa.decrypt``; AES-GCM decrypts while it authenticates), check the trailer
(:func:`unpad`, the next header, :func:`inner_length`) and shrink the packet
to the inner packet (``shrink_and_send``).  A bad datagram is counted in
``stats.drops`` by reason, its packet is cancelled and a ``Dropped`` event
says why, so nothing is delivered and no slot leaks.

Transmit (OS -> network)::

    packet = device.receive()
    sock.send(sa.encrypt(packet))      # header pushed, trailer put, encrypted where it lies
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

Copies: the one copy of packet bytes is ``feed`` (a datagram that arrived
outside a packet is copied into one), counted in ``stats.rx_copies`` and
``stats.rx_copy_bytes``.  Besides that, per packet, only metadata is copied
(12 bytes of nonce, the 8/12 bytes of AAD, the HMAC digest, the 1..255 bytes
of trailer written on transmit) and an IKE message into its Control event;
never the payload.  SecurityAssociation(s) objects are not thread-safe: one
thread per direction.
"""

from __future__ import annotations

import hmac as _stdlib_hmac
import logging
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .. import layout as L
from ..device import Device
from ..errors import FramingError, PacketError, RingFull, SequenceOverflow
from ..packet import Packet
from .base import Control, Dropped, Event, Keepalive

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
#: ``Control.kind`` of an IKE message that arrived after the non-ESP marker.
IKE_MESSAGE = NON_ESP_SPI
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
_NAT_KEEPALIVE_EVENT = Keepalive()


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

#: The most a datagram carries beyond its inner packet: the longest header, the
#: most padding, pad length, next header and the longest ICV.
DATAGRAM_OVERHEAD_BYTES = ESP_LEAD + L.SIZE_FIELD + MAX_PAD_BYTES + 2 + max(t.icv_bytes for t in TRANSFORMS.values())

# Why a datagram was dropped: the ``reason`` of its Dropped event, the keys of EspStats.drops.
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
            # Ahead of the window (in order: the usual case) slides it.
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


def _transform_named(transform: Transform | str) -> Transform:
    if isinstance(transform, Transform):
        return transform
    try:
        return TRANSFORMS[transform]
    except KeyError:
        raise ValueError(f"unknown ESP transform {transform!r}; known: {', '.join(TRANSFORMS)}") from None


def _check_sa(spi: int, transform: Transform, enc_key: bytes, auth_key: bytes) -> None:
    if not 256 <= spi <= MAX_SEQ_32:
        # RFC 4303 2.1: 1..255 are reserved by IANA, 0 is local-use only.
        raise ValueError(f"SPI must be in 256..0xFFFFFFFF, got {spi:#x}")
    if len(enc_key) != transform.key_bytes:
        raise ValueError(f"{transform.name} needs a {transform.key_bytes}-byte key, got {len(enc_key)}")
    if len(auth_key) != transform.auth_key_bytes:
        raise ValueError(f"{transform.name} needs a {transform.auth_key_bytes}-byte authentication key, "
                         f"got {len(auth_key)}")


class SecurityAssociation:
    """One direction of an ESP security association (RFC 4303 tunnel mode).

    Outbound: ``encrypt(packet)`` builds ESP around a received packet in place
    and returns the datagram.  Inbound: add it to a :class:`SecurityAssociations`,
    which owns the receive path and calls ``authenticate`` and ``decrypt``.
    Keys are raw bytes; for AES-GCM ``enc_key`` ends with the 4-byte salt (as
    RFC 4106 keying material and scapy have it).  ``seq`` is the last sequence
    number sent (0: none yet), ``window`` the inbound :class:`ReplayWindow`;
    after SequenceOverflow ``stopped`` is True.
    """

    #: Check the ICV of ``buf[head:end + icv_bytes]`` (header, IV, ciphertext, ICV) for
    #: sequence number ``seq``: True if authentic.  AES-GCM decrypts in place as it checks.
    authenticate: Callable[[memoryview, int, int, int], bool]
    #: Decrypt ``buf[head + header_bytes:end]`` in place after ``authenticate``;
    #: None for AES-GCM, which has decrypted already.
    decrypt: Callable[[memoryview, int, int], None] | None

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
        transform = _transform_named(transform)
        _check_sa(spi, transform, enc_key, auth_key)
        self.spi = spi
        self.transform = transform
        self.esn = esn
        self.seq = seq  # the last sequence number sent (outbound)
        self.seq_max = MAX_SEQ_64 if esn else MAX_SEQ_32
        self.stopped = False
        self.window = ReplayWindow(replay_window, esn)
        self.header_bytes = transform.header_bytes
        self.icv_bytes = transform.icv_bytes
        self.block_bytes = transform.block_bytes
        self.block_mask = transform.block_bytes - 1  # block sizes are powers of two
        # ICV, plus for CBC what update_into's output buffer must have beyond it.
        self._tail_extra = self.icv_bytes + (0 if transform.aead else max(0, CIPHER_SLACK_BYTES - self.icv_bytes))
        if transform.aead:
            self._setup_gcm(enc_key)
        else:
            self._setup_cbc(transform, enc_key, auth_key)
        # Trailers per pad length: pad bytes, pad length, next header.
        self._trailers_ipv4 = [_PAD[:pad] + bytes((pad, NEXT_IPV4)) for pad in range(MAX_PAD_BYTES + 1)]
        self._trailers_ipv6 = [_PAD[:pad] + bytes((pad, NEXT_IPV6)) for pad in range(MAX_PAD_BYTES + 1)]

    def _setup_gcm(self, enc_key: bytes) -> None:
        self._aead = AESGCM(enc_key[:-4])
        self._salt = bytes(enc_key[-4:])
        self._seal = self._seal_gcm
        self.authenticate = self._authenticate_gcm
        self.decrypt = None

    def _setup_cbc(self, transform: Transform, enc_key: bytes, auth_key: bytes) -> None:
        if transform.auth_hash is None:
            raise ValueError(f"{transform.name} is not an AEAD and names no authentication hash")
        aes = algorithms.AES(enc_key)
        zero_iv = modes.CBC(bytes(AES_BLOCK_BYTES))
        # One context per direction for the SA's lifetime (see the module docstring).
        self._decryptor = Cipher(aes, zero_iv).decryptor()
        self._encryptor = Cipher(aes, zero_iv).encryptor()
        self._mac = _hmac.HMAC(auth_key, transform.auth_hash())
        self._random = b""  # a pool of random first blocks (bytes: slicing it is cheaper than a view)
        self._random_at = 0
        self._seal = self._seal_cbc
        self.authenticate = self._authenticate_cbc
        self.decrypt = self._decrypt_cbc

    # -- outbound --------------------------------------------------------------
    def tailroom_needed(self, payload_bytes: int, pad_to: int = 0) -> int:
        """Tailroom ``encrypt`` needs for a ``payload_bytes`` packet."""
        pad = self._pad_bytes(payload_bytes, pad_to)
        return pad + 2 + self._tail_extra

    def _pad_bytes(self, payload_bytes: int, pad_to: int) -> int:
        block = self.block_bytes
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
        pad = self._pad_bytes(length, pad_to) if pad_to else -(length + 2) & self.block_mask
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

    def _aad(self, seq: int) -> bytes:
        """SPI || seq, with ESN SPI || high || low (RFC 4106 5): packing is cheaper than a view."""
        if self.esn:
            return _ESN_AAD.pack(self.spi, seq >> 32, seq & MAX_SEQ_32)
        return _SPI_SEQ.pack(self.spi, seq & MAX_SEQ_32)

    def _seal_gcm(self, buf: memoryview, head: int, end: int, seq: int) -> None:
        _GCM_HEADER.pack_into(buf, head, self.spi, seq & MAX_SEQ_32, seq)
        start = head + 16
        # Input and output start at the same address: OpenSSL's in-place mode.
        self._aead.encrypt_into(_GCM_NONCE.pack(self._salt, seq), buf[start:end], self._aad(seq),
                                buf[start : end + 16])

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
        buf[end : end + self.icv_bytes] = self._icv(buf, head, end, seq)

    def _icv(self, buf: memoryview, head: int, end: int, seq: int) -> bytes:
        """HMAC over header, IV and ciphertext (and with ESN the high 32 bits), cut to the ICV."""
        mac = self._mac.copy()
        mac.update(buf[head:end])
        if self.esn:
            mac.update(_U32.pack(seq >> 32))
        return mac.finalize()[: self.icv_bytes]

    # -- inbound steps (called by SecurityAssociations._receive) ---------------
    def _authenticate_gcm(self, buf: memoryview, head: int, end: int, seq: int) -> bool:
        start = head + 16
        try:
            self._aead.decrypt_into(self._salt + buf[head + 8 : start], buf[start : end + 16], self._aad(seq),
                                    buf[start:end])
        except InvalidTag:
            return False
        return True

    def _authenticate_cbc(self, buf: memoryview, head: int, end: int, seq: int) -> bool:
        return _stdlib_hmac.compare_digest(self._icv(buf, head, end, seq), buf[end : end + self.icv_bytes])

    def _decrypt_cbc(self, buf: memoryview, head: int, end: int) -> None:
        # IV || ciphertext through the long-lived context: the IV block sets the
        # chaining value (its garbage output overwrites the IV, in the headroom).
        iv = head + 8
        self._decryptor.update_into(buf[iv:end], buf[iv : end + CIPHER_SLACK_BYTES])

    def __repr__(self) -> str:
        return f"<SecurityAssociation spi={self.spi:#010x} {self.transform.name} esn={self.esn} seq={self.seq}>"


# -- trailer (RFC 4303 2.4-2.6) ---------------------------------------------------
def unpad(buf: memoryview, start: int, end: int) -> int:
    """Where the payload ends once the trailer of plaintext ``buf[start:end]`` is cut off.

    The trailer is pad bytes 1, 2, 3, ..., the pad length and the next header;
    -1 if the padding is longer than the plaintext or not that sequence.
    """
    pad = buf[end - 2]
    payload_end = end - 2 - pad
    if payload_end < start or (pad and buf[payload_end : end - 2] != _PADDINGS[pad]):
        return -1
    return payload_end


def inner_length(buf: memoryview, start: int, payload_end: int, next_header: int) -> int:
    """The length the inner packet at ``buf[start:payload_end]`` gives itself; 0 if it is not
    the IPv4 or IPv6 packet ``next_header`` says or does not fit.  Bytes after it are TFC
    padding (RFC 4303 2.7)."""
    payload = payload_end - start
    if next_header == NEXT_IPV4:
        if payload < 20 or buf[start] >> 4 != 4:
            return 0
        length = _U16.unpack_from(buf, start + 2)[0]
        return length if 20 <= length <= payload else 0
    if payload < 40 or buf[start] >> 4 != 6:
        return 0
    length = 40 + _U16.unpack_from(buf, start + 4)[0]
    return length if length <= payload else 0


@dataclass
class EspStats:
    """Inbound counters, named as the codecs' (:class:`~tunring.proto.base.CodecStats`).

    ``rx_packets``/``rx_bytes``: inner packets delivered; ``rx_copies``/
    ``rx_copy_bytes``: datagrams (and their bytes) memcpy'd into a packet by
    ``feed`` instead of read in place; ``rx_control``: Keepalive and Control
    events; ``drops``: dropped datagrams by reason.
    """

    rx_packets: int = 0
    rx_bytes: int = 0
    rx_copies: int = 0
    rx_copy_bytes: int = 0
    rx_control: int = 0
    drops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    @property
    def rx_drops(self) -> int:
        return sum(self.drops.values())

    @property
    def datagrams(self) -> int:
        """Datagrams received so far: each was delivered, dropped or an event."""
        return self.rx_packets + self.rx_control + self.rx_drops


class SecurityAssociations:
    """The inbound side: SAs by SPI and the receive path into one Device.

    ``want()`` gives the view to read one datagram into (inside a fresh
    packet); ``received(n)`` authenticates, decrypts and sends the inner packet
    to the device in the slot it was read into, or cancels the packet and
    returns a ``Dropped`` event (also counted in ``stats.drops``).  All SAs
    must share one header length (the IV length), since the datagram's
    position is fixed before its SPI is known.  With ``udp_encap`` (RFC 3948)
    a NAT keepalive is a ``Keepalive`` event and an IKE message after the
    non-ESP marker a ``Control(IKE_MESSAGE, message)``.  Datagrams may be up
    to ``max_datagram_bytes`` (default: the device's MTU plus the most ESP adds).
    """

    def __init__(self, device: Device, sas: Iterable[SecurityAssociation] = (), *, udp_encap: bool = False,
                 max_datagram_bytes: int | None = None) -> None:
        self.device = device
        self.udp_encap = udp_encap
        self.max_datagram_bytes = max_datagram_bytes or device.mtu + DATAGRAM_OVERHEAD_BYTES
        self.header_bytes = 0
        self.stats = EspStats()
        self._by_spi: dict[int, SecurityAssociation] = {}
        self._pkt: Packet | None = None  # the packet want() handed out
        self._fits = False  # the device's headroom holds the header (checked on the first packet)
        self._allocate = device.allocate
        self._cancel = device.cancel
        self._shrink_and_send = device.shrink_and_send
        for sa in sas:
            self.add(sa)

    def add(self, sa: SecurityAssociation) -> None:
        if self.header_bytes and sa.header_bytes != self.header_bytes:
            raise ValueError(f"SA {sa.spi:#x} has a {sa.header_bytes}-byte header, the others {self.header_bytes}")
        if sa.spi in self._by_spi:
            raise ValueError(f"SPI {sa.spi:#x} is already in use")
        if sa.header_bytes != self.header_bytes:
            self.header_bytes = sa.header_bytes
            self._fits = False
        self._by_spi[sa.spi] = sa

    def remove(self, spi: int) -> SecurityAssociation:
        sa = self._by_spi.pop(spi)
        if not self._by_spi:
            self.header_bytes = 0
        return sa

    def __getitem__(self, spi: int) -> SecurityAssociation:
        return self._by_spi[spi]

    def __len__(self) -> int:
        return len(self._by_spi)

    # -- receiving ---------------------------------------------------------------
    @property
    def packet(self) -> Packet | None:
        """The packet the last ``want()`` view lies in (None until then and after ``received``)."""
        return self._pkt

    def want(self) -> memoryview:
        """Where the transport should read the next datagram: the header in the headroom.

        The same view until ``received``.  May raise RingFull (nothing lost:
        wait for space and call again).
        """
        packet = self._pkt
        if packet is None:
            packet = self._pkt = self._packet_for(self.max_datagram_bytes)
        return packet.buf[packet.start - self.header_bytes : packet.end - CIPHER_SLACK_BYTES]

    def received(self, n: int) -> list[Event]:
        """``n`` bytes, one datagram, were written at the start of the last ``want()`` view.

        The inner packet is sent to the device; the events say what else
        happened (a ``Dropped`` datagram, a ``Keepalive``, an IKE ``Control``).
        """
        packet = self._pkt
        if packet is None or not 0 <= n <= packet.end - CIPHER_SLACK_BYTES - packet.start + self.header_bytes:
            self.close()
            raise PacketError(f"received({n}): no want() view holds that many bytes")
        self._pkt = None
        event = self._receive(packet, n)
        return [] if event is None else [event]

    def receive_from(self, recv_into: Callable[[memoryview], int | None],
                     max_count: int = 64) -> tuple[int, list[Event]]:
        """Read up to ``max_count`` datagrams, each straight into a packet, and receive them.

        ``recv_into(view) -> nbytes`` is the transport's read, typically a
        non-blocking UDP socket's ``recv_into``; BlockingIOError or None means
        nothing is left.  The batch form of want / read / received.  Returns
        how many datagrams were read and the events of all of them.  A device
        that fills up cuts the batch short (what was read is received, its
        events returned); RingFull is raised only when not one packet could be
        allocated.
        """
        self.close()  # a want() view nobody filled
        events: list[Event] = []
        allocate, cancel, receive = self._allocate, self._cancel, self._receive
        header = self.header_bytes
        size = self.max_datagram_bytes - header + CIPHER_SLACK_BYTES
        count = 0
        while count < max_count:
            try:
                # The first packet goes through _packet_for() for its checks.
                packet = allocate(size) if self._fits else self._packet_for(self.max_datagram_bytes)
            except RingFull:
                if count:
                    break
                raise
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
            event = receive(packet, n)
            if event is not None:
                events.append(event)
            count += 1
        return count, events

    def feed(self, datagram: bytes | bytearray | memoryview) -> list[Event]:
        """Copying convenience: copy a datagram that arrived elsewhere into a packet and receive it.

        The copy is counted in ``stats.rx_copies`` and ``stats.rx_copy_bytes``.
        """
        n = len(datagram)
        self.close()
        packet = self._packet_for(n)
        head = packet.start - self.header_bytes
        packet.buf[head : head + n] = datagram
        stats = self.stats
        stats.rx_copies += 1
        stats.rx_copy_bytes += n
        event = self._receive(packet, n)
        return [] if event is None else [event]

    def close(self) -> None:
        """Give back the packet of a ``want()`` view that will not be ``received``."""
        packet = self._pkt
        if packet is not None:
            self._pkt = None
            self._cancel(packet)

    def _packet_for(self, datagram_bytes: int) -> Packet:
        """A packet to read a datagram of up to ``datagram_bytes`` into (headroom checked once)."""
        header = self.header_bytes
        if not header:
            raise ValueError("add a SecurityAssociation first: its header length places the datagram")
        packet = self._allocate(max(datagram_bytes, header) - header + CIPHER_SLACK_BYTES)
        if not self._fits:
            # A device gives every packet the same headroom: check it once.
            if packet.start - packet.lo < header:
                self._cancel(packet)
                raise PacketError(
                    f"ESP needs {header} bytes of headroom, the device gives {packet.start - packet.lo} "
                    f"(Session lead >= {header - L.SIZE_FIELD})"
                )
            self._fits = True
        return packet

    def _receive(self, packet: Packet, n: int) -> Event | None:
        """The receive steps for the ``n``-byte datagram read into ``packet``; None if delivered."""
        buf = packet.buf
        start = packet.start
        head = start - self.header_bytes
        if n < SPI_BYTES + SEQ_BYTES:
            return self._short(packet, head, n)
        spi, seq_low = _SPI_SEQ.unpack_from(buf, head)  # parse
        sa = self._by_spi.get(spi)  # SA lookup
        if sa is None:
            return self._unknown_spi(packet, head, n, spi)
        end = head + n - sa.icv_bytes  # the ciphertext ends where the ICV starts
        if end - start < sa.block_bytes:
            return self._drop(packet, n, SHORT)
        if (end - start) & sa.block_mask:
            return self._drop(packet, n, BAD_LENGTH)
        window = sa.window
        seq = window.infer(seq_low) if sa.esn else seq_low
        if not sa.authenticate(buf, head, end, seq):  # authenticate
            return self._drop(packet, n, BAD_ICV)
        why = window.accept(seq)  # replay check, after authentication only
        if why is not None:
            return self._drop(packet, n, why)
        decrypt = sa.decrypt
        if decrypt is not None:  # decrypt (AES-GCM did while authenticating)
            decrypt(buf, head, end)
        payload_end = unpad(buf, start, end)  # trailer check
        if payload_end < 0:
            return self._drop(packet, n, BAD_PADDING)
        next_header = buf[end - 1]
        if next_header != NEXT_IPV4 and next_header != NEXT_IPV6:
            return self._drop(packet, n, DUMMY if next_header == NEXT_NONE else NEXT_HEADER)
        size = inner_length(buf, start, payload_end, next_header)
        if not size:
            return self._drop(packet, n, BAD_INNER)
        self._shrink_and_send(packet, size)  # shrink: trailer and TFC padding stay behind
        stats = self.stats
        stats.rx_packets += 1
        stats.rx_bytes += size
        return None

    def _short(self, packet: Packet, head: int, n: int) -> Event:
        """Shorter than SPI and sequence number: a NAT keepalive (ESP in UDP) or a drop."""
        if self.udp_encap and n == 1 and packet.buf[head] == NAT_KEEPALIVE:
            return self._control(packet, _NAT_KEEPALIVE_EVENT)
        return self._drop(packet, n, SHORT)

    def _unknown_spi(self, packet: Packet, head: int, n: int, spi: int) -> Event:
        """No SA for ``spi``: an IKE message after the non-ESP marker (ESP in UDP) or a drop."""
        if self.udp_encap and spi == NON_ESP_SPI:
            message = bytes(packet.buf[head + SPI_BYTES : head + n])
            return self._control(packet, Control(IKE_MESSAGE, message))
        return self._drop(packet, n, UNKNOWN_SPI)

    def _control(self, packet: Packet, event: Event) -> Event:
        self.stats.rx_control += 1
        self._cancel(packet)
        return event

    def _drop(self, packet: Packet, n: int, reason: str) -> Dropped:
        index = self.stats.datagrams
        self.stats.drops[reason] += 1
        self._cancel(packet)
        log.debug("ESP datagram %d (%d bytes) dropped: %s", index, n, reason)
        return Dropped(index, n, reason)

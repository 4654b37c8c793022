"""ESP in place: decrypt into the ring and encrypt around received packets, vs copying and the bare cipher.

Cases, for 64, 512 and 1400-byte inner IPv4 packets (``--sizes``), AES-GCM-128
and AES-CBC-128 + HMAC-SHA1-96 (``--transform``):

- ``decrypt-into-ring``: tunring (``SecurityAssociations.receive_from``: each
  datagram is read into an allocated slot, authenticated, decrypted and shrunk
  in place) against ``copy`` (the datagram read into a scratch buffer,
  decrypted to ``bytes``, trailer checked, a packet allocated and the inner
  packet copied in: ``Device.write``) and ``cipher`` (the bare cipher call(s)
  ESP needs per packet on the same sizes: the floor).
- ``encrypt-in-place``: tunring (``SecurityAssociation.encrypt_many`` on packets
  from ``Session.receive_many``, released afterwards) against ``copy`` (each
  packet copied out to ``bytes``, trailer appended, encrypted to new ``bytes``
  and joined with the header) and ``cipher``.

Both paths read datagrams through the same stand-in for ``sock.recv_into``
(:class:`Feed`).  Both copying peers make the same ESP checks as tunring
(replay window, padding, inner length) and reuse CBC contexts the same way,
so what differs is the copies.  Times are the CPU time of the benchmarking
thread (``time.thread_time_ns``), the best of ``--repeat`` runs (after one
warm-up run) in which the implementations take turns batch by batch.  The
adapter side (delivering packets to encrypt, draining decrypted ones) runs
between timed batches and is not counted.
"""

from __future__ import annotations

import argparse
import hmac as stdlib_hmac
import itertools
import os
import struct
import time
from collections.abc import Callable, Iterator
from functools import partial

from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...adapter import Adapter
from ...cli import int_in
from ...proto import esp
from ...session import Session
from .common import Impl, Result, add_sizes_argument, available, best_of, drain, ipv4_udp, ring_pair

SIZES = (64, 512, 1400)
MAX_SIZE = 65000  # an inner packet, its ESP header, padding and ICV fit one 65535-byte datagram
DEFAULT_TRANSFORMS = ("aes-gcm-128", "aes-cbc-128-hmac-sha1-96")
# CPU time of this thread: time spent descheduled (the machine may be busy) does not count.
clock_ns = time.thread_time_ns
BATCH = 256  # packets per timed batch (fewer for big packets)
CAPACITY = 0x400000
SLOT_OVERHEAD_BYTES = 128  # what a slot holds besides the inner packet (ESP header, trailer, padding)
SPI = 0x0100_0001
GCM_SALT_BYTES = 4
_U16 = struct.Struct(">H")
_SPI_SEQ = struct.Struct(">II")
ALIASES = {
    "aes-gcm-128": "gcm128", "aes-gcm-256": "gcm256",
    "aes-cbc-128-hmac-sha1-96": "cbc128sha1", "aes-cbc-256-hmac-sha1-96": "cbc256sha1",
    "aes-cbc-128-hmac-sha256-128": "cbc128sha256", "aes-cbc-256-hmac-sha256-128": "cbc256sha256",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int_in(1), default=20000, help="packets per case and size (default 20000)")
    add_sizes_argument(parser, SIZES, MAX_SIZE, "inner packet sizes in bytes")
    parser.add_argument("--transform", action="append", choices=sorted(esp.TRANSFORMS),
                        help=f"ESP transform(s) to measure (default: {', '.join(DEFAULT_TRANSFORMS)})")
    parser.add_argument("--repeat", type=int_in(1), default=3, help="runs per measurement; the best is kept")


def _rig() -> tuple[Session, Adapter]:
    """A session with ESP room and an in-process adapter, every page touched before timing."""
    return ring_pair(esp.ESP_LEAD, esp.ESP_TRAIL, CAPACITY, prefault=True)


def keys(transform: esp.Transform) -> tuple[bytes, bytes]:
    return bytes(range(1, transform.key_bytes + 1)), bytes(range(100, 100 + transform.auth_key_bytes))


def _gcm(enc_key: bytes) -> tuple[AESGCM, bytes]:
    """RFC 4106: the AES key, and the salt that begins every nonce."""
    return AESGCM(enc_key[:-GCM_SALT_BYTES]), enc_key[-GCM_SALT_BYTES:]


def _cbc(enc_key: bytes) -> Cipher:
    # One long-lived context, as tunring keeps: each packet's IV is its own first block.
    return Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16)))


def _mac_template(transform: esp.Transform, auth_key: bytes) -> hmac.HMAC:
    """The keyed HMAC every packet's MAC is copied from (CBC transforms)."""
    if transform.auth_hash is None:
        raise ValueError(f"{transform.name} has no separate MAC")
    return hmac.HMAC(auth_key, transform.auth_hash())


def datagrams(transform: esp.Transform, size: int, count: int) -> list[bytes]:
    """``count`` ESP datagrams of one inner size, sequence numbers 1..count, made by tunring."""
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key)
    session, adapter = _rig()
    inner = ipv4_udp(size)
    out = []
    for _ in range(count):
        adapter.deliver(inner)
        packet = session.receive()
        assert packet is not None  # just delivered
        out.append(bytes(sa.encrypt(packet)))
        session.release(packet)
    return out


# -- decrypt ------------------------------------------------------------------
class Feed:
    """Stands in for a non-blocking UDP socket: ``recv_into`` copies the next datagram in.

    Both the tunring and the copy path read through it, so the transport's own
    copy and call cost the same on both sides.
    """

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = datagrams
        self.at = 0

    def recv_into(self, view: memoryview) -> int:
        at = self.at
        if at == len(self.datagrams):
            raise BlockingIOError
        self.at = at + 1
        datagram = self.datagrams[at]
        view[: len(datagram)] = datagram
        return len(datagram)


def decrypt_tunring(transform: esp.Transform, wire: list[bytes], batch: int) -> Iterator[int]:
    enc_key, auth_key = keys(transform)
    session, adapter = _rig()
    max_datagram = max(map(len, wire))
    inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(SPI, transform, enc_key, auth_key)],
                                       max_datagram_bytes=max_datagram)
    for at in range(0, len(wire), batch):
        feed = Feed(wire[at : at + batch])
        t0 = clock_ns()
        inbound.receive_from(feed.recv_into, batch)
        elapsed = clock_ns() - t0
        drain(adapter)
        yield elapsed
    if inbound.stats.rx_packets != len(wire):
        raise RuntimeError(f"tunring delivered {inbound.stats.rx_packets} of {len(wire)}: {inbound.stats}")


def _copy_opener(transform: esp.Transform) -> Callable[[memoryview, int], bytes | memoryview | None]:
    """``open_(view, n)``: the plaintext of the datagram ``view[:n]`` as new bytes (None: bad ICV)."""
    enc_key, auth_key = keys(transform)
    if transform.aead:
        aead, salt = _gcm(enc_key)

        def open_gcm(view: memoryview, n: int) -> bytes:
            return aead.decrypt(salt + view[8:16], view[16:n], view[:8])

        return open_gcm
    mac_template = _mac_template(transform, auth_key)
    decryptor = _cbc(enc_key).decryptor()  # the same long-lived context trick as tunring
    icv_bytes = transform.icv_bytes

    def open_cbc(view: memoryview, n: int) -> memoryview | None:
        mac = mac_template.copy()
        mac.update(view[: n - icv_bytes])
        if not stdlib_hmac.compare_digest(mac.finalize()[:icv_bytes], view[n - icv_bytes : n]):
            return None
        return memoryview(decryptor.update(view[8 : n - icv_bytes]))[16:]

    return open_cbc


class CopyReceiver:
    """The copying receive path: decrypt to bytes, make the checks tunring makes (SPI, replay
    window, padding, inner length), allocate a packet and copy the inner packet in."""

    def __init__(self, transform: esp.Transform, session: Session, max_datagram: int) -> None:
        self.open = _copy_opener(transform)
        self.write = session.write
        self.view = memoryview(bytearray(max_datagram))
        self.by_spi = {SPI: esp.ReplayWindow()}  # the same SPI lookup tunring does
        self.min_bytes = transform.header_bytes + transform.icv_bytes + 2
        self.paddings = [bytes(range(1, pad + 1)) for pad in range(256)]
        self.stats = esp.EspStats()

    def receive(self, recv_into: Callable[[memoryview], int], batch: int) -> None:
        view, open_, write, by_spi, paddings = self.view, self.open, self.write, self.by_spi, self.paddings
        min_bytes, stats = self.min_bytes, self.stats
        for _ in range(batch):
            try:
                n = recv_into(view)
            except BlockingIOError:
                break
            if n < 8:
                continue
            spi, seq = _SPI_SEQ.unpack_from(view)
            window = by_spi.get(spi)
            if window is None or n < min_bytes:
                continue
            plain = open_(view, n)
            if plain is None or window.accept(seq):  # checked after authentication, as RFC 4303 says
                continue
            pad = plain[-2]
            payload = len(plain) - 2 - pad
            if payload < 0 or (pad and plain[payload:-2] != paddings[pad]):
                continue
            if plain[-1] != 4 or payload < 20 or plain[0] >> 4 != 4:
                continue  # (the benchmark sends IPv4 only)
            length = _U16.unpack_from(plain, 2)[0]
            if not 20 <= length <= payload:
                continue
            write(memoryview(plain)[:length])  # allocate, copy, send
            stats.rx_packets += 1
            stats.rx_bytes += length


def decrypt_copy(transform: esp.Transform, wire: list[bytes], batch: int) -> Iterator[int]:
    """The copying receive path (:class:`CopyReceiver`), batch by batch."""
    session, adapter = _rig()
    receiver = CopyReceiver(transform, session, max(map(len, wire)))
    for at in range(0, len(wire), batch):
        recv_into = Feed(wire[at : at + batch]).recv_into
        t0 = clock_ns()
        receiver.receive(recv_into, batch)
        elapsed = clock_ns() - t0
        drain(adapter)
        yield elapsed
    delivered = receiver.stats.rx_packets
    if delivered != len(wire):
        raise RuntimeError(f"copy delivered {delivered} of {len(wire)}")


def decrypt_cipher(transform: esp.Transform, wire: list[bytes], batch: int) -> Iterator[int]:
    """The bare cipher work per packet, into a scratch buffer: the floor."""
    enc_key, auth_key = keys(transform)
    out_view = memoryview(bytearray(max(map(len, wire)) + 16))
    views = [memoryview(d) for d in wire]
    icv = transform.icv_bytes
    if transform.aead:
        aead, salt = _gcm(enc_key)
        nonces = [salt + d[8:16] for d in wire]
        for at in range(0, len(wire), batch):
            pairs = list(zip(views[at : at + batch], nonces[at : at + batch], strict=True))
            t0 = clock_ns()
            for v, nonce in pairs:
                aead.decrypt_into(nonce, v[16:], v[:8], out_view[: len(v) - 32])
            yield clock_ns() - t0
        return
    mac_template = _mac_template(transform, auth_key)
    decryptor = _cbc(enc_key).decryptor()
    for at in range(0, len(wire), batch):
        chunk = views[at : at + batch]
        t0 = clock_ns()
        for v in chunk:
            n = len(v) - icv
            mac = mac_template.copy()
            mac.update(v[:n])
            stdlib_hmac.compare_digest(mac.finalize()[:icv], v[n:])
            decryptor.update_into(v[8:n], out_view[: n - 8 + 15])
        yield clock_ns() - t0


# -- encrypt ------------------------------------------------------------------
def _deliveries(adapter: Adapter, inner: bytes, count: int, batch: int) -> Iterator[int]:
    """Batch by batch: deliver the batch's packets to the session (not timed), then its size."""
    for at in range(0, count, batch):
        n = min(batch, count - at)
        for _ in range(n):
            adapter.deliver(inner)
        yield n


def encrypt_tunring(transform: esp.Transform, size: int, count: int, batch: int) -> Iterator[int]:
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key)
    session, adapter = _rig()
    sent = 0
    for n in _deliveries(adapter, ipv4_udp(size), count, batch):
        t0 = clock_ns()
        packets = session.receive_many(n)
        for datagram in sa.encrypt_many(packets):
            sent += len(datagram)  # each view would go to sock.send() / sendmmsg
        session.release_many(packets)
        yield clock_ns() - t0
    if sa.seq != count:
        raise RuntimeError("tunring did not encrypt every packet")


def _copy_sealer(transform: esp.Transform, count: int) -> Callable[[int, bytes], bytes]:
    """``seal(seq, plain)``: the ESP datagram of a padded plaintext, built as new bytes."""
    enc_key, auth_key = keys(transform)
    if transform.aead:
        aead, salt = _gcm(enc_key)
        nonce_of = struct.Struct(">4sQ").pack
        gcm_header = struct.Struct(">IIQ")

        def seal_gcm(seq: int, plain: bytes) -> bytes:
            head = gcm_header.pack(SPI, seq, seq)
            return head + aead.encrypt(nonce_of(salt, seq), plain, head[:8])

        return seal_gcm
    mac_template = _mac_template(transform, auth_key)
    encryptor = _cbc(enc_key).encryptor()
    icv = transform.icv_bytes
    pool = os.urandom(16 * (count + 1))  # random first blocks, drawn up front as tunring's pool is
    header = struct.Struct(">II")

    def seal_cbc(seq: int, plain: bytes) -> bytes:
        # Random first block, as tunring does: its ciphertext is the IV.
        body = header.pack(SPI, seq) + encryptor.update(pool[seq * 16 : seq * 16 + 16] + plain)
        mac = mac_template.copy()
        mac.update(body)
        return body + mac.finalize()[:icv]

    return seal_cbc


def encrypt_copy(transform: esp.Transform, size: int, count: int, batch: int) -> Iterator[int]:
    """The copying transmit path: copy out, append trailer, encrypt to new bytes, join."""
    session, adapter = _rig()
    seal = _copy_sealer(transform, count)
    block = transform.block_bytes
    trailers = [bytes(range(1, pad + 1)) + bytes((pad, 4)) for pad in range(block)]
    seq = sent = 0
    for n in _deliveries(adapter, ipv4_udp(size), count, batch):
        t0 = clock_ns()
        packets = session.receive_many(n)
        plains = [bytes(packet.data) for packet in packets]
        session.release_many(packets)
        for plain in plains:
            if not plain or plain[0] >> 4 != 4 or len(plain) < 20:  # the checks tunring makes
                raise ValueError("not IPv4")
            seq += 1
            if seq > esp.MAX_SEQ_32:
                raise OverflowError("sequence numbers used up")
            sent += len(seal(seq, plain + trailers[-(len(plain) + 2) % block]))  # would go to sock.send()
        yield clock_ns() - t0


def encrypt_cipher(transform: esp.Transform, size: int, count: int, batch: int) -> Iterator[int]:
    """The bare cipher work per packet, in a scratch buffer: the floor."""
    enc_key, auth_key = keys(transform)
    padded = size + 2 + (-(size + 2) % transform.block_bytes)
    view = memoryview(bytearray(padded + 64))
    if transform.aead:
        aead, salt = _gcm(enc_key)
        nonce_of = struct.Struct(">4sQ").pack
        aad = bytes(8)
        for at in range(0, count, batch):
            t0 = clock_ns()
            for seq in range(at, min(count, at + batch)):
                aead.encrypt_into(nonce_of(salt, seq), view[:padded], aad, view[: padded + 16])
            yield clock_ns() - t0
        return
    mac_template = _mac_template(transform, auth_key)
    encryptor = _cbc(enc_key).encryptor()
    for at in range(0, count, batch):
        t0 = clock_ns()
        for _ in range(min(batch, count - at)):
            encryptor.update_into(view[: padded + 16], view[: padded + 31])
            mac = mac_template.copy()
            mac.update(view[: padded + 24])
            mac.finalize()
        yield clock_ns() - t0


# -- the tables: measure(...) -> an iterator of each timed batch's nanoseconds --------------------
DECRYPT = [  # measure(transform, wire, batch)
    Impl("tunring", decrypt_tunring),
    Impl("copy", decrypt_copy),
    Impl("cipher", decrypt_cipher),
]
ENCRYPT = [  # measure(transform, size, count, batch)
    Impl("tunring", encrypt_tunring),
    Impl("copy", encrypt_copy),
    Impl("cipher", encrypt_cipher),
]


def interleaved(table: list[Impl], case: str, size: int, count: int, measure_args: tuple) -> list[Result]:
    """One round of ``table``: the implementations take turns batch by batch, so load drift hits
    all alike; each row's time is the sum of its batches."""
    ready, rows = available(table, case, size)
    runs = [entry.measure(*measure_args) for entry in ready]
    totals = [0] * len(runs)
    for step in itertools.zip_longest(*runs, fillvalue=0):
        for i, elapsed_ns in enumerate(step):
            totals[i] += elapsed_ns
    timed = []
    for entry, total_ns in zip(ready, totals, strict=True):
        seconds = total_ns / 1e9
        timed.append(entry.result(case, size, count, seconds, us_per_packet=round(seconds / count * 1e6, 3)))
    return timed + rows


def run(args: argparse.Namespace) -> list[Result]:
    count = args.packets
    results: list[Result] = []
    for name in args.transform or list(DEFAULT_TRANSFORMS):
        transform = esp.TRANSFORMS[name]
        for size in args.sizes:
            wire = datagrams(transform, size, count)
            # Packets per timed batch: as many as half the ring holds, at most BATCH.
            batch = max(1, min(BATCH, CAPACITY // 2 // (size + SLOT_OVERHEAD_BYTES)))
            for case, table, measure_args in (
                (f"decrypt-into-ring/{ALIASES[name]}", DECRYPT, (transform, wire, batch)),
                (f"encrypt-in-place/{ALIASES[name]}", ENCRYPT, (transform, size, count, batch)),
            ):
                # Round 0 warms up and is not counted; then the best of --repeat rounds.
                results += best_of(args.repeat, partial(interleaved, table, case, size, count, measure_args),
                                   warmup=1)
    return results

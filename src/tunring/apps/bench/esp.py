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

from cryptography.hazmat.primitives import hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ... import layout as L
from ...adapter import Adapter
from ...proto import esp
from ...session import Session
from . import Result, result

SIZES = (64, 512, 1400)
DEFAULT_TRANSFORMS = ("aes-gcm-128", "aes-cbc-128-hmac-sha1-96")
# CPU time of this thread: time spent descheduled (the machine may be busy) does not count.
clock_ns = time.thread_time_ns
BATCH = 256  # packets per timed batch (fewer for big packets)
CAPACITY = 0x400000
SPI = 0x0100_0001
_U16 = struct.Struct(">H")
_SPI_SEQ = struct.Struct(">II")
ALIASES = {
    "aes-gcm-128": "gcm128", "aes-gcm-256": "gcm256",
    "aes-cbc-128-hmac-sha1-96": "cbc128sha1", "aes-cbc-256-hmac-sha1-96": "cbc256sha1",
    "aes-cbc-128-hmac-sha256-128": "cbc128sha256", "aes-cbc-256-hmac-sha256-128": "cbc256sha256",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packets", type=int, default=20000, help="packets per case and size (default 20000)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="inner packet sizes in bytes")
    parser.add_argument("--transform", action="append", choices=sorted(esp.TRANSFORMS),
                        help=f"ESP transform(s) to measure (default: {', '.join(DEFAULT_TRANSFORMS)})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")


def inner_packet(size: int) -> bytes:
    """An IPv4/UDP packet of ``size`` bytes (>= 28)."""
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, b"\n\0\0\1", b"\n\0\0\2")
    return header + struct.pack(">HHHH", 1, 2, size - 20, 0) + bytes(size - 28)


class Rig:
    """A session with ESP room and an in-process adapter over the same rings."""

    def __init__(self) -> None:
        size = L.ring_size(CAPACITY, esp.ESP_LEAD, esp.ESP_TRAIL)
        self.send_ring, self.receive_ring = bytearray(size), bytearray(size)
        for ring in (self.send_ring, self.receive_ring):
            ring[:] = bytes(size)  # touch every page now, not in the timed loops
        self.session = Session.over(self.send_ring, self.receive_ring, esp.ESP_LEAD, esp.ESP_TRAIL)
        self.adapter = Adapter.over(self.send_ring, self.receive_ring, esp.ESP_LEAD, esp.ESP_TRAIL)

    def drain(self) -> int:
        packets = self.adapter.receive_many(1 << 30)
        self.adapter.release_many(packets)
        return len(packets)


def keys(transform: esp.Transform) -> tuple[bytes, bytes]:
    return bytes(range(1, transform.key_bytes + 1)), bytes(range(100, 100 + transform.auth_key_bytes))


def datagrams(transform: esp.Transform, size: int, count: int) -> list[bytes]:
    """``count`` ESP datagrams of one inner size, sequence numbers 1..count, made by tunring."""
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key)
    rig = Rig()
    inner = inner_packet(size)
    out = []
    for _ in range(count):
        rig.adapter.deliver(inner)
        packet = rig.session.receive()
        out.append(bytes(sa.encrypt(packet)))
        rig.session.release(packet)
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
    rig = Rig()
    inbound = esp.SecurityAssociations(rig.session, [esp.SecurityAssociation(SPI, transform, enc_key, auth_key)],
                                       max_datagram_bytes=max(map(len, wire)))
    for at in range(0, len(wire), batch):
        feed = Feed(wire[at : at + batch])
        t0 = clock_ns()
        inbound.receive_from(feed.recv_into, batch)
        elapsed = clock_ns() - t0
        rig.drain()
        yield elapsed
    if inbound.stats.rx_packets != len(wire):
        raise RuntimeError(f"tunring delivered {inbound.stats.rx_packets} of {len(wire)}: {inbound.stats}")


def decrypt_copy(transform: esp.Transform, wire: list[bytes], batch: int) -> Iterator[int]:
    """The copying receive path: decrypt to bytes, check, allocate, copy in."""
    enc_key, auth_key = keys(transform)
    rig = Rig()
    session = rig.session
    window = esp.ReplayWindow()
    scratch = bytearray(max(map(len, wire)))
    header_bytes, icv_bytes = transform.header_bytes, transform.icv_bytes
    paddings = [bytes(range(1, pad + 1)) for pad in range(256)]
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        salt = enc_key[-4:]

        def open_(view, n, seq):
            return aead.decrypt(salt + view[8:16], view[16:n], view[:8])
    else:
        mac_template = hmac.HMAC(auth_key, transform.auth_hash())
        # The same long-lived context trick as tunring, so only the copies differ.
        decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).decryptor()

        def open_(view, n, seq):
            mac = mac_template.copy()
            mac.update(view[: n - icv_bytes])
            if not stdlib_hmac.compare_digest(mac.finalize()[:icv_bytes], view[n - icv_bytes : n]):
                return None
            return memoryview(decryptor.update(view[8 : n - icv_bytes]))[16:]

    view = memoryview(scratch)
    by_spi = {SPI: window}  # the same SPI lookup tunring does
    stats = esp.EspStats()
    for at in range(0, len(wire), batch):
        recv_into = Feed(wire[at : at + batch]).recv_into
        t0 = clock_ns()
        for _ in range(batch):
            try:
                n = recv_into(view)
            except BlockingIOError:
                break
            if n < 8:
                continue
            spi, seq = _SPI_SEQ.unpack_from(view)
            sa_window = by_spi.get(spi)
            if sa_window is None or n < header_bytes + icv_bytes + 2:
                continue
            plain = open_(view, n, seq)
            if plain is None:
                continue
            if sa_window.accept(seq):
                continue
            pad = plain[-2]
            payload = len(plain) - 2 - pad
            if payload < 0 or (pad and plain[payload:-2] != paddings[pad]):
                continue
            nh = plain[-1]
            if nh == 4:
                if payload < 20 or plain[0] >> 4 != 4:
                    continue
                length = _U16.unpack_from(plain, 2)[0]
                if not 20 <= length <= payload:
                    continue
            else:
                continue  # (the benchmark sends IPv4 only)
            session.write(memoryview(plain)[:length])  # allocate, copy, send
            stats.rx_packets += 1
            stats.rx_bytes += length
        elapsed = clock_ns() - t0
        rig.drain()
        yield elapsed
    delivered = stats.rx_packets
    if delivered != len(wire):
        raise RuntimeError(f"copy delivered {delivered} of {len(wire)}")


def decrypt_cipher(transform: esp.Transform, wire: list[bytes], batch: int) -> Iterator[int]:
    """The bare cipher work per packet, into a scratch buffer: the floor."""
    enc_key, auth_key = keys(transform)
    out_view = memoryview(bytearray(max(map(len, wire)) + 16))
    views = [memoryview(d) for d in wire]
    icv = transform.icv_bytes
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        nonces = [enc_key[-4:] + d[8:16] for d in wire]
        for at in range(0, len(wire), batch):
            pairs = list(zip(views[at : at + batch], nonces[at : at + batch]))
            t0 = clock_ns()
            for v, nonce in pairs:
                aead.decrypt_into(nonce, v[16:], v[:8], out_view[: len(v) - 32])
            yield clock_ns() - t0
        return
    mac_template = hmac.HMAC(auth_key, transform.auth_hash())
    decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).decryptor()
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
def encrypt_tunring(transform: esp.Transform, size: int, count: int, batch: int) -> Iterator[int]:
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key)
    rig = Rig()
    session, deliver = rig.session, rig.adapter.deliver
    inner = inner_packet(size)
    sent = 0
    for at in range(0, count, batch):
        n = min(batch, count - at)
        for _ in range(n):
            deliver(inner)
        t0 = clock_ns()
        packets = session.receive_many(n)
        for datagram in sa.encrypt_many(packets):
            sent += len(datagram)  # each view would go to sock.send() / sendmmsg
        session.release_many(packets)
        yield clock_ns() - t0
    if sa.seq != count:
        raise RuntimeError("tunring did not encrypt every packet")


def encrypt_copy(transform: esp.Transform, size: int, count: int, batch: int) -> Iterator[int]:
    """The copying transmit path: copy out, append trailer, encrypt to new bytes, join."""
    enc_key, auth_key = keys(transform)
    rig = Rig()
    session, deliver = rig.session, rig.adapter.deliver
    inner = inner_packet(size)
    block = transform.block_bytes
    trailers = [bytes(range(1, pad + 1)) + bytes((pad, 4)) for pad in range(block)]
    header = struct.Struct(">IIQ") if transform.aead else struct.Struct(">II")
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        nonce_of = struct.Struct(">4sQ").pack
        salt = enc_key[-4:]

        def seal(seq, plain):
            head = header.pack(SPI, seq, seq)
            return head + aead.encrypt(nonce_of(salt, seq), plain, head[:8])
    else:
        mac_template = hmac.HMAC(auth_key, transform.auth_hash())
        encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).encryptor()
        icv = transform.icv_bytes
        pool = os.urandom(16 * (count + 1))  # random first blocks, drawn up front as tunring's pool is

        def seal(seq, plain):
            # Random first block, as tunring does: its ciphertext is the IV.
            body = header.pack(SPI, seq) + encryptor.update(pool[seq * 16 : seq * 16 + 16] + plain)
            mac = mac_template.copy()
            mac.update(body)
            return body + mac.finalize()[:icv]

    seq = sent = 0
    for at in range(0, count, batch):
        n = min(batch, count - at)
        for _ in range(n):
            deliver(inner)
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
        aead = AESGCM(enc_key[:-4])
        nonce_of = struct.Struct(">4sQ").pack
        salt = enc_key[-4:]
        aad = bytes(8)
        for at in range(0, count, batch):
            t0 = clock_ns()
            for seq in range(at, min(count, at + batch)):
                aead.encrypt_into(nonce_of(salt, seq), view[:padded], aad, view[: padded + 16])
            yield clock_ns() - t0
        return
    mac_template = hmac.HMAC(auth_key, transform.auth_hash())
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).encryptor()
    for at in range(0, count, batch):
        t0 = clock_ns()
        for _ in range(min(batch, count - at)):
            encryptor.update_into(view[: padded + 16], view[: padded + 31])
            mac = mac_template.copy()
            mac.update(view[: padded + 24])
            mac.finalize()
        yield clock_ns() - t0


def measure(factories: dict[str, Callable[[], Iterator[int]]], repeat: int) -> dict[str, float]:
    """Best total seconds per impl; the impls take turns batch by batch, so load drift hits all alike."""
    best: dict[str, float] = {}
    for round_ in range(repeat + 1):  # round 0 warms up and is not counted
        totals = dict.fromkeys(factories, 0)
        runs = {impl: factory() for impl, factory in factories.items()}
        for step in itertools.zip_longest(*runs.values(), fillvalue=0):
            for impl, elapsed_ns in zip(runs, step):
                totals[impl] += elapsed_ns
        if round_:
            for impl, total in totals.items():
                best[impl] = min(best.get(impl, total / 1e9), total / 1e9)
    return best


def run(args: argparse.Namespace) -> list[Result]:
    sizes = [int(s) for s in str(args.sizes).split(",") if s]
    for size in sizes:
        if not 28 <= size <= 65000:
            raise SystemExit(f"--sizes: {size} is not a UDP/IPv4 packet size in 28..65000")
    names = args.transform or list(DEFAULT_TRANSFORMS)
    count = args.packets
    results: list[Result] = []
    for name in names:
        transform = esp.TRANSFORMS[name]
        for size in sizes:
            wire = datagrams(transform, size, count)
            # Packets per timed batch: as many as half the ring holds, at most BATCH.
            batch = max(1, min(BATCH, CAPACITY // 2 // (size + 128)))
            rows = [
                (f"decrypt-into-ring/{ALIASES[name]}", {
                    "tunring": lambda: decrypt_tunring(transform, wire, batch),
                    "copy": lambda: decrypt_copy(transform, wire, batch),
                    "cipher": lambda: decrypt_cipher(transform, wire, batch),
                }),
                (f"encrypt-in-place/{ALIASES[name]}", {
                    "tunring": lambda: encrypt_tunring(transform, size, count, batch),
                    "copy": lambda: encrypt_copy(transform, size, count, batch),
                    "cipher": lambda: encrypt_cipher(transform, size, count, batch),
                }),
            ]
            for case, factories in rows:
                for impl, seconds in measure(factories, args.repeat).items():
                    results.append(result(case, impl, size, count, seconds,
                                          us_per_packet=round(seconds / count * 1e6, 3)))
    return results

"""ESP in place: decrypt into the ring and encrypt around received packets, vs copying and the bare cipher.

Cases, for 64, 512 and 1400-byte inner IPv4 packets:

- ``decrypt-into-ring``: tunring (``SecurityAssociations.receive``: the datagram
  is written into an allocated slot, as ``recv_into`` would, authenticated,
  decrypted and shrunk in place) against ``copy`` (the datagram in a scratch
  buffer, decrypted to ``bytes``, trailer checked, a packet allocated and the
  inner packet copied in) and ``cipher`` (the bare cipher call(s) ESP needs per
  packet on the same sizes: the floor).
- ``encrypt-in-place``: tunring (``SecurityAssociation.encrypt`` on a packet
  from ``Session.receive``, released afterwards) against ``copy`` (the packet
  copied out to ``bytes``, trailer appended, encrypted to new ``bytes`` and joined
  with the header) and ``cipher``.

Both copying peers do the same ESP checks as tunring (replay window, padding,
inner length).  The adapter side (delivering packets to encrypt, draining
decrypted ones) runs between timed batches and is not counted.
"""

from __future__ import annotations

import argparse
import hmac as stdlib_hmac
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ... import layout as L
from ...adapter import Adapter
from ...proto import esp
from ...session import Session
from . import Result, result

SIZES = (64, 512, 1400)
DEFAULT_TRANSFORMS = ("aes-gcm-128", "aes-cbc-128-hmac-sha1-96")
BATCH = 256
SPI = 0x0100_0001
_U16 = struct.Struct(">H")


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
        capacity = 0x400000
        size = L.ring_size(capacity, esp.ESP_LEAD, esp.ESP_TRAIL)
        self.send_ring, self.receive_ring = bytearray(size), bytearray(size)
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
def decrypt_tunring(transform: esp.Transform, wire: list[bytes]) -> float:
    enc_key, auth_key = keys(transform)
    inbound = esp.SecurityAssociations([esp.SecurityAssociation(SPI, transform, enc_key, auth_key)])
    rig = Rig()
    session = rig.session
    allocate, view_of, receive = inbound.allocate, inbound.datagram_view, inbound.receive
    max_datagram = max(map(len, wire))
    elapsed = 0
    for at in range(0, len(wire), BATCH):
        batch = wire[at : at + BATCH]
        t0 = time.perf_counter_ns()
        for datagram in batch:
            packet = allocate(session, max_datagram)
            n = len(datagram)
            view_of(packet)[:n] = datagram  # stands in for sock.recv_into(view)
            receive(session, packet, n)
        elapsed += time.perf_counter_ns() - t0
        rig.drain()
    if inbound.stats.delivered_packets != len(wire):
        raise RuntimeError(f"tunring delivered {inbound.stats.delivered_packets} of {len(wire)}: {inbound.stats}")
    return elapsed / 1e9


def decrypt_copy(transform: esp.Transform, wire: list[bytes]) -> float:
    """The copying receive path: decrypt to bytes, check, allocate, copy in."""
    enc_key, auth_key = keys(transform)
    rig = Rig()
    session = rig.session
    window = esp.ReplayWindow()
    scratch = bytearray(max(map(len, wire)))
    icv_bytes = transform.icv_bytes
    pad_bytes = bytes(range(1, 256))
    delivered = 0
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        salt = enc_key[-4:]

        def open_(view, n, seq):
            return aead.decrypt(salt + view[8:16], view[16:n], view[:8])
    else:
        from cryptography.hazmat.primitives import hmac
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        mac_template = hmac.HMAC(auth_key, transform.auth_hash())
        # The same long-lived context trick as tunring, so only the copies differ.
        decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).decryptor()

        def open_(view, n, seq):
            mac = mac_template.copy()
            mac.update(view[: n - icv_bytes])
            if not stdlib_hmac.compare_digest(mac.finalize()[:icv_bytes], view[n - icv_bytes : n]):
                return None
            return memoryview(decryptor.update(view[8 : n - icv_bytes]))[16:]

    elapsed = 0
    view = memoryview(scratch)
    for at in range(0, len(wire), BATCH):
        batch = wire[at : at + BATCH]
        t0 = time.perf_counter_ns()
        for datagram in batch:
            n = len(datagram)
            view[:n] = datagram  # stands in for sock.recv_into(scratch)
            spi, seq = struct.unpack_from(">II", view)
            plain = open_(view, n, seq)
            if plain is None or window.accept(seq):
                continue
            pad = plain[-2]
            payload = len(plain) - 2 - pad
            if payload < 20 or plain[payload:-2] != pad_bytes[:pad] or plain[-1] != 4:
                continue
            length = _U16.unpack_from(plain, 2)[0]
            if length > payload:
                continue
            session.write(memoryview(plain)[:length])  # allocate, copy, send
            delivered += 1
        elapsed += time.perf_counter_ns() - t0
        rig.drain()
    if delivered != len(wire):
        raise RuntimeError(f"copy delivered {delivered} of {len(wire)}")
    return elapsed / 1e9


def decrypt_cipher(transform: esp.Transform, wire: list[bytes]) -> float:
    """The bare cipher work per packet, into a scratch buffer: the floor."""
    enc_key, auth_key = keys(transform)
    out = bytearray(max(map(len, wire)) + 16)
    out_view = memoryview(out)
    views = [memoryview(d) for d in wire]
    icv = transform.icv_bytes
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        nonces = [enc_key[-4:] + d[8:16] for d in wire]
        t0 = time.perf_counter_ns()
        for v, nonce in zip(views, nonces):
            aead.decrypt_into(nonce, v[16:], v[:8], out_view[: len(v) - 32])
        return (time.perf_counter_ns() - t0) / 1e9
    from cryptography.hazmat.primitives import hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    mac_template = hmac.HMAC(auth_key, transform.auth_hash())
    decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).decryptor()
    t0 = time.perf_counter_ns()
    for v in views:
        n = len(v) - icv
        mac = mac_template.copy()
        mac.update(v[:n])
        stdlib_hmac.compare_digest(mac.finalize()[:icv], v[n:])
        decryptor.update_into(v[8:n], out_view[: n - 8 + 15])
    return (time.perf_counter_ns() - t0) / 1e9


# -- encrypt ------------------------------------------------------------------
def encrypt_tunring(transform: esp.Transform, size: int, count: int) -> float:
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(SPI, transform, enc_key, auth_key)
    rig = Rig()
    session, deliver = rig.session, rig.adapter.deliver
    receive, release, encrypt = session.receive, session.release, sa.encrypt
    inner = inner_packet(size)
    elapsed = 0
    sent = 0
    for at in range(0, count, BATCH):
        n = min(BATCH, count - at)
        for _ in range(n):
            deliver(inner)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            packet = receive()
            sent += len(encrypt(packet))  # the view would go to sock.send()
            release(packet)
        elapsed += time.perf_counter_ns() - t0
    if sa.seq != count:
        raise RuntimeError("tunring did not encrypt every packet")
    return elapsed / 1e9


def encrypt_copy(transform: esp.Transform, size: int, count: int) -> float:
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
        import os

        from cryptography.hazmat.primitives import hmac
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        mac_template = hmac.HMAC(auth_key, transform.auth_hash())
        encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).encryptor()
        icv = transform.icv_bytes

        def seal(seq, plain):
            # Random first block, as tunring does: its ciphertext is the IV.
            body = header.pack(SPI, seq) + encryptor.update(os.urandom(16) + plain)
            mac = mac_template.copy()
            mac.update(body)
            return body + mac.finalize()[:icv]

    elapsed = 0
    seq = 0
    for at in range(0, count, BATCH):
        n = min(BATCH, count - at)
        for _ in range(n):
            deliver(inner)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            packet = session.receive()
            plain = bytes(packet.data)
            session.release(packet)
            seq += 1
            datagram = seal(seq, plain + trailers[-(len(plain) + 2) % block])
        elapsed += time.perf_counter_ns() - t0
        del datagram
    return elapsed / 1e9


def encrypt_cipher(transform: esp.Transform, size: int, count: int) -> float:
    enc_key, auth_key = keys(transform)
    padded = size + 2 + (-(size + 2) % transform.block_bytes)
    buf = bytearray(padded + 64)
    view = memoryview(buf)
    if transform.aead:
        aead = AESGCM(enc_key[:-4])
        nonce_of = struct.Struct(">4sQ").pack
        salt = enc_key[-4:]
        aad = bytes(8)
        t0 = time.perf_counter_ns()
        for seq in range(count):
            aead.encrypt_into(nonce_of(salt, seq), view[:padded], aad, view[: padded + 16])
        return (time.perf_counter_ns() - t0) / 1e9
    from cryptography.hazmat.primitives import hmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    mac_template = hmac.HMAC(auth_key, transform.auth_hash())
    encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes(16))).encryptor()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        encryptor.update_into(view[: padded + 16], view[: padded + 31])
        mac = mac_template.copy()
        mac.update(view[: padded + 24])
        mac.finalize()
    return (time.perf_counter_ns() - t0) / 1e9


def run(args: argparse.Namespace) -> list[Result]:
    sizes = [int(s) for s in str(args.sizes).split(",") if s]
    for size in sizes:
        if not 28 <= size <= 65000:
            raise SystemExit(f"--sizes: {size} is not a UDP/IPv4 packet size in 28..65000")
    names = args.transform or list(DEFAULT_TRANSFORMS)
    results: list[Result] = []
    for name in names:
        transform = esp.TRANSFORMS[name]
        for size in sizes:
            wire = datagrams(transform, size, args.packets)
            case = f"decrypt-into-ring/{name}"
            best: dict[str, float] = {}
            for _ in range(args.repeat):  # interleaved, so drift hits every impl alike
                for impl, fn in (("tunring", decrypt_tunring), ("copy", decrypt_copy), ("cipher", decrypt_cipher)):
                    seconds = fn(transform, wire)
                    best[impl] = min(best.get(impl, seconds), seconds)
            results += [result(case, impl, size, args.packets, s, us_per_packet=round(s / args.packets * 1e6, 3))
                        for impl, s in best.items()]
            case = f"encrypt-in-place/{name}"
            best = {}
            for _ in range(args.repeat):
                for impl, fn in (("tunring", encrypt_tunring), ("copy", encrypt_copy), ("cipher", encrypt_cipher)):
                    seconds = fn(transform, size, args.packets)
                    best[impl] = min(best.get(impl, seconds), seconds)
            results += [result(case, impl, size, args.packets, s, us_per_packet=round(s / args.packets * 1e6, 3))
                        for impl, s in best.items()]
    return results

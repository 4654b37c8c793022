"""Zero-copy proof for ESP.

- Received datagrams are decrypted where they were read and delivered from
  that very slot; sent packets are encrypted in the slot the OS wrote them into
  (same addresses, checked with ctypes).
- No copy of the payload is made: tracemalloc sees no Python allocation near
  the payload's size, and an LD_PRELOAD malloc counter (in a subprocess,
  compiled from the C below) sees no C-level allocation of that size either,
  so neither our code nor ``cryptography``/OpenSSL/Rust copies the payload.
  A deliberate copy in the counted region shows the counter would catch one.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:
    from esp_support import ipv4, ipv6, keys, ring_pair, seal, trailer
except ImportError:  # tests/proto became a package
    from .esp_support import ipv4, ipv6, keys, ring_pair, seal, trailer

from tunring.proto import esp

BIG = 60000  # payload bytes: far above any buffer the code needs for itself


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.mark.parametrize("name", sorted(esp.TRANSFORMS))
def test_received_packets_are_delivered_from_the_slot_they_were_read_into(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    with ring_pair() as (session, adapter):
        sa = esp.SecurityAssociation(0x500, transform, enc_key, auth_key)
        inbound = esp.SecurityAssociations(session, [sa], max_datagram_bytes=2000)
        for seq, inner in enumerate([ipv4(100), ipv6(1300), ipv4(0)], start=1):
            datagram = seal(transform, enc_key, auth_key, 0x500, seq, trailer(inner, 4 if seq != 2 else 41,
                                                                               transform.block_bytes))
            view = inbound.want()
            packet = inbound.packet
            view[: len(datagram)] = datagram  # what recv_into does
            slot_data = address(packet.buf[packet.start : packet.start + 1])
            assert address(view) + transform.header_bytes == slot_data  # the header lands in the headroom
            assert inbound.received(len(datagram)) == []
            delivered = adapter.receive()
            assert address(delivered.buf[delivered.start : delivered.start + 1]) == slot_data
            assert bytes(delivered.data) == inner
            adapter.release(delivered)
        assert inbound.stats.rx_copies == inbound.stats.rx_copy_bytes == 0


@pytest.mark.parametrize("name", sorted(esp.TRANSFORMS))
def test_sent_packets_are_encrypted_in_the_slot_the_os_wrote_them_into(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(0x600, transform, enc_key, auth_key)
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(0x600, transform, enc_key, auth_key)])
        for inner in (ipv4(100), ipv6(1300)):
            adapter.deliver(inner)
            packet = session.receive()
            slot_data = address(packet.buf[packet.start : packet.start + 1])
            datagram = sa.encrypt(packet)
            assert address(datagram) == slot_data - transform.header_bytes
            assert bytes(datagram[transform.header_bytes : transform.header_bytes + 20]) != inner[:20]  # ciphertext
            copy = bytes(datagram)
            session.release(packet)
            assert inbound.feed(copy) == []  # and it is real ESP
            delivered = adapter.receive()
            assert bytes(delivered.data) == inner
            adapter.release(delivered)


def copying_decrypt(transform: esp.Transform, enc_key: bytes, datagram: bytes) -> bytes:
    """The plaintext the ordinary way, into new bytes: a path that copies, for the control."""
    h, icv = transform.header_bytes, transform.icv_bytes
    if transform.aead:
        return AESGCM(enc_key[:-4]).decrypt(enc_key[-4:] + datagram[8:16], datagram[16:], datagram[:8])
    decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(datagram[8:24])).decryptor()
    return decryptor.update(datagram[h : len(datagram) - icv]) + decryptor.finalize()


def traced_peak(call):
    """(result, peak bytes Python allocated during ``call()``)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", sorted(esp.TRANSFORMS))
def test_no_python_level_copy_of_the_payload(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(0x700, transform, enc_key, auth_key)
    inner = ipv4(BIG)
    with ring_pair(capacity=0x40000) as (session, adapter):
        inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(0x700, transform, enc_key, auth_key)],
                                           max_datagram_bytes=BIG + 200)
        for _round in (1, 2):  # the first round warms caches; the second is measured
            adapter.deliver(inner)
            sent = session.receive()
            datagram, encrypt_peak = traced_peak(lambda sent=sent: sa.encrypt(sent))
            wire = bytes(datagram)
            view = inbound.want()
            view[: len(wire)] = wire  # the transport's write
            session.release(sent)
            events, receive_peak = traced_peak(lambda wire=wire: inbound.received(len(wire)))
            assert events == []
            delivered = adapter.receive()
            assert bytes(delivered.data) == inner
            adapter.release(delivered)
            # The control: the same measurement sees a path that copies the payload.
            plain, copy_peak = traced_peak(lambda wire=wire: copying_decrypt(transform, enc_key, wire))
            assert plain.startswith(inner)
    assert encrypt_peak < 4096, f"encrypt allocated {encrypt_peak} bytes for a {BIG}-byte payload"
    assert receive_peak < 4096, f"receive allocated {receive_peak} bytes for a {BIG}-byte payload"
    assert copy_peak >= BIG, f"a copying decrypt allocated only {copy_peak} bytes: the measurement is void"
    assert inbound.stats.rx_copies == inbound.stats.rx_copy_bytes == 0


class RecordingSocket:
    """recv_into that notes the address of every view it fills (where the 'kernel' writes)."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.datagrams = list(datagrams)
        self.targets: list[int] = []

    def recv_into(self, view: memoryview) -> int:
        if not self.datagrams:
            raise BlockingIOError
        datagram = self.datagrams.pop(0)
        self.targets.append(address(view))
        view[: len(datagram)] = datagram
        return len(datagram)


@pytest.mark.parametrize("name", ["aes-gcm-128", "aes-cbc-128-hmac-sha1-96"])
def test_batch_receive_delivers_each_packet_where_it_was_read(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    inners = [ipv4(40 * i, ident=i) for i in range(6)]
    sock = RecordingSocket([seal(transform, enc_key, auth_key, 0x900, i + 1, trailer(p, 4, transform.block_bytes))
                            for i, p in enumerate(inners)])
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(0x900, transform, enc_key, auth_key)])
        assert inbound.receive_from(sock.recv_into) == (len(inners), [])
        for target, inner in zip(sock.targets, inners, strict=True):
            delivered = adapter.receive()
            assert address(delivered.buf[delivered.start : delivered.start + 1]) == target + transform.header_bytes
            assert bytes(delivered.data) == inner
            adapter.release(delivered)
    assert inbound.stats.rx_copies == inbound.stats.rx_copy_bytes == 0


def test_feed_counts_its_copy():
    """feed() copies the datagram into a packet: counted once per datagram, with its bytes."""
    transform = esp.AES_GCM_128
    enc_key, auth_key = keys(transform)
    wire = [bytearray(seal(transform, enc_key, auth_key, 0xA00, i + 1, trailer(ipv4(10 * i), 4, 4)))
            for i in range(3)]
    bad = bytearray(b"\x00\x00\x0b\x00" + bytes(30))  # no such SA
    with ring_pair() as (session, adapter):
        inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(0xA00, transform, enc_key, auth_key)])
        for datagram in wire:
            assert inbound.feed(datagram) == []
        assert [e.reason for e in inbound.feed(bad)] == [esp.UNKNOWN_SPI]  # dropped, but copied all the same
        delivered = adapter.receive_many(10)
        # The packets are not in the caller's buffers: they were copied, and the counter must say so.
        for p, datagram in zip(delivered, wire, strict=True):
            at, lo = address(p.buf[p.start : p.start + 1]), address(memoryview(datagram))
            assert not lo <= at < lo + len(datagram)
            assert bytes(p.data) == ipv4(10 * wire.index(datagram))
        adapter.release_many(delivered)
    assert inbound.stats.rx_copies == 4
    assert inbound.stats.rx_copy_bytes == sum(map(len, wire)) + len(bad)


# A malloc interposer: counts allocations of at least a threshold while switched on.
COUNTER_C = r"""
#include <stddef.h>
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
static volatile int on;
static size_t threshold, count;
void zc_start(size_t t) { threshold = t; count = 0; on = 1; }
size_t zc_stop(void) { on = 0; return count; }
static void note(size_t n) { if (on && n >= threshold) count++; }
void *malloc(size_t n) { note(n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(n); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { note(n); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { note(n); return __libc_memalign(a, n); }
int posix_memalign(void **r, size_t a, size_t n) { note(n); *r = __libc_memalign(a, n); return *r ? 0 : 12; }
"""

TRACED_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    sys.path.insert(0, sys.argv[1])
    from esp_support import ipv4, keys, ring_pair
    from tunring.proto import esp

    counter = ctypes.CDLL(sys.argv[3])
    counter.zc_stop.restype = ctypes.c_size_t
    BIG = int(sys.argv[2])
    for name in sorted(esp.TRANSFORMS):
        t = esp.TRANSFORMS[name]
        k, a = keys(t)
        sa = esp.SecurityAssociation(0x800, t, k, a)
        inner = ipv4(BIG)
        with ring_pair(capacity=0x40000) as (session, adapter):
            inbound = esp.SecurityAssociations(session, [esp.SecurityAssociation(0x800, t, k, a)],
                                               max_datagram_bytes=BIG + 200)
            for round in range(3):
                adapter.deliver(inner)
                sent = session.receive()
                view = inbound.want()
                counter.zc_start(ctypes.c_size_t(BIG // 2))
                datagram = sa.encrypt(sent)
                view[: len(datagram)] = datagram
                events = inbound.received(len(datagram))
                copies = counter.zc_stop()
                counter.zc_start(ctypes.c_size_t(BIG // 2))
                control = bytes(datagram)  # a deliberate copy: the counter must see it
                seen = counter.zc_stop()
                session.release(sent)
                assert events == [], (events, inbound.stats)
                delivered = adapter.receive()
                assert bytes(delivered.data) == inner
                adapter.release(delivered)
                print(name, round, copies, seen)
    """
)


def test_no_c_level_copy_of_the_payload(tmp_path):
    """An LD_PRELOAD malloc counter sees every allocation, inside OpenSSL and Rust too."""
    library = tmp_path / "zc_counter.so"
    source = tmp_path / "zc_counter.c"
    source.write_text(COUNTER_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", "-o", str(library), str(source)], check=True)
    script = tmp_path / "traced.py"
    script.write_text(TRACED_SCRIPT)
    env = dict(os.environ, LD_PRELOAD=str(library), PYTHONMALLOC="malloc")
    run = subprocess.run([sys.executable, str(script), os.path.dirname(__file__), str(BIG), str(library)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    assert len(rows) == 3 * len(esp.TRANSFORMS)
    for name, round_, copies, seen in rows:
        assert int(seen) >= 1, f"{name}: the counter missed a deliberate copy; the proof is void"
        if round_ != "0":  # round 0 may set up caches
            assert int(copies) == 0, f"{name} round {round_}: {copies} payload-sized allocations"

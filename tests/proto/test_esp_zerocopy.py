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
    inbound = esp.SecurityAssociations([esp.SecurityAssociation(0x500, transform, enc_key, auth_key)])
    with ring_pair() as (session, adapter):
        for seq, inner in enumerate([ipv4(100), ipv6(1300), ipv4(0)], start=1):
            datagram = seal(transform, enc_key, auth_key, 0x500, seq, trailer(inner, 4 if seq != 2 else 41,
                                                                               transform.block_bytes))
            packet = inbound.allocate(session, 2000)
            view = inbound.datagram_view(packet)
            view[: len(datagram)] = datagram  # what recv_into does
            slot_data = address(packet.buf[packet.start : packet.start + 1])
            assert address(view) + transform.header_bytes == slot_data  # the header lands in the headroom
            assert inbound.receive(session, packet, len(datagram)) == esp.DELIVERED
            delivered = adapter.receive()
            assert address(delivered.buf[delivered.start : delivered.start + 1]) == slot_data
            assert bytes(delivered.data) == inner
            adapter.release(delivered)


@pytest.mark.parametrize("name", sorted(esp.TRANSFORMS))
def test_sent_packets_are_encrypted_in_the_slot_the_os_wrote_them_into(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(0x600, transform, enc_key, auth_key)
    inbound = esp.SecurityAssociations([esp.SecurityAssociation(0x600, transform, enc_key, auth_key)])
    with ring_pair() as (session, adapter):
        for inner in (ipv4(100), ipv6(1300)):
            adapter.deliver(inner)
            packet = session.receive()
            slot_data = address(packet.buf[packet.start : packet.start + 1])
            datagram = sa.encrypt(packet)
            assert address(datagram) == slot_data - transform.header_bytes
            assert bytes(datagram[transform.header_bytes : transform.header_bytes + 20]) != inner[:20]  # ciphertext
            copy = bytes(datagram)
            session.release(packet)
            assert inbound.receive_datagram(session, copy) == esp.DELIVERED  # and it is real ESP
            delivered = adapter.receive()
            assert bytes(delivered.data) == inner
            adapter.release(delivered)


@pytest.mark.parametrize("name", sorted(esp.TRANSFORMS))
def test_no_python_level_copy_of_the_payload(name):
    transform = esp.TRANSFORMS[name]
    enc_key, auth_key = keys(transform)
    sa = esp.SecurityAssociation(0x700, transform, enc_key, auth_key)
    inbound = esp.SecurityAssociations([esp.SecurityAssociation(0x700, transform, enc_key, auth_key)])
    inner = ipv4(BIG)
    with ring_pair(capacity=0x40000) as (session, adapter):
        for seq in (1, 2):  # the first round warms caches; the second is measured
            adapter.deliver(inner)
            sent = session.receive()
            tracemalloc.start()
            datagram = sa.encrypt(sent)
            encrypt_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            packet = inbound.allocate(session, len(datagram))
            view = inbound.datagram_view(packet)
            view[: len(datagram)] = datagram  # the transport's write
            session.release(sent)
            tracemalloc.start()
            status = inbound.receive(session, packet, len(datagram))
            receive_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert status == esp.DELIVERED
            delivered = adapter.receive()
            assert bytes(delivered.data) == inner
            adapter.release(delivered)
    assert encrypt_peak < 4096, f"encrypt allocated {encrypt_peak} bytes for a {BIG}-byte payload"
    assert receive_peak < 4096, f"receive allocated {receive_peak} bytes for a {BIG}-byte payload"


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
        inbound = esp.SecurityAssociations([esp.SecurityAssociation(0x800, t, k, a)])
        inner = ipv4(BIG)
        with ring_pair(capacity=0x40000) as (session, adapter):
            for round in range(3):
                adapter.deliver(inner)
                sent = session.receive()
                packet = inbound.allocate(session, BIG + 200)
                view = inbound.datagram_view(packet)
                counter.zc_start(ctypes.c_size_t(BIG // 2))
                datagram = sa.encrypt(sent)
                view[: len(datagram)] = datagram
                status = inbound.receive(session, packet, len(datagram))
                copies = counter.zc_stop()
                counter.zc_start(ctypes.c_size_t(BIG // 2))
                control = bytes(datagram)  # a deliberate copy: the counter must see it
                seen = counter.zc_stop()
                session.release(sent)
                assert status == esp.DELIVERED, inbound.stats
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

"""Micro-measurements of the sans-I/O primitives (HDLC, compression); not a test, nothing asserted.

Run: .venv/bin/python scripts/measure_proto.py [--seconds 0.2]
HDLC figures are MB/s of *unescaped* (PPP frame) bytes, so they compare across ACCMs; all are per
CPU second of this process (see timeit below).
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from tunring.proto import compress
from tunring.proto import rfc1662 as hdlc

PPP_IPV4 = b"\xff\x03\x00\x21"
READ_BYTES = 16384


def tcp_packet(rng: random.Random, size: int) -> bytes:
    """An IPv4/TCP packet of ``size`` bytes: plausible headers, random payload."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, rng.getrandbits(16), 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    tcp = struct.pack(">HHIIBBHHH", 443, 51514, rng.getrandbits(32), rng.getrandbits(32), 0x50, 0x18, 502, 0, 0)
    return ip + tcp + rng.randbytes(size - 40)


def timeit(fn, seconds: float, rounds: int = 5) -> float:
    """Calls per CPU second of fn(): the best of ``rounds`` runs of about ``seconds`` each.

    CPU time of this process (not wall-clock time) and the best round, because the machine is
    shared: other work delays a wall-clock measurement however long it runs.
    """
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.process_time()
        while True:
            fn()
            n += 1
            el = time.process_time() - t0
            if el >= seconds:
                break
        best = max(best, n / el)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.2)
    args = ap.parse_args()
    rng = random.Random(1)
    frames = [PPP_IPV4 + tcp_packet(rng, 1400) for _ in range(64)]
    total = sum(len(f) for f in frames)
    for accm in (0, hdlc.ACCM_ALL):
        wire = []
        for f in frames:
            dst = memoryview(bytearray(hdlc.max_encoded_size(len(f))))
            wire.append(bytes(dst[: hdlc.encode_frame(f, dst, accm, leading_flag=False)][:-1]))
        bufs = [bytearray(w) for w in wire]
        views = [memoryview(b) for b in bufs]

        def decode_all():
            for b, v, w in zip(bufs, views, wire):
                b[:] = w  # restore the escaped bytes (decode works in place): a memcpy, counted in
                hdlc.decode_frame(v)

        def encode_all(dst=memoryview(bytearray(hdlc.max_encoded_size(1404)))):
            for f in frames:
                hdlc.encode_frame(f, dst, accm)

        stream = b"\x7e" + b"\x7e".join(wire) + b"\x7e"
        # The stream as a TLS client would read it: 16 KiB at a time, frames cut anywhere.
        chunks = [bytearray(stream[i : i + READ_BYTES]) for i in range(0, len(stream), READ_BYTES)]

        def split_decode():
            sp = hdlc.HdlcSplitter()
            for chunk, data in zip(chunks, chunk_data):
                chunk[:] = data  # restore (decode works in place)
                mv = memoryview(chunk)
                carried, spans = sp.feed(mv)
                if carried is not None:
                    hdlc.decode_frame(memoryview(carried))
                for s, e in spans:
                    hdlc.decode_frame(mv[s:e])

        chunk_data = [bytes(c) for c in chunks]

        esc = sum(len(w) for w in wire) - total
        print(f"tx ACCM {accm:#010x}: {esc / len(frames):.0f} escapes per 1404-byte frame")
        print(f"  decode_frame (un-HDLC + FCS check)        {timeit(decode_all, args.seconds) * total / 1e6:8.0f} MB/s")
        print(f"  16 KiB reads: HdlcSplitter + decode_frame {timeit(split_decode, args.seconds) * total / 1e6:8.0f} MB/s")
        print(f"  encode_frame                              {timeit(encode_all, args.seconds) * total / 1e6:8.0f} MB/s")
    measure_compression(rng, args.seconds)


def measure_compression(rng: random.Random, seconds: float) -> None:
    words = [b"GET", b"/index.html", b"HTTP/1.1", b"Host:", b"example.com", b"Accept:", b"text/html",
             b"\r\n", b"gzip", b"keep-alive", b"Cookie:", b"0123456789"]

    def text() -> bytes:
        return b" ".join(rng.choice(words) for _ in range(400))[:1400]

    makers = {"text": text, "random": lambda: rng.randbytes(1400), "zeros": lambda: bytes(1400)}
    dst = memoryview(bytearray(16384))
    print("compression of 1400-byte packets (MB/s of uncompressed data; ratio = compressed/original)")
    for name in compress.NAMES:
        for kind, make in makers.items():
            packets = [make() for _ in range(32)]
            if name == "deflate":
                # One stream per direction: a record only decompresses after the ones before it,
                # so time a fresh decompressor over the whole sequence, several times.
                tx = compress.compressor(name)
                records = [tx.compress(p) for p in packets]

                def run(records=records):
                    rx = compress.decompressor(name)
                    for r in records:
                        rx.decompress_into(r, dst)

                def pack(packets=packets):
                    tx = compress.compressor(name)
                    for p in packets:
                        tx.compress(p)
            else:
                tx = compress.compressor(name)
                rx = compress.decompressor(name)
                records = [tx.compress(p) for p in packets]

                def run(records=records, rx=rx):
                    for r in records:
                        rx.decompress_into(r, dst)

                def pack(packets=packets, tx=tx):
                    for p in packets:
                        tx.compress(p)

            total = sum(map(len, packets))
            ratio = sum(map(len, records)) / total
            dps = timeit(run, seconds, rounds=3)
            cps = timeit(pack, seconds, rounds=2)
            print(f"  {name:8s} {kind:7s} ratio {ratio:5.2f}  "
                  f"decompress {dps * total / 1e6:8.1f}  compress {cps * total / 1e6:8.1f}")


if __name__ == "__main__":
    main()

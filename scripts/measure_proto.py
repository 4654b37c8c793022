"""Micro-measurements of the sans-I/O primitives (HDLC, compression); not a test, nothing asserted.

Run: .venv/bin/python scripts/measure_proto.py [--seconds 0.5]
Prints MB/s of *unescaped* (PPP frame) bytes, so figures compare across ACCMs.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import time
import zlib

from tunring.proto import hdlc

try:
    from tunring.proto import compress
except ImportError:  # measured once it exists
    compress = None

PPP_IPV4 = b"\xff\x03\x00\x21"


def tcp_packet(rng: random.Random, size: int) -> bytes:
    """An IPv4/TCP packet of ``size`` bytes: plausible headers, random payload."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, size, rng.getrandbits(16), 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    tcp = struct.pack(">HHIIBBHHH", 443, 51514, rng.getrandbits(32), rng.getrandbits(32), 0x50, 0x18, 502, 0, 0)
    return ip + tcp + rng.randbytes(size - 40)


def timeit(fn, seconds: float, rounds: int = 5) -> float:
    """Calls per second of fn(): the best of ``rounds`` runs of about ``seconds`` each.

    The best round, because the machine is shared: other work only ever slows a round down.
    """
    best = 0.0
    for _ in range(rounds):
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(20):
                fn()
            n += 20
            el = time.perf_counter() - t0
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

        def split_decode():
            sp = hdlc.HdlcSplitter()
            buf = bytearray(stream)
            mv = memoryview(buf)
            carried, spans = sp.feed(mv)
            for s, e in spans:
                hdlc.decode_frame(mv[s:e])

        esc = sum(len(w) for w in wire) - total
        print(f"tx ACCM {accm:#010x}: {esc / len(frames):.0f} escapes per 1404-byte frame")
        print(f"  decode_frame (un-HDLC + FCS) {timeit(decode_all, args.seconds) * total / 1e6:8.0f} MB/s")
        print(f"  splitter + decode_frame      {timeit(split_decode, args.seconds) * total / 1e6:8.0f} MB/s")
        print(f"  encode_frame                 {timeit(encode_all, args.seconds) * total / 1e6:8.0f} MB/s")
    if hasattr(compress, "decompressor"):
        measure_compression(rng, args.seconds)


def measure_compression(rng: random.Random, seconds: float) -> None:
    words = [b"GET", b"/index.html", b"HTTP/1.1", b"Host:", b"example.com", b"Accept:", b"text/html",
             b"\r\n", b"gzip", b"keep-alive", b"Cookie:", b"0123456789"]
    text = b" ".join(rng.choice(words) for _ in range(400))[:1400]
    cases = {"text": text, "random": rng.randbytes(1400), "zeros": bytes(1400)}
    dst = memoryview(bytearray(16384))
    print("compression of 1400-byte packets (MB/s of uncompressed data)")
    for name in compress.NAMES:
        for kind, data in cases.items():
            if name == "deflate":
                # One stream per direction: each decompression needs the record that follows.
                tx = compress.compressor(name)
                records = [tx.compress(data) for _ in range(2000)]
                size = len(records[-1])
                rx = compress.decompressor(name)
                it = iter(records)
                t0 = time.perf_counter()
                for _ in range(2000):
                    rx.decompress_into(next(it), dst)
                dps = 2000 / (time.perf_counter() - t0)
                tx = compress.compressor(name)
            else:
                tx = compress.compressor(name)
                rx = compress.decompressor(name)
                record = tx.compress(data)
                size = len(record)
                dps = timeit(lambda: rx.decompress_into(record, dst), seconds)
            cps = timeit(lambda: tx.compress(data), seconds, rounds=2)
            print(f"  {name:8s} {kind:7s} ratio {size / len(data):5.2f}  "
                  f"decompress {dps * len(data) / 1e6:8.1f}  compress {cps * len(data) / 1e6:8.1f}")


if __name__ == "__main__":
    main()

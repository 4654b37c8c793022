"""Micro-measurements of the sans-I/O primitives (HDLC, compression), pure Python against the
native core in the same run; not a test, nothing asserted.

Run: .venv/bin/python scripts/measure_proto.py [--seconds 0.2]
HDLC figures are MB/s of *unescaped* (PPP frame) bytes, so they compare across ACCMs; all are per
CPU second of this process (see timeit below).  Both implementations are fresh copies of the same
modules (tunring._impl.native set to None or to tunring._native), whatever TUNRING_PURE says.
"""

from __future__ import annotations

import argparse
import importlib
import random
import struct
import time
from types import ModuleType

from tunring import _impl

PPP_IPV4 = b"\xff\x03\x00\x21"
READ_BYTES = 16384


def implementations() -> dict[str, tuple[ModuleType, ModuleType]]:
    """{"pure": (rfc1662, compress), "native": (...)}; native only where the core is built."""
    impls = {}
    try:
        native: ModuleType | None = importlib.import_module("tunring._native")
    except ImportError as err:
        print(f"(no native rows: {err})")
        native = None
    for name, core in (("pure", None), ("native", native)):
        if name == "pure" or core is not None:
            impls[name] = tuple(_impl.load_with(f"tunring.proto.{m}", core) for m in ("rfc1662", "compress"))
    return impls


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


def header(impls: dict) -> None:
    print(f"  {'':44s}" + "".join(f"{i:>9s}" for i in impls) + ("  native/pure" if "native" in impls else ""))


def row(label: str, rates: dict[str, float], unit_bytes: int) -> None:
    """One line: MB/s per implementation and native/pure."""
    mbs = {impl: rate * unit_bytes / 1e6 for impl, rate in rates.items()}
    ratio = f"{mbs['native'] / mbs['pure']:7.1f}x" if "native" in mbs else ""
    print(f"  {label:44s}" + "".join(f"{mbs[i]:9.0f}" for i in mbs) + ratio)


def hdlc_cases(hdlc: ModuleType, frames: list[bytes], accm: int) -> dict:
    """The three HDLC measurements for one implementation: callables over the same frames."""
    wire = []
    for f in frames:
        dst = memoryview(bytearray(hdlc.max_encoded_size(len(f))))
        wire.append(bytes(dst[: hdlc.encode_frame(f, dst, accm, leading_flag=False)][:-1]))
    bufs = [bytearray(w) for w in wire]
    views = [memoryview(b) for b in bufs]
    stream = b"\x7e" + b"\x7e".join(wire) + b"\x7e"
    # The stream as a TLS client would read it: 16 KiB at a time, frames cut anywhere.
    chunks = [bytearray(stream[i : i + READ_BYTES]) for i in range(0, len(stream), READ_BYTES)]
    chunk_data = [bytes(c) for c in chunks]
    out = memoryview(bytearray(hdlc.max_encoded_size(1404)))

    def restore_only():
        for b, w in zip(bufs, wire, strict=True):
            b[:] = w

    def decode_all():
        for b, v, w in zip(bufs, views, wire, strict=True):
            b[:] = w  # restore the escaped bytes (decode works in place): a memcpy, see restore_only
            hdlc.decode_frame(v)

    def split_decode():
        sp = hdlc.HdlcSplitter()
        for chunk, data in zip(chunks, chunk_data, strict=True):
            chunk[:] = data  # restore (decode works in place)
            mv = memoryview(chunk)
            carried, spans = sp.feed(mv)
            if carried is not None:
                hdlc.decode_frame(memoryview(carried))
            for s, e in spans:
                hdlc.decode_frame(mv[s:e])

    def encode_all():
        for f in frames:
            hdlc.encode_frame(f, out, accm)

    return {"escapes": sum(len(w) for w in wire) - sum(map(len, frames)), "restore": restore_only,
            "decode": decode_all, "split": split_decode, "encode": encode_all}


def measure_hdlc(impls: dict, rng: random.Random, seconds: float) -> None:
    frames = [PPP_IPV4 + tcp_packet(rng, 1400) for _ in range(64)]
    total = sum(len(f) for f in frames)
    print("HDLC, 64 frames of 1404 bytes (MB/s of PPP bytes)")
    header(impls)
    for accm in (0, 0xFFFFFFFF):
        cases = {impl: hdlc_cases(mods[0], frames, accm) for impl, mods in impls.items()}
        print(f"tx ACCM {accm:#010x}: {cases['pure']['escapes'] / len(frames):.0f} escapes per frame")
        for key, label in (("decode", "decode_frame (restore + un-HDLC + FCS check)"),
                           ("restore", "  of which the restore (a memcpy per frame)"),
                           ("split", "16 KiB reads: HdlcSplitter + decode_frame"), ("encode", "encode_frame")):
            row(label, {impl: timeit(case[key], seconds) for impl, case in cases.items()}, total)


def measure_compression(impls: dict, rng: random.Random, seconds: float) -> None:
    words = [b"GET", b"/index.html", b"HTTP/1.1", b"Host:", b"example.com", b"Accept:", b"text/html",
             b"\r\n", b"gzip", b"keep-alive", b"Cookie:", b"0123456789"]

    def text() -> bytes:
        return b" ".join(rng.choice(words) for _ in range(400))[:1400]

    makers = {"text": text, "random": lambda: rng.randbytes(1400), "zeros": lambda: bytes(1400)}
    dst = memoryview(bytearray(16384))
    print("compression of 1400-byte packets into a 16 KiB dst (MB/s of uncompressed data)")
    header(impls)
    names = next(iter(impls.values()))[1].NAMES
    for name in names:
        for kind, make in makers.items():
            packets = [make() for _ in range(32)]
            total = sum(map(len, packets))
            records = _records(impls["pure"][1], name, packets)
            ratio = sum(map(len, records)) / total
            unpack, pack = {}, {}
            for impl, (_, compress) in impls.items():
                unpack[impl] = timeit(_decompress_all(compress, name, records, dst), seconds, rounds=3)
                pack[impl] = timeit(_compress_all(compress, name, packets), seconds, rounds=2)
            row(f"{name} {kind} (ratio {ratio:4.2f}) decompress", unpack, total)
            row(f"{name} {kind} (ratio {ratio:4.2f}) compress", pack, total)


def _records(compress: ModuleType, name: str, packets: list[bytes]) -> list[bytes]:
    tx = compress.compressor(name)  # one stream for deflate: records only decompress in order
    return [tx.compress(p) for p in packets]


def _decompress_all(compress: ModuleType, name: str, records: list[bytes], dst: memoryview):
    def run():
        rx = compress.decompressor(name)  # fresh: deflate's stream starts over each time
        for r in records:
            rx.decompress_into(r, dst)
    return run


def _compress_all(compress: ModuleType, name: str, packets: list[bytes]):
    def run():
        tx = compress.compressor(name)
        for p in packets:
            tx.compress(p)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=0.2)
    args = ap.parse_args()
    impls = implementations()
    rng = random.Random(1)
    measure_hdlc(impls, rng, args.seconds)
    measure_compression(impls, rng, args.seconds)


if __name__ == "__main__":
    main()

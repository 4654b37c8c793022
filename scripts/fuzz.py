"""Coverage-guided fuzzing of the native core: libFuzzer, AddressSanitizer, UndefinedBehaviorSanitizer.

One target per native routine that reads wire bytes (fuzz/*.c).  Each is built with clang
against the plain-C kernels of src/tunring/native (no Python), seeded with valid inputs made
by the pure-Python modules, run for a budget of executions or seconds, and its saved crashes
(fuzz/regressions/TARGET/*) replayed first.  Exit status 1 on any finding.

    python scripts/fuzz.py [--runs N | --seconds S] [--out DIR] [--fork K] [TARGET ...]

`make fuzz` runs them all (FUZZ_SECONDS=60 each by default, or FUZZ_RUNS=N); the test suite
runs a short pass (tests/test_native_fuzz.py).  Debian packages: clang, libclang-rt-dev.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import lz4.block

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
KERNELS = ROOT / "src" / "tunring" / "native"
SOURCES = ["hdlc.c", "lzs.c", "inflate.c"]
CFLAGS = ["-g", "-O2", "-std=c11", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Werror",
          "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all", f"-I{KERNELS}"]
MAX_LEN = 9000  # bytes per input: past the HDLC kernel's 4 KiB scratch pieces, room for bombs
STAT = re.compile(r"stat::(number_of_executed_units|average_exec_per_sec|new_units_added):\s*(\d+)")


def targets() -> list[str]:
    return sorted(p.stem for p in FUZZ.glob("*.c"))


def build(target: str, out: Path) -> Path:
    binary = out / target
    sources = [FUZZ / f"{target}.c", *(KERNELS / s for s in SOURCES)]
    newest = max(p.stat().st_mtime for p in [*sources, *FUZZ.glob("*.h"), *KERNELS.glob("*.h")])
    if not binary.exists() or binary.stat().st_mtime < newest:
        subprocess.run(["clang", *CFLAGS, *map(str, sources), "-llz4", "-lz", "-o", str(binary)], check=True)
    return binary


# ---- seeds: valid inputs in each target's input format, made by the pure-Python reference --------


def _pure():
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["TUNRING_PURE"] = "1"
    from tunring.proto import compress, rfc1662

    return rfc1662, compress


def _packets(rnd: random.Random) -> list[bytes]:
    text = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"
    return [b"", b"\x45", bytes(40), rnd.randbytes(60), rnd.randbytes(1400), text * 4,
            bytes(range(256)) * 3, b"\x7e\x7d\x00\x1f\x20" * 30, (rnd.randbytes(9) * 200)[:1500]]


def seeds(target: str) -> list[bytes]:
    hdlc, compress = _pure()
    rnd = random.Random(target)
    packets = _packets(rnd)

    def escaped(frame: bytes, accm: int, leading: bool = False) -> bytes:
        dst = memoryview(bytearray(hdlc.max_encoded_size(len(frame))))
        return bytes(dst[: hdlc.encode_frame(frame, dst, accm, leading_flag=leading)])

    cap = (16384).to_bytes(2, "big")
    if target == "hdlc_decode":
        return [bytes([m]) + (b"\x00\x0a\x00\x00" if m == 2 else b"") + escaped(p, a)[:-1]
                for p in packets for m, a in ((0, 0), (1, hdlc.ACCM_ALL), (2, 0x000A0000))]
    if target == "hdlc_encode":
        return [bytes([flags]) + p for p in packets for flags in (0, 1, 2, 3)]
    if target == "hdlc_scan":
        return [b"\x03" + b"junk" + b"".join(escaped(p, 0, True) for p in packets[:5]), b"\x00\x7e\x7e\x7e"]
    if target == "lzs_decompress":
        return [cap + compress.lzs_compress(p) for p in packets] + [b"\x00\x10" + compress.lzs_compress(bytes(100))]
    if target == "lzs_compress":
        return packets
    if target == "lz4_decompress":
        return [b"\x00" + cap + lz4.block.compress(p, store_size=False) for p in packets] + \
               [b"\x01" + cap + p for p in packets]
    if target == "cstp_inflate":
        tx, out, adler = zlib.compressobj(6, zlib.DEFLATED, -12), bytearray(b"\x00"), 1
        for p in packets:
            adler = zlib.adler32(p, adler)
            record = tx.compress(p) + tx.flush(zlib.Z_SYNC_FLUSH) + adler.to_bytes(4, "big")
            out += cap + len(record).to_bytes(2, "big") + record
        return [bytes(out), b"\x01\x20" + packets[4]]
    raise ValueError(f"no seeds for {target}")


# ---- running --------------------------------------------------------------------------------------


def replay(binary: Path, target: str) -> bool:
    """Run the saved crashes of `target`; True if all pass now."""
    cases = sorted((FUZZ / "regressions" / target).glob("*"))  # fuzz/regressions/README says what each is
    if not cases:
        return True
    proc = subprocess.run([str(binary), *map(str, cases)], capture_output=True, text=True)
    if proc.returncode:
        print(f"{target}: a saved regression fails again\n{proc.stderr[-3000:]}", file=sys.stderr)
    return proc.returncode == 0


def fuzz(binary: Path, target: str, out: Path, budget: list[str], fork: int) -> tuple[bool, dict[str, int]]:
    corpus, seed_dir, findings = (out / d / target for d in ("corpus", "seeds", "findings"))
    for d in (corpus, seed_dir, findings):
        d.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seeds(target)):
        (seed_dir / f"seed{i:03d}").write_bytes(data)
    args = [str(binary), *budget, f"-max_len={MAX_LEN}", "-print_final_stats=1", "-timeout=20",
            "-rss_limit_mb=2048", f"-artifact_prefix={findings}/", str(corpus), str(seed_dir)]
    if fork:
        args.insert(1, f"-fork={fork}")
    proc = subprocess.run(["nice", "-n", "10", *args], capture_output=True, text=True)
    stats = {k: int(v) for k, v in STAT.findall(proc.stderr)}
    if fork:  # the fork driver reports "#N ... DONE" lines instead of per-process stats
        done = re.findall(r"#(\d+):.*DONE", proc.stderr) or re.findall(r"#(\d+)\s", proc.stderr)
        stats.setdefault("number_of_executed_units", int(done[-1]) if done else 0)
    found = sorted(findings.glob("*"))
    if proc.returncode or found:
        print(f"{target}: FINDING (exit {proc.returncode}): {[str(f) for f in found]}\n{proc.stderr[-4000:]}",
              file=sys.stderr)
        return False, stats
    return True, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="executions per target")
    budget.add_argument("--seconds", type=int, help="seconds per target (default 60)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz", help="binaries, corpora, findings")
    ap.add_argument("--fork", type=int, default=0, help="libFuzzer -fork=K worker processes per target")
    ap.add_argument("targets", nargs="*", help=f"default: all of {', '.join(targets())}")
    args = ap.parse_args(argv)
    if not shutil.which("clang"):
        print("fuzz: clang is missing (Debian: clang libclang-rt-dev; `sh scripts/bootstrap test`)", file=sys.stderr)
        return 2
    unknown = set(args.targets) - set(targets())
    if unknown:
        print(f"fuzz: unknown targets {sorted(unknown)}; known: {', '.join(targets())}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    limit = [f"-runs={args.runs}"] if args.runs else [f"-max_total_time={args.seconds or 60}"]
    ok = True
    print(f"{'target':16s} {'executions':>12s} {'exec/s':>8s} {'new units':>9s}  result")
    for target in args.targets or targets():
        try:
            binary = build(target, args.out)
        except subprocess.CalledProcessError:
            print(f"fuzz: {target} does not build (clang's messages above)", file=sys.stderr)
            return 1
        passed = replay(binary, target)
        good, stats = fuzz(binary, target, args.out, limit, args.fork)
        passed &= good
        ok &= passed
        print(f"{target:16s} {stats.get('number_of_executed_units', 0):12d} "
              f"{stats.get('average_exec_per_sec', 0):8d} {stats.get('new_units_added', 0):9d}  "
              f"{'ok' if passed else 'FINDING'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

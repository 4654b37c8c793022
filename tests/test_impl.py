"""tunring._impl decides once which path is active and says why; TUNRING_PURE=1 forces the pure
modules; a missing or stale native core falls back with one warning; tunring --version tells."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tunring import __version__, _impl

IN_CI = os.environ.get("CI", "").lower() == "true"
BUILT = importlib.util.find_spec("tunring._native") is not None
MISSING = "import sys; sys.modules['tunring._native'] = None  # an import that fails, as after a failed build\n"
STALE = "import sys, types; m = types.ModuleType('tunring._native'); m.ABI = -1; sys.modules['tunring._native'] = m\n"
REPORT = """
import json, types
from tunring import _impl
from tunring.proto import compress, rfc1662
import tunring.proto  # every framing module, as an application imports them
funcs = {"decode_frame": rfc1662.decode_frame, "encode_frame": rfc1662.encode_frame, "fcs16": rfc1662.fcs16,
         "scan": rfc1662.scan, "lzs_decompress_into": compress.lzs_decompress_into,
         "lzs_compress": compress.lzs_compress, "lz4_decompress_into": compress.lz4_decompress_into,
         "lzs_class": compress.LzsDecompressor.decompress_into,
         "deflate": compress.decompressor("deflate").decompress_into}
def origin(f):
    f = getattr(f, "func", f)  # rfc1662.scan is a partial over the native function
    owner = getattr(f, "__self__", None)
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return type(owner).__module__ if owner is not None else f.__module__
native = {name: origin(f) == "tunring._native" for name, f in funcs.items()}
python = {name: origin(f).startswith("tunring.proto.") for name, f in funcs.items()}
buf = bytearray(b"\\x21\\x7d\\x5e\\x41\\x42"); ok = True
try:
    rfc1662.decode_frame(memoryview(buf))
except Exception as err:
    ok = type(err).__name__ == "FramingError"
print(json.dumps({"describe": _impl.describe(), "native": native, "python": python, "works": ok}))
"""


def test_this_run_is_on_the_path_it_asked_for():
    # make test runs the suite twice; the second time (TUNRING_PURE=1) must really be pure.
    if os.environ.get("TUNRING_PURE", "") not in ("", "0"):
        assert _impl.native is None and _impl.describe().startswith("pure Python: TUNRING_PURE=")
    else:
        assert (_impl.native is not None) == BUILT


def run(code: str, pure: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNRING_PURE"}
    if pure is not None:
        env["TUNRING_PURE"] = pure
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def report(prefix: str = "", pure: str | None = None) -> tuple[dict, str]:
    proc = run(prefix + REPORT, pure)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.path_independent  # a subprocess with its own TUNRING_PURE
def test_tunring_pure_gives_the_pure_functions_without_a_warning():
    got, stderr = report(pure="1")
    assert got["describe"] == "pure Python: TUNRING_PURE=1"
    assert all(got["python"].values()) and not any(got["native"].values())
    assert got["works"] and "Warning" not in stderr


@pytest.mark.path_independent  # a subprocess with its own TUNRING_PURE
def test_default_gives_the_native_functions_when_built():
    assert BUILT or not IN_CI, "CI builds the native core (liblz4-dev, zlib1g-dev from scripts/bootstrap)"
    for pure in (None, "0"):
        got, stderr = report(pure=pure)
        if BUILT:
            assert got["describe"] == "native core"
            assert all(got["native"].values()) and not any(got["python"].values()), got
        else:
            assert got["describe"].startswith("pure Python: the native core did not build")
        assert got["works"]


@pytest.mark.path_independent  # a subprocess with its own TUNRING_PURE
def test_a_core_that_did_not_build_means_pure_python_and_one_warning():
    got, stderr = report(MISSING)
    assert got["describe"].startswith("pure Python: the native core did not build: ")
    assert all(got["python"].values()) and got["works"]
    assert stderr.count("RuntimeWarning") == 1 and "pure-Python path" in stderr


@pytest.mark.path_independent  # a subprocess with its own TUNRING_PURE
def test_a_stale_core_is_not_used():
    got, stderr = report(STALE)
    assert "stale" in got["describe"] and all(got["python"].values())
    assert stderr.count("RuntimeWarning") == 1


@pytest.mark.path_independent  # a subprocess with its own TUNRING_PURE
def test_version_says_which_path_is_active():
    version = "from tunring.cli import main; main(['--version'])"
    proc = run(version, pure="1")
    assert proc.returncode == 0 and proc.stdout == f"tunring {__version__} (pure Python: TUNRING_PURE=1)\n"
    proc = run(MISSING + version)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"tunring {__version__} (pure Python: the native core did not build: ")
    if BUILT:
        proc = run(version)
        assert proc.returncode == 0 and proc.stdout == f"tunring {__version__} (native core)\n"

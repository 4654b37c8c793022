"""Both implementations of a module side by side, whatever path this run selected (PEP 399).

``pair(name)`` executes two fresh copies of a tunring module (``tunring._impl.load_with``), one
on the pure-Python reference and one on the native core, so the differential tests hold one
beside the other in every run, ``TUNRING_PURE=1`` or not.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

from tunring import _impl

try:
    NATIVE: ModuleType | None = importlib.import_module("tunring._native")
except ImportError as err:  # under CI=true the skip below is a failure: CI must build the core
    NATIVE, WHY_NOT = None, str(err)
else:
    WHY_NOT = ""


def pair(name: str) -> tuple[ModuleType, ModuleType]:
    """(pure, native) copies of module ``name``; skips (a failure under CI) without the core."""
    if NATIVE is None:
        pytest.skip(f"the native core is not built: {WHY_NOT}", allow_module_level=True)
    return _impl.load_with(name, None), _impl.load_with(name, NATIVE)


def outcome(fn, *args, **kwargs):
    """What a call did: ("ok", result) or (exception type, message)."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the point is to compare whatever happened
        return type(err), str(err)


def while_scribbled(region: memoryview, call, rounds: int = 3):
    """``call()`` while another thread keeps rewriting bytes of ``region``, as a peer sharing the
    memory could; returns the outcomes.  The native core releases the GIL for big inputs, so the
    writes land in the middle of its work."""
    import random
    import threading

    stop = threading.Event()

    def scribble():
        rnd = random.Random(0)
        n = len(region)
        while not stop.is_set():
            for _ in range(256):
                region[rnd.randrange(n)] = rnd.choice((0x7D, 0x7E, 0x00, 0xFF, rnd.randrange(256)))

    thread = threading.Thread(target=scribble)
    thread.start()
    try:
        return [outcome(call) for _ in range(rounds)]
    finally:
        stop.set()
        thread.join()


def released_the_gil(call) -> bool:
    """Whether another Python thread ran while ``call()`` was running.  With a switch interval
    of half a second the interpreter hands the GIL over only when the holder releases it, so a
    tick inside the call means the call released it."""
    import sys
    import threading
    import time

    ticks: list[float] = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)  # hand the GIL straight back: the caller never waits out the interval

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    thread = threading.Thread(target=tick)
    thread.start()
    try:
        time.sleep(0.01)  # the ticker starts; we get the GIL back when its interval is up
        start = time.perf_counter()
        call()
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    return any(start < t < end for t in ticks)

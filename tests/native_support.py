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

"""Both implementations of a module side by side, whatever path this run selected (PEP 399).

``load(name, native)`` executes a fresh copy of a tunring module with ``tunring._impl.native``
set to ``native``: None gives the pure-Python reference, the ``tunring._native`` module gives
the module as it runs on the native core.  So the differential tests hold one beside the other
in every run, ``TUNRING_PURE=1`` or not.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from unittest import mock

import pytest

from tunring import _impl

try:
    NATIVE: ModuleType | None = importlib.import_module("tunring._native")
except ImportError as err:  # under CI=true the skip below is a failure: CI must build the core
    NATIVE, WHY_NOT = None, str(err)
else:
    WHY_NOT = ""


def load(name: str, native: ModuleType | None) -> ModuleType:
    """A fresh copy of module ``name`` (not registered in sys.modules) on the given path."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with mock.patch.object(_impl, "native", native):
        spec.loader.exec_module(module)
    return module


def pair(name: str) -> tuple[ModuleType, ModuleType]:
    """(pure, native) copies of module ``name``; skips (a failure under CI) without the core."""
    if NATIVE is None:
        pytest.skip(f"the native core is not built: {WHY_NOT}")
    return load(name, None), load(name, NATIVE)


def outcome(fn, *args, **kwargs):
    """What a call did: ("ok", result) or (exception type, message)."""
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the point is to compare whatever happened
        return type(err), str(err)

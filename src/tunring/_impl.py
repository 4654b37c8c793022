"""Which implementation of the hot loops is active: the native core or the pure-Python modules.

Decided once, at the first import.  The pure-Python modules (``proto.rfc1662``,
``proto.compress``) are the specification and the fallback; where ``tunring._native`` is built
and current, the names at the bottom of those modules are rebound to its C functions, which
give the same results and raise the same errors (PEP 399: the tests run against both).
``TUNRING_PURE=1`` forces the pure modules.  If the native core is missing or stale, tunring
warns once and runs the pure modules.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

NATIVE_ABI = 1  # what this Python expects of tunring._native (its ABI constant)


def _select() -> tuple[ModuleType | None, str]:
    forced = os.environ.get("TUNRING_PURE", "")
    if forced not in ("", "0"):
        return None, f"TUNRING_PURE={forced}"
    try:
        from . import _native  # type: ignore[attr-defined]  # a C extension, optional: may not exist
    except ImportError as err:
        return None, f"the native core did not build: {err}"
    if getattr(_native, "ABI", None) != NATIVE_ABI:
        return None, f"the native core is stale (ABI {getattr(_native, 'ABI', None)}, want {NATIVE_ABI}): rebuild it"
    return _native, ""


native, reason = _select()
if native is None and not reason.startswith("TUNRING_PURE"):
    warnings.warn(f"tunring runs its pure-Python path: {reason}", RuntimeWarning, stacklevel=2)


def describe() -> str:
    """Which path is active, for ``tunring --version``: "native core" or "pure Python: <why>"."""
    return "native core" if native is not None else f"pure Python: {reason}"


def load_with(name: str, core: ModuleType | None) -> ModuleType:
    """A fresh copy of module ``name`` running on ``core`` (None: the pure-Python reference).

    Not registered in sys.modules and not affecting the active path: for the tests and
    measurements that hold both implementations side by side (CPython's import_fresh_module).
    """
    global native
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(name)
    module = importlib.util.module_from_spec(spec)
    active, native = native, core
    try:
        spec.loader.exec_module(module)
    finally:
        native = active
    return module

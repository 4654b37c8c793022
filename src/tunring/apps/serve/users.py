"""The users file: ocserv's ``ocpasswd`` format, ``user:group:crypt-hash`` per line.

Hashes are checked with the standard library's :mod:`crypt` (deprecated since Python 3.11 and
removed in 3.13; it is the one interface to the system's crypt(3), which knows every hash
``ocpasswd`` writes: SHA-512 crypt ``$6$`` by default).  A line whose hash starts with ``!`` is a
locked account (``ocpasswd -l``).  The file is read once, at start.
"""

from __future__ import annotations

import hmac
import warnings
from dataclasses import dataclass

from ...errors import TunringError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt
    except ImportError:  # Python 3.13+: no crypt module
        _crypt = None  # type: ignore[assignment]


class UsersFileError(TunringError, ValueError):
    """The users file cannot be read or has a line that is not ``user:group:hash``."""


@dataclass(frozen=True)
class User:
    name: str
    group: str
    hash: str


def load_users(path: str) -> dict[str, User]:
    """Parse ``path``; raises UsersFileError naming the first bad line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsersFileError(f"cannot read the users file {path}: {e.strerror}") from None
    users: dict[str, User] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise UsersFileError(f"{path}:{number}: expected user:group:crypt-hash (as ocpasswd writes)")
        users[parts[0]] = User(*parts)
    if _crypt is None:
        raise UsersFileError("this Python has no crypt module (removed in 3.13): cannot check ocpasswd hashes")
    return users


def check_password(users: dict[str, User], name: str, password: str) -> bool:
    """True if ``name`` exists, is not locked, and ``password`` matches its hash."""
    user = users.get(name)
    if user is None or user.hash.startswith("!") or _crypt is None:
        return False
    computed = _crypt.crypt(password, user.hash)
    return computed is not None and hmac.compare_digest(computed, user.hash)

"""tunring's exceptions: one small hierarchy, so callers can catch broadly or precisely."""

from __future__ import annotations


class TunringError(Exception):
    """Base class of every error tunring raises on purpose."""


class RingError(TunringError):
    """Something about a ring (full, closed, corrupt)."""


class RingFull(RingError):
    """No room in the ring for the slot asked for; nothing was allocated.

    Wait for the peer to consume (``wait_writable``) and try again, or drop.
    """


class RingClosed(RingError):
    """The peer has stopped, died, or marked the ring dead; the session is over."""


class RingCorrupt(RingError):
    """The shared state is inconsistent (a hostile or broken peer).

    The ring has been marked dead (Head/Tail = 0xFFFFFFFF) and is unusable.
    """


class PacketError(TunringError, ValueError):
    """A packet was used against the rules (wrong state, moved data, too big)."""


class FramingError(TunringError, ValueError):
    """A record on the wire does not follow its protocol's framing.

    ``reason`` is the bare message; ``offset`` is where the bad record starts (the stream
    offset, or a datagram's index), None when the error is not tied to a place in a stream.
    """

    def __init__(self, reason: str, offset: int | None = None) -> None:
        super().__init__(reason if offset is None else f"{reason} (at stream offset {offset})")
        self.reason = reason
        self.offset = offset


class AuthError(TunringError):
    """A record failed its integrity check."""


class ReplayError(AuthError):
    """A record's sequence number was already seen or is too old."""


class DeviceError(TunringError, OSError):
    """A kernel interface could not be opened or configured."""


class SequenceOverflow(TunringError):
    """An ESP security association has used up its sequence numbers (RFC 4303 3.3.3).

    The SA refuses to send more packets instead of wrapping: negotiate a new SA
    (rekey) and send on that one.
    """

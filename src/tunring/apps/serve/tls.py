"""TLS over a non-blocking socket through memory BIOs: records batched into few system calls.

With an ``ssl.SSLSocket`` every record costs its own ``send``/``recv`` system calls (two reads per
record without read-ahead), and a VPN sends one record per packet.  :class:`TlsStream` drives an
``ssl.SSLObject`` instead: ciphertext is moved between the socket and the object's BIOs in large
chunks (one ``recv`` brings many records, one ``send`` carries every record encrypted since the
last flush), while plaintext is still decrypted straight into the caller's buffer
(``recv_into``) and encrypted straight from it (``write``): no plaintext copy either way.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque

RECV_BYTES = 65536  # ciphertext per recv: a few dozen full-size records
MAX_UNSENT_BYTES = 4 << 20  # ciphertext waiting for the socket beyond this: the caller drops


class TlsStream:
    """Server side of one TLS connection; see the module docstring."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_side=True)
        self._unsent: deque[bytes] = deque()
        self.unsent_bytes = 0
        self.eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    # -- handshake and reading ------------------------------------------------------------
    def handshake(self) -> bool:
        """Advance the handshake; True once it is done.  Raises ssl.SSLError on a bad one."""
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                if not self._fill():
                    return False
                continue
            self.flush()
            return True

    def _fill(self) -> bool:
        """Move what the socket has into the BIO; False if it had nothing (sets ``eof`` at the end)."""
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            self.eof = True
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    def recv_into(self, view) -> int:
        """Decrypt the next record's bytes into ``view``: their number, 0 at the end of the stream.
        Raises ssl.SSLWantReadError when nothing is to be had without waiting."""
        for _ in range(2):
            try:
                return self.tls.read(len(view), view)  # type: ignore[return-value]  # an int, given a buffer
            except ssl.SSLWantReadError:
                if self.eof or not self._fill():
                    if self.eof:
                        return 0
                    raise
            except ssl.SSLZeroReturnError:
                return 0
        raise ssl.SSLWantReadError()

    def recv(self, size: int) -> bytes:
        buf = bytearray(size)
        n = self.recv_into(memoryview(buf))
        return bytes(buf[:n])

    def pending(self) -> bool:
        """True if records may be decrypted without waiting for the socket."""
        return self.tls.pending() > 0 or self._in.pending > 0

    # -- writing --------------------------------------------------------------------------
    def write(self, data) -> None:
        """Encrypt ``data`` (one record per call, up to 16 KiB) into the outgoing buffer; call
        :meth:`flush` to send.  Never blocks."""
        self.tls.write(data)

    def flush(self) -> bool:
        """Send what is encrypted; True if nothing is left waiting for the socket."""
        pending = self._out.pending
        if pending:
            chunk = self._out.read()
            self._unsent.append(chunk)
            self.unsent_bytes += len(chunk)
        unsent = self._unsent
        while unsent:
            chunk = unsent[0]
            try:
                n = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                return False
            self.unsent_bytes -= n
            if n < len(chunk):
                unsent[0] = chunk[n:]
                return False
            unsent.popleft()
        return True

    @property
    def backed_up(self) -> bool:
        """Too much ciphertext waits for the socket: stop producing (drop) until it drains."""
        return self.unsent_bytes + self._out.pending > MAX_UNSENT_BYTES

    @property
    def wants_write(self) -> bool:
        return bool(self._unsent) or self._out.pending > 0

    def close(self) -> None:
        try:
            self.tls.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        self.flush_quietly()
        self.sock.close()

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except OSError:
            pass

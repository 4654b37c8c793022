"""What Python's ssl module cannot do, from the same libssl through ctypes: the exporter, read-ahead, DTLS.

AnyConnect's PSK-NEGOTIATE derives the DTLS key from the TLS connection that
carried CONNECT (RFC 5705 exporter, label ``EXPORTER-openconnect-psk``), and
CPython's ssl has no exporter (cpython issue #82133) and no DTLS.  CPython's
``_ssl`` is linked against the system libssl, so this module loads that same
library and reaches the ``SSL *`` of a live ``ssl.SSLSocket``: its C object
keeps the pointer right after the weak reference to the socket.  The pointer
is only trusted once libssl confirms it (``SSL_get_fd`` is the socket's
descriptor and ``SSL_get_version`` names the version Python reports); anything
else raises :class:`Unavailable` and the client stays on CSTP.

:class:`DtlsChannel` is a DTLS 1.2 client with a PSK over a connected UDP
socket (libssl's datagram BIO): handshake, ``recv_into`` straight into packet
memory, ``send`` from packet memory.  No C is compiled for any of this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import socket
import ssl
import struct
import sys
import time

log = logging.getLogger(__name__)

PSK_LABEL = b"EXPORTER-openconnect-psk"
PSK_BYTES = 32
PSK_IDENTITY = b"psk"  # ocserv ignores it
DTLS1_2_VERSION = 0xFEFD
SSL_CTRL_SET_READ_AHEAD = 41
SSL_CTRL_SET_MIN_PROTO_VERSION = 123
SSL_CTRL_SET_MAX_PROTO_VERSION = 124
SSL_CTRL_OPTIONS = 32
SSL_CTRL_SET_MTU = 17
SSL_OP_NO_QUERY_MTU = 1 << 12
DTLS_CTRL_GET_TIMEOUT = 73
DTLS_CTRL_HANDLE_TIMEOUT = 74
BIO_CTRL_DGRAM_SET_CONNECTED = 32
BIO_NOCLOSE = 0
SSL_ERROR_SSL, SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE, SSL_ERROR_SYSCALL, SSL_ERROR_ZERO_RETURN = 1, 2, 3, 5, 6
# The PSK suites offered, strongest first (ocserv/GnuTLS speaks AES-GCM with PSK).
PSK_CIPHERS = b"PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256"
HANDSHAKE_TIMEOUT_S = 12.0  # openconnect's
DTLS_RECORD_OVERHEAD = 13 + 8 + 16  # header, explicit nonce, GCM tag
# CPython's PySSLSocket: PyObject_HEAD (refcount, type), then PyObject *Socket, then SSL *ssl.
_SSL_POINTER_OFFSET = 2 * ctypes.sizeof(ctypes.c_void_p) + ctypes.sizeof(ctypes.c_void_p)


class Unavailable(Exception):
    """This libssl or this Python cannot do it: carry on without (CSTP only, no read-ahead)."""


class DtlsError(Exception):
    """The DTLS channel failed (handshake, a fatal alert, a socket error)."""


_PSK_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_uint)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def _declare(lib) -> None:
    vp, i, ul, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_ulong, ctypes.c_size_t
    for name, res, args in (
        ("SSL_get_fd", i, [vp]), ("SSL_get_version", ctypes.c_char_p, [vp]),
        ("SSL_export_keying_material", i, [vp, vp, sz, ctypes.c_char_p, sz, vp, sz, i]),
        ("SSL_ctrl", ctypes.c_long, [vp, i, ctypes.c_long, vp]),
        ("SSL_CTX_ctrl", ctypes.c_long, [vp, i, ctypes.c_long, vp]),
        ("DTLS_client_method", vp, []), ("SSL_CTX_new", vp, [vp]), ("SSL_CTX_free", None, [vp]),
        ("SSL_CTX_set_cipher_list", i, [vp, ctypes.c_char_p]),
        ("SSL_CTX_set_psk_client_callback", None, [vp, _PSK_CALLBACK]),
        ("SSL_new", vp, [vp]), ("SSL_free", None, [vp]), ("SSL_set_bio", None, [vp, vp, vp]),
        ("BIO_new_dgram", vp, [i, i]), ("BIO_ctrl", ctypes.c_long, [vp, i, ctypes.c_long, vp]),
        ("SSL_connect", i, [vp]), ("SSL_get_error", i, [vp, i]), ("SSL_shutdown", i, [vp]),
        ("SSL_read", i, [vp, vp, i]), ("SSL_write", i, [vp, vp, i]),
        ("SSL_SESSION_new", vp, []), ("SSL_SESSION_free", None, [vp]),
        ("SSL_SESSION_set1_id", i, [vp, ctypes.c_char_p, ctypes.c_uint]),
        ("SSL_SESSION_set1_master_key", i, [vp, ctypes.c_char_p, sz]),
        ("SSL_SESSION_set_protocol_version", i, [vp, i]),
        ("SSL_SESSION_set_cipher", i, [vp, vp]), ("SSL_set_session", i, [vp, vp]),
        ("SSL_CIPHER_find", vp, [vp, ctypes.c_char_p]),
        ("SSL_get_current_cipher", vp, [vp]), ("SSL_CIPHER_get_name", ctypes.c_char_p, [vp]),
        ("ERR_get_error", ul, []), ("ERR_error_string_n", None, [ul, ctypes.c_char_p, sz]),
    ):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args


_lib = None


def libssl():
    """The libssl CPython's ssl module uses (loaded once); Unavailable if it cannot be found."""
    global _lib
    if _lib is None:
        import _ssl

        path = ctypes.util.find_library("ssl")
        if sys.platform != "linux" or path is None:
            raise Unavailable("no libssl found for ctypes")
        lib = ctypes.CDLL(path, use_errno=True)
        try:
            _declare(lib)
        except AttributeError as e:
            raise Unavailable(f"{path} lacks {e}") from None
        if not _ssl.OPENSSL_VERSION.startswith("OpenSSL 3") and not _ssl.OPENSSL_VERSION.startswith("OpenSSL 1.1"):
            raise Unavailable(f"Python's ssl uses {_ssl.OPENSSL_VERSION}")
        _lib = lib
    return _lib


def _errors(lib) -> str:
    out = []
    while code := lib.ERR_get_error():
        buf = ctypes.create_string_buffer(256)
        lib.ERR_error_string_n(code, buf, len(buf))
        out.append(buf.value.decode(errors="replace"))
    return "; ".join(out) or "no details"


def ssl_pointer(tls: ssl.SSLSocket) -> int:
    """The ``SSL *`` behind ``tls``, confirmed by libssl; Unavailable if it cannot be confirmed."""
    lib = libssl()
    sslobj = getattr(tls, "_sslobj", None)
    if sslobj is None or type(sslobj).__name__ != "_SSLSocket":
        raise Unavailable("the TLS socket has no OpenSSL object to reach")
    pointer = ctypes.c_void_p.from_address(id(sslobj) + _SSL_POINTER_OFFSET).value
    if not pointer or lib.SSL_get_fd(pointer) != tls.fileno() or \
            (lib.SSL_get_version(pointer) or b"").decode() != tls.version():
        raise Unavailable("this Python's ssl objects are not laid out as expected")
    return pointer


def export_psk(tls: ssl.SSLSocket) -> bytes:
    """PSK-NEGOTIATE's key: 32 bytes exported from the TLS session (RFC 5705, no context)."""
    lib = libssl()
    out = ctypes.create_string_buffer(PSK_BYTES)
    if lib.SSL_export_keying_material(ssl_pointer(tls), out, PSK_BYTES, PSK_LABEL, len(PSK_LABEL), None, 0, 0) != 1:
        raise Unavailable(f"exporting keying material failed: {_errors(lib)}")
    return out.raw


def enable_read_ahead(tls: ssl.SSLSocket) -> bool:
    """Let OpenSSL read several TLS records per system call (SSL_read still returns one record
    at a time, so ``recv_into`` stays one record per call).  False if not possible."""
    try:
        libssl().SSL_ctrl(ssl_pointer(tls), SSL_CTRL_SET_READ_AHEAD, 1, None)
    except Unavailable as e:
        log.debug("no TLS read-ahead: %s", e)
        return False
    return True


def _address_of(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _sockaddr(sock: socket.socket) -> ctypes.Array:
    host, port = sock.getpeername()[:2]
    if sock.family == socket.AF_INET6:
        raw = struct.pack("<H", socket.AF_INET6) + struct.pack("!HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, host) + struct.pack("I", 0)
    else:
        raw = struct.pack("<H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw))


class DtlsChannel:
    """A DTLS 1.2 PSK client on a connected UDP socket, as AnyConnect's PSK-NEGOTIATE wants it.

    ``app_id`` (from X-DTLS-App-ID) goes in the ClientHello's session ID, where ocserv
    finds the session the datagrams belong to.  After ``handshake()``, ``recv_into(view)``
    returns one record's plaintext (0: nothing yet) and ``send(view)`` writes one.
    """

    def __init__(self, server: tuple[str, int], psk: bytes, app_id: bytes, mtu: int) -> None:
        self.lib = lib = libssl()
        self._psk = psk
        self._callback = _PSK_CALLBACK(self._give_psk)  # kept alive as long as the context
        self.sock = socket.socket(socket.AF_INET6 if ":" in server[0] else socket.AF_INET, socket.SOCK_DGRAM)
        self.ctx = self.ssl = None
        try:
            self.sock.connect(server)
            self.sock.setblocking(False)
            self.ctx = lib.SSL_CTX_new(lib.DTLS_client_method())
            lib.SSL_CTX_ctrl(self.ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, DTLS1_2_VERSION, None)
            lib.SSL_CTX_ctrl(self.ctx, SSL_CTRL_SET_MAX_PROTO_VERSION, DTLS1_2_VERSION, None)
            if lib.SSL_CTX_set_cipher_list(self.ctx, PSK_CIPHERS) != 1:
                raise Unavailable(f"this libssl has no PSK cipher suites: {_errors(lib)}")
            lib.SSL_CTX_set_psk_client_callback(self.ctx, self._callback)
            self.ssl = lib.SSL_new(self.ctx)
            bio = lib.BIO_new_dgram(self.sock.fileno(), BIO_NOCLOSE)
            self._peer = _sockaddr(self.sock)
            lib.BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, self._peer)
            lib.SSL_set_bio(self.ssl, bio, bio)
            # Our own MTU: no path MTU queries on a socket the kernel may route anywhere.
            lib.SSL_ctrl(self.ssl, SSL_CTRL_OPTIONS, SSL_OP_NO_QUERY_MTU, None)
            lib.SSL_ctrl(self.ssl, SSL_CTRL_SET_MTU, mtu, None)
            self._offer_session(app_id)
        except BaseException:
            self.close()
            raise

    def _give_psk(self, ssl_, hint, identity, max_identity, psk, max_psk) -> int:
        if max_identity <= len(PSK_IDENTITY) or max_psk < len(self._psk):
            return 0
        ctypes.memmove(identity, PSK_IDENTITY + b"\0", len(PSK_IDENTITY) + 1)
        ctypes.memmove(psk, self._psk, len(self._psk))
        return len(self._psk)

    def _offer_session(self, app_id: bytes) -> None:
        """A made-up session whose ID is the App-ID: OpenSSL then sends it in the ClientHello."""
        lib = self.lib
        sess = lib.SSL_SESSION_new()
        try:
            cipher = lib.SSL_CIPHER_find(self.ssl, b"\x00\xa9")  # PSK-AES256-GCM-SHA384
            ok = (lib.SSL_SESSION_set1_id(sess, app_id, len(app_id)) == 1
                  and lib.SSL_SESSION_set_protocol_version(sess, DTLS1_2_VERSION) == 1
                  and lib.SSL_SESSION_set1_master_key(sess, os.urandom(48), 48) == 1
                  and cipher and lib.SSL_SESSION_set_cipher(sess, cipher) == 1
                  and lib.SSL_set_session(self.ssl, sess) == 1)
            if not ok:
                raise Unavailable(f"cannot put the App-ID in a DTLS session: {_errors(lib)}")
        finally:
            lib.SSL_SESSION_free(sess)  # SSL_set_session took its own reference

    def fileno(self) -> int:
        return self.sock.fileno()

    def handshake(self, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> str:
        """Complete the DTLS handshake (retransmitting on libssl's timers); the cipher's name."""
        lib, deadline = self.lib, time.monotonic() + timeout_s
        tv = _Timeval()
        while True:
            rc = lib.SSL_connect(self.ssl)
            if rc == 1:
                return (lib.SSL_CIPHER_get_name(lib.SSL_get_current_cipher(self.ssl)) or b"?").decode()
            err = lib.SSL_get_error(self.ssl, rc)
            if err not in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
                raise DtlsError(f"DTLS handshake failed: {_errors(lib)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DtlsError(f"no DTLS handshake within {timeout_s:g} s")
            wait = left
            if lib.SSL_ctrl(self.ssl, DTLS_CTRL_GET_TIMEOUT, 0, ctypes.byref(tv)):
                wait = min(wait, tv.tv_sec + tv.tv_usec / 1e6)
            if not select.select([self.sock], [], [], wait)[0]:
                lib.SSL_ctrl(self.ssl, DTLS_CTRL_HANDLE_TIMEOUT, 0, None)

    def recv_into(self, view: memoryview) -> int:
        """One record's plaintext into ``view``; 0 when no datagram is waiting.  DtlsError if dead."""
        n = self.lib.SSL_read(self.ssl, _address_of(view), len(view))
        if n > 0:
            return n
        return self._failed(n, "read")

    def send(self, view: memoryview) -> bool:
        """Write one record from ``view``; False if the socket buffer is full (the datagram is dropped).

        ``view`` is packet memory (writable) or a whole bytes object (a compressor's output)."""
        if view.readonly:
            whole = view.obj
            if not isinstance(whole, bytes) or len(whole) != view.nbytes:
                raise TypeError("send() takes packet memory or a whole bytes object")
            return self.send_bytes(whole)
        n = self.lib.SSL_write(self.ssl, _address_of(view), len(view))
        if n > 0:
            return True
        return bool(self._failed(n, "write"))

    def send_bytes(self, data: bytes) -> bool:
        n = self.lib.SSL_write(self.ssl, data, len(data))
        return n > 0 or bool(self._failed(n, "write"))

    def _failed(self, rc: int, what: str) -> int:
        err = self.lib.SSL_get_error(self.ssl, rc)
        if err in (SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE):
            return 0
        code = ctypes.get_errno()
        if err == SSL_ERROR_SYSCALL and code in (errno.EAGAIN, errno.ENOBUFS, errno.ECONNREFUSED):
            return 0  # a full buffer, or an ICMP error for an earlier datagram: not fatal
        if err == SSL_ERROR_ZERO_RETURN:
            raise DtlsError("the server closed the DTLS channel")
        why = os.strerror(code) if err == SSL_ERROR_SYSCALL and code else _errors(self.lib)
        raise DtlsError(f"DTLS {what} failed: {why}")

    def close(self) -> None:
        if self.ssl:
            self.lib.SSL_shutdown(self.ssl)
            self.lib.SSL_free(self.ssl)  # frees the BIO too; the socket is ours
            self.ssl = None
        if self.ctx:
            self.lib.SSL_CTX_free(self.ctx)
            self.ctx = None
        self.sock.close()

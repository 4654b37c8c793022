"""The property the zero-copy receive path stands on: CPython's ``SSLSocket.recv_into`` returns at
most one TLS record's plaintext per call, even with a buffer big enough for all that arrived,
and also with OpenSSL's read-ahead on (which tunring connect turns on).

The peer is a plain Python TLS server that writes each record with its own ``send``.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from tunring.apps.connect import openssl
from tunring.apps.connect.lab import make_pki

RECORDS = [100, 2000, 1500, 7, 16384, 1400, 1400, 64]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")), host="127.0.0.1")


def connected_pair(pki):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.cert, pki.key)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(server_ctx.wrap_socket(listener.accept()[0],
                                                                               server_side=True)))
    t.start()
    client_ctx = ssl.create_default_context(cafile=pki.ca)
    client = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()), server_hostname="127.0.0.1")
    t.join(10)
    listener.close()
    return client, accepted[0]


@pytest.mark.parametrize("read_ahead", [False, True])
def test_recv_into_returns_one_record_per_call(pki, read_ahead):
    client, server = connected_pair(pki)
    with client, server:
        if read_ahead:
            assert openssl.enable_read_ahead(client)
        for i, size in enumerate(RECORDS):
            server.send(bytes([i]) * size)  # one SSL_write: one TLS record (each under 16 KiB)
        time.sleep(0.3)  # every record is in the client's socket buffer (or OpenSSL's) by now
        buf = bytearray(65536)
        got = []
        for _ in RECORDS:
            n = client.recv_into(buf)
            assert set(buf[:n]) == {len(got)}, "a read mixed two records"
            got.append(n)
    assert got == RECORDS


def test_ssl_pointer_is_confirmed_and_exports_a_psk(pki):
    client, server = connected_pair(pki)
    with client, server:
        psk = openssl.export_psk(client)
        assert len(psk) == 32 and psk != bytes(32)
        assert openssl.export_psk(client) == psk  # the same session, the same key
    other, peer = connected_pair(pki)
    with other, peer:
        assert openssl.export_psk(other) != psk  # a new session, a new key


def test_a_socket_that_is_not_tls_is_refused():
    with socket.socket() as plain, pytest.raises(openssl.Unavailable):
        openssl.ssl_pointer(plain)  # type: ignore[arg-type]

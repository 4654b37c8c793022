"""`tunring connect` failure modes that need no root: one line on stderr and the documented exit code.

The peers are real TLS servers on loopback (Python's ssl with a throwaway CA from
the lab's make_pki): an unreachable port, an untrusted certificate, a pin that
does not match, and HTTPS servers that are not AnyConnect.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading

import pytest

from tunring.apps.connect import errors
from tunring.apps.connect.lab import make_pki


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunring.cli", "connect", "-q", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunring connect: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")), host="127.0.0.1")


@contextlib.contextmanager
def https_server(pki, reply: bytes):
    """A TLS server on 127.0.0.1 that answers every request on every connection with ``reply``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError, ssl.SSLError):
                conn.settimeout(5)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    else:
                        tls.sendall(reply)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join()
        listener.close()


HTML_404 = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\nNot Found"
HTML_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>"


def test_unreachable_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        out = run(f"https://127.0.0.1:{port}/", "-u", "a", "--password", "p")
    assert out.returncode == errors.EXIT_UNREACHABLE
    assert "cannot connect to 127.0.0.1" in one_line(out)


def test_untrusted_certificate(pki):
    with https_server(pki, HTML_404) as url:
        out = run(url, "-u", "a", "--password", "p")
    assert out.returncode == errors.EXIT_CERT
    assert "not trusted" in one_line(out) and "--cafile" in out.stderr


def test_wrong_pin_names_the_right_one(pki):
    with https_server(pki, HTML_404) as url:
        out = run(url, "--servercert", "pin-sha256:" + "A" * 43 + "=", "-u", "a", "--password", "p")
    assert out.returncode == errors.EXIT_CERT
    assert pki.pin_sha256 in one_line(out)


@pytest.mark.parametrize("reply", [HTML_404, HTML_200, b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
def test_not_an_anyconnect_server(pki, reply):
    with https_server(pki, reply) as url:
        # Trusted via --cafile and via the pin: the refusal is about the protocol, not the certificate.
        for trust in (["--cafile", pki.ca], ["--servercert", pki.pin_sha256]):
            out = run(url, *trust, "-u", "a", "--password", "p")
            assert out.returncode == errors.EXIT_NOT_ANYCONNECT, out.stderr
            one_line(out)


def test_plain_tcp_server_is_not_anyconnect():
    listener = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = listener.accept()
        conn.sendall(b"220 smtp.example ESMTP\r\n")
        conn.recv(4096)
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    out = run(f"https://127.0.0.1:{listener.getsockname()[1]}/", "-u", "a", "--password", "p")
    t.join(10)
    listener.close()
    assert out.returncode == errors.EXIT_NOT_ANYCONNECT
    assert "does not speak TLS" in one_line(out)


@pytest.mark.parametrize("args, message", [
    (["https://h/", "--servercert", "md5:abcd"], "--servercert"),
    (["http://h/"], "only https"),
    (["https://h/", "--compression", "zstd"], "--compression"),
    (["https://h/", "--cafile", "/nonexistent/ca.pem"], "no such file"),
    (["https://h/", "--mtu", "10"], "--mtu"),
])
def test_bad_input_exits_1(args, message):
    out = run(*args)
    assert out.returncode == errors.EXIT_INPUT
    assert message in one_line(out)


def test_usage_errors_exit_2():
    out = run("--no-such-option", "https://h/")
    assert out.returncode == errors.EXIT_USAGE and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "tunring.cli", "connect"], capture_output=True, text=True)
    assert out.returncode == errors.EXIT_USAGE


def test_password_on_stdin_that_ends_early():
    out = run("https://127.0.0.1:1/", "-u", "a", "--passwd-on-stdin", stdin="")
    assert out.returncode == errors.EXIT_INPUT and "standard input ended" in one_line(out)

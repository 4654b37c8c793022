"""Why `tunring connect` stopped: one exception per outcome, each with its documented exit code.

The CLI prints the message as one line on stderr and exits with ``exit_code``;
the table is in the README (section "tunring connect").
"""

from __future__ import annotations

from ...errors import TunringError

EXIT_OK = 0  # disconnected on request (SIGINT/SIGTERM) or --authenticate done
EXIT_INPUT = 1  # bad input: an unparsable URL, pin, cookie or file
EXIT_USAGE = 2  # argparse: unknown option, missing URL
EXIT_AUTH = 3  # the server refused the credentials or the cookie
EXIT_CERT = 4  # the server's certificate is not trusted (store, --cafile) or does not match --servercert
EXIT_NOT_ANYCONNECT = 5  # the server answered, but not as an AnyConnect server
EXIT_UNREACHABLE = 6  # no TCP/TLS connection to the server (name, route, refused, timeout)
EXIT_LOST = 7  # the tunnel went down and reconnecting failed within --reconnect-timeout, or the server ended it
EXIT_LOCAL = 8  # the local side failed: TUN device, netlink configuration or the vpnc-script


class ConnectError(TunringError):
    """A reason `tunring connect` stops; ``exit_code`` is what the process exits with."""

    exit_code = EXIT_INPUT

    def __init_subclass__(cls, exit_code: int = EXIT_INPUT, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.exit_code = exit_code


class BadInput(ConnectError, exit_code=EXIT_INPUT):
    """An option, URL, pin or cookie that cannot be used as given."""


class AuthFailed(ConnectError, exit_code=EXIT_AUTH):
    """Wrong user name or password, an unknown group, or a cookie the server no longer accepts."""


class CertificateRejected(ConnectError, exit_code=EXIT_CERT):
    """The server's certificate is not trusted, or does not match --servercert."""


class NotAnyConnect(ConnectError, exit_code=EXIT_NOT_ANYCONNECT):
    """The peer speaks TLS (perhaps HTTP) but not AnyConnect's aggregate auth or CSTP."""


class Unreachable(ConnectError, exit_code=EXIT_UNREACHABLE):
    """No connection to the server: name, route, refusal, timeout, or a broken handshake."""


class TunnelLost(ConnectError, exit_code=EXIT_LOST):
    """The tunnel went down for good: reconnecting failed, or the server ended the session."""


class LocalSetupFailed(ConnectError, exit_code=EXIT_LOCAL):
    """The TUN device, its netlink configuration or the vpnc-script failed."""

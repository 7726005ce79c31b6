"""The reference chat/1 client's entry point: `chat-client`, `python -m chat.client`.

What the client decides lives in chat/client_core.py (pure, no I/O); the
terminal in chat/cli.py (line mode, for pipes and dumb terminals) and
chat/cli_screen.py (full screen). This module holds the command line and the
connection: a socket, or TLS over it (TLSStream), shared by the reader thread
(recv) and the main thread (sendall).

main() asks for a name (when none is given) before it connects, so that no
register-timeout runs while a person thinks ([KEEP-3]), connects once (a
failure is exit status 1, as before), then hands over to chat.cli.run, which
reconnects by itself when the connection is lost later. POSIX only, like the server.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import threading
from pathlib import Path

from chat import cli, options
from chat.client_core import HELP, ClientCore
from chat.client_files import DATA_TIMEOUT
from chat.protocol import VERSION, is_valid_name
from chat.transport import MemoryTLS

#: Bytes asked of recv() at a time.
RECV_SIZE = cli.RECV_SIZE
#: Seconds to wait for the TCP (and TLS) connection.
CONNECT_TIMEOUT = 10.0

EXIT_STATUS_HELP = """\
exit status:
  0    you left (/quit, exit, Ctrl-D, end of input) or the server shut down,
       and the server had acknowledged every line you sent
  1    could not connect or register (name refused when input is not a
       terminal, wrong password), or the connection ended otherwise when
       input is not a terminal (at a terminal the client reconnects), or
       lines sent were not acknowledged and may be lost
  2    bad command line
  130  interrupted with Ctrl-C

The password is read from --password-file or the CHAT_PASSWORD environment
variable, so that it does not show in ps. In piped use (input not a terminal)
incoming lines are printed to stdout as they are shown, the client's own
notices go to stderr, and the client waits until the server has acknowledged
every line before it leaves."""


# ---------------------------------------------------------------------------
# The connection: in the clear, or inside TLS
# ---------------------------------------------------------------------------


class PlainStream:
    """A blocking TCP socket, shared by the reader thread (recv) and the main
    thread (sendall; the reader's PONGs too)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Two threads send; their lines must not interleave.
        self._sending = threading.Lock()

    def recv(self) -> bytes:
        """The next bytes from the server; b"" at the end. Reader thread."""
        return self.sock.recv(RECV_SIZE)

    def sendall(self, data: bytes) -> None:
        with self._sending:
            self.sock.sendall(data)

    def shutdown(self) -> None:
        """End the connection; wakes the reader thread from recv()."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # Already disconnected.

    def close(self) -> None:
        self.sock.close()


class TLSStream(PlainStream):
    """TLS over the socket through MemoryTLS (chat/transport.py).

    Not an ssl.SSLSocket: that would use one OpenSSL connection from the
    reader and the writer thread at once, which OpenSSL forbids. Ciphertext is
    taken and sent under the send lock, so records leave in the order made."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(sock)
        self._tls = MemoryTLS(context, server_hostname=server_hostname)
        # Before the reader starts; raises OSError (ssl.SSLCertVerificationError too).
        self._tls.handshake(sock, RECV_SIZE)

    def recv(self) -> bytes:
        while True:
            with self._tls.lock:
                data = self._tls.read(RECV_SIZE)
                # Reading can make records to send (the answer to a key update).
                answer_waiting = self._tls.has_outgoing()
            if answer_waiting:
                self.sendall(b"")  # just those records
            if data is not None:
                return data
            ciphertext = self.sock.recv(RECV_SIZE)  # Blocking, outside the lock.
            with self._tls.lock:
                self._tls.feed(ciphertext)

    def sendall(self, data: bytes) -> None:
        with self._sending:
            with self._tls.lock:
                if data:
                    self._tls.sslobj.write(data)
                ciphertext = self._tls.take_outgoing()
            if ciphertext:
                self.sock.sendall(ciphertext)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = options.OneLineParser(
        prog="chat-client",
        description=f"The reference client of the {VERSION} chat protocol (see SPEC.md).\n\n{HELP}",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=options.connect_port, default=5000, help="server port (default 5000)")
    parser.add_argument("--name", help="the name to chat under (asked for if not given)")
    parser.add_argument("--password-file", metavar="FILE",
                        help="file whose first line is the room password (default: $CHAT_PASSWORD)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--cafile", metavar="FILE",
                        help="trust the server certificates signed by this CA (implies --tls)")
    parser.add_argument("--downloads", metavar="DIR", type=Path,
                        help="where accepted files go (default ~/Downloads, else the home folder)")
    return parser


def read_password(password_file: str | None) -> str | None:
    """The password from the file's first line, else from CHAT_PASSWORD, else None."""
    if password_file:
        with open(password_file, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n") or None
    return os.environ.get("CHAT_PASSWORD") or None


def connect(host: str, port: int, tls: bool, cafile: str | None) -> PlainStream:
    """Connect, and agree on TLS if asked to (checking the server's certificate
    against the system's CAs, or against `cafile`)."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    try:
        if tls:
            context = ssl.create_default_context(cafile=cafile)
            stream = TLSStream(sock, context, server_hostname=host)
        else:
            stream = PlainStream(sock)
        sock.settimeout(None)  # The timeout was for connecting only.
    except BaseException:
        sock.close()
        raise
    return stream


def open_data_socket(host: str, port: int, tls: bool, cafile: str | None) -> socket.socket:
    """A connection for a file's bytes ([FILE-15]): to the same server, inside TLS if the
    chat is; a blocking socket (its thread is chat.client_files'). Only TLS's close_notify
    counts as an orderly end there."""
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    try:
        if tls:
            context = ssl.create_default_context(cafile=cafile)
            sock = context.wrap_socket(sock, server_hostname=host, suppress_ragged_eofs=False)
        sock.settimeout(DATA_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return sock


def ask_name() -> str | None:
    """The name, asked for at the terminal before connecting; None at the end of input."""
    while True:
        try:
            name = input("name: ").strip()
        except EOFError:
            return None
        if is_valid_name(name):
            return name
        print(f"{name!r} is not a name: a letter, then up to 31 letters, digits, _ or -")


#: What OpenSSL says when the server answers a ClientHello with HELLO chat/1.
PLAIN_SERVER_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if args.name is None and not interactive:
        parser.error("--name is needed when input is not a terminal")
    try:
        password = read_password(args.password_file)
    except OSError as error:
        parser.error(f"cannot read the password file: {error.strerror}")
    try:
        name = args.name if args.name is not None else ask_name()
    except KeyboardInterrupt:
        return 130
    if name is None:
        return 1

    def connector() -> PlainStream:
        return connect(args.host, args.port, args.tls or args.cafile is not None, args.cafile)

    try:
        stream = connector()
    except OSError as error:  # ssl.SSLError is an OSError too
        reason = error.strerror or error
        if isinstance(error, ssl.SSLError) and error.reason in PLAIN_SERVER_REASONS:
            reason = "this port speaks plain chat/1, not TLS: try without --tls"
        print(f"chat-client: cannot connect to {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    # At a terminal a lost connection is followed by a new one; a script
    # wants its exit status instead.
    core = ClientCore(name, password, reconnect=interactive)
    tls = args.tls or args.cafile is not None
    return cli.run(core, connector, stream, interactive, f"{args.host}:{args.port}",
                   data_opener=lambda: open_data_socket(args.host, args.port, tls, args.cafile),
                   downloads=args.downloads)


if __name__ == "__main__":
    sys.exit(main())

"""How the server's bytes reach a socket: in the clear, or inside TLS.

Part of the server's I/O edge (chat/server.py uses it; nothing else does).
Each connection has two threads touching its socket: its reader, which blocks
in recv(), and the flusher, which must never block and so sends with
MSG_DONTWAIT. A transport gives both of them what they need:

    recv()            reader thread: the next plaintext bytes, b"" at the end
    send_nowait(data) flusher: how many plaintext bytes it took, never blocking
    unsent()          flusher: bytes the transport itself still holds
    shutdown(how)     either thread: end the connection, safe after close()
    close()           reader thread, once the flusher is done with the socket

Why TLS is done "sans I/O" with ssl.MemoryBIO rather than ssl.SSLSocket: an
SSLSocket cannot be blocking for one thread and non-blocking for another
(send() refuses MSG_DONTWAIT), and an OpenSSL connection must not be used by
two threads at once. With MemoryBIO the TLS state machine is plain data
behind a lock, and the socket stays an ordinary socket.
"""

from __future__ import annotations

import socket
import ssl
import threading

#: Bytes asked of recv() at a time: one longest line. recv() allocates this
#: much before it blocks, so an idle connection holds it all the time: with
#: ten thousand idle clients, 4096 here cost 30 MB more than 1024 (README,
#: Performance).
RECV_SIZE = 1024
#: Ciphertext a TLS transport buffers before it takes no more plaintext. It
#: stands in for the kernel's send buffer; without it, encrypting everything
#: at once would hide a slow reader from the outbound limit.
TLS_UNSENT_MAX = 64 * 1024


class PlainTransport:
    """A TCP socket as it is."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._closed = False

    def handshake(self, timeout: float) -> None:
        """Nothing to agree on in the clear."""

    def recv(self) -> bytes:
        return self.sock.recv(RECV_SIZE)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0

    def unsent(self) -> int:
        return 0

    def close_notify(self) -> None:
        """Nothing to announce in the clear: FIN says it all."""

    def shutdown(self, how: int) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self.sock.shutdown(how)
                except OSError:
                    pass  # Already disconnected: nothing left to shut.

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.sock.close()


class TLSTransport(PlainTransport):
    """TLS over a socket through ssl.MemoryBIO, the socket itself left alone."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: Guards the TLS object and `_ciphertext`: both threads use them.
        self._tls_lock = threading.Lock()
        #: Encrypted bytes waiting for the socket.
        self._ciphertext = bytearray()

    def handshake(self, timeout: float) -> None:
        """Agree on keys before anything else is sent. Reader thread, blocking.

        Raises OSError (ssl.SSLError included) if the client is not speaking
        TLS or gives up; the caller then just closes the socket.
        """
        self.sock.settimeout(timeout)
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.sock.sendall(self._outgoing.read())
                    data = self.sock.recv(RECV_SIZE)
                    if not data:
                        raise ConnectionAbortedError("closed during the TLS handshake") from None
                    self._incoming.write(data)
            # TLS 1.3 servers send session tickets right after the handshake.
            self.sock.sendall(self._outgoing.read())
        finally:
            self.sock.settimeout(None)

    def recv(self) -> bytes:
        while True:
            with self._tls_lock:
                try:
                    return self._tls.read(RECV_SIZE)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    return b""  # The client's close_notify: an orderly end.
                finally:
                    # Reading can produce records to send (a key update's
                    # answer); the flusher sends them on its next visit.
                    self._ciphertext += self._outgoing.read()
            data = self.sock.recv(RECV_SIZE)  # blocking, outside the lock
            if not data:
                return b""
            with self._tls_lock:
                self._incoming.write(data)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        with self._tls_lock:
            taken = 0
            if data and len(self._ciphertext) < TLS_UNSENT_MAX:
                taken = self._tls.write(data)
                self._ciphertext += self._outgoing.read()
            if self._ciphertext:
                sent = super().send_nowait(self._ciphertext)
                del self._ciphertext[:sent]
            return taken

    def unsent(self) -> int:
        return len(self._ciphertext)

    def close_notify(self) -> None:
        """Tell the client the stream ends here, so that a truncation attack
        cannot pass for an orderly end. Best effort: it never blocks."""
        with self._tls_lock:
            try:
                self._tls.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: the client's answer is not awaited.
            self._ciphertext += self._outgoing.read()
            try:
                self.sock.send(self._ciphertext, socket.MSG_DONTWAIT)
            except OSError:
                pass
            self._ciphertext.clear()

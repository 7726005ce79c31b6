"""How the server's bytes reach a socket: in the clear, or inside TLS.

Part of the server's I/O edge (chat/server.py uses it; the client borrows MemoryTLS).
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
two threads at once. With MemoryBIO (see MemoryTLS) the TLS state machine is
plain data behind a lock, and the socket stays an ordinary socket.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading

from chat.protocol import looks_like_tls

#: Bytes asked of recv() at a time: one longest line. recv() allocates this
#: much before it blocks, so an idle connection holds it all the time: with
#: ten thousand idle clients, 4096 here cost 30 MB more than 1024 (README,
#: Performance).
RECV_SIZE = 1024
#: Ciphertext a TLS transport buffers before it takes no more plaintext. It
#: stands in for the kernel's send buffer; without it, encrypting everything
#: at once would hide a slow reader from the outbound limit.
TLS_UNSENT_MAX = 64 * 1024
#: Seconds a client on the TLS port has to send its first byte before the
#: server takes it for a plain chat/1 client, which waits for HELLO and so
#: sends nothing ([SEC-3]). A TLS client sends its ClientHello as soon as it
#: has connected, so it arrives within one network round trip; 3 s covers a
#: satellite link's 600 ms many times over, and a person at nc waits no longer
#: than that to be told to use TLS (before: 10 s and then silence).
FIRST_BYTE_WAIT = 3.0


#: Linux's TCP_INFO option, and its state for a connection that is over
#: (include/net/tcp_states.h); None elsewhere.
TCP_INFO = getattr(socket, "TCP_INFO", None)
TCP_CLOSE = 7


class NotTLS(OSError):
    """The client on the TLS port speaks plain chat/1 ([SEC-3])."""


class PlainTransport:
    """A TCP socket as it is."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._closed = False

    def handshake(self, timeout: float) -> None:
        """Nothing to agree on in the clear."""

    def recv(self, size: int = RECV_SIZE) -> bytes:
        return self.sock.recv(size)

    def was_reset(self) -> bool:
        """After recv() saw the end: whether the client reset the connection
        rather than closing it ([LIMIT-10]). The kernel reports a reset once,
        to whichever thread touches the socket first, and recv() then sees a
        plain end; the TCP state still tells (Linux: TCP_CLOSE, where a close
        leaves CLOSE_WAIT). Elsewhere False: the server's own flag remains."""
        try:
            return self.sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 1)[0] == TCP_CLOSE
        except (OSError, TypeError):
            return False

    def wait_readable(self, timeout: float) -> bool:
        """Whether recv() has something (bytes, end, error) within `timeout`
        seconds. Reader thread: it reads on while flood control holds lines
        back ([LIMIT-8]). poll(), not select(): descriptors pass 1024 here."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            return bool(poller.poll(max(0, timeout) * 1000))
        except OSError:
            return True  # Let recv() report whatever it is.

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


class MemoryTLS:
    """One TLS connection as plain data: an ssl.SSLObject between two MemoryBIOs.

    The socket stays the caller's: ciphertext from it goes in with feed(), and
    ciphertext for it comes out with take_outgoing(). Once two threads share
    it, call it only under `lock`; to keep records in order, a caller takes
    and queues (or sends) them under one lock (see TLSTransport, TLSStream)."""

    def __init__(self, context: ssl.SSLContext, server_side: bool = False,
                 server_hostname: str | None = None) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        #: The TLS state machine; callers use its write() and unwrap() directly.
        self.sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side, server_hostname)
        self.lock = threading.Lock()

    def handshake(self, sock: socket.socket, recv_size: int) -> None:
        """Agree on keys over a blocking socket, before a second thread uses either."""
        while True:
            try:
                self.sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(self.take_outgoing())
                data = sock.recv(recv_size)
                if not data:
                    raise ConnectionAbortedError("closed during the TLS handshake") from None
                self.feed(data)
        # The last flight: the client's Finished, or a TLS 1.3 server's session tickets.
        sock.sendall(self.take_outgoing())

    def read(self, size: int) -> bytes | None:
        """Up to `size` bytes of plaintext, b"" at the end, None if it needs ciphertext."""
        try:
            return self.sslobj.read(size)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""  # close_notify, or the socket's end: over either way.

    def feed(self, ciphertext: bytes) -> None:
        """Ciphertext from the socket; b"" for its end."""
        if ciphertext:
            self._incoming.write(ciphertext)
        else:
            self._incoming.write_eof()

    def take_outgoing(self) -> bytes:
        """The ciphertext made so far, in order; b"" if none."""
        return self._outgoing.read()

    def has_outgoing(self) -> bool:
        return self._outgoing.pending > 0

    def has_incoming(self) -> bool:
        """Whether ciphertext or plaintext waits inside, not yet read."""
        return self._incoming.pending > 0 or self.sslobj.pending() > 0


class TLSTransport(PlainTransport):
    """TLS over a socket through MemoryTLS, the socket itself left alone."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock)
        self._tls = MemoryTLS(context, server_side=True)
        #: Encrypted bytes waiting for the socket. Both threads use it, under `_tls.lock`.
        self._ciphertext = bytearray()

    def handshake(self, timeout: float) -> None:
        """Agree on keys before anything else is sent. Reader thread, blocking.

        Raises OSError (ssl.SSLError included) if the client is not speaking
        TLS or gives up; the caller then just closes the socket.
        """
        self.sock.settimeout(min(timeout, FIRST_BYTE_WAIT))
        try:
            try:
                first = self.sock.recv(2, socket.MSG_PEEK)
            except TimeoutError:
                raise NotTLS("sent nothing: a plain client waiting for HELLO") from None
            if first and not looks_like_tls(first):
                raise NotTLS("sent plain text, not a TLS ClientHello")
            self.sock.settimeout(timeout)
            self._tls.handshake(self.sock, RECV_SIZE)
        finally:
            self.sock.settimeout(None)

    def wait_readable(self, timeout: float) -> bool:
        with self._tls.lock:
            if self._tls.has_incoming():
                # Read from the socket already. (Part of a record makes recv()
                # wait for the rest: only this client's own lines wait.)
                return True
        return super().wait_readable(timeout)

    def recv(self, size: int = RECV_SIZE) -> bytes:
        while True:
            with self._tls.lock:
                try:
                    data = self._tls.read(size)
                finally:
                    # A key update's answer: the flusher sends it on its next visit.
                    self._ciphertext += self._tls.take_outgoing()
            if data is not None:
                return data
            ciphertext = self.sock.recv(size)  # blocking, outside the lock
            if not ciphertext:
                return b""
            with self._tls.lock:
                self._tls.feed(ciphertext)

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        with self._tls.lock:
            taken = 0
            if data and len(self._ciphertext) < TLS_UNSENT_MAX:
                taken = self._tls.sslobj.write(data)
                self._ciphertext += self._tls.take_outgoing()
            if self._ciphertext:
                sent = super().send_nowait(self._ciphertext)
                del self._ciphertext[:sent]
            return taken

    def unsent(self) -> int:
        return len(self._ciphertext)

    def close_notify(self) -> None:
        """Tell the client the stream ends here, so that a truncation attack
        cannot pass for an orderly end. Best effort: it never blocks."""
        with self._tls.lock:
            try:
                self._tls.sslobj.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: the client's answer is not awaited.
            self._ciphertext += self._tls.take_outgoing()
            try:
                self.sock.send(self._ciphertext, socket.MSG_DONTWAIT)
            except OSError:
                pass
            self._ciphertext.clear()

"""The GUI's socket side: one connection, its two threads, and the events they report.

Tk is not thread-safe, and a blocking recv() or connect() in Tk's main loop
freezes the window. So, as IDLE does, the socket lives in worker threads and
the main loop only ever sees events on a queue.Queue, which it drains with
after() (chat/gui/app.py):

    reader thread   opens the connection (TCP, then TLS if asked: both can
                    take seconds), then reads, cuts lines and puts one event
                    per line. Reports Opened or OpenFailed first, Closed last.
    writer thread   sends the lines the main thread hands it (send() only
                    queues them), so a server that stops reading can fill the
                    socket's buffer without freezing the window.

The main thread calls send() and close(), nothing else. The connection is
opened with chat/client.py's connect(), the CLI's own code, so that both
clients speak TLS (and check certificates) the same way. No widget here.
"""

from __future__ import annotations

import dataclasses
import queue
import threading

from chat.client import SERVER_LINE_LIMIT, PlainStream, connect
from chat.protocol import LineBuffer

#: Seconds close_and_wait() waits for each thread. A closed socket wakes
#: the reader at once; only a connect() under way can hold it longer (up to
#: the CLI's CONNECT_TIMEOUT), and the threads are daemons, so a window
#: closed meanwhile does not wait for them.
JOIN_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class ServerAddress:
    """Where to connect, as the connect dialog or the command line gave it."""
    host: str
    port: int
    tls: bool = False
    cafile: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# Events, put on the queue by the reader thread. Each names its connection, so
# that the main loop can drop the late events of a connection it replaced.

@dataclasses.dataclass(frozen=True)
class Opened:
    connection: Connection


@dataclasses.dataclass(frozen=True)
class OpenFailed:
    connection: Connection
    reason: str


@dataclasses.dataclass(frozen=True)
class LineArrived:
    connection: Connection
    line: str


@dataclasses.dataclass(frozen=True)
class Closed:
    connection: Connection


ConnectionEvent = Opened | OpenFailed | LineArrived | Closed


class Connection:
    """One connection to the server, from connect() to its end.

    Events: Opened or OpenFailed, then LineArrived for each line, then Closed
    (after Opened only). A server line longer than the CLI accepts is dropped,
    as the CLI drops it.
    """

    def __init__(self, address: ServerAddress, events: queue.Queue) -> None:
        self.address = address
        self._events = events
        self._outgoing: queue.Queue[bytes | None] = queue.Queue()
        #: Guards _stream and _closing between the main thread and the reader.
        self._lock = threading.Lock()
        self._stream: PlainStream | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read_forever, name="gui-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_forever, name="gui-writer", daemon=True)

    def start(self) -> Connection:
        self._reader.start()
        return self

    def send(self, line: str) -> None:
        """Queue `line` (without its LF) for the server. Main thread; never blocks."""
        self._outgoing.put(line.encode("utf-8") + b"\n")

    def close(self) -> None:
        """End the connection; Closed follows (if it was open). Main thread; never blocks."""
        with self._lock:
            self._closing = True
            stream = self._stream
        if stream is not None:
            stream.shutdown()  # Wakes the reader from recv().

    def close_and_wait(self) -> None:
        """close(), then wait for both threads (the window is going away)."""
        self.close()
        if self._reader.is_alive():
            self._reader.join(JOIN_TIMEOUT)

    # -- the threads -----------------------------------------------------------

    def _read_forever(self) -> None:
        try:
            stream = connect(self.address.host, self.address.port, self.address.tls,
                             self.address.cafile)
        except OSError as error:  # ssl.SSLError too
            self._events.put(OpenFailed(self, str(error.strerror or error)))
            return
        with self._lock:
            self._stream = stream
            closing = self._closing
        if closing:
            stream.close()  # Closed before it opened: nobody is waiting for it.
            return
        self._events.put(Opened(self))
        self._writer.start()
        lines = LineBuffer(SERVER_LINE_LIMIT)
        try:
            while data := stream.recv():
                for item in lines.feed(data):
                    if isinstance(item, bytes):
                        self._events.put(LineArrived(self, item.decode("utf-8", errors="replace")))
        except OSError:
            pass  # Reset, or shut down by close(): the end either way.
        finally:
            self._outgoing.put(None)
            self._writer.join()
            stream.close()
            self._events.put(Closed(self))

    def _write_forever(self) -> None:
        stream = self._stream
        assert stream is not None
        while (data := self._outgoing.get()) is not None:
            try:
                stream.sendall(data)
            except OSError:
                stream.shutdown()  # The reader then sees the end and reports it.
                return

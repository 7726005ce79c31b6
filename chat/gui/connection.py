"""The GUI's socket side: the CLI's Link for opening and reading, and a writer thread.

Tk is not thread-safe, and a blocking connect(), recv() or send() in Tk's
main loop freezes the window. So, as IDLE does, the socket lives in worker
threads and the main loop only sees events on a queue, which it drains with
after() (chat/gui/app.py):

    chat.cli.Link   the CLI's own socket side, shared: it opens each
                    connection in a thread (with chat/client.py's connect(),
                    TLS and certificate checks included) and reads it in
                    another, putting (kind, generation, value) events on
                    its queue
    Writer          one thread per connection that sends the lines the main
                    thread hands it. The CLI sends from its main loop; the GUI
                    does not, so that a server that stops reading can fill the
                    socket's buffer without freezing the window

The main thread calls Writer.send() and Link's open(), adopt(), close(),
finish(); nothing here touches a widget.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable

from chat import client


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

    def connector(self) -> Callable[[], client.PlainStream]:
        """What Link calls, in its thread, to open a connection."""
        return lambda: client.connect(self.host, self.port, self.tls, self.cafile)


class Writer:
    """Sends lines to one connection's stream from a thread of its own.

    send() only queues (the main thread never waits for the socket); after
    stop(), the thread ends once what was queued is written. A failed write shuts the
    stream down, so the Link's reader sees the end and reports it."""

    def __init__(self, stream: client.PlainStream) -> None:
        self._stream = stream
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_forever, name="gui-writer", daemon=True)
        self._thread.start()

    def send(self, line: str) -> None:
        self._lines.put(line.encode("utf-8") + b"\n")

    def stop(self) -> None:
        """No more lines: the thread ends after writing those queued. Never blocks."""
        self._lines.put(None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _write_forever(self) -> None:
        while (data := self._lines.get()) is not None:
            try:
                self._stream.sendall(data)
            except OSError:
                self._stream.shutdown()
                return

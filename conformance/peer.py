"""One client connection of a case: send bytes, expect lines, log everything.

A Peer is the kit's only socket code. It

- connects (optionally through TLS, from a chosen source address, with a
  small receive buffer for the slow-reader case), and logs every byte it
  sends and receives, with a timestamp, in the case's Transcript;
- cuts the byte stream into lines itself, whatever the reads return (a line
  split over several reads, several lines in one read);
- reads the HELLO line and keeps its parameters, so cases adapt to limits;
- checks every line it receives against the server-line rules
  (grammar.check_server_line) and a few stream rules (HELLO first and once,
  [HELLO-1]; at most one LEAVE per JOIN, [LEAVE-4]), and keeps what it finds
  in `violations` for the runner, whatever the case itself was checking;
- hands the case only *relevant* lines: a server PING is answered with PONG
  and skipped ([PING-4]) unless the peer is in manual keepalive mode, and a
  line about other people (a JOIN, LEAVE or MSG of a name the case did not
  make, a PM between two such names: CaseContext.is_outsider) is skipped, so
  cases can run on a live server with other people on it, and beside each other;
- turns "nothing came" and "the server closed" into first-class outcomes
  (TimedOut, Closed) instead of exceptions, and the expect_* helpers turn a
  wrong outcome into CheckFailed with Expected / Actual.

What must not live here: knowledge of any case, or of how to report.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable

from conformance.grammar import HelloParams, Violation, check_server_line, parse_hello
from conformance.outcome import CaseCancelled, CheckFailed
from conformance.session import escape_bytes

#: Seconds a Peer waits for one line before calling it a timeout (--timeout).
DEFAULT_TIMEOUT = 2.0
#: Bytes asked of recv() at a time.
RECV_SIZE = 65536
#: What OpenSSL says when a plain chat/1 server answers the ClientHello with HELLO.
PLAIN_SERVER_REASONS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG")


# -- what a read can return ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Line:
    """A complete line from the server."""

    #: Decoded text without the LF (a CR before the LF is kept, so it shows).
    text: str
    #: The bytes as received, LF included.
    raw: bytes
    #: time.monotonic() when it arrived.
    at: float


@dataclasses.dataclass(frozen=True)
class Closed:
    """The server closed the connection (or it was reset)."""

    how: str  # "EOF", "reset", or a short error description
    at: float


@dataclasses.dataclass(frozen=True)
class TimedOut:
    """No line within the time allowed."""

    after: float


Event = Line | Closed | TimedOut


def describe(event: Event) -> str:
    """The Actual: of a failure report."""
    if isinstance(event, Line):
        if event.text.startswith("ERR TLS_REQUIRED "):  # [SEC-3]
            return show_line(event.text) + " (this port speaks TLS, try --tls)"
        return show_line(event.text)
    if isinstance(event, Closed):
        return "connection closed" + ("" if event.how == "EOF" else f" ({event.how})")
    return f"timeout after {event.after:g} s"


def show_line(text: str, limit: int = 160) -> str:
    """A line for Expected/Actual: quoted, and cut short if long (the transcript has it whole)."""
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


# -- the transcript ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    #: Seconds since the case started.
    t: float
    #: The client, e.g. "alice" or "alice#2" for its second connection.
    who: str
    #: "connect", "send", "recv", "eof", "close", "reset", "shutdown-write", "note".
    kind: str
    data: bytes = b""
    note: str = ""


class Transcript:
    """Every byte and event of one case, for all its clients, in time order."""

    _ARROWS = {"send": ">", "recv": "<"}
    #: Bytes of one entry shown in a report; the rest is counted, not shown
    #: (a slow-reader case moves megabytes).
    SHOWN_BYTES = 300

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.entries: list[Entry] = []
        self._lock = threading.Lock()

    def record(self, who: str, kind: str, data: bytes = b"", note: str = "") -> None:
        with self._lock:
            self.entries.append(Entry(time.monotonic() - self.start, who, kind, data, note))

    def format(self, indent: str = "  ") -> str:
        with self._lock:
            entries = list(self.entries)
        if not entries:
            return f"{indent}(nothing was sent or received)"
        width = max(len(entry.who) for entry in entries)
        lines = []
        for entry in entries:
            head = f"{indent}+{entry.t:7.3f}s  {entry.who:<{width}}"
            if entry.kind in self._ARROWS:
                shown = escape_bytes(entry.data[:self.SHOWN_BYTES])
                if len(entry.data) > self.SHOWN_BYTES:
                    shown += f" ... ({len(entry.data)} bytes in all)"
                lines.append(f"{head}  {self._ARROWS[entry.kind]} {shown}")
            else:
                lines.append(f"{head}  * {entry.kind}{': ' + entry.note if entry.note else ''}")
        return "\n".join(lines)


# -- the peer ------------------------------------------------------------------------------

_JOIN_LEAVE_MSG = re.compile(r"^(JOIN|LEAVE|MSG) ([^ ]+)")


class Peer:
    """One connection to the server under test.

    Not thread-safe: one thread at a time uses a Peer (cases that need many
    clients at once give each client its own thread).
    """

    def __init__(self, label: str, address: tuple[str, int], transcript: Transcript, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None,
                 is_outsider: Callable[[str], bool] = lambda text: False,
                 source_address: str | None = None,
                 receive_buffer: int | None = None,
                 hello_hint: HelloParams | None = None,
                 cancelled: threading.Event | None = None) -> None:
        self.label = label
        self.address = address
        self.transcript = transcript
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or address[0]
        self.is_outsider = is_outsider
        self.source_address = source_address
        self.receive_buffer = receive_buffer
        self._cancelled = cancelled or threading.Event()
        #: The HELLO this connection received, once it has.
        self.hello: HelloParams | None = None
        self._hello_hint = hello_hint
        #: The name this connection registered, once it has (set by the case).
        self.name: str | None = None
        #: When True, a server PING is a line like any other ([PING-4] is the case's job).
        self.keepalive_manual = False
        #: When True, a line cut short by the server closing is not a violation
        #: (the slow-consumer case: the server may cut a client it drops).
        self.tolerate_cut = False
        #: When True, the connection carries a file's bytes, not lines (a data
        #: connection once its DATA is sent, [FILE-15]): the clean-up closes it
        #: without LEAVE, which would be file data, and reads nothing more as lines.
        self.carries_bytes = False
        #: Rules the server broke on this connection, whatever the case checked.
        self.violations: list[Violation] = []
        #: The room's password, for a case that sends USER itself in a room that
        #: requires one (see _add_password); None leaves what the case sends alone.
        self.room_password: str | None = None
        #: True once the kit put the room's password in place of a PASS the case sent.
        self.password_substituted = False
        self._password_done = False
        self._swallow_ok_pass = 0
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._pending: collections.deque[Line] = collections.deque()
        self._closed: Closed | None = None
        self._closed_by_us = False
        self._send_lock = threading.Lock()
        self._lines_seen = 0
        # [LEAVE-4] bookkeeping: name as sent -> "in" (JOIN or NAMES seen) / "out" (LEAVE seen).
        self._presence: dict[str, str] = {}

    # -- connecting and closing -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._sock is not None and self._closed is None and not self._closed_by_us

    @property
    def closed(self) -> Closed | None:
        """How the server ended the connection, once this peer has read that."""
        return self._closed

    def connect(self) -> Peer:
        host, port = self.address
        self.transcript.record(self.label, "connect", note=f"{host}:{port}"
                               + (" (TLS)" if self.ssl_context else "")
                               + (f" from {self.source_address}" if self.source_address else ""))
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            try:
                if self.receive_buffer:
                    # Before connect(), so the TCP window is small from the start.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
                if self.source_address:
                    sock.bind((self.source_address, 0))
                sock.settimeout(self.timeout)
                sock.connect(sockaddr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
            except BaseException:
                sock.close()
                raise
        except (OSError, ssl.SSLError) as error:
            if getattr(error, "reason", None) in PLAIN_SERVER_REASONS:  # [SEC-4]
                error = f"{error} (this port speaks plain chat/1, try without --tls)"
            self.transcript.record(self.label, "note", note=f"connect failed: {error}")
            raise CheckFailed(f"a connection to {host}:{port}", f"connect failed: {error}",
                              who=self.label) from None
        self._sock = sock
        return self

    def attach(self, sock: socket.socket) -> Peer:
        """Use a socket that is already connected (the kit's own tests use a socketpair)."""
        self.transcript.record(self.label, "connect", note="an already connected socket")
        self._sock = sock
        return self

    def tls_version(self) -> str | None:
        """"TLSv1.3" and the like on a TLS connection, else None."""
        return self._sock.version() if isinstance(self._sock, ssl.SSLSocket) else None

    def close(self) -> None:
        """Close abruptly, without LEAVE (the `close` step). Idempotent."""
        if self._sock is not None and not self._closed_by_us:
            self._closed_by_us = True
            self.transcript.record(self.label, "close", note="closed by the kit")
            try:
                self._sock.close()
            except OSError:
                pass

    def reset(self) -> None:
        """Close with a TCP reset instead of FIN (SO_LINGER 0)."""
        if self._sock is not None and not self._closed_by_us:
            self._closed_by_us = True
            self.transcript.record(self.label, "reset", note="reset by the kit (SO_LINGER 0)")
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._sock.close()
            except OSError:
                pass

    def shutdown_write(self) -> None:
        """Close the sending side only: the server sees EOF, we can still read."""
        self.transcript.record(self.label, "shutdown-write", note="the kit closed its sending side")
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def abort(self) -> None:
        """Wake a thread blocked in recv on this peer (used when a case is cancelled)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def begin_leave(self) -> None:
        """Clean-up, first half: send LEAVE unless the connection is already over.

        LEAVE closes both a registered connection (after `LEAVE name quit`) and
        an unregistered one ([LEAVE-1], [LEAVE-2]), so the kit leaves no trace.
        """
        if self.connected and not self.carries_bytes:
            self.transcript.record(self.label, "note", note="clean-up")
            self.send_raw(b"LEAVE\n")

    def finish_leave(self, deadline: float) -> None:
        """Clean-up, second half: wait (until `deadline`) for the close, then close.

        Waiting matters on a server with connection limits: the next case may
        need the slot, and [LIMIT-3] frees it before the server closes.
        """
        try:
            while self.connected and not self.carries_bytes and time.monotonic() < deadline:
                self._read_more(deadline)
                self._pending.clear()
        except CaseCancelled:
            pass
        self.close()

    # -- sending --------------------------------------------------------------------------------

    def send_line(self, text: str) -> bool:
        return self.send_raw(text.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> bool:
        """Send bytes; False if the connection is gone (the next read will say how)."""
        if self._sock is None or self._closed_by_us:
            raise CheckFailed("the kit to send on an open connection",
                              "the kit's connection is closed (a mistake in the case)", who=self.label)
        self._check_cancelled()
        with self._send_lock:
            data = self._add_password(data)
            self.transcript.record(self.label, "send", data)
            try:
                self._sock.settimeout(self.timeout * 5)
                self._sock.sendall(data)
                return True
            except (OSError, ssl.SSLError) as error:
                self._check_cancelled()
                self.transcript.record(self.label, "note", note=f"send failed: {error}")
                return False

    def _add_password(self, data: bytes) -> bytes:
        """Let a case written for an open room run in a room with a password.

        With `room_password` set and the server advertising `password=1`: the
        first USER this connection sends is preceded by `PASS <password>`
        (whose `OK PASS` the case then does not see), and a `PASS <anything>`
        the case sends before it carries the room's password instead (the case
        still sees its `OK PASS`; [PASS-4], which is about `password=0` rooms,
        is then not what it checked). Everything else is sent as the case wrote it.
        """
        hello = self.hello or self._hello_hint
        if self.room_password is None or self._password_done or hello is None or not hello.password:
            return data
        password_line = b"PASS " + self.room_password.encode("utf-8")
        lines = data.split(b"\n")
        for index, line in enumerate(lines[:-1] if data.endswith(b"\n") else lines):
            body = line[:-1] if line.endswith(b"\r") else line
            verb = body.split(b" ", 1)[0]
            if verb == b"PASS" and b" " in body:
                self._password_done = True
                if body != password_line:
                    self.password_substituted = True
                    lines[index] = password_line + line[len(body):]
                    self.transcript.record(self.label, "note", note="the room has a password: the kit "
                                           "sends it in place of the PASS the case wrote")
                break
            if verb == b"USER":
                self._password_done = True
                self._swallow_ok_pass += 1
                lines.insert(index, password_line)
                self.transcript.record(self.label, "note", note="the room has a password: the kit sends "
                                       "PASS before the case's first USER, and skips its OK PASS")
                break
        return b"\n".join(lines)

    # -- receiving ------------------------------------------------------------------------------

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise CaseCancelled()

    def _read_more(self, deadline: float) -> Event | None:
        """One recv. Returns TimedOut or Closed when that is what happened."""
        self._check_cancelled()
        if self._closed is not None:
            return self._closed
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return TimedOut(0.0)
        try:
            self._sock.settimeout(remaining)
            data = self._sock.recv(RECV_SIZE)
        except (TimeoutError, ssl.SSLWantReadError):
            self._check_cancelled()
            return TimedOut(0.0)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self._check_cancelled()
            return self._server_closed("reset")
        except (OSError, ssl.SSLError) as error:
            self._check_cancelled()
            return self._server_closed(f"error: {error}")
        if not data:
            return self._server_closed("EOF")
        arrived = time.monotonic()
        self._buffer += data
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                break
            raw = bytes(self._buffer[:newline + 1])
            del self._buffer[:newline + 1]
            self._pending.append(self._take_line(raw, arrived))
        return None

    def _server_closed(self, how: str) -> Closed:
        self._closed = Closed(how, time.monotonic())
        if self._buffer:
            self.transcript.record(self.label, "recv", bytes(self._buffer))
            if not self.tolerate_cut:
                self._violate(check_server_line(bytes(self._buffer)))
            self._buffer.clear()
        self.transcript.record(self.label, "eof" if how == "EOF" else "reset",
                               note="the server closed the connection" if how == "EOF" else how)
        return self._closed

    def _take_line(self, raw: bytes, arrived: float) -> Line:
        """Log a line, check it, and remember what it tells (HELLO, JOIN, LEAVE)."""
        self.transcript.record(self.label, "recv", raw)
        hello = self.hello or self._hello_hint
        self._violate(check_server_line(raw, hello.line_max if hello else None,
                                        hello.name_max if hello else None))
        text = raw[:-1].decode("utf-8", errors="replace")
        first = self._lines_seen == 0
        self._lines_seen += 1
        if text.startswith("HELLO "):
            if not first:
                self._violate([Violation("HELLO-1", "a second HELLO on one connection", raw)])
            else:
                try:
                    self.hello = parse_hello(text)
                except ValueError:
                    pass  # GRAM-1 has said what is wrong with it.
        elif first and not text.startswith("ERR "):
            self._violate([Violation("HELLO-1", "the first line is neither HELLO nor a refusing ERR", raw)])
        self._track_presence(text, raw)
        return Line(text, raw, arrived)

    def _track_presence(self, text: str, raw: bytes) -> None:
        """[LEAVE-4]: at most one LEAVE for each JOIN this client saw.

        Keyed by the name exactly as sent ([NAME-3] keeps it so), not lower-cased: a
        server that breaks [NAME-2] and lets `alice` and `ALICE` both register sends a
        LEAVE for each registration, which is no second LEAVE for either.
        """
        fields = text.split(" ")
        if fields[0] == "JOIN" and len(fields) == 2:
            self._presence[fields[1]] = "in"
        elif fields[0] == "NAMES":
            for name in fields[1:]:
                self._presence.setdefault(name, "in")
        elif fields[0] == "NICK" and len(fields) == 3:
            # [NICK-2]: the old name's LEAVE and the new name's JOIN, for [LEAVE-4].
            self._presence[fields[1]] = "out"
            self._presence[fields[2]] = "in"
        elif fields[0] == "LEAVE" and len(fields) == 3:
            key = fields[1]
            if self._presence.get(key) == "out":
                self._violate([Violation("LEAVE-4", f"a second LEAVE for {fields[1]} with no JOIN between",
                                         raw)])
            self._presence[key] = "out"

    def _violate(self, problems: Iterable[Violation]) -> None:
        for problem in problems:
            self.violations.append(dataclasses.replace(problem, who=self.label))

    def next_event(self, timeout: float | None = None, *, skip_outsiders: bool = True,
                   answer_pings: bool = True, log_timeout: bool = True) -> Event:
        """The next relevant line, or Closed, or TimedOut after `timeout` seconds.

        `log_timeout=False` keeps short polls (a case that reads while it
        paces its sending) out of the transcript.
        """
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            if self._pending:
                line = self._pending.popleft()
                if self._swallow_ok_pass and line.text == "OK PASS":
                    self._swallow_ok_pass -= 1  # the reply to the PASS the kit added (_add_password)
                    continue
                if answer_pings and not self.keepalive_manual and line.text.startswith("PING "):
                    self.send_line("PONG " + line.text[5:])  # [PING-4]
                    continue
                if skip_outsiders and self.is_outsider(line.text):
                    continue
                return line
            if self._sock is None:
                raise CheckFailed("the kit to read from an open connection",
                                  "the kit never connected this client (a mistake in the case)",
                                  who=self.label)
            if self._closed_by_us:
                return Closed("closed by the kit", time.monotonic())
            outcome = self._read_more(deadline)
            if isinstance(outcome, TimedOut):
                if log_timeout:
                    self.transcript.record(self.label, "note", note=f"nothing for {wait:g} s")
                return TimedOut(wait)
            if isinstance(outcome, Closed) and not self._pending:
                return outcome

    # -- expectations ------------------------------------------------------------------------------

    def fail(self, expected: str, event: Event, ids: tuple[str, ...] = (), detail: str = "") -> CheckFailed:
        return CheckFailed(expected, describe(event), ids=ids, who=self.label, detail=detail)

    def expect_line(self, text: str, timeout: float | None = None, ids: tuple[str, ...] = ()) -> Line:
        event = self.next_event(timeout)
        if isinstance(event, Line) and event.text == text:
            return event
        raise self.fail(show_line(text), event, ids)

    def expect_match(self, pattern: str, timeout: float | None = None, ids: tuple[str, ...] = ()) -> Line:
        event = self.next_event(timeout)
        if isinstance(event, Line) and re.fullmatch(pattern, event.text):
            return event
        raise self.fail(f"a line matching /{pattern}/", event, ids)

    def expect_error(self, code: str, timeout: float | None = None, ids: tuple[str, ...] = ()) -> Line:
        """`ERR <code> <text>`, whatever the text ([ERR-1])."""
        event = self.next_event(timeout)
        if isinstance(event, Line) and re.fullmatch(rf"ERR {re.escape(code)} .+", event.text):
            return event
        raise self.fail(f"'ERR {code} ...'", event, ids)

    def expect_any(self, options: Iterable[str], timeout: float | None = None,
                   ids: tuple[str, ...] = ()) -> Line:
        options = list(options)
        event = self.next_event(timeout)
        if isinstance(event, Line) and event.text in options:
            return event
        raise self.fail("one of " + " or ".join(show_line(o) for o in options), event, ids)

    def expect_names(self, names: Iterable[str], timeout: float | None = None,
                     ids: tuple[str, ...] = ("USERS-1",)) -> list[str]:
        """NAMES lines then `ENDNAMES n`; at least `names` listed; every name once; n right."""
        wanted = list(names)
        expected = f"NAMES lines listing {' '.join(wanted) or '(anyone)'}, then ENDNAMES <count>"
        listed: list[str] = []
        while True:
            event = self.next_event(timeout)
            if not isinstance(event, Line):
                raise self.fail(expected, event, ids)
            fields = event.text.split(" ")
            if fields[0] == "NAMES" and len(fields) > 1:
                listed += fields[1:]
                continue
            if fields[0] == "ENDNAMES" and listed and len(fields) == 2 and fields[1].isdigit():
                break
            raise self.fail(expected, event, ids)
        lowered = [name.lower() for name in listed]
        doubles = sorted({name for name in listed if lowered.count(name.lower()) > 1})
        missing = [name for name in wanted if name not in listed]
        if missing or doubles or int(fields[1]) != len(listed):
            actual = f"{len(listed)} names listed, ENDNAMES {fields[1]}"
            if missing:
                actual += f"; missing {' '.join(missing)}"
            if doubles:
                actual += f"; listed more than once: {' '.join(doubles)}"
            raise CheckFailed(expected, actual, ids=ids, who=self.label)
        return listed

    def expect_closed(self, timeout: float | None = None, ids: tuple[str, ...] = ()) -> Closed:
        """The server closes the connection, and sends nothing more before it."""
        event = self.next_event(timeout, skip_outsiders=False, answer_pings=False)
        if isinstance(event, Closed):
            return event
        raise self.fail("the server to close the connection (EOF or reset), with no further line",
                        event, ids)

    def quiet(self, timeout: float | None = None, ids: tuple[str, ...] = ()) -> None:
        """PING barrier ([PING-2]): the next relevant line must be its PONG."""
        token = "q" + secrets.token_hex(6)
        self.send_line(f"PING {token}")
        event = self.next_event(timeout)
        if isinstance(event, Line) and event.text == f"PONG {token}":
            return
        raise self.fail(f"'PONG {token}' next: nothing else pending (PING barrier)", event, ids)

    def barrier(self, timeout: float | None = None, ids: tuple[str, ...] = ()) -> list[Line]:
        """PING, then read until its PONG: every line caused by earlier commands
        has arrived by then ([PING-2]). Returns the relevant lines before the PONG."""
        token = "b" + secrets.token_hex(6)
        self.send_line(f"PING {token}")
        lines = self.read_until(lambda line: line.text == f"PONG {token}", timeout, ids,
                                expected=f"'PONG {token}' (PING barrier)")
        return lines[:-1]

    def read_until(self, predicate: Callable[[Line], bool], timeout: float | None = None,
                   ids: tuple[str, ...] = (), expected: str = "") -> list[Line]:
        """Relevant lines up to and including the first for which `predicate` holds."""
        lines = []
        while True:
            event = self.next_event(timeout)
            if not isinstance(event, Line):
                raise self.fail(expected or "more lines", event, ids)
            lines.append(event)
            if predicate(event):
                return lines

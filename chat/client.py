"""The reference chat/1 client: a terminal (or a pipe) on one side, a socket on the other.

    ClientSession   pure: turns what the user types into protocol lines, and the
                    server's lines into text to show. It counts the commands
                    waiting for their reply, so the client knows when what it
                    sent was accepted. No sockets, no threads: unit-tested.
    Terminal        the user's side: prompts, reading input, printing without
                    garbling the line being typed.
    PlainStream     the server's side: a socket, or TLS over it (TLSStream).
    ChatClient      the glue, with two threads:

        main thread:    registers (asks for a name when needed), then reads what
                        the user types and sends it, one command at a time: it
                        waits for each reply (the echo of a MSG) before the next
                        prompt. At the end it sends LEAVE and waits, bounded,
                        for the server to close.
        reader thread:  receives server lines, hands each to the ClientSession,
                        prints what it says, answers PING. When the connection
                        ends it wakes the main thread, even from a blocking
                        input(), with a signal (see Terminal.interrupt_input).

One lock (a Condition) guards the ClientSession; the main thread waits on it for
replies. The wire format comes from chat/protocol.py, the rules from SPEC.md.
POSIX only, like the server.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable

from chat import options
from chat.limits import DEFAULT_LINE_MAX
from chat.protocol import (
    VERSION,
    ErrorCode,
    LineBuffer,
    ProtocolError,
    hello_params,
    is_valid_name,
    name_key,
    parse_command,
    parse_reply,
    replace_control_characters,
)
from chat.transport import MemoryTLS

#: Bytes asked of recv() at a time.
RECV_SIZE = 4096
#: The longest server line the client accepts. A conforming server sends at
#: most line-max + name-max + 1 bytes ([FRAME-6]); the client is liberal and
#: only guards its memory against a broken server.
SERVER_LINE_LIMIT = 64 * 1024
#: Seconds to wait for the TCP (and TLS) connection.
CONNECT_TIMEOUT = 10.0
#: Seconds of silence from the server after which the client stops waiting for
#: replies. A server holding back a flood still answers flood-rate lines a
#: second (10 by default); ten silent seconds mean it is stuck or gone.
REPLY_SILENCE_LIMIT = 10.0
#: Seconds to wait for the server to close the connection after LEAVE.
LEAVE_TIMEOUT = 5.0

HELP = """\
Type a message and press Enter to send it to everyone.
  @name text    send text to name only
  /users        list who is online
  /quit, exit   leave (so does Ctrl-D)
  /help         this help
A line that starts with a space is sent as it is, for text beginning with @ or /."""

EXIT_STATUS_HELP = """\
exit status:
  0    you left (/quit, exit, Ctrl-D, end of input) or the server shut down,
       and the server had acknowledged every line you sent
  1    could not connect or register (name refused when input is not a
       terminal, wrong password), or the connection ended otherwise (dropped,
       timed out) or with lines unacknowledged, which may be lost
  2    bad command line
  130  interrupted with Ctrl-C

The password is read from --password-file or the CHAT_PASSWORD environment
variable, so that it does not show in ps. In piped use (input not a terminal)
incoming lines are printed to stdout as they are shown, the client's own
notices go to stderr, and the client waits until the server has acknowledged
every line before it leaves."""


# ---------------------------------------------------------------------------
# The pure part: input -> protocol lines, server lines -> text to show
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Send:
    """Send this protocol line (without its LF)."""
    line: str


@dataclasses.dataclass(frozen=True)
class Notice:
    """Show this to the user; nothing is sent."""
    text: str


@dataclasses.dataclass(frozen=True)
class Quit:
    """The user wants to leave."""


@dataclasses.dataclass(frozen=True)
class Reaction:
    """What to do about one server line: what to show, and what to answer."""
    show: str | None = None
    answer: str | None = None


def printable(text: str) -> str:
    """The text with control characters replaced by U+FFFD ([SEC-2])."""
    return replace_control_characters(text)


# How many fields each server verb needs; a shorter line is shown raw.
_REQUIRED_FIELDS = {"HELLO": 1, "JOIN": 1, "LEAVE": 2, "MSG": 2, "PM": 3, "NAMES": 1,
                    "ENDNAMES": 1, "PING": 1, "PONG": 1, "OK": 1, "ERR": 1}


class ClientSession:
    """The client's side of one chat/1 conversation, with no I/O.

    `interpret(typed)` turns a line the user typed into a Send, a Notice, a
    Quit or None (nothing to do). Call `sent(line)` for every line actually
    sent, before sending it, and `receive(line)` for every line from the
    server, which returns a Reaction. `connection_ended()` when the
    connection is gone.

    Replies come back one per command and in order ([CMD-3]), so counting is
    enough to know when everything sent was acknowledged: the MSG echo is the
    acknowledgement of a MSG ([MSG-2]), the sender's copy that of a PM, the own
    JOIN that of USER, ENDNAMES that of USERS, the own LEAVE that of LEAVE,
    OK that of PASS, and a non-closing ERR that of whatever it refused.
    """

    def __init__(self) -> None:
        #: From HELLO: the protocol version, the longest line the server takes,
        #: and whether it wants PASS ([HELLO-2]).
        self.server_version: str | None = None
        self.line_max = DEFAULT_LINE_MAX
        self.password_required = False
        #: Our name as the server registered it, once our JOIN came back.
        self.name: str | None = None
        #: Lines sent whose reply has not arrived yet.
        self.unacknowledged = 0
        #: The code of the latest ERR: why USER or PASS was refused.
        self.last_error: str | None = None
        #: The code of an ERR after which the server closes ([ERR-2]).
        self.closing_error: str | None = None
        #: Our own `LEAVE <name> quit` came back: we left as planned.
        self.left = False
        self.ended = False
        self._names: list[str] = []  # NAMES lines collected until ENDNAMES

    @property
    def greeted(self) -> bool:
        return self.server_version is not None

    @property
    def registered(self) -> bool:
        return self.name is not None

    # -- the user's side -----------------------------------------------------

    def interpret(self, typed: str) -> Send | Notice | Quit | None:
        """What a line typed by the user means; None for a blank line."""
        if not typed.strip():
            return None  # Enter on nothing, as in [FRAME-9].
        command = typed.rstrip()
        if command in ("/quit", "exit"):
            return Quit()
        if command == "/users":
            return Send("USERS")
        if command == "/help":
            return Notice(HELP)
        if command.startswith("/"):
            return Notice(f"unknown command {command.split()[0]}; "
                          "try @name text, /users, /quit or /help")
        if typed.startswith("@"):
            # `@name text` is the habit users bring from the original project.
            name, _, text = typed[1:].partition(" ")
            if not is_valid_name(name) or not text.strip():
                return Notice("usage: @name text")
            return self._checked(f"PM {name} {text}", text)
        return self._checked(f"MSG {typed}", typed)

    def _checked(self, line: str, text: str) -> Send | Notice:
        """The line if the server will take it, else why not.

        Too long a line would cost an ERR LINE_TOO_LONG and the whole text
        ([FRAME-5]); the server's own parser finds anything else it would refuse.
        """
        size = len(line.encode("utf-8")) + 1  # +1: the LF counts too.
        if size > self.line_max:
            room = self.line_max - (size - len(text.encode("utf-8")))
            return Notice(f"not sent: the text is {size - self.line_max} bytes too long "
                          f"(this server takes {room} bytes of text here)")
        try:
            parse_command(line.encode("utf-8"))
        except ProtocolError as error:
            return Notice(f"not sent: {error.text}")
        return Send(line)

    def sent(self, line: str) -> None:
        """`line` is about to be sent: it is owed a reply, unless it is a PONG."""
        if not line.startswith("PONG "):
            self.unacknowledged += 1
            self.last_error = None

    # -- the server's side ---------------------------------------------------

    def receive(self, line: str) -> Reaction:
        """React to one server line (terminator removed)."""
        line = printable(line)
        reply = parse_reply(line)
        verb, fields = reply.verb, reply.fields
        if verb not in _REQUIRED_FIELDS or len(fields) < _REQUIRED_FIELDS[verb]:
            return Reaction(show=f"? {line}")  # A newer server's line, or a broken one.
        if verb == "HELLO":
            self.server_version = fields[0]
            params = hello_params(reply)  # [GRAM-3]: unknown ones are ignored.
            self.line_max = params.get("line-max", DEFAULT_LINE_MAX)
            self.password_required = params.get("password", 0) == 1
            return Reaction()
        if verb == "PING":
            return Reaction(answer=f"PONG {fields[0]}")  # [PING-4], silently.
        if verb == "ERR":
            code, text = fields[0], (fields[1] if len(fields) > 1 else "")
            # Only the code counts ([ERR-1]); the text is for the user.
            self.last_error = code
            if code == ErrorCode.TLS_REQUIRED.value:  # [SEC-3]: it came before HELLO.
                text = "this port speaks TLS, try --tls"
            if _closes(code):
                self.closing_error = code
            # Every ERR but the closing ones is the reply to a command; of
            # those, only BAD_PASSWORD is, to PASS ([PASS-3]).
            if not _closes(code) or code == ErrorCode.BAD_PASSWORD.value:
                self._acknowledged()
            return Reaction(show=f"! {code} {text}".rstrip())
        if verb == "JOIN":
            if not self.registered and self.unacknowledged:
                self.name = fields[0]  # [USER-3]: our JOIN comes first.
                self._acknowledged()
            return Reaction(show=f"* {fields[0]} joined")
        if verb == "LEAVE":
            name, reason = fields[0], fields[1]
            if name == self.name and reason == "quit":
                self.left = True
                self._acknowledged()
            return Reaction(show=f"* {name} left ({reason})")
        if verb == "MSG":
            sender, text = fields
            if sender == self.name:
                self._acknowledged()  # The echo of our MSG ([MSG-2]).
            return Reaction(show=f"<{sender}> {text}")
        if verb == "PM":
            sender, recipient, text = fields
            if sender == self.name:
                self._acknowledged()  # Our copy of our PM ([PM-2]).
            return Reaction(show=f"[{sender} -> {recipient}] {text}")
        if verb == "NAMES":
            self._names += fields
            return Reaction()
        if verb == "ENDNAMES":
            names = sorted(self._names, key=lambda name: (name_key(name), name))
            self._names = []
            self._acknowledged()
            return Reaction(show=f"* online ({len(names)}): {', '.join(names)}")
        # OK PASS, or the PONG to a PING of ours.
        self._acknowledged()
        return Reaction()

    def _acknowledged(self) -> None:
        self.unacknowledged = max(0, self.unacknowledged - 1)

    def connection_ended(self) -> str | None:
        """The connection is gone; what to tell the user, if anything."""
        self.ended = True
        if self.unacknowledged:
            return (f"* disconnected; {self.unacknowledged} line(s) sent were not "
                    "acknowledged and may be lost")
        if self.left:
            return None  # Our own LEAVE said it all.
        if self.closing_error:
            return "* disconnected"  # The ERR line said why.
        return "* disconnected: the server closed the connection"

    def exit_status(self) -> int:
        """0 when the session ended as planned with nothing lost, else 1."""
        planned = self.left or self.closing_error == ErrorCode.SHUTTING_DOWN.value
        return 0 if planned and not self.unacknowledged else 1


def _closes(code: str) -> bool:
    """Whether the server closes after ERR `code` ([ERR-2]); unknown codes do not."""
    try:
        return ErrorCode(code).closes
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# The terminal
# ---------------------------------------------------------------------------


class ConnectionEnded(Exception):
    """Raised in the main thread, out of input(), when the connection ends."""


#: The signal by which the reader thread wakes the main thread from input().
WAKE_SIGNAL = signal.SIGUSR1
#: Seconds between repeats of that signal (see Terminal.interrupt_input).
WAKE_REPEAT = 0.05


class Terminal:
    """Where the user reads and types.

    Interactive (stdin and stdout are a terminal): a prompt, line editing with
    readline if it is there, and incoming lines printed above the line being
    typed. Otherwise (a pipe or a file): no prompt, incoming lines printed
    plainly to stdout, the client's own notices to stderr.

    Use as a context manager: it installs the WAKE_SIGNAL handler.
    """

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self._readline = None
        if interactive:
            try:
                import readline
                self._readline = readline
            except ImportError:
                pass  # Plain input(): what was typed is not redrawn, but it is kept.
        #: True while the main thread is in read_line() or read_secret(): only
        #: then may the wake signal raise ConnectionEnded there.
        self.reading = False
        #: Set by the reader thread once the connection has ended.
        self.connection_ended = False
        self._prompt = ""
        self._editing = False  # readline holds the line being typed
        self._output = threading.Lock()
        self._previous_handler: object = None

    def __enter__(self) -> Terminal:
        self._previous_handler = signal.signal(WAKE_SIGNAL, self._on_wake_signal)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous_handler is not None:  # None: it was not set from Python.
            signal.signal(WAKE_SIGNAL, self._previous_handler)

    # -- output (any thread) ----------------------------------------------------

    def show(self, text: str) -> None:
        """Print a line of the conversation."""
        self._print(text, sys.stdout)

    def notice(self, text: str) -> None:
        """Print a message of the client's own."""
        self._print(text, sys.stdout if self.interactive else sys.stderr)

    def _print(self, text: str, stream) -> None:
        with self._output:
            if not (self.interactive and self.reading):
                print(text, file=stream, flush=True)
                return
            # The user may be halfway through a line: go back to the start of
            # the prompt's line, erase it (\x1b[K), print the text there, and
            # draw the prompt and what was typed again on the next line.
            # (Without readline what was typed waits, unseen, in the kernel.)
            typed = self._readline.get_line_buffer() if self._editing else ""
            stream.write("\r\x1b[K" + text + "\n" + self._prompt + typed)
            stream.flush()
            # The cursor is now at the end of the line. Had the user moved it
            # left, the line looks wrong (but is right) until Ctrl-L redraws
            # it. readline.redisplay() would not help: it redraws only what
            # changed in the buffer since its last drawing, here nothing.
            # A line that arrives in the very instant readline draws its
            # prompt can still land inside it; replies to the user's own
            # commands never do, as the prompt waits for them (_command).

    # -- input (main thread only) ---------------------------------------------

    def read_line(self, prompt: str = "") -> str:
        """One line the user typed. Raises EOFError at the end of input, and
        ConnectionEnded when the connection ends meanwhile (see interrupt_input)."""
        self._prompt = prompt if self.interactive else ""
        self._editing = self._readline is not None
        try:
            self.reading = True
            if self.connection_ended:
                raise ConnectionEnded  # The signal may have come just before.
            return input(self._prompt).removesuffix("\r")
        except (EOFError, ConnectionEnded, KeyboardInterrupt):
            if self.interactive:
                sys.stdout.write("\r\x1b[K")  # Erase the prompt: this session is over.
                sys.stdout.flush()
            raise
        finally:
            self.reading = False
            self._editing = False

    def read_secret(self, prompt: str) -> str:
        """A password, not echoed (interactive only)."""
        self._prompt = prompt
        try:
            self.reading = True
            if self.connection_ended:
                raise ConnectionEnded
            return getpass.getpass(prompt)
        finally:
            self.reading = False

    # -- waking the main thread (reader thread) ----------------------------------

    def interrupt_input(self) -> None:
        """Make the main thread's read_line() raise ConnectionEnded.

        A blocked input() wakes only for a signal: the read fails with EINTR,
        Python runs the handler in the main thread, and the handler's
        exception comes out of input() (readline restores the terminal
        first). A signal that arrives after read_line() checked
        connection_ended but before input() blocks would go unnoticed, so it
        is repeated until read_line() has returned.
        """
        self.connection_ended = True
        main_thread = threading.main_thread().ident
        while self.reading:
            signal.pthread_kill(main_thread, WAKE_SIGNAL)
            time.sleep(WAKE_REPEAT)

    def _on_wake_signal(self, signum: int, frame: object) -> None:
        # Runs in the main thread. Outside read_line() the main thread finds
        # out that the connection ended by itself, at its next wait or read.
        # (A SIGUSR1 from elsewhere, with the connection alive, is ignored.)
        if self.reading and self.connection_ended:
            raise ConnectionEnded


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
# The glue: one socket, two threads
# ---------------------------------------------------------------------------


class ChatClient:
    """Connects a ClientSession to the server (a PlainStream or TLSStream) and
    to a Terminal."""

    def __init__(self, stream: PlainStream, terminal: Terminal) -> None:
        self.stream = stream
        self.terminal = terminal
        self.session = ClientSession()
        #: Guards self.session; notified after every server line and at the end.
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_forever, name="reader", daemon=True)
        #: Set when the main thread ends the connection itself: then the
        #: reader thread has nothing to report about its end.
        self._hanging_up = False

    def run(self, name: str | None, password: str | None) -> int:
        """Register, chat until the user or the server ends it; the exit status."""
        self._reader.start()
        try:
            try:
                status = self._register(name, password)
                if status is not None:
                    return status
                self._chat()
                return self.session.exit_status()
            except ConnectionEnded:
                return self.session.exit_status()
            except KeyboardInterrupt:
                if self.session.registered and not self.session.ended:
                    self._leave()  # A second Ctrl-C cuts this short.
                return 130
        except KeyboardInterrupt:
            return 130
        finally:
            # Wake the reader if it still waits for the server, then clean up.
            self._hanging_up = True
            self.stream.shutdown()
            self._reader.join()
            self.stream.close()

    # -- main thread ------------------------------------------------------------

    def _register(self, name: str | None, password: str | None) -> int | None:
        """Greeting, PASS and USER; None once registered, else the exit status."""
        if not self._wait_until(lambda: self.session.greeted):
            return self._failed("the server did not greet (is it a chat/1 server?)")
        if self.session.server_version != VERSION:
            return self._failed(f"the server speaks {self.session.server_version}, "
                                f"this client {VERSION}")
        if self.session.password_required and not self._log_in(password):
            return 1
        while True:
            if name is None:
                name = self._ask("name: ")
                if name is None:
                    return 1
            if not is_valid_name(name):
                refusal = (f"{name!r} is not a name: a letter, then up to 31 letters, "
                           "digits, _ or -")
            else:
                if not self._command(f"USER {name}"):
                    return self._failed("the server did not answer USER")
                if self.session.registered:
                    return None
                if self.session.last_error == ErrorCode.PASSWORD_REQUIRED.value:
                    if not self._log_in(password=None):
                        return 1
                    continue  # The same name again, now that PASS was accepted.
                # The server's ERR line, shown already, said why.
                refusal = f"the name {name!r} was refused ({self.session.last_error})"
            if not self.terminal.interactive:
                return self._failed(refusal)
            self.terminal.notice(refusal)
            name = None

    def _log_in(self, password: str | None) -> bool:
        """Send PASS ([PASS-1]); whether the server took it."""
        if password is None:
            if not self.terminal.interactive:
                self._failed("the server wants a password: give --password-file FILE "
                             "or set CHAT_PASSWORD")
                return False
            try:
                password = self.terminal.read_secret("password: ")
            except EOFError:
                return False
        # A wrong password ends the connection ([PASS-3]); the ERR shows why.
        return self._command(f"PASS {password}") and self.session.last_error is None

    def _ask(self, question: str) -> str | None:
        try:
            return self.terminal.read_line(question).strip()
        except EOFError:
            return None

    def _chat(self) -> None:
        """Send what the user types until they leave or the connection ends."""
        # SPEC 6.2: the reference client asks who is online right after JOIN.
        self._command("USERS")
        prompt = f"{self.session.name}> "
        while not self.session.ended:
            try:
                typed = self.terminal.read_line(prompt)
            except EOFError:
                break  # Ctrl-D, or the end of piped input: leave.
            with self._changed:
                action = self.session.interpret(typed)
            if isinstance(action, Quit):
                break
            if isinstance(action, Notice):
                self.terminal.notice(action.text)
            elif isinstance(action, Send):
                self._command(action.line)
        self._leave()

    def _command(self, line: str) -> bool:
        """Send a command and wait for its reply; whether it came.

        One command at a time: its reply (the echo of a MSG, [MSG-2]) shows
        before the next prompt, so the conversation reads in order; and the
        client never leaves before every line it sent was acknowledged. (A
        client that closes with lines still unread in its socket makes the
        kernel send a reset, which can cost the server the lines it had not
        read yet.)
        """
        self._send(line)
        return self._wait_until(lambda: self.session.unacknowledged == 0)

    def _leave(self) -> None:
        """Say LEAVE, so that the others see `quit`, and wait for the close."""
        if self.session.ended:
            return
        self._send("LEAVE")
        # The server sends our LEAVE, then closes ([LEAVE-1]).
        if not self._wait_until(lambda: self.session.ended, timeout=LEAVE_TIMEOUT):
            self._failed("the server did not close the connection after LEAVE")

    def _send(self, line: str) -> None:
        with self._changed:
            if self.session.ended:
                return
            self.session.sent(line)  # Before sending: the reply may come at once.
        self._write(line)

    def _write(self, line: str) -> None:
        try:
            self.stream.sendall(line.encode("utf-8") + b"\n")
        except OSError:
            pass  # The connection is gone; the reader thread sees it and says so.

    def _wait_until(self, done: Callable[[], bool], timeout: float = REPLY_SILENCE_LIMIT) -> bool:
        """Wait until done() or the connection ends; give up after `timeout`
        seconds in which nothing at all came from the server. Whether done()."""
        with self._changed:
            while not done() and not self.session.ended:
                if not self._changed.wait(timeout):
                    break
            return done()

    def _failed(self, reason: str) -> int:
        """Say why the client gives up, unless the connection ended (the reader
        thread said so then); the exit status."""
        if not self.session.ended:
            self.terminal.notice(f"chat-client: {reason}")
        return 1

    # -- reader thread ------------------------------------------------------------

    def _read_forever(self) -> None:
        # The kernel hands a process's signal to any thread that does not
        # block it. Ctrl-C taken by this thread would wait, unseen, until the
        # main thread next runs Python code; blocked here, it goes to the
        # main thread and wakes it from input() at once.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        lines = LineBuffer(SERVER_LINE_LIMIT)
        try:
            while data := self.stream.recv():
                for item in lines.feed(data):
                    if isinstance(item, ProtocolError):
                        self.terminal.notice("* the server sent an overlong line; skipped")
                    else:
                        self._receive(item.decode("utf-8", errors="replace"))
        except OSError:
            pass  # Reset, or shut down by the main thread: the connection is over.
        finally:
            # Even after a bug (its traceback is printed): the main thread
            # must not wait for a connection that no one reads any more.
            with self._changed:
                farewell = self.session.connection_ended()
                if farewell and not self._hanging_up:
                    self.terminal.notice(farewell)
                self._changed.notify_all()
            self.terminal.interrupt_input()

    def _receive(self, line: str) -> None:
        with self._changed:
            reaction = self.session.receive(line)
            # Shown before the main thread wakes, so that its own messages
            # (a refused name, say) come after the server's line that caused them.
            if reaction.show is not None:
                self.terminal.show(reaction.show)
            self._changed.notify_all()
        if reaction.answer is not None:
            self._write(reaction.answer)


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
        stream = connect(args.host, args.port, args.tls or args.cafile is not None, args.cafile)
    except OSError as error:  # ssl.SSLError is an OSError too
        reason = error.strerror or error
        if isinstance(error, ssl.SSLError) and error.reason in PLAIN_SERVER_REASONS:
            reason = "this port speaks plain chat/1, not TLS: try without --tls"
        print(f"chat-client: cannot connect to {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    with Terminal(interactive) as terminal:
        return ChatClient(stream, terminal).run(args.name, password)


if __name__ == "__main__":
    sys.exit(main())

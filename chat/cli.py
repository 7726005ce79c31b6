"""The CLI on the client core: a terminal (or a pipe) on one side, a socket on the other.

chat/client_core.py decides everything; this module only carries its effects
out and feeds it what happened:

    Link        the socket side: opens connections in a thread (so the screen
                never waits for connect()), reads each in a thread, and puts
                what happened on one queue, waking the main loop through a pipe
    ScreenUI    a full-screen terminal (the standard library's curses): the
                conversation above, a status line (name, lag, who is online,
                unread marks), one input line that incoming text never disturbs
    LineUI      the fallback for pipes and dumb terminals: one line per event,
                input read line by line
    Session     the main loop, in the main thread only: select() on the input
                and the Link's pipe, then the core's calls, then its effects

Only the main thread touches the core and the terminal. Rendering is split out
as pure functions (`entry_for`, `LineEditor`) so that it is unit-tested; the
screen itself is tested in a pseudo-terminal (tests/test_cli_screen.py).
"""

from __future__ import annotations

import collections
import dataclasses
import getpass
import os
import queue
import selectors
import sys
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable
from pathlib import Path

from chat import client_core as core_events
from chat.client_core import ClientCore, Effect
from chat.protocol import LineBuffer, ProtocolError

#: The longest server line the client accepts. A conforming server sends at
#: most line-max + name-max + 1 bytes ([FRAME-6]); the client is liberal and
#: only guards its memory against a broken server.
SERVER_LINE_LIMIT = 64 * 1024
#: Bytes asked of recv() at a time.
RECV_SIZE = 4096
#: Lines of a script (piped input) sent ahead of their replies. The server
#: handles them in order anyway ([CMD-1]); the bound keeps a long file from
#: sitting in the socket buffers while the server holds back a flood ([LIMIT-4]).
PIPED_IN_FLIGHT = 16
#: Entries kept in the scrollback, and input lines kept in the history file.
SCROLLBACK_MAX = 5000
HISTORY_MAX = 1000
#: Seconds to let the connection threads finish after the session ended.
THREAD_JOIN_TIMEOUT = 2.0


# ---------------------------------------------------------------------------
# What an effect looks like: entries of the conversation (pure)
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Entry:
    """One line of the conversation as shown: styled pieces of text.

    `conversation`: a server's line (stdout in piped use) rather than one of
    the client's own remarks (stderr in piped use). `status` marks an own
    message: "pending", "" once acknowledged, or why it failed.
    """

    pieces: list[tuple[str, str]]  # (style, text); style "nick:<name>" colours a name
    conversation: bool = True
    id: int | None = None
    status: str = ""
    bell: bool = False
    stamp: str = ""

    def text(self) -> str:
        body = "".join(text for _, text in self.pieces)
        return f"{body}  [{self.status}]" if self.status else body


def _nick(name: str) -> tuple[str, str]:
    return (f"nick:{name}", name)


def entry_for(effect: Effect, own_texts: dict[int, str]) -> Entry | None:
    """The entry an effect adds to the conversation, or None (status only).

    `own_texts` maps our messages' ids to their text, for Failed and Lost.
    """
    if isinstance(effect, core_events.Message):
        style = "mention" if effect.mention else "text"
        return Entry([("plain", "<"), _nick(effect.sender), ("plain", "> "), (style, effect.text)],
                     id=effect.id, status="pending" if effect.pending else "", bell=effect.mention)
    if isinstance(effect, core_events.Action):
        style = "mention" if effect.mention else "action"
        return Entry([("action", "* "), _nick(effect.sender), (style, " " + effect.text)],
                     id=effect.id, status="pending" if effect.pending else "", bell=effect.mention)
    if isinstance(effect, core_events.Private):
        return Entry([("private", "["), _nick(effect.sender), ("private", " -> "),
                      _nick(effect.recipient), ("private", "] "), ("text", effect.text)],
                     id=effect.id, status="pending" if effect.pending else "", bell=not effect.own)
    if isinstance(effect, core_events.Joined):
        return Entry([("info", "* "), _nick(effect.name), ("info", " joined")])
    if isinstance(effect, core_events.Left):
        return Entry([("info", "* "), _nick(effect.name), ("info", f" left ({effect.reason})")])
    if isinstance(effect, core_events.NickChanged):
        return Entry([("info", "* "), _nick(effect.old), ("info", " is now known as "), _nick(effect.new)])
    if isinstance(effect, core_events.Names):
        return Entry([("info", f"* online ({len(effect.names)}): {', '.join(effect.names)}")])
    if isinstance(effect, core_events.Error):
        return Entry([("error", f"! {effect.code} {effect.text}".rstrip())])
    if isinstance(effect, core_events.Failed):
        text = own_texts.get(effect.id, "")
        return Entry([("error", f"! not sent ({effect.code}): {text}")], conversation=False)
    if isinstance(effect, core_events.Lost):
        text = own_texts.get(effect.id, "")
        return Entry([("error", f"! may be lost (the connection ended before its echo): {text}")],
                     conversation=False)
    if isinstance(effect, core_events.Notice):
        return Entry([("info", effect.text)], conversation=False)
    if isinstance(effect, core_events.Disconnected):
        return Entry([("error", f"* disconnected: {effect.reason}")], conversation=False)
    if isinstance(effect, core_events.Reconnecting):
        return Entry([("info", f"* reconnecting in {effect.delay:.1f} s (attempt {effect.attempt})")],
                     conversation=False)
    if isinstance(effect, core_events.QueryOpened):
        return Entry([("info", "* talking privately with "), _nick(effect.name),
                      ("info", "; /query alone goes back to the room")], conversation=False)
    if isinstance(effect, core_events.QueryClosed):
        return Entry([("info", f"* back to the room (was talking with {effect.name})")], conversation=False)
    return None


def text_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide East Asian characters take two,
    combining marks none."""
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def wrap(text: str, width: int) -> list[tuple[int, int]]:
    """(start, end) character ranges of `text` cut into rows of `width` columns."""
    rows = []
    start = used = 0
    for index, char in enumerate(text):
        char_width = _char_width(char)
        if used + char_width > width and index > start:
            rows.append((start, index))
            start, used = index, 0
        used += char_width
    rows.append((start, len(text)))
    return rows


# ---------------------------------------------------------------------------
# The input line (pure)
# ---------------------------------------------------------------------------


class LineEditor:
    """The line being typed: text, cursor, history, and which part of it a
    terminal `width` columns wide shows (it scrolls sideways, so a line wider
    than the terminal never wraps onto rows it does not own)."""

    def __init__(self, history: list[str] | None = None) -> None:
        self.text = ""
        self.cursor = 0
        self.history = history if history is not None else []
        self._browsing: int | None = None  # index into history while Up/Down
        self._draft = ""                   # what was typed before browsing
        self._offset = 0                   # first character shown

    def set(self, text: str, cursor: int | None = None) -> None:
        self.text = text
        self.cursor = len(text) if cursor is None else cursor
        self._browsing = None

    def insert(self, text: str) -> None:
        self.set(self.text[:self.cursor] + text + self.text[self.cursor:], self.cursor + len(text))

    def edit(self, action: str) -> None:
        """One editing key: left, right, home, end, backspace, delete,
        kill-start, kill-end, kill-word, up, down."""
        text, cursor = self.text, self.cursor
        if action == "left":
            self.cursor = max(0, cursor - 1)
        elif action == "right":
            self.cursor = min(len(text), cursor + 1)
        elif action == "home":
            self.cursor = 0
        elif action == "end":
            self.cursor = len(text)
        elif action == "backspace" and cursor:
            self.set(text[:cursor - 1] + text[cursor:], cursor - 1)
        elif action == "delete":
            self.set(text[:cursor] + text[cursor + 1:], cursor)
        elif action == "kill-start":
            self.set(text[cursor:], 0)
        elif action == "kill-end":
            self.set(text[:cursor], cursor)
        elif action == "kill-word":
            start = len(text[:cursor].rstrip(" ").rpartition(" ")[0])
            start = start + 1 if start else 0
            self.set(text[:start] + text[cursor:], start)
        elif action in ("up", "down"):
            self._browse(-1 if action == "up" else 1)

    def _browse(self, step: int) -> None:
        if not self.history:
            return
        if self._browsing is None:
            if step > 0:
                return
            self._draft, position = self.text, len(self.history)
        else:
            position = self._browsing
        position = max(0, min(len(self.history), position + step))
        text = self._draft if position == len(self.history) else self.history[position]
        self.text, self.cursor = text, len(text)
        self._browsing = None if position == len(self.history) else position

    def submit(self) -> str:
        """The line, now sent: it goes into the history, the input is emptied."""
        text = self.text
        if text.strip() and (not self.history or self.history[-1] != text):
            self.history.append(text)
            del self.history[:-HISTORY_MAX]
        self.set("")
        self._offset = 0
        return text

    def view(self, width: int) -> tuple[str, int]:
        """The part of the text shown in `width` columns, and the cursor's column."""
        width = max(2, width)
        if self.cursor < self._offset:
            # Moving left past the edge: show a third of a line before the cursor.
            self._offset = max(0, self.cursor - width // 3)
        while text_width(self.text[self._offset:self.cursor]) > width - 1:
            self._offset += 1
        while self._offset and text_width(self.text[self._offset - 1:]) <= width - 1:
            self._offset -= 1  # The whole end fits: no blank columns after it.
        shown = []
        used = 0
        for char in self.text[self._offset:]:
            used += _char_width(char)
            if used > width:
                break
            shown.append(char)
        return "".join(shown), text_width(self.text[self._offset:self.cursor])


# ---------------------------------------------------------------------------
# History, kept per user in the platform's state folder
# ---------------------------------------------------------------------------


def state_dir(platform: str = sys.platform, environ: os._Environ | dict = os.environ,
              home: Path | None = None) -> Path:
    """Where the client keeps its state: $XDG_STATE_HOME/chat1 (default
    ~/.local/state/chat1) on Linux and the BSDs, ~/Library/Application
    Support/chat1 on macOS, %LOCALAPPDATA%\\chat1 on Windows."""
    home = home or Path.home()
    if platform == "darwin":
        return home / "Library" / "Application Support" / "chat1"
    if platform.startswith("win"):
        base = environ.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "chat1"
    base = environ.get("XDG_STATE_HOME")
    return (Path(base) if base and Path(base).is_absolute() else home / ".local" / "state") / "chat1"


class History:
    """The input history of one chat name, one line per entry, in a file."""

    def __init__(self, name: str, directory: Path | None = None) -> None:
        self.path = (directory or state_dir()) / "history" / f"{name.lower()}.txt"

    def load(self) -> list[str]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        return lines[-HISTORY_MAX:]

    def save(self, lines: list[str]) -> None:
        """Best effort: a history that cannot be written is no reason to stop chatting."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text("".join(line + "\n" for line in lines[-HISTORY_MAX:]),
                                 encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# The socket side
# ---------------------------------------------------------------------------


class Link:
    """Connections to the server, each read by a thread of its own.

    What happens is put on `events` as (kind, generation, value): ("connected",
    g, stream), ("connect_failed", g, reason), ("line", g, text),
    ("overlong", g, None), ("lost", g, None); a byte on the wake pipe tells the
    main loop. `generation` counts connections, so that a late event of an old
    one is recognised and dropped.
    """

    def __init__(self, connector: Callable[[], object]) -> None:
        self.connector = connector
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_read, self._wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        self.generation = 0
        self.stream = None
        self._threads: list[threading.Thread] = []

    def _put(self, *event) -> None:
        self.events.put(event)
        try:
            os.write(self._wake_write, b"!")
        except OSError:
            pass  # The pipe is full: the main loop is awake anyway.

    def _thread(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def open(self, stream=None) -> None:
        """Start a new connection (or adopt `stream`, one main() opened)."""
        self.generation += 1
        if stream is not None:
            self._put("connected", self.generation, stream)
        else:
            self._thread(self._connect, self.generation)

    def _connect(self, generation: int) -> None:
        try:
            stream = self.connector()
        except OSError as error:  # ssl.SSLError is an OSError too
            self._put("connect_failed", generation, str(error.strerror or error))
            return
        self._put("connected", generation, stream)

    def adopt(self, stream, generation: int) -> None:
        """The connection `generation` is open: read it."""
        self.stream = stream
        self._thread(self._read, stream, generation)

    def _read(self, stream, generation: int) -> None:
        lines = LineBuffer(SERVER_LINE_LIMIT)
        try:
            while data := stream.recv():
                for item in lines.feed(data):
                    if isinstance(item, ProtocolError):
                        self._put("overlong", generation, None)
                    else:
                        self._put("line", generation, item.decode("utf-8", errors="replace"))
        except OSError:
            pass  # Reset, or shut down by close(): the connection is over.
        finally:
            self._put("lost", generation, None)

    def send(self, line: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.sendall(line.encode("utf-8") + b"\n")
        except OSError:
            pass  # The reader thread sees the end and reports it.

    def close(self) -> None:
        """End the current connection; its reader reports "lost"."""
        if self.stream is not None:
            self.stream.shutdown()

    def finish(self) -> None:
        self.close()
        for thread in self._threads:
            thread.join(THREAD_JOIN_TIMEOUT)
        if self.stream is not None:
            self.stream.close()
        if not any(thread.is_alive() for thread in self._threads):
            # Else a thread still stuck in connect() could later write its
            # wake byte into whatever file reused the number; the process is
            # ending anyway.
            os.close(self.wake_read)
            os.close(self._wake_write)

    def drain_wake(self) -> None:
        try:
            while os.read(self.wake_read, 4096):
                pass
        except BlockingIOError:
            pass


# ---------------------------------------------------------------------------
# Line mode: pipes and dumb terminals
# ---------------------------------------------------------------------------


class LineUI:
    """One line per event. Piped (not a terminal): the conversation to stdout,
    the client's own remarks to stderr, no colours, no timestamps; the
    client's own messages are printed once the server has echoed them."""

    def __init__(self, interactive: bool, stdin_fd: int = 0) -> None:
        self.interactive = interactive
        self.stdin_fd = stdin_fd
        self._buffer = b""
        self.lines: collections.deque[str] = collections.deque()
        self.ended = False
        self.asking: str | None = None
        self._own: dict[int, Entry] = {}
        self._own_texts: dict[int, str] = {}
        self._stalled = False

    def wants_input(self, core: ClientCore) -> bool:
        return not self.ended

    def read(self) -> None:
        """Read what stdin has; complete lines wait in self.lines."""
        data = os.read(self.stdin_fd, 65536)
        if not data:
            self.ended = True
            if self._buffer:  # A last line without its LF is a line too.
                self.lines.append(self._buffer.decode("utf-8", errors="replace"))
                self._buffer = b""
            return
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(line.decode("utf-8", errors="replace").removesuffix("\r") for line in complete)

    def ask(self, effect: Effect) -> bool:
        """AskName or AskPassword: whether the question can be answered here."""
        if not self.interactive:
            return False
        if isinstance(effect, core_events.AskPassword):
            # Not echoed. The main loop waits meanwhile; should the server's
            # register-timeout strike, the core connects again.
            try:
                password = getpass.getpass("password: ")
            except EOFError:
                return False
            self.asking = "password"
            self.lines.appendleft(password)
            return True
        self.asking = "name"
        if effect.reason:
            self.say(effect.reason, conversation=False)
        sys.stdout.write("name: ")
        sys.stdout.flush()
        return True

    def show(self, effect: Effect) -> None:
        if isinstance(effect, core_events.Acked):
            entry = self._own.pop(effect.id, None)
            if entry is not None:
                entry.status = ""
                self._print(entry)
            return
        if isinstance(effect, (core_events.Failed, core_events.Lost)):
            self._own.pop(effect.id, None)
        if isinstance(effect, core_events.Lag):
            self._lag(effect)
            return
        if isinstance(effect, core_events.Connected) and self.interactive:
            self.say("* connected", conversation=False)
            return
        entry = entry_for(effect, self._own_texts)
        if entry is None:
            return
        if entry.id is not None and entry.status == "pending":
            # Shown once, when the server's echo confirms it ([MSG-2]).
            self._own[entry.id] = entry
            self._own_texts[entry.id] = getattr(effect, "text", "")
            return
        self._print(entry)

    def _lag(self, lag: core_events.Lag) -> None:
        if lag.stalled and not self._stalled:
            self.say(f"* the server has not answered for {lag.seconds:.0f} s", conversation=False)
        elif not lag.stalled and self._stalled:
            self.say(f"* the server answers again (after {lag.seconds:.0f} s)", conversation=False)
        self._stalled = lag.stalled

    def say(self, text: str, conversation: bool = True) -> None:
        self._print(Entry([("plain", text)], conversation=conversation))

    def _print(self, entry: Entry) -> None:
        stream = sys.stdout if entry.conversation or self.interactive else sys.stderr
        text = entry.text()
        if self.interactive:
            text = time.strftime("%H:%M ") + text + ("\a" if entry.bell else "")
        print(text, file=stream, flush=True)

    def restore_draft(self, text: str) -> None:
        self.lines.appendleft(text)

    def confirm_paste(self, effect: Effect) -> bool:
        return False  # Lines come one by one here: never a paste to confirm.

    def clear(self) -> None:
        pass  # A pipe cannot be cleared.

    def redraw(self, core: ClientCore) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------
# The session: the main loop
# ---------------------------------------------------------------------------


class Session:
    """Runs one ClientCore with a Link and a UI until the core says Quit."""

    def __init__(self, core: ClientCore, link: Link, ui, first_stream=None,
                 clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] | None = None) -> None:
        import random
        self.core = core
        self.link = link
        self.ui = ui
        self.clock = clock
        self.jitter = jitter or random.random
        self._first_stream = first_stream
        self.status: int | None = None
        self.interrupted = False

    def run(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(self.link.wake_read, selectors.EVENT_READ, "link")
        input_registered = False
        self.apply(self.core.start(self.clock()))
        try:
            while self.status is None:
                try:
                    wants = self.ui.wants_input(self.core)
                    if wants != input_registered:
                        if wants:
                            selector.register(self.ui.stdin_fd, selectors.EVENT_READ, "input")
                        else:
                            selector.unregister(self.ui.stdin_fd)
                        input_registered = wants
                    ready = selector.select(core_events.TICK_INTERVAL)
                    for key, _ in ready:
                        if key.data == "input":
                            self.ui.read()
                    self._input()
                    self._network()
                    self.apply(self.core.tick(self.clock()))
                    self.ui.redraw(self.core)
                except KeyboardInterrupt:
                    if self.interrupted:
                        return 130  # A second Ctrl-C: no more waiting.
                    self.interrupted = True
                    self.apply(self.core.quit(self.clock()))
            return 130 if self.interrupted else self.status
        finally:
            selector.close()
            self.ui.close()
            self.link.finish()

    def _input(self) -> None:
        """What the user typed (or a script piped) goes to the core."""
        now = self.clock()
        ui = self.ui
        if isinstance(ui, LineUI):
            while ui.lines and self.status is None:
                if ui.asking is not None:
                    asking, ui.asking = ui.asking, None
                    answer = ui.lines.popleft()
                    if asking == "name":
                        self.apply(self.core.name_given(answer, now))
                    else:
                        self.apply(self.core.password_given(answer, now))
                    continue
                if not self.core.registered or self.core.outstanding >= PIPED_IN_FLIGHT:
                    return  # Lines typed ahead wait for the room (or for the server).
                self.apply(self.core.user_input(ui.lines.popleft(), now))
            if ui.ended and not ui.lines and not self.core.outstanding and self.status is None:
                if self.core.registered or ui.asking is not None:
                    ui.ended = False  # Quit once.
                    ui.asking = None
                    self.apply(self.core.quit(now))
            return
        for intent, value in ui.take_intents():
            if intent == "text":
                self.apply(self.core.user_input(value, now))
            elif intent == "name":
                self.apply(self.core.name_given(value, now))
            elif intent == "password":
                self.apply(self.core.password_given(value, now))
            elif intent == "paste":
                self.apply(self.core.paste_answer(value, now))
            elif intent == "quit":
                self.apply(self.core.quit(now))

    def _network(self) -> None:
        self.link.drain_wake()
        while True:
            try:
                kind, generation, value = self.link.events.get_nowait()
            except queue.Empty:
                return
            now = self.clock()
            if generation != self.link.generation:
                if kind == "connected":
                    value.close()  # A connection nobody wants any more.
                continue
            if kind == "connected":
                self.link.adopt(value, generation)
                self.apply(self.core.connected(now))
            elif kind == "connect_failed":
                self.apply(self.core.connect_failed(value, now, self.jitter()))
            elif kind == "line":
                self.apply(self.core.line_received(value, now))
            elif kind == "overlong":
                self.ui.show(core_events.Notice("* the server sent an overlong line; skipped"))
            else:
                self.link.stream = None
                self.apply(self.core.connection_lost(now, self.jitter()))

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, core_events.Send):
                self.link.send(effect.line)
            elif isinstance(effect, core_events.Connect):
                stream, self._first_stream = self._first_stream, None
                if stream is None:
                    self.ui.show(core_events.Notice("* connecting..."))
                self.link.open(stream)
            elif isinstance(effect, core_events.Disconnect):
                self.link.close()
            elif isinstance(effect, (core_events.AskName, core_events.AskPassword)):
                if not self.ui.ask(effect):
                    self._cannot_ask(effect)
            elif isinstance(effect, core_events.ConfirmPaste):
                if not self.ui.confirm_paste(effect):
                    self.apply(self.core.paste_answer(True, self.clock()))
            elif isinstance(effect, core_events.Unsent):
                self.ui.restore_draft(effect.text)
            elif isinstance(effect, core_events.Clear):
                self.ui.clear()
            elif isinstance(effect, core_events.Quit):
                self.status = effect.status
            else:
                self.ui.show(effect)

    def _cannot_ask(self, effect: Effect) -> None:
        """Piped: nobody to ask. Say why, and leave with status 1."""
        if isinstance(effect, core_events.AskName):
            reason = effect.reason or "no name given"
        else:
            reason = "the server wants a password: give --password-file FILE or set CHAT_PASSWORD"
        self.ui.say(f"chat-client: {reason}", conversation=False)
        self.apply(self.core.quit(self.clock()))
        if self.status is None:
            self.status = 1


def colours_wanted(environ=os.environ) -> bool:
    """NO_COLOR (https://no-color.org), set to anything but "", turns colours off."""
    return not environ.get("NO_COLOR")


def name_colour(name: str, colours: int) -> int:
    """A colour for a name, the same in every session (a stable hash)."""
    return zlib.crc32(name.lower().encode()) % colours


def run(core: ClientCore, connector: Callable[[], object], first_stream, interactive: bool,
        host: str) -> int:
    """Run the client: full-screen on a capable terminal, else line by line."""
    link = Link(connector)
    term = os.environ.get("TERM", "")
    if interactive and term not in ("", "dumb", "unknown"):
        from chat.cli_screen import run_screen
        return run_screen(core, link, first_stream, host)
    return Session(core, link, LineUI(interactive), first_stream).run()

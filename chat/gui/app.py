"""The GUI's glue: the client core, the connection's events and the window, on Tk's main loop.

Everything here runs on the main thread. The core (chat/client_core.py)
decides; this module carries out its effects: a Connect opens a connection
through the Link (chat/gui/connection.py), a Send goes to that connection's
Writer, a Message becomes a line in a tab (chat/gui/window.py). The socket's
threads never call in: they put events on the Link's queue, and the main
loop drains it: poll() every POLL_INTERVAL_MS with after(), as IDLE does (it
also ticks the core), and at once when the Link's wake pipe says so (a Tk
file handler, where Tk has them).
"""

from __future__ import annotations

import queue
import random
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from chat import client_core as core
from chat.cli import THREAD_JOIN_TIMEOUT, History, Link
from chat.client_core import TICK_INTERVAL, ClientCore
from chat.gui.connection import ServerAddress, Writer
from chat.gui.dialogs import ConnectDialog, Prompt
from chat.gui.window import ChatWindow, Conversation, name_tag

#: Milliseconds between two looks at the Link's queue. Where Tk has file
#: handlers the wake pipe brings each line at once, and the poll only ticks
#: the core (which wants a call every TICK_INTERVAL, 0.5 s); elsewhere it is
#: how lines arrive, and 50 ms is IDLE's figure for the same loop: below what
#: a person notices, and an idle window costs nothing measurable.
POLL_INTERVAL_MS = 50
#: Events handled per poll at most, so that a burst of lines (a busy room
#: after a reconnect) never stops the window from redrawing and taking keys.
EVENTS_PER_POLL = 200

#: How each LEAVE reason ([LEAVE-3]) reads.
_LEAVE_REASONS = {
    "quit": "left",
    "closed": "left (connection closed)",
    "timeout": "left (timed out)",
    "slow": "left (too slow to keep up)",
}

Parts = list[tuple[str, tuple[str, ...]]]


class ChatApp:
    """One user's chat window. Call show_connect_dialog() or begin(), then
    run Tk's main loop (tests run it event by event until what they expect shows).

    `clock` is monotonic seconds (the core's `now`), `wall_clock` what the
    timestamps show, `jitter` the reconnect backoff's random draw; tests may
    pin them. `on_quit(status)` runs when the session is over (by default
    the window goes away, and main() exits with `status`). The input history
    is the CLI's, per name, in `history_dir` (default: the platform's state
    folder, chat.cli.state_dir()).
    """

    def __init__(self, root: tk.Tk, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random,
                 on_quit: Callable[[int], None] | None = None,
                 history_dir: Path | None = None) -> None:
        self.root = root
        self._clock = clock
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._on_quit = on_quit or (lambda status: root.destroy())
        self._history_dir = history_dir
        self._history: History | None = None
        self.window = ChatWindow(root, on_enter=self._entered, on_complete=self._complete,
                                 on_select=self._selected, on_open=self._open_private,
                                 on_close_tab=self._close_private)
        root.protocol("WM_DELETE_WINDOW", self.request_quit)
        self.core: ClientCore | None = None
        self.address: ServerAddress | None = None
        self.link: Link | None = None
        #: The open connection's writer, if one is open.
        self.writer: Writer | None = None
        self._writers: list[Writer] = []
        #: The open dialog or prompt, if any (tests answer it through its widgets).
        self.dialog: ConnectDialog | Prompt | None = None
        #: The exit status, once the session is over.
        self.status: int | None = None
        self._state = "not connected"
        self._lag: str | None = None
        self._reconnect_at: float | None = None
        self._attempt = 0
        self._joined_before = False
        self._quit_asked = False
        #: Our messages waiting for their echo: id -> the tab showing them.
        self._pending: dict[int, Conversation] = {}
        self._last_tick = 0.0
        self._poll_id: str | None = root.after(POLL_INTERVAL_MS, self.poll)
        self._handlers: dict[type, Callable] = {
            core.Send: self._send, core.Connect: self._connect, core.Disconnect: self._disconnect,
            core.AskName: self._ask_name, core.AskPassword: self._ask_password,
            core.ConfirmPaste: self._confirm_paste, core.Unsent: self._unsent,
            core.Clear: self._clear, core.Quit: self._quit,
            core.Connected: self._connected, core.Joined: self._joined, core.Left: self._left,
            core.Message: self._message, core.Private: self._private, core.Action: self._action,
            core.Acked: self._acked, core.Failed: self._failed, core.Lost: self._lost,
            core.NickChanged: self._nick_changed, core.Names: self._names,
            core.Error: self._error, core.Notice: self._notice, core.Lag: self._lag_changed,
            core.Disconnected: self._disconnected, core.Reconnecting: self._reconnecting,
            core.QueryOpened: self._query_opened, core.QueryClosed: self._query_closed,
        }

    # -- starting ------------------------------------------------------------------

    def show_connect_dialog(self, address: ServerAddress, name: str | None = None,
                            password: str | None = None) -> ConnectDialog:
        dialog = ConnectDialog(self.root, address=address, name=name, password=password,
                               on_connect=self.begin, on_cancel=lambda: self._quit(core.Quit(0)))
        self.dialog = dialog
        return dialog

    def begin(self, address: ServerAddress, name: str, password: str | None) -> None:
        """Start the session: the core connects, registers, and the chat begins."""
        self.dialog = None
        self.address = address
        self.core = ClientCore(name, password)
        self.link = Link(address.connector())
        if hasattr(self.root.tk, "createfilehandler"):
            # Woken by the Link's pipe, a line shows (and a lag is measured)
            # at once rather than at the next poll. Tk on Windows has no file
            # handlers: there the poll alone serves.
            self.root.tk.createfilehandler(self.link.wake_read, tk.READABLE,
                                           lambda fd, mask: self._drain())
        self._history = History(name, self._history_dir)
        self.window.editor.history[:] = self._history.load()
        self.root.title(f"{name} \N{EM DASH} chat/1 on {address}")
        self.apply(self.core.start(self._clock()))

    # -- the main loop's side --------------------------------------------------------

    def poll(self) -> None:
        """Handle what the Link reported, tick the core, and come back later."""
        handled = self._drain()
        now = self._clock()
        if self.core is not None and now - self._last_tick >= TICK_INTERVAL / 2:
            self._last_tick = now
            self.apply(self.core.tick(now))
        self._show_status()
        if self.status is None:
            delay = 1 if handled == EVENTS_PER_POLL else POLL_INTERVAL_MS
            self._poll_id = self.root.after(delay, self.poll)

    def _drain(self) -> int:
        """Handle up to EVENTS_PER_POLL of the Link's events; how many there were."""
        handled = 0
        if self.link is None:
            return handled
        self.link.drain_wake()
        while handled < EVENTS_PER_POLL and self.link is not None:
            try:
                kind, generation, value = self.link.events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            self._handle(kind, generation, value)
        return handled

    def _handle(self, kind: str, generation: int, value) -> None:
        """One of the Link's events (see chat.cli.Link)."""
        assert self.core is not None and self.link is not None
        if generation != self.link.generation:
            if kind == "connected":
                value.close()  # A connection nobody wants any more.
            return
        now = self._clock()
        if kind == "line":
            self.apply(self.core.line_received(value, now))
        elif kind == "connected":
            self.link.adopt(value, generation)
            self.writer = Writer(value)
            self._writers = [writer for writer in self._writers if writer.alive] + [self.writer]
            self.apply(self.core.connected(now))
        elif kind == "connect_failed":
            self.apply(self.core.connect_failed(value, now, self._jitter()))
        elif kind == "overlong":
            self._note(self.window.room, "the server sent an overlong line; skipped")
        else:  # "lost"
            self.link.stream = None
            if self.writer is not None:
                self.writer.stop()
                self.writer = None
            self.apply(self.core.connection_lost(now, self._jitter()))

    def apply(self, effects: list[core.Effect], where: Conversation | None = None) -> None:
        """Carry out the core's effects, in order. Notices and errors go to
        `where` (the tab the user typed in), by default the tab shown."""
        for effect in effects:
            handler = self._handlers[type(effect)]
            if isinstance(effect, core.Notice | core.Error | core.Clear):
                handler(effect, where or self.window.current)
            else:
                handler(effect)
        if self.core is not None and self.status is None:
            self.window.show_members(self.core.members, self.core.name)
            self._show_status()

    # -- what the user does ------------------------------------------------------------

    def _entered(self, text: str, peer: str | None) -> None:
        where = self.window.current
        if self.core is None:
            self.window.set_input(text)
            return
        if self._history is not None:
            self._history.save(self.window.editor.history)
        self.apply(self.core.user_input(text, self._clock(), to=peer), where)

    def _complete(self, text: str, cursor: int) -> tuple[str, int]:
        if self.core is None:
            return text, cursor
        return self.core.complete(text, cursor)

    def _selected(self, peer: str | None) -> None:
        if self.core is not None:
            # So that /query alone, and plain text, mean the tab shown.
            self.core.query = peer

    def _open_private(self, peer: str) -> None:
        if self.core is not None and peer != self.core.name:
            self.window.select(self.window.conversation(peer))

    def _close_private(self, peer: str) -> None:
        conversation = self.window.find(peer)
        if conversation is not None:
            self.window.close(conversation)
        self.window.select(self.window.room)

    def request_quit(self) -> None:
        """The window's close box: leave properly; asked twice, go at once."""
        if self.core is None or self._quit_asked:
            self._quit(core.Quit(0 if self.core is None else 1))
            return
        self._quit_asked = True
        self.apply(self.core.quit(self._clock()))

    # -- effects: what to do -------------------------------------------------------------

    def _send(self, effect: core.Send) -> None:
        if self.writer is not None:
            self.writer.send(effect.line)

    def _connect(self, effect: core.Connect) -> None:
        assert self.address is not None
        self._reconnect_at = None
        self._state = "connecting" + (f" (attempt {self._attempt})" if self._attempt else "")
        self.link.open()

    def _disconnect(self, effect: core.Disconnect) -> None:
        self.link.close()

    def _ask_name(self, effect: core.AskName) -> None:
        self._ask(self.core.name_given, title="Choose a name", initial=self.core.name or "",
                  message=(effect.reason or "Your name") + "\nChoose another name:")

    def _ask_password(self, effect: core.AskPassword) -> None:
        self._ask(self.core.password_given, title="Password", secret=True,
                  message=f"The room on {self.address} asks for a password:")

    def _ask(self, answer_to_core: Callable[[str, float], list[core.Effect]], **prompt) -> None:
        """A Prompt whose answer goes to the core; Cancel leaves."""
        def answered(text: str | None) -> None:
            self.dialog = None
            if text is None:
                self.request_quit()
            else:
                self.apply(answer_to_core(text, self._clock()))

        self.dialog = Prompt(self.root, on_answer=answered, **prompt)

    def _confirm_paste(self, effect: core.ConfirmPaste) -> None:
        where = self.window.current
        target = "the room" if where.peer is None else where.peer

        def answered(answer: str | None) -> None:
            self.dialog = None
            self.apply(self.core.paste_answer(answer is not None, self._clock()), where)

        first = effect.lines[0]
        self.dialog = Prompt(self.root, title="Send a paste?", entry=False, on_answer=answered,
                             message=f"Send these {effect.count} lines to {target}, "
                                     f"one message each?\n\n{first[:60]}\N{HORIZONTAL ELLIPSIS}")

    def _unsent(self, effect: core.Unsent) -> None:
        typed = self.window.entry.get()
        self.window.set_input(effect.text + (" " + typed if typed else ""), len(effect.text))

    def _clear(self, effect: core.Clear, where: Conversation) -> None:
        where.clear()

    def _quit(self, effect: core.Quit) -> None:
        if self.status is not None:
            return
        self.status = effect.status
        self.close()
        self._on_quit(effect.status)

    def close(self) -> None:
        """Stop polling and end the connection, waiting (bounded) for its threads."""
        if self.status is None:
            self.status = 1
        if self._poll_id is not None:
            self.root.after_cancel(self._poll_id)
            self._poll_id = None
        if self.link is not None:
            if hasattr(self.root.tk, "deletefilehandler"):
                self.root.tk.deletefilehandler(self.link.wake_read)
            self.link.finish()  # Shuts the stream down: each writer's next write fails.
            self.link = None
        for writer in self._writers:
            writer.stop()
            writer.join(THREAD_JOIN_TIMEOUT)
        self._writers.clear()
        self.writer = None

    # -- effects: what to show -------------------------------------------------------------

    def _connected(self, effect: core.Connected) -> None:
        assert self.address is not None
        self._state = "registering"
        security = "with TLS" if self.address.tls else "in the clear"
        self._note(self.window.room, f"connected to {self.address} ({security})")

    def _joined(self, effect: core.Joined) -> None:
        if effect.own:
            self._attempt = 0
            self._state = "connected"
            self._lag = None
            again = "are back in" if self._joined_before else "joined"
            self._joined_before = True
            self._event(self.window.room, "\N{RIGHTWARDS ARROW}", [
                ("you " + again + " the room as ", ()), *self._name(effect.name)])
            return
        for conversation in self._rooms_of(effect.name):
            self._event(conversation, "\N{RIGHTWARDS ARROW}",
                        [*self._name(effect.name), (" joined", ())])

    def _left(self, effect: core.Left) -> None:
        reason = _LEAVE_REASONS.get(effect.reason, f"left ({effect.reason})")
        for conversation in self._rooms_of(effect.name):
            self._event(conversation, "\N{LEFTWARDS ARROW}",
                        [*self._name(effect.name), (" " + reason, ())])

    def _rooms_of(self, name: str) -> list[Conversation]:
        """The room, and the private tab with `name` if one is open."""
        private = self.window.find(name)
        return [self.window.room] + ([private] if private is not None else [])

    def _message(self, effect: core.Message) -> None:
        self._said(self.window.room, effect.sender, effect.text, effect.own, effect.pending,
                   effect.id, highlight=effect.mention, alert=effect.mention)

    def _private(self, effect: core.Private) -> None:
        # Every line of a private tab is for us: it rings, but is not highlighted.
        conversation = self.window.conversation(effect.peer)
        self._said(conversation, effect.sender, effect.text, effect.own, effect.pending,
                   effect.id, highlight=False, alert=not effect.own)

    def _action(self, effect: core.Action) -> None:
        text_tags = ("action",) + self._pending_tags(effect.pending, effect.id)
        parts: Parts = [*self._name(effect.sender), (" " + effect.text, text_tags)]
        self._line(self.window.room, "*", parts, highlight=effect.mention, alert=effect.mention,
                   unread=not effect.own)
        self._remember(effect.id, effect.pending, self.window.room)

    def _said(self, conversation: Conversation, sender: str, text: str, own: bool,
              pending: bool, message_id: int | None, *, highlight: bool, alert: bool) -> None:
        parts: Parts = [(text, self._pending_tags(pending, message_id))]
        self._line(conversation, sender, parts, highlight=highlight, alert=alert,
                   sender_is_column=True, unread=not own)
        self._remember(message_id, pending, conversation)

    @staticmethod
    def _pending_tags(pending: bool, message_id: int | None) -> tuple[str, ...]:
        if message_id is None:
            return ()
        return (f"msg-{message_id}",) + (("pending",) if pending else ())

    def _remember(self, message_id: int | None, pending: bool, conversation: Conversation) -> None:
        if pending and message_id is not None:
            self._pending[message_id] = conversation

    def _acked(self, effect: core.Acked) -> None:
        conversation = self._pending.pop(effect.id, None)
        if conversation is not None:
            conversation.tag_text(f"msg-{effect.id}", remove=("pending",))
        self._lag = _seconds(effect.lag)

    def _failed(self, effect: core.Failed) -> None:
        conversation = self._pending.pop(effect.id, None)
        if conversation is not None:
            tag = f"msg-{effect.id}"
            conversation.tag_text(tag, add=("failed",), remove=("pending",))
            conversation.insert_after(tag, f"  refused: {effect.text or effect.code}", ("error",))

    def _lost(self, effect: core.Lost) -> None:
        conversation = self._pending.pop(effect.id, None)
        if conversation is not None:
            tag = f"msg-{effect.id}"
            conversation.tag_text(tag, add=("lost",), remove=("pending",))
            conversation.insert_after(tag, "  (connection lost: it may not have arrived)", ("lost",))

    def _nick_changed(self, effect: core.NickChanged) -> None:
        self.window.rename(effect.old, effect.new)
        if effect.own:
            self.root.title(f"{effect.new} \N{EM DASH} chat/1 on {self.address}")
            parts: Parts = [("you are now ", ()), *self._name(effect.new)]
        else:
            parts = [*self._name(effect.old), (" is now ", ()), *self._name(effect.new)]
        for conversation in self._rooms_of(effect.new):
            self._event(conversation, "\N{RIGHTWARDS ARROW}", parts)

    def _names(self, effect: core.Names) -> None:
        parts: Parts = [(f"{len(effect.names)} online: ", ())]
        for index, name in enumerate(effect.names):
            parts += [(", " if index else "", ()), *self._name(name)]
        self._event(self.window.room, "\N{MIDDLE DOT}", parts)

    def _error(self, effect: core.Error, where: Conversation) -> None:
        self._line(where, "!", [(f"{effect.code}: {effect.text}", ("error",))], unread=False)

    def _notice(self, effect: core.Notice, where: Conversation) -> None:
        self._note(where, effect.text)

    def _lag_changed(self, effect: core.Lag) -> None:
        if effect.stalled:
            self._lag = f"no reply for {effect.seconds:.0f} s"
        else:
            self._lag = _seconds(effect.seconds)

    def _disconnected(self, effect: core.Disconnected) -> None:
        self._state = "disconnected"
        self._line(self.window.room, "!", [(f"disconnected: {effect.reason}", ("error",))])

    def _reconnecting(self, effect: core.Reconnecting) -> None:
        self._attempt = effect.attempt
        self._reconnect_at = self._clock() + effect.delay
        self._note(self.window.room, f"reconnecting in {effect.delay:.1f} s (attempt {effect.attempt})")

    def _query_opened(self, effect: core.QueryOpened) -> None:
        self.window.select(self.window.conversation(effect.name))

    def _query_closed(self, effect: core.QueryClosed) -> None:
        self._close_private(effect.name)

    # -- drawing lines ------------------------------------------------------------------------

    @staticmethod
    def _name(name: str) -> Parts:
        return [(name, ("name", name_tag(name)))]

    def _line(self, conversation: Conversation, column: str, parts: Parts, *,
              highlight: bool = False, alert: bool = False, sender_is_column: bool = False,
              unread: bool = True) -> None:
        """The time, a right-aligned column (the sender, or a sign), then the
        text. `highlight`: a background (the line names us); `alert`: the bell
        and a red mark on the tab, unless the user is looking at it."""
        stamp = time.strftime("%H:%M", time.localtime(self._wall_clock()))
        head: Parts = [(stamp, ("time",)), ("\t", ())]
        head += self._name(column) if sender_is_column else [(column, ("sign",))]
        line_tags = ("line",) + (("mention",) if highlight else ())
        self.window.add_line(conversation, head + [("\t", ())] + parts, line_tags=line_tags,
                             unread=unread, mention=alert)
        if alert and (conversation is not self.window.current or not self._focused()):
            self.root.bell()

    def _event(self, conversation: Conversation, sign: str, parts: Parts) -> None:
        self._line(conversation, sign, [(text, tags + ("event",)) for text, tags in parts],
                   unread=False)

    def _note(self, conversation: Conversation, text: str) -> None:
        # One line each (/help has many), so that each starts in the text's
        # column; several lines are a table, aligned with spaces.
        lines = text.splitlines() or [""]
        style = ("columns",) if len(lines) > 1 else ("note",)
        for line in lines:
            self._line(conversation, "\N{MIDDLE DOT}", [(line, style)], unread=False)

    def _focused(self) -> bool:
        try:
            return self.root.focus_get() is not None
        except (KeyError, tk.TclError):
            return False  # A dialog's widget, being destroyed.

    def _show_status(self) -> None:
        fields = []
        if self.core is not None and self.core.name:
            fields.append(f"{self.core.name} on {self.address}" + (" (TLS)" if self.address.tls else ""))
        state = self._state
        if self._reconnect_at is not None:
            left = max(0.0, self._reconnect_at - self._clock())
            state = f"reconnecting in {left:.0f} s (attempt {self._attempt})"
        fields.append(state)
        if self._lag is not None and state == "connected":
            fields.append(f"lag {self._lag}")
        if self.core is not None and self.core.registered:
            fields.append(f"{len(self.core.members)} online")
        text = "   \N{BOX DRAWINGS LIGHT VERTICAL}   ".join(fields)
        if self.window.status.cget("text") != text:
            self.window.show_status(text)


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"

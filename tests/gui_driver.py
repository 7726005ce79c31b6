"""Driving the desktop client in tests: a user at the window, and servers to meet.

For tests/test_gui.py; import after checking that tkinter is there (chat.gui
needs it). Nothing here sleeps: `pump` runs Tk's event loop until what is
expected shows, with a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from chat import protocol
from chat.gui.app import ChatApp
from chat.gui.connection import ServerAddress
from chat.gui.dialogs import ConnectDialog
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient

#: Milliseconds pump() waits at most for an event before it looks again, so
#: that a deadline is kept even when the app has stopped polling (it quit).
PUMP_WAKE_MS = 50


def pump(root, done: Callable[[], object], what: Callable[[], object],
         deadline: float = DEADLINE):
    """Run Tk's event loop until done() is true (and return what it gave);
    fail, showing what(), after `deadline` seconds.

    dooneevent() blocks until the next event (a socket event, the app's poll
    timer, or our own wake-up timer): the loop waits on Tk, never in sleep()."""
    end = time.monotonic() + deadline
    while not (result := done()):
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline} s: {what()}")
        wake = root.after(PUMP_WAKE_MS, _nothing)
        root.tk.dooneevent(0)
        root.after_cancel(wake)
    return result


def _nothing() -> None:
    """A timer's callback whose only job is to end a wait."""


class Driver:
    """A user in front of the window: types, presses keys, reads."""

    def __init__(self, app: ChatApp) -> None:
        self.app = app
        self.root = app.root
        self.window = app.window

    def room_text(self) -> str:
        return self.window.room.contents()

    def wait_for(self, text: str, conversation=None, deadline: float = DEADLINE) -> None:
        conversation = conversation or self.window.room
        pump(self.root, lambda: text in conversation.contents(),
             lambda: f"{text!r} in {conversation.contents()[-600:]!r}", deadline)

    def wait_until(self, done, what, deadline: float = DEADLINE):
        return pump(self.root, done, what, deadline)

    def type(self, text: str) -> None:
        self.window.set_input(text)

    def key(self, keysym: str) -> None:
        """Press a key in the input line (Tk sends key events to the focus)."""
        if self.root.focus_get() is not self.window.entry:
            self.window.entry.focus_force()
            pump(self.root, lambda: self.root.focus_get() is self.window.entry,
                 lambda: f"the focus is on {self.root.focus_get()}")
        self.window.entry.event_generate(f"<{keysym}>")

    def say(self, text: str) -> None:
        self.type(text)
        self.key("Return")

    def tags_at(self, conversation, text: str) -> tuple[str, ...]:
        """The tags on the last occurrence of `text` in the conversation."""
        widget = conversation.text
        index = widget.search(text, "end", backwards=True)
        assert index, f"{text!r} not in {conversation.contents()!r}"
        return widget.tag_names(index)

    def members(self) -> list[str]:
        return list(self.window.members.get(0, "end"))

    def status(self) -> str:
        return self.window.status.cget("text")


class WallClock:
    """What the timestamps show: the time, or the time `at` a test pins."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.time() if self.at is None else self.at


def connect_through_dialog(gui: Driver, address, name: str = "alice") -> None:
    dialog = gui.app.show_connect_dialog(ServerAddress("127.0.0.1", 5000))
    assert isinstance(dialog, ConnectDialog)
    dialog.host.set(address[0])
    dialog.port.set(str(address[1]))
    dialog.name.set(name)
    dialog.connect_button.invoke()
    gui.wait_for(f"you joined the room as {name}")


def read_until(client: LineClient, expected: str) -> list[str]:
    """The lines before `expected` (each read with LineClient's deadline)."""
    before = []
    while (line := client.line()) != expected:
        before.append(line)
    return before


class SilentServer:
    """A server that greets, registers whoever asks, then says nothing more:
    replies owed never come. close() drops the connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.connection: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(DEADLINE)
        connection, _ = self.listener.accept()
        connection.settimeout(DEADLINE)
        self.connection = connection
        connection.sendall(protocol.format_hello(TEST_LIMITS))
        request = b""
        while not request.endswith(b"\n"):
            request += connection.recv(1)
        name = request.decode().split()[1]  # USER name
        connection.sendall(protocol.format_join(name))

    def close(self) -> None:
        self._thread.join(DEADLINE)
        if self.connection is not None:
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        self.listener.close()

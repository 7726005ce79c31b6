"""The CLI as a person sees it: the real client in a pseudo-terminal, its output
fed to a terminal emulator (pyte), keys typed, the screen read back.

Each test fixes one thing a new user ran into with the old client (issue 11)
and fails on it: the old client printed incoming lines over the input line,
showed own messages twice, exited on a lost connection, and so on. Nothing
sleeps: every wait reads output until the screen shows what is expected, with
a deadline; a test that needs time to pass (a stalled server) waits for the
screen to say so.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from chat.server import ChatServer
from tests.conftest import TEST_LIMITS

pyte = pytest.importorskip("pyte", reason="pyte emulates the terminal these tests read (test extra)")

REPO = Path(__file__).resolve().parent.parent
#: Seconds any single expectation may take before the test fails.
DEADLINE = 5.0
COLUMNS, ROWS = 80, 24
#: Keys as an xterm sends them with the keypad in application mode (curses turns it on).
LEFT, RIGHT, UP, HOME, END = b"\x1bOD", b"\x1bOC", b"\x1bOA", b"\x1bOH", b"\x1bOF"
TAB, ENTER, CTRL_D = b"\t", b"\r", b"\x04"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"


class Terminal:
    """The client under a pseudo-terminal of COLUMNS x ROWS, seen through pyte."""

    def __init__(self, port: int, *args: str, state: Path, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("CHAT_PASSWORD", "NO_COLOR")}
        python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        environment.update(TERM="xterm", XDG_STATE_HOME=str(state), LANG="C.UTF-8", LC_ALL="C.UTF-8",
                           PYTHONPATH=python_path)
        environment.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat.client", "--port", str(port), *args],
            stdin=slave, stdout=slave, stderr=slave, env=environment, cwd=REPO, start_new_session=True)
        os.close(slave)
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.output = bytearray()

    def type(self, keys: bytes | str) -> None:
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    def _read(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.master], [], [], remaining)[0]:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the client has exited.
            data = b""
        if not data:
            return False
        self.output += data
        self.stream.feed(data)
        return True

    def rows(self) -> list[str]:
        return [row.rstrip() for row in self.screen.display]

    def text(self) -> str:
        return "\n".join(self.rows())

    def wait_for(self, pattern: str, deadline: float = DEADLINE) -> re.Match:
        """Read output until the screen matches `pattern` (multi-line regex)."""
        regex = re.compile(pattern, re.MULTILINE)
        end = time.monotonic() + deadline
        while True:
            match = regex.search(self.text())
            if match:
                return match
            if not self._read(end):
                pytest.fail(f"the screen never showed {pattern!r}:\n{self.text()}")

    @property
    def input_row(self) -> str:
        return self.rows()[-1]

    @property
    def status_row(self) -> str:
        return self.rows()[-2]

    def cursor(self) -> tuple[int, int]:
        return self.screen.cursor.x, self.screen.cursor.y

    def wait_exit(self) -> int:
        end = time.monotonic() + DEADLINE
        while self.process.poll() is None and time.monotonic() < end:
            self._read(min(end, time.monotonic() + 0.1))
        return self.process.wait(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


@pytest.fixture
def observer(connect):
    """A raw client in the room: the test's eyes on what the room receives."""
    return connect().register("observer")


@pytest.fixture
def terminals(tmp_path):
    opened: list[Terminal] = []

    def start(port: int, *args: str, env: dict[str, str] | None = None) -> Terminal:
        terminal = Terminal(port, *args, state=tmp_path / "state", env=env)
        opened.append(terminal)
        return terminal

    yield start
    for terminal in opened:
        terminal.close()


def joined(terminal: Terminal, others: str = "observer") -> None:
    terminal.wait_for(rf"\* online \(\d+\): .*{others}")


# ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_message_arriving_mid_edit_leaves_the_long_input_line_intact(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    observer.expect("JOIN alice")
    joined(alice)
    typed = "".join(f"{n:02d}-" for n in range(40))  # 120 characters, wider than the terminal
    alice.type(typed)
    alice.type(LEFT * 30 + b"X")
    alice.wait_for(r"X")
    observer.send("MSG hello while you type")
    alice.wait_for(r"^\d\d:\d\d <observer> hello while you type$")
    # The conversation is above; the input row shows the text around the cursor, once,
    # with no stale copy of it anywhere above the status line.
    expected = typed[:90] + "X" + typed[90:]
    assert alice.input_row.startswith("alice> ")
    visible = alice.input_row.removeprefix("alice> ")
    assert visible in expected and "X" in visible
    column, row = alice.cursor()
    assert row == ROWS - 1
    assert alice.input_row[column - 1] == "X"  # The cursor right after what was typed last.
    assert not any(typed[:20] in line for line in alice.rows()[:-1])
    alice.type(ENTER)
    observer.expect("MSG observer hello while you type")
    observer.expect(f"MSG alice {expected}")


@pytest.mark.timeout(30)
def test_own_message_is_shown_once_and_confirmed(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    alice.type("hello room" + "\r")
    observer.expect("JOIN alice")
    observer.expect("MSG alice hello room")
    alice.wait_for(r"<alice> hello room$")  # Confirmed: no [pending] any more.
    assert sum("<alice> hello room" in row for row in alice.rows()) == 1
    assert re.match(r"\d\d:\d\d ", [r for r in alice.rows() if "<alice>" in r][0])  # A timestamp.


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command", ["/QUIT", "Exit"])
def test_commands_are_case_insensitive(server, observer, terminals, command):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    alice.type(command + "\r")
    observer.expect("JOIN alice")
    observer.expect("LEAVE alice quit")
    assert alice.wait_exit() == 0


@pytest.mark.timeout(30)
def test_tab_completes_a_name_and_irc_commands_work(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    observer.expect("JOIN alice")
    alice.type(b"obs" + TAB + b"look")
    alice.wait_for(r"^alice> observer: look$")
    alice.type(ENTER)
    observer.expect("MSG alice observer: look")
    alice.type("/msg observer psst\r")
    observer.expect("PM alice observer psst")
    alice.type("/me waves\r")
    observer.expect("ACT alice waves")
    alice.wait_for(r"\* alice waves$")
    alice.type("/nick alicia\r")
    observer.expect("NICK alice alicia")
    alice.wait_for(r"\* alice is now known as alicia")
    alice.wait_for(r"^alicia>$")
    alice.type("/names\r")
    alice.wait_for(r"\* online \(2\): alicia, observer")


@pytest.mark.timeout(30)
def test_a_mention_and_a_private_message_ring_the_bell_and_show_in_the_status_line(
        server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    before = len(alice.output)
    observer.send("MSG hey alice, look")
    alice.wait_for(r"<observer> hey alice, look")
    assert b"\x07" in alice.output[before:]
    observer.send("PM alice a secret")
    alice.wait_for(r"\[observer -> alice\] a secret")
    alice.wait_for(r"PM from observer")
    assert alice.status_row.count("PM from observer") == 1


@pytest.mark.timeout(30)
def test_colours_follow_no_color(server, observer, terminals):
    def name_colour(terminal: Terminal) -> str:
        terminal.wait_for(r"<observer> colour")
        row = next(y for y, line in enumerate(terminal.rows()) if "<observer> colour" in line)
        column = terminal.rows()[row].index("observer")
        return terminal.screen.buffer[row][column].fg

    coloured = terminals(server.address[1], "--name", "alice")
    plain = terminals(server.address[1], "--name", "bob", env={"NO_COLOR": "1"})
    joined(coloured)
    joined(plain)
    observer.send("MSG colour")
    assert name_colour(coloured) != "default"
    assert name_colour(plain) == "default"


@pytest.mark.timeout(30)
def test_history_is_kept_between_runs(server, observer, terminals, tmp_path):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    alice.type("remember me\r")
    observer.expect("JOIN alice")
    observer.expect("MSG alice remember me")
    alice.type(CTRL_D)
    assert alice.wait_exit() == 0
    assert (tmp_path / "state" / "chat1" / "history" / "alice.txt").read_text() == "remember me\n"
    again = terminals(server.address[1], "--name", "alice")
    joined(again)
    again.type(UP)
    again.wait_for(r"^alice> remember me$")


@pytest.mark.timeout(30)
def test_a_long_paste_asks_first_and_a_wide_one_is_split(make_server, connect, terminals):
    server = make_server(dataclasses.replace(TEST_LIMITS, line_max=128))
    observer = connect(server.address).register("observer")
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    observer.expect("JOIN alice")
    lines = [f"pasted line {n}" for n in range(30)]
    alice.type(PASTE_START + "\r".join(lines).encode() + PASTE_END)
    alice.wait_for(r"send these 30 lines\? \(y/n\)")
    alice.type(b"n")
    alice.wait_for(r"paste not sent")
    alice.type(PASTE_START + "\r".join(lines).encode() + PASTE_END)
    alice.wait_for(r"send these 30 lines\? \(y/n\)")
    alice.type(b"y")
    for line in lines:
        observer.expect(f"MSG alice {line}")
    # 3,000 characters with a tab in one paste: split to fit line-max, not refused.
    words = "\t".join(f"w{n:04d}" for n in range(500))
    alice.type(PASTE_START + words.encode() + PASTE_END + ENTER)
    received = [observer.line().removeprefix("MSG alice ")]
    while "w0499" not in received[-1]:
        received.append(observer.line().removeprefix("MSG alice "))
    assert len(received) > 1
    assert "".join(received).replace(" ", "") == words.replace("\t", "")


@pytest.mark.timeout(30)
def test_the_name_is_asked_before_connecting(terminals):
    # The old client connected first: a person thinking longer than
    # register-timeout about a name was dropped.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        alice = terminals(listener.getsockname()[1])
        alice.wait_for(r"^name:$")
        with pytest.raises(BlockingIOError):
            listener.accept()  # Nobody has connected yet.
        alice.type("alice\r")
        listener.setblocking(True)
        listener.settimeout(DEADLINE)
        connection, _ = listener.accept()
        with connection, connection.makefile("rwb", buffering=0) as wire:
            connection.settimeout(DEADLINE)
            wire.write(b"HELLO chat/1 line-max=1024 name-max=32 password=0\n")
            assert wire.readline() == b"USER alice\n"


@pytest.mark.timeout(30)
def test_a_stalled_server_shows_as_growing_lag_and_the_message_as_pending(terminals):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        alice = terminals(listener.getsockname()[1], "--name", "alice")
        connection, _ = listener.accept()
        with connection, connection.makefile("rwb", buffering=0) as wire:
            connection.settimeout(DEADLINE)
            wire.write(b"HELLO chat/1 line-max=1024 name-max=32 password=0\n")
            assert wire.readline() == b"USER alice\n"
            wire.write(b"JOIN alice\n")
            assert wire.readline() == b"USERS\n"
            wire.write(b"NAMES alice\nENDNAMES 1\n")
            alice.wait_for(r"in the room")
            alice.type("anyone there?\r")
            assert wire.readline() == b"MSG anyone there?\n"
            # The server says nothing: the message stays pending, the lag grows.
            alice.wait_for(r"<alice> anyone there\?  \[pending\]")
            alice.wait_for(r"lag [3-9] s, no answer")
            wire.write(b"MSG alice anyone there?\n")
            alice.wait_for(r"<alice> anyone there\?$")
            alice.wait_for(r"\| lag \d+\.\d\d s \|")


@pytest.mark.timeout(40)
def test_after_a_server_restart_two_people_reconnect_with_their_names_and_drafts(make_server, terminals):
    first = make_server()
    port = first.address[1]
    alice = terminals(port, "--name", "alice")
    alice.wait_for(r"\* online \(1\): alice")
    bob = terminals(port, "--name", "bob")
    bob.wait_for(r"\* online \(2\): alice, bob")
    alice.type("half-typed")
    first.shutdown()
    for person in (alice, bob):
        person.wait_for(r"\* disconnected: the server is shutting down")
        person.wait_for(r"\* reconnecting in \d+\.\d s \(attempt 1\)")
    second = ChatServer("127.0.0.1", port, TEST_LIMITS).start()
    try:
        # Each attempt is said; then both are back, under their own names.
        for person, name in ((alice, "alice"), (bob, "bob")):
            person.wait_for(rf"\* disconnected: the server is shutting down\n(.*\n)*.*\* {name} joined",
                            deadline=15)
        assert alice.input_row == "alice> half-typed"
        bob.type("we are back\r")
        alice.wait_for(r"<bob> we are back$")
        assert alice.process.poll() is None and bob.process.poll() is None
    finally:
        second.shutdown()


@pytest.mark.timeout(30)
def test_nick_and_me_against_a_server_without_them_say_so(make_server, connect, terminals):
    server = make_server(dataclasses.replace(TEST_LIMITS, nick=0, action=0))
    observer = connect(server.address).register("observer")
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    alice.type("/nick alicia\r")
    alice.wait_for(r"this server does not support /nick")
    alice.type("/me waves\r")
    alice.wait_for(r"this server does not support /me")
    alice.type("still here\r")
    observer.expect("JOIN alice")
    observer.expect("MSG alice still here")  # Nothing was sent before it.


@pytest.mark.timeout(30)
def test_a_dumb_terminal_gets_the_line_mode(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice", env={"TERM": "dumb"})
    alice.wait_for(r"\* online \(2\): alice, observer")
    alice.type("plain\r")
    observer.expect("JOIN alice")
    observer.expect("MSG alice plain")
    alice.wait_for(r"<alice> plain")
    alice.type(CTRL_D)
    assert alice.wait_exit() == 0


@pytest.mark.timeout(30)
def test_ctrl_c_leaves_gracefully_with_status_130(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    joined(alice)
    observer.expect("JOIN alice")
    alice.type("never sent")
    alice.wait_for(r"^alice> never sent$")
    # What Ctrl-C does. (The pseudo-terminal is not the client's controlling
    # terminal, so the key itself would send no signal.)
    alice.process.send_signal(signal.SIGINT)
    observer.expect("LEAVE alice quit")
    assert alice.wait_exit() == 130


@pytest.mark.timeout(30)
def test_a_password_is_asked_for_unechoed_full_screen_and_in_line_mode(make_server, terminals):
    server = make_server(dataclasses.replace(TEST_LIMITS, password="sesame"))
    for env in ({}, {"TERM": "dumb"}):
        alice = terminals(server.address[1], "--name", "alice", env=env)
        alice.wait_for(r"password:")
        alice.type("sesame\r")
        alice.wait_for(r"\* online \(1\): alice")
        assert "sesame" not in alice.text()
        alice.type("/quit\r")
        assert alice.wait_exit() == 0


@pytest.mark.timeout(30)
def test_a_refused_name_is_asked_for_again_in_the_input_line(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "OBSERVER")
    alice.wait_for(r"the name OBSERVER was refused \(NAME_TAKEN\)")
    alice.wait_for(r"^name:$")
    alice.type("alice\r")
    observer.expect("JOIN alice")
    alice.wait_for(r"^alice>$")

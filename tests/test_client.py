"""Tests of the chat/1 client, chat/client.py.

First the pure ClientSession (typed input to protocol lines, server lines to
display text), then the real client as a subprocess: piped, the way a script
uses it, and under a pseudo-terminal, the way a person does. The server runs
in-process on a free port (conftest.py); a raw client, the observer, watches
what the room receives. Nothing sleeps: every wait reads until the expected
output, with a deadline.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from chat import client
from chat.client import ClientSession, Notice, Quit, Reaction, Send, printable
from chat.server import ChatServer
from tests.conftest import TEST_LIMITS, LineClient

REPO = Path(__file__).resolve().parent.parent
#: Seconds any single expectation may take before the test fails.
DEADLINE = 5.0
HELLO = ("HELLO chat/1 line-max={line_max} name-max=32 max-clients=0 max-per-address=0 "
         "register-timeout=0 ping-interval=0 ping-timeout=0 flood-rate=0 flood-burst=0 "
         "outbound-max=0 password={password} future-param=7")


def greeted_session(line_max: int = 1024, password: int = 0) -> ClientSession:
    session = ClientSession()
    assert session.receive(HELLO.format(line_max=line_max, password=password)) == Reaction()
    return session


def registered_session(name: str = "alice", line_max: int = 1024) -> ClientSession:
    session = greeted_session(line_max)
    session.sent(f"USER {name}")
    session.receive(f"JOIN {name}")
    assert session.registered and session.unacknowledged == 0
    return session


# ---------------------------------------------------------------------------
# What the user types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("typed, action", [
    ("hello there", Send("MSG hello there")),
    ("  spaces kept  ", Send("MSG   spaces kept  ")),
    ("@bob psst", Send("PM bob psst")),
    ("@bob  two spaces", Send("PM bob  two spaces")),
    ("/users", Send("USERS")),
    ("/users  ", Send("USERS")),
    ("/quit", Quit()),
    ("exit", Quit()),
    ("exit ", Quit()),
    # A leading space sends a line as it is, commands and all.
    (" exit", Send("MSG  exit")),
    (" /users", Send("MSG  /users")),
    (" @bob hi", Send("MSG  @bob hi")),
    ("", None),
    ("   ", None),
])
def test_typed_line_becomes_this_action(typed, action):
    assert registered_session().interpret(typed) == action


@pytest.mark.parametrize("typed", ["@", "@bob", "@bob   ", "@ hello", "@9lives hi", "@b*b hi"])
def test_at_without_a_name_and_text_shows_usage_and_sends_nothing(typed):
    assert registered_session().interpret(typed) == Notice("usage: @name text")


def test_help_lists_the_commands():
    action = registered_session().interpret("/help")
    assert isinstance(action, Notice)
    for command in ("@name text", "/users", "/quit", "exit", "/help"):
        assert command in action.text


@pytest.mark.parametrize("typed", ["/nick bob", "/", "/USERS", "/quit now"])
def test_unknown_slash_command_is_explained_not_sent(typed):
    action = registered_session().interpret(typed)
    assert isinstance(action, Notice) and "unknown command" in action.text


def test_msg_up_to_the_advertised_line_max_is_sent():
    session = registered_session(line_max=64)
    text = "x" * (64 - len("MSG \n"))
    assert session.interpret(text) == Send(f"MSG {text}")


@pytest.mark.parametrize("typed", [
    "x" * (64 - len("MSG \n") + 1),
    "é" * 30,  # 30 characters, but 60 bytes of UTF-8
    "@bob " + "x" * (64 - len("PM bob \n") + 1),
])
def test_text_longer_than_the_advertised_line_max_is_refused_locally(typed):
    action = registered_session(line_max=64).interpret(typed)
    assert isinstance(action, Notice)
    assert action.text.startswith("not sent:") and "too long" in action.text


def test_text_with_a_control_character_is_refused_locally():
    action = registered_session().interpret("tab\there")
    assert isinstance(action, Notice) and action.text.startswith("not sent:")


# ---------------------------------------------------------------------------
# What the server sends
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("line, shown", [
    ("MSG bob hello there", "<bob> hello there"),
    ("MSG bob  leading space", "<bob>  leading space"),
    ("PM bob alice psst", "[bob -> alice] psst"),
    ("JOIN bob", "* bob joined"),
    ("LEAVE bob quit", "* bob left (quit)"),
    ("LEAVE bob timeout", "* bob left (timeout)"),
    ("ERR NO_SUCH_USER carol is not online", "! NO_SUCH_USER carol is not online"),
    ("ERR NEW_CODE from a newer server", "! NEW_CODE from a newer server"),
    # Lines this client does not know, or that break the grammar, are shown raw.
    ("TOPIC something new", "? TOPIC something new"),
    ("MSG bob", "? MSG bob"),
    ("PM bob", "? PM bob"),
])
def test_server_line_is_shown_as(line, shown):
    assert registered_session().receive(line) == Reaction(show=shown)


def test_server_ping_is_answered_with_pong_silently():
    """[PING-4]: a client MUST answer a server's PING with PONG, same token."""
    session = registered_session()
    assert session.receive("PING keepalive-1") == Reaction(answer="PONG keepalive-1")
    session.sent("PONG keepalive-1")
    assert session.unacknowledged == 0  # A PONG gets no reply ([PING-3]).


def test_users_reply_is_collected_and_shown_sorted():
    session = registered_session()
    assert session.interpret("/users") == Send("USERS")
    session.sent("USERS")
    assert session.receive("NAMES carol Bob") == Reaction()
    assert session.receive("NAMES alice") == Reaction()
    assert session.receive("ENDNAMES 3") == Reaction(show="* online (3): alice, Bob, carol")
    assert session.unacknowledged == 0


def test_hello_gives_line_max_and_password_and_unknown_parameters_are_ignored():
    """[GRAM-3]: clients MUST ignore HELLO parameters they do not know."""
    session = greeted_session(line_max=512, password=1)
    assert session.greeted and session.server_version == "chat/1"
    assert session.line_max == 512 and session.password_required


def test_control_characters_from_the_server_never_reach_the_terminal():
    shown = registered_session().receive("MSG mallory \x1b[2J\x07gotcha\u202e").show
    assert shown == "<mallory> \ufffd[2J\ufffdgotcha\ufffd"
    assert printable("plain, émoji 👩\u200d👩\u200d👧, nbsp\u00a0") == \
        "plain, émoji 👩\u200d👩\u200d👧, nbsp\u00a0"


# ---------------------------------------------------------------------------
# Acknowledgements, registration and the end
# ---------------------------------------------------------------------------


def test_only_the_own_echo_acknowledges_a_msg():
    session = registered_session("alice")
    session.sent("MSG hi")
    session.receive("MSG bob hi")
    assert session.unacknowledged == 1
    session.receive("MSG alice hi")
    assert session.unacknowledged == 0


def test_pm_is_acknowledged_by_the_senders_copy_not_by_one_received():
    session = registered_session("alice")
    session.sent("PM bob psst")
    session.receive("PM bob alice unrelated")
    assert session.unacknowledged == 1
    session.receive("PM alice bob psst")
    assert session.unacknowledged == 0


def test_non_closing_err_acknowledges_the_command_it_refuses():
    session = registered_session()
    session.sent("PM nobody hi")
    session.receive("ERR NO_SUCH_USER nobody is not online")
    assert session.unacknowledged == 0 and session.last_error == "NO_SUCH_USER"


def test_own_join_registers_and_refusals_are_kept_by_code():
    """[ERR-1]: clients MUST NOT depend on the text of an ERR, only on its code."""
    session = greeted_session()
    session.sent("USER bob")
    assert session.receive("ERR NAME_TAKEN any text at all") == \
        Reaction(show="! NAME_TAKEN any text at all")
    assert not session.registered and session.last_error == "NAME_TAKEN"
    session.sent("USER Bob2")
    assert session.receive("JOIN Bob2") == Reaction(show="* Bob2 joined")
    assert session.name == "Bob2" and session.last_error is None


def test_ok_pass_acknowledges_pass():
    session = greeted_session(password=1)
    session.sent("PASS secret")
    assert session.receive("OK PASS") == Reaction()
    assert session.unacknowledged == 0 and session.last_error is None


def test_bad_password_is_the_reply_to_pass_and_ends_the_session():
    session = greeted_session(password=1)
    session.sent("PASS guess")
    session.receive("ERR BAD_PASSWORD wrong password")
    assert session.unacknowledged == 0 and session.last_error == "BAD_PASSWORD"
    assert session.connection_ended() == "* disconnected"
    assert session.exit_status() == 1


def test_leaving_as_planned_exits_zero_silently():
    session = registered_session("alice")
    session.sent("LEAVE")
    assert session.receive("LEAVE alice quit") == Reaction(show="* alice left (quit)")
    assert session.connection_ended() is None
    assert session.exit_status() == 0


def test_server_shutdown_exits_zero():
    session = registered_session()
    session.receive("ERR SHUTTING_DOWN the server is shutting down")
    assert session.connection_ended() == "* disconnected"
    assert session.exit_status() == 0


def test_server_shutdown_with_lines_unacknowledged_exits_non_zero():
    session = registered_session()
    session.sent("MSG lost")
    session.receive("ERR SHUTTING_DOWN the server is shutting down")
    assert "1 line(s)" in session.connection_ended()
    assert session.exit_status() == 1


@pytest.mark.parametrize("last_line", [None, "ERR PING_TIMEOUT no answer", "ERR SLOW_CONSUMER behind"])
def test_any_other_end_exits_non_zero(last_line):
    session = registered_session()
    if last_line:
        session.receive(last_line)
    assert session.connection_ended().startswith("* disconnected")
    assert session.exit_status() == 1


def test_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        client.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "--password-file" in out and "--cafile" in out


# ---------------------------------------------------------------------------
# Integration: helpers (the server fixtures and LineClient are in conftest.py)
# ---------------------------------------------------------------------------


def client_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chat.client", *args]


def client_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "CHAT_PASSWORD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_piped(port: int, *args: str, input: str = "", **env: str) -> subprocess.CompletedProcess:
    """Run the client to its end with `input` piped in (killed at the timeout)."""
    return subprocess.run(client_command("--port", str(port), *args), input=input.encode(),
                          capture_output=True, env=client_env(**env), timeout=3 * DEADLINE,
                          cwd=REPO)


def read_until(fd: int, pattern: str, seen: bytearray, start: int = 0) -> re.Match:
    """Read from fd into `seen` until `pattern` matches `seen` (decoded) after
    `start`; fail after DEADLINE seconds or at the end of output."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + DEADLINE
    while True:
        match = regex.search(seen.decode(errors="replace"), start)
        if match:
            return match
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            pytest.fail(f"no {pattern!r} within {DEADLINE} s; output so far: {bytes(seen)!r}")
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the pseudo-terminal's other side is closed.
            data = b""
        if not data:
            pytest.fail(f"output ended before {pattern!r}; output: {bytes(seen)!r}")
        seen += data


@pytest.fixture
def observer(connect) -> LineClient:
    """A raw client in the room: the test's eyes on what the room receives."""
    return connect().register("observer")


@pytest.fixture
def processes():
    """Popen objects started by the test; killed at its end if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                stream.close()


def start_piped(processes, port: int, *args: str) -> subprocess.Popen:
    """The client with its stdin left open, as when a program feeds it."""
    process = subprocess.Popen(client_command("--port", str(port), *args),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=client_env(), cwd=REPO)
    processes.append(process)
    return process


# ---------------------------------------------------------------------------
# Integration: piped
# ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_piped_lines_reach_the_room_and_the_client_leaves_gracefully(server, observer):
    result = run_piped(server.address[1], "--name", "bot",
                       input="hello\n@observer hi\n/users\n")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN bot")
    observer.expect("MSG bot hello")
    observer.expect("PM bot observer hi")
    observer.expect("LEAVE bot quit")
    assert result.stdout.decode().splitlines() == [
        "* bot joined",
        "* online (2): bot, observer",
        "<bot> hello",
        "[bot -> observer] hi",
        "* online (2): bot, observer",
        "* bot left (quit)",
    ]


@pytest.mark.timeout(30)
def test_piped_client_leaves_only_after_every_line_was_echoed(make_server, connect):
    # 40 lines against a flood limit of 20 at once and 20 a second: the server
    # takes a second to handle them all, and none may be lost.
    server = make_server(dataclasses.replace(TEST_LIMITS, flood_rate=20, flood_burst=20))
    observer = connect(server.address).register("observer")
    lines = [f"line {number}" for number in range(40)]
    result = run_piped(server.address[1], "--name", "bot", input="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN bot")
    for line in lines:
        observer.expect(f"MSG bot {line}")
    observer.expect("LEAVE bot quit")


@pytest.mark.timeout(30)
def test_piped_line_without_a_final_newline_is_sent_too(server, observer):
    result = run_piped(server.address[1], "--name", "bot", input="no newline")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN bot")
    observer.expect("MSG bot no newline")


@pytest.mark.timeout(30)
def test_overlong_and_unknown_input_is_explained_and_not_sent(make_server, connect):
    server = make_server(dataclasses.replace(TEST_LIMITS, line_max=64))
    observer = connect(server.address).register("observer")
    result = run_piped(server.address[1], "--name", "bot",
                       input="x" * 100 + "\n/nick bob\nshort\n")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN bot")
    observer.expect("MSG bot short")  # Nothing before it: the long line was not sent.
    errors = result.stderr.decode()
    assert "not sent: the text is 41 bytes too long" in errors
    assert "unknown command /nick" in errors


@pytest.mark.timeout(30)
def test_refused_name_in_piped_mode_exits_non_zero(server, observer):
    result = run_piped(server.address[1], "--name", "OBSERVER", input="hello\n")
    assert result.returncode == 1
    assert "! NAME_TAKEN" in result.stdout.decode()
    assert "NAME_TAKEN" in result.stderr.decode()
    assert observer.barrier() == []  # Nothing reached the room.


@pytest.mark.timeout(30)
def test_invalid_name_in_piped_mode_exits_non_zero_without_asking_the_server(server):
    result = run_piped(server.address[1], "--name", "9lives", input="hello\n")
    assert result.returncode == 1
    assert "'9lives' is not a name" in result.stderr.decode()


def test_piped_input_without_a_name_is_a_usage_error(server):
    result = run_piped(server.address[1], input="hello\n")
    assert result.returncode == 2
    assert "--name" in result.stderr.decode()


def test_unreachable_server_exits_non_zero():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    result = run_piped(port, "--name", "bot")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr.decode()


@pytest.mark.timeout(30)
def test_password_is_sent_when_hello_asks_for_it(make_server, connect, tmp_path):
    server = make_server(dataclasses.replace(TEST_LIMITS, password="open sesame"))
    observer = connect(server.address)
    observer.expect_prefix("HELLO ")
    observer.send("PASS open sesame")
    observer.expect("OK PASS")
    observer.send("USER observer")
    observer.expect("JOIN observer")
    port = server.address[1]

    result = run_piped(port, "--name", "env", input="hi\n", CHAT_PASSWORD="open sesame")
    assert result.returncode == 0, result.stderr
    password_file = tmp_path / "password"
    password_file.write_text("open sesame\n")
    result = run_piped(port, "--name", "file", "--password-file", str(password_file), input="hi\n")
    assert result.returncode == 0, result.stderr
    for name in ("env", "file"):
        observer.expect(f"JOIN {name}")
        observer.expect(f"MSG {name} hi")
        observer.expect(f"LEAVE {name} quit")

    result = run_piped(port, "--name", "bad", input="hi\n", CHAT_PASSWORD="wrong")
    assert result.returncode == 1
    assert "! BAD_PASSWORD" in result.stdout.decode()
    result = run_piped(port, "--name", "none", input="hi\n")
    assert result.returncode == 1
    assert "wants a password" in result.stderr.decode()


@pytest.mark.timeout(30)
def test_server_shutdown_ends_a_piped_client_with_status_zero(server, observer, processes):
    process = start_piped(processes, server.address[1], "--name", "bot")
    seen = bytearray()
    read_until(process.stdout.fileno(), r"\* online \(2\)", seen)  # Registered, reading input.
    server.shutdown()
    assert process.wait(DEADLINE) == 0
    output = bytes(seen) + process.stdout.read()
    assert b"! SHUTTING_DOWN" in output


@pytest.mark.timeout(30)
def test_connection_closed_by_the_server_exits_non_zero(processes):
    # A scripted server that closes the connection after registering the client.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        process = start_piped(processes, listener.getsockname()[1], "--name", "bot")
        connection, _ = listener.accept()
        with connection, connection.makefile("rwb", buffering=0) as wire:
            connection.settimeout(DEADLINE)
            wire.write(HELLO.format(line_max=1024, password=0).encode() + b"\n")
            assert wire.readline() == b"USER bot\n"
            wire.write(b"JOIN bot\n")
            assert wire.readline() == b"USERS\n"
            wire.write(b"NAMES bot\nENDNAMES 1\n")
    assert process.wait(DEADLINE) == 1
    assert b"the server closed the connection" in process.stderr.read()


@pytest.fixture
def tls_server():
    """A reference server with a TLS listener, and its CA certificate's file."""
    trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server = ChatServer("127.0.0.1", 0, TEST_LIMITS, tls_context=context, tls_port=0).start()
    yield server, authority
    server.shutdown()


@pytest.mark.timeout(30)
def test_tls_client_trusts_the_server_certificate_by_cafile(tls_server, connect, tmp_path):
    server, authority = tls_server
    cafile = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(cafile))
    observer = connect(server.address).register("observer")
    result = run_piped(server.tls_address[1], "--name", "secure", "--cafile", str(cafile),
                       input="over tls\n")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN secure")
    observer.expect("MSG secure over tls")
    observer.expect("LEAVE secure quit")


@pytest.mark.timeout(30)
def test_tls_client_refuses_an_untrusted_certificate(tls_server):
    server, _ = tls_server
    result = run_piped(server.tls_address[1], "--name", "secure", "--tls", input="hi\n")
    assert result.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr.decode()


# ---------------------------------------------------------------------------
# Integration: a person at a terminal
# ---------------------------------------------------------------------------


class TerminalClient:
    """The client under a pseudo-terminal: `type` is the keyboard, `expect`
    reads the screen (the raw bytes, escape sequences included)."""

    def __init__(self, processes, port: int, *args: str) -> None:
        self.master, slave = os.openpty()
        # 80 x 24, like a new terminal window (a pty starts at 0 x 0).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = client_env(TERM="xterm", INPUTRC=os.devnull)
        self.process = subprocess.Popen(client_command("--port", str(port), *args),
                                        stdin=slave, stdout=slave, stderr=slave, env=env,
                                        cwd=REPO, start_new_session=True)
        processes.append(self.process)
        os.close(slave)
        self.screen = bytearray()
        self._position = 0  # Expectations match only output after the last match.

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def expect(self, pattern: str) -> re.Match:
        match = read_until(self.master, pattern, self.screen, self._position)
        self._position = match.end()
        return match

    def close(self) -> None:
        os.close(self.master)


@pytest.fixture
def terminals(processes):
    opened: list[TerminalClient] = []

    def start(port: int, *args: str) -> TerminalClient:
        terminal = TerminalClient(processes, port, *args)
        opened.append(terminal)
        return terminal

    yield start
    for terminal in opened:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait()
        terminal.close()


@pytest.mark.timeout(30)
def test_incoming_line_is_printed_above_the_partly_typed_line(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    observer.expect("JOIN alice")
    alice.expect(r"\* online \(2\): alice, observer\r\nalice> ")
    alice.type(b"hel")
    alice.expect("hel")
    observer.send("MSG hi alice")
    # The message on its own line, then the prompt and the partial line redrawn.
    alice.expect(r"\r\x1b\[K<observer> hi alice\r\nalice> hel")
    alice.type(b"lo\r")
    observer.expect("MSG observer hi alice")
    observer.expect("MSG alice hello")
    # The prompt comes back once the server has echoed the line.
    alice.expect(r"<alice> hello\r\nalice> ")
    alice.type(b"\x04")  # Ctrl-D on an empty line: leave.
    observer.expect("LEAVE alice quit")
    alice.expect(r"\* alice left \(quit\)")
    assert alice.process.wait(DEADLINE) == 0


@pytest.mark.timeout(30)
def test_refused_name_is_asked_for_again_at_a_terminal(server, observer, terminals):
    alice = terminals(server.address[1])
    alice.expect("name: ")
    alice.type(b"Observer\r")
    alice.expect(r"! NAME_TAKEN .*\r\n")
    alice.expect("name: ")
    alice.type(b"alice\r")
    observer.expect("JOIN alice")
    alice.expect(r"\* online \(2\): alice, observer\r\nalice> ")
    alice.type(b"/quit\r")
    observer.expect("LEAVE alice quit")
    assert alice.process.wait(DEADLINE) == 0


@pytest.mark.timeout(30)
def test_server_shutdown_ends_a_terminal_client_while_typing(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    alice.expect(r"\* online \(2\): alice, observer\r\nalice> ")
    alice.type(b"unfinished")
    alice.expect("unfinished")
    server.shutdown()
    alice.expect(r"! SHUTTING_DOWN")
    assert alice.process.wait(DEADLINE) == 0


@pytest.mark.timeout(30)
def test_ctrl_c_leaves_gracefully_with_status_130(server, observer, terminals):
    alice = terminals(server.address[1], "--name", "alice")
    observer.expect("JOIN alice")
    alice.expect(r"\* online \(2\): alice, observer\r\nalice> ")
    alice.type(b"never sent")
    alice.expect("never sent")
    # What Ctrl-C does. (The test's pseudo-terminal is not the client's
    # controlling terminal, so the key itself would send no signal.)
    alice.process.send_signal(signal.SIGINT)
    # CPython's readline looks for signals only when one interrupts its
    # select(): a signal that lands while it is still busy with the keys just
    # typed waits for the next one. A person is never that quick; this test
    # is, so it adds harmless SIGWINCHs (window resizes) until alice leaves.
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            line = observer.line(deadline=0.2)
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "Ctrl-C did not make the client leave"
            alice.process.send_signal(signal.SIGWINCH)
    assert line == "LEAVE alice quit"
    assert alice.process.wait(DEADLINE) == 130

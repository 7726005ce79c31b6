"""Tests of the chat/1 client as a program (chat/client.py, chat/cli.py), piped.

The real client as a subprocess, piped, the way a script uses it. The pure
parts are tested in test_client_core.py and test_cli.py; the full screen, the
way a person uses it, in test_cli_screen.py. The server runs
in-process on a free port (conftest.py); a raw client, the observer, watches
what the room receives. Nothing sleeps: every wait reads until the expected
output, with a deadline.
"""

from __future__ import annotations

import dataclasses
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chat import client
from chat.server import ChatServer
from tests.conftest import TEST_LIMITS, LineClient

REPO = Path(__file__).resolve().parent.parent
#: Seconds any single expectation may take before the test fails.
DEADLINE = 5.0
HELLO = ("HELLO chat/1 line-max={line_max} name-max=32 max-clients=0 max-per-address=0 "
         "register-timeout=0 ping-interval=0 ping-timeout=0 flood-rate=0 flood-burst=0 "
         "outbound-max=0 password={password} future-param=7")


def test_help_documents_the_exit_status_and_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        client.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "--password-file" in out and "--cafile" in out
    assert "/nick name" in out and "/query name" in out


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
def test_a_line_longer_than_line_max_is_split_and_a_tab_expanded_not_refused(make_server, connect):
    # The old client refused both ("41 bytes too long", BAD_CHARACTER).
    server = make_server(dataclasses.replace(TEST_LIMITS, line_max=64))
    observer = connect(server.address).register("observer")
    words = " ".join(f"word{number}" for number in range(20))
    result = run_piped(server.address[1], "--name", "bot", input=words + "\n/frob\na\tb\n")
    assert result.returncode == 0, result.stderr
    observer.expect("JOIN bot")
    pieces = []
    while len(" ".join(pieces)) < len(words):
        line = observer.line()
        assert line.startswith("MSG bot ")
        pieces.append(line.removeprefix("MSG bot "))
        assert len(f"MSG {pieces[-1]}\n".encode()) <= 64  # What the client sent fits line-max.
    assert " ".join(pieces) == words
    observer.expect("MSG bot a       b")
    assert "unknown command /frob" in result.stderr.decode()


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



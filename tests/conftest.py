"""Fixtures shared by the tests: a reference server on port 0, and line clients.

Nothing here sleeps: a client waits for the line it expects, with a deadline,
or uses the PING barrier ([PING-2]).
"""

from __future__ import annotations

import itertools
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest

from chat.limits import Limits
from chat.server import ChatServer

#: Limits for tests: no per-address limit (every test client is 127.0.0.1),
#: no flood delay, timers off unless a test turns them on.
TEST_LIMITS = Limits(max_per_address=0, flood_rate=0, register_timeout=0, ping_interval=0)

DEADLINE = 5.0
_tokens = itertools.count(1)


class LineClient:
    """A raw chat/1 connection for tests: send lines, expect lines."""

    def __init__(self, address: tuple[str, int], family: int = socket.AF_INET) -> None:
        self.sock = socket.create_connection(address, timeout=DEADLINE)
        self._buffer = b""
        self.name: str | None = None

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self, deadline: float = DEADLINE) -> str:
        """The next line, without its LF. EOFError if the server closed."""
        end = time.monotonic() + deadline
        while b"\n" not in self._buffer:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {deadline} s; buffered {self._buffer[:80]!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError(f"connection closed; buffered {self._buffer[:80]!r}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8")

    def expect(self, expected: str) -> None:
        got = self.line()
        assert got == expected, f"expected {expected!r}, got {got!r}"

    def expect_prefix(self, prefix: str) -> str:
        got = self.line()
        assert got.startswith(prefix), f"expected {prefix!r}..., got {got!r}"
        return got

    def expect_closed(self) -> None:
        with pytest.raises(EOFError):
            line = self.line()
            raise AssertionError(f"expected the connection to close, got {line!r}")

    def register(self, name: str) -> LineClient:
        self.expect_prefix("HELLO chat/1 ")
        self.send(f"USER {name}")
        self.expect(f"JOIN {name}")
        self.name = name
        return self

    def barrier(self) -> list[str]:
        """PING, and return every line that arrived before its PONG."""
        token = f"b{next(_tokens)}"
        self.send(f"PING {token}")
        lines = []
        while (line := self.line()) != f"PONG {token}":
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()


def start_server_process(*args: str, env: dict[str, str] | None = None,
                         banner: str = "chat server listening on ",
                         ) -> tuple[subprocess.Popen, tuple[str, int]]:
    """`python -m chat.server --port 0 ARGS` and the address from its banner.

    The caller stops the process (terminate or a signal, then wait)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chat.server", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stdout.readline()
    if not first.startswith(banner):
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"server did not start: {first!r} {stderr}")
    host, port = first.rsplit(" ", 1)[1].strip().rsplit(":", 1)
    return process, (host, int(port))


@pytest.fixture
def make_server():
    """Start reference servers with the given limits; all are shut down after."""
    servers = []

    def start(limits: Limits = TEST_LIMITS, host: str = "127.0.0.1") -> ChatServer:
        server = ChatServer(host, 0, limits).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def connect(server):
    """Open LineClients to the `server` fixture; all are closed after."""
    clients = []

    def open_client(address=None) -> LineClient:
        client = LineClient(address or server.address)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(autouse=True)
def no_threads_left_behind():
    """Every thread a test starts, the test stops."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + DEADLINE
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() > deadline:
            break
        left[0].join(deadline - time.monotonic())
    assert not left, f"threads left running: {left}"


#: Test modules whose outcome does not depend on the Python running them: each
#: drives servers and the kit as processes or over sockets, at length. The
#: broken-server suite runs the kit as a process per broken server; the
#: benchmark's smoke run starts servers and load generators; the kit's
#: fairness, --server-cmd and 30 ms jitter-proxy suites run whole kit runs; the
#: file-sharing suite moves 200 MB files between clients, plain and TLS; the
#: engines' suite needs nats-server, which only `once` installs.
#: tox runs them once, in its `once` environment, instead of once per
#: interpreter (the kit itself still runs every case against the reference
#: server, plain and TLS, on every interpreter: tests/test_conformance_kit.py);
#: a plain `pytest` runs them with the rest.
ONCE_MODULES = frozenset({"test_kit_can_fail.py", "test_bench.py", "test_proxy.py",
                          "test_conformance_controller.py", "test_conformance_fairness.py",
                          "test_files_big.py", "test_bench_engines.py"})


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stress: the concurrency test of tests/test_stress.py, 300 join/leave "
                   "cycles under broadcast (deselect with -m 'not stress')")
    config.addinivalue_line(
        "markers", "once: independent of the interpreter; tox runs these once, in its `once` "
                   "environment (deselect with -m 'not once')")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in ONCE_MODULES:
            item.add_marker(pytest.mark.once)


class LogRecords(logging.Handler):
    """The server's log records as they are written, for tests that wait for
    one (a connection's end, say) instead of sleeping."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def events(self, name: str) -> list[logging.LogRecord]:
        with self._changed:
            return [record for record in self.records if getattr(record, "event", None) == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = DEADLINE) -> list[logging.LogRecord]:
        """The first `count` records of event `name`; AssertionError if they do not come in time."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.events(name)) >= count, timeout)
        found = self.events(name)
        assert len(found) >= count, f"{len(found)} {name!r} records of {count} within {timeout} s"
        return found[:count]


@pytest.fixture
def log_records():
    """Every record under the `chat` logger, debug and up, during the test."""
    handler = LogRecords()
    logger = logging.getLogger("chat")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)

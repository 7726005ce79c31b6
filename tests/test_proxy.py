"""conformance/proxy.py: the delaying proxy, and the whole kit through it.

The kit must pass unchanged with the proxy between it and the reference
server: every chunk cut at random points and each piece delayed, in both
directions. The reference servers are started with selfhost.py's limits, as
the kit starts them itself; the proxy connects to them from each client's own
loopback address, so the per-address limit counts the kit's clients (the
max-clients case spreads them over 127.0.0.1, 127.0.0.2, ...), not the proxy.
The proxies in front of the two rooms run as `python -m conformance.proxy`
processes: their pauses then keep time even when this process, which holds
the servers and the kit, is busy.

Then the proxy's own promises: bytes complete and in order, cut into pieces;
half-close and reset passed on; close() interrupts its pauses and joins its
threads; the command line prints where it listens and stops on Ctrl-C.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conformance.case import Target
from conformance.proxy import DelayProxy
from conformance.report import PASS, format_failure
from conformance.runner import Runner, all_cases
from conformance.selfhost import RunningServer, SelfHostedServers
from conformance.spec import load_spec
from tests.conftest import DEADLINE

SPEC = load_spec()
PLAIN_CASES = [case for case in all_cases(SPEC) if "tls" not in case.needs]
#: Run one by one (ThroughTheProxy), and side by side as the kit runs them (TestSideBySide).
ONE_BY_ONE = [case for case in PLAIN_CASES if not case.background]
SIDE_BY_SIDE = [case for case in PLAIN_CASES if case.background]
REPO = Path(__file__).resolve().parent.parent
#: Each piece of every chunk waits up to this long, in both directions (a chunk is cut
#: into up to 3 pieces, so a line can take 90 ms each way): a slow, jittery network.
#: The kit derives its waits from the advertised limits and the round trip it measured,
#: so it must pass unchanged through it.
MAX_DELAY = 0.03


# -- the kit through the proxy -------------------------------------------------------------------


class ProxiedServer:
    """A private reference server (for the shutdown case) behind its own proxy."""

    def __init__(self, seed: int, **overrides) -> None:
        self._server = RunningServer(**overrides)
        self.password = self._server.password
        try:
            self._proxy = DelayProxy(self._server.address, max_delay=MAX_DELAY, seed=seed)
        except BaseException:
            self._server.shutdown()
            raise
        self.address = self._proxy.address

    def shutdown(self) -> None:
        self._server.shutdown()
        # The server's last lines (ERR SHUTTING_DOWN) may still be in the proxy's pauses.
        self._proxy.close(drain=DEADLINE)


class ProxyProcess:
    """`python -m conformance.proxy` in front of `target`; `address` from its first line."""

    def __init__(self, target: tuple[str, int], seed: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "conformance.proxy", "--listen", "127.0.0.1:0", "--target",
             "{}:{}".format(*target), "--max-delay", str(MAX_DELAY), "--seed", str(seed)],
            cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.process.stdout.readline()
        if not first.startswith("proxy listening on "):
            self.stop()
            raise RuntimeError(f"the proxy did not start: {first!r}")
        host, port = first.split()[-1].rsplit(":", 1)
        self.address = (host, int(port))

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, then the exit code and what it wrote on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=DEADLINE * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        errors = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return code, errors


@pytest.fixture(scope="module")
def proxied():
    """The self-hosted reference servers (open room, password room, timers room), each
    behind a proxy process, and a factory of proxied private servers (for the shutdown case)."""
    seeds = iter(range(1000, 2000))
    with SelfHostedServers() as servers:
        rooms = servers.targets()
        proxies: list[ProxyProcess] = []
        try:
            for seed, room in enumerate(rooms, start=1):
                proxies.append(ProxyProcess(room.address, seed=seed))
            targets = [Target(f"{room.label} via proxy", *proxy.address, password=room.password)
                       for room, proxy in zip(rooms, proxies, strict=True)]
            yield targets, (lambda **overrides: ProxiedServer(next(seeds), **overrides))
        finally:
            for proxy in proxies:
                code, errors = proxy.stop()
                assert code == 0, errors


class ThroughTheProxy:
    """The whole kit, case by case, through 30 ms of jitter each way: every case passes.

    No verdict but pass is tolerated, not even inconclusive: the kit's waits come from
    the advertised limits and the round trip it measured, and nothing this network
    does is something the kit could mistake for the server (the proxy keeps every
    byte, in order; its buffers are far below what slow-reader may assume).

    The cases are shared out over the classes below (pytest_generate_tests): tox's
    `once` env runs with `--dist loadscope`, which may give each class to another
    worker, with servers and proxies of its own; most of a case is waiting for
    the network, so they overlap well."""

    cases: list

    @pytest.mark.timeout(90)
    def test_case_passes_through_the_proxy(self, proxied, case):
        targets, private_servers = proxied
        runner = Runner(targets, SPEC, private_servers=private_servers, exclusive=True)
        assert runner.probe() is None
        result = runner.run_case(case)
        assert result.verdict == PASS, format_failure(result, SPEC) if result.failures else result.reason


class TestFirstQuarter(ThroughTheProxy):
    cases = ONE_BY_ONE[0::4]


class TestSecondQuarter(ThroughTheProxy):
    cases = ONE_BY_ONE[1::4]


class TestThirdQuarter(ThroughTheProxy):
    cases = ONE_BY_ONE[2::4]


class TestFourthQuarter(ThroughTheProxy):
    cases = ONE_BY_ONE[3::4]


def pytest_generate_tests(metafunc):
    if metafunc.cls is not None and issubclass(metafunc.cls, ThroughTheProxy):
        metafunc.parametrize("case", metafunc.cls.cases, ids=[case.name for case in metafunc.cls.cases])
    elif "background_case" in metafunc.fixturenames:
        metafunc.parametrize("background_case", SIDE_BY_SIDE, ids=[case.name for case in SIDE_BY_SIDE])


@pytest.fixture(scope="module")
def side_by_side(proxied):
    """The background cases (timers, expiry, flood rates) as the kit runs them on
    servers it started: all at once (Runner.run), one wait for them all."""
    targets, private_servers = proxied
    runner = Runner(targets, SPEC, private_servers=private_servers, exclusive=True)
    assert runner.probe() is None
    return {result.case.name: result for result in runner.run(SIDE_BY_SIDE)}


class TestSideBySide:
    def test_case_passes_through_the_proxy(self, side_by_side, background_case):
        result = side_by_side[background_case.name]
        assert result.verdict == PASS, format_failure(result, SPEC) if result.failures else result.reason


def test_the_proxy_really_cuts_the_servers_lines():
    with SelfHostedServers() as servers, DelayProxy(servers.open_room.address, max_delay=MAX_DELAY) as proxy:
        with socket.create_connection(proxy.address, timeout=DEADLINE) as sock:
            hello = _read_until(sock, b"\n")
            assert hello.startswith(b"HELLO chat/1 ")
            sock.sendall(b"LEAVE\n")
            assert _read_until(sock, None) == b""
        assert proxy.connections == 1
        assert proxy.pieces >= 4  # HELLO came in two pieces at least, LEAVE in two more


def test_the_cli_through_the_proxy_finds_nothing_wrong(tmp_path):
    """`python -m conformance HOST:PORT` pointed at the proxy: every case that applies passes."""
    with SelfHostedServers() as servers, DelayProxy(servers.open_room.address, max_delay=MAX_DELAY) as proxy:
        finished = subprocess.run([sys.executable, "-m", "conformance", "{}:{}".format(*proxy.address),
                                   "-k", "spec-example", "-k", "framing", "-k", "half-close", "-k", "reset"],
                                  cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert " 0 fail," in finished.stdout


# -- the proxy itself ------------------------------------------------------------------------------


class Upstream:
    """A listening socket standing in for the server; accept() returns the proxied connection."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((host, 0))
        self.listener.settimeout(DEADLINE)
        self.address = self.listener.getsockname()[:2]

    def accept(self) -> tuple[socket.socket, tuple]:
        sock, peer = self.listener.accept()
        sock.settimeout(DEADLINE)
        return sock, peer

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


def _read_until(sock: socket.socket, end: bytes | None, size: int | None = None) -> bytes:
    """Read until `end` has arrived, or `size` bytes, or (end None) the EOF."""
    data = b""
    while True:
        if end is not None and end in data or size is not None and len(data) >= size:
            return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _read_to_end(sock: socket.socket) -> bytes:
    """Everything until the connection ends, whether by EOF or by a reset."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _sendall_in_thread(sock: socket.socket, data: bytes) -> threading.Thread:
    def send() -> None:
        # Writes of random sizes, so the proxy sees chunks of every size.
        rng = random.Random(len(data))
        view = memoryview(data)
        while view:
            size = rng.randint(1, 9000)
            sock.sendall(view[:size])
            view = view[size:]

    thread = threading.Thread(target=send, name="test-sender")
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_bytes_arrive_complete_and_in_order_both_ways_at_once(upstream):
    up_data = random.Random(1).randbytes(300_000)
    down_data = random.Random(2).randbytes(300_000)
    with DelayProxy(upstream.address, max_delay=0.002, seed=3) as proxy:
        client = socket.create_connection(proxy.address, timeout=DEADLINE)
        server, _ = upstream.accept()
        with client, server:
            senders = [_sendall_in_thread(client, up_data), _sendall_in_thread(server, down_data)]
            received = {}
            readers = [threading.Thread(target=lambda: received.__setitem__("up", _read_until(
                           server, None, len(up_data))), name="test-reader-up"),
                       threading.Thread(target=lambda: received.__setitem__("down", _read_until(
                           client, None, len(down_data))), name="test-reader-down")]
            for thread in readers:
                thread.start()
            for thread in senders + readers:
                thread.join()
        pieces = proxy.pieces
    assert received["up"] == up_data
    assert received["down"] == down_data
    # Every chunk the proxy read was cut: many more writes than the 600 KB needed chunks.
    assert pieces > 2 * (len(up_data) + len(down_data)) // 65536


def test_every_chunk_is_cut_the_same_way_for_the_same_seed():
    one = DelayProxy(("127.0.0.1", 9), seed=42, max_cuts=3)
    two = DelayProxy(("127.0.0.1", 9), seed=42, max_cuts=3)
    try:
        data = bytes(range(200))
        cuts = [one._pieces(data, random.Random(f"{one.seed}-1-up")) for _ in range(2)]
        assert cuts[0] == cuts[1] == two._pieces(data, random.Random(f"{two.seed}-1-up"))
        assert b"".join(cuts[0]) == data and 2 <= len(cuts[0]) <= 4
        assert one._pieces(b"x", random.Random(0)) == [b"x"]
    finally:
        one.close()
        two.close()


@pytest.mark.timeout(30)
def test_a_half_close_is_passed_on_and_the_other_way_keeps_going(upstream):
    with DelayProxy(upstream.address, max_delay=0.01, seed=4) as proxy:
        client = socket.create_connection(proxy.address, timeout=DEADLINE)
        server, _ = upstream.accept()
        with client, server:
            client.sendall(b"last words\nhalf a li")
            client.shutdown(socket.SHUT_WR)
            # The server gets everything, then EOF: the half-close came through.
            assert _read_until(server, None) == b"last words\nhalf a li"
            # ...and can still answer: the client's reading side is open.
            server.sendall(b"reply after your EOF\n")
            assert _read_until(client, b"\n") == b"reply after your EOF\n"
            server.shutdown(socket.SHUT_WR)
            assert _read_until(client, None) == b""


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _sees_reset(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return False


@pytest.mark.timeout(30)
def test_a_client_reset_resets_the_server_side(upstream):
    with DelayProxy(upstream.address, max_delay=0.005, seed=5) as proxy:
        client = socket.create_connection(proxy.address, timeout=DEADLINE)
        server, _ = upstream.accept()
        with server:
            client.sendall(b"hello\n")
            assert _read_until(server, b"\n") == b"hello\n"
            _reset(client)
            assert _sees_reset(server), "the server saw an orderly close, not a reset"


@pytest.mark.timeout(30)
def test_a_server_reset_resets_the_client_side(upstream):
    with DelayProxy(upstream.address, max_delay=0.005, seed=6) as proxy:
        client = socket.create_connection(proxy.address, timeout=DEADLINE)
        server, _ = upstream.accept()
        with client:
            server.sendall(b"HELLO\n")
            assert _read_until(client, b"\n") == b"HELLO\n"
            _reset(server)
            assert _sees_reset(client), "the client saw an orderly close, not a reset"


@pytest.mark.timeout(30)
def test_close_interrupts_the_pauses_and_joins_every_thread(upstream):
    before = set(threading.enumerate())
    proxy = DelayProxy(upstream.address, max_delay=60.0, seed=7)
    client = socket.create_connection(proxy.address, timeout=DEADLINE)
    server, _ = upstream.accept()
    with client, server:
        client.sendall(b"this waits up to a minute in the proxy\n")
        server.sendall(b"and so does this\n")
        started = time.monotonic()
        proxy.close()
        assert time.monotonic() - started < 2.0
        assert not [t for t in threading.enumerate() if t not in before]
        # Both ends see the proxy go (a piece may have made it out before close()).
        assert b"this waits up to a minute in the proxy\n".startswith(_read_to_end(server))
        assert b"and so does this\n".startswith(_read_to_end(client))
    proxy.close()  # again: nothing happens


@pytest.mark.timeout(30)
def test_a_target_that_is_not_there_resets_the_client():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        gone = placeholder.getsockname()[:2]
    with DelayProxy(gone) as proxy:
        try:
            with socket.create_connection(proxy.address, timeout=DEADLINE) as client:
                assert client.recv(1) == b""
        except ConnectionResetError:
            pass  # the reset may come before connect() has even returned


@pytest.mark.timeout(30)
def test_the_target_sees_each_clients_own_loopback_address(upstream):
    with DelayProxy(upstream.address) as proxy:
        for source in ("127.0.0.1", "127.0.0.2"):
            client = socket.socket()
            with client:
                try:
                    client.bind((source, 0))
                except OSError:
                    pytest.skip(f"this host has no loopback address {source}")
                client.connect(proxy.address)
                server, peer = upstream.accept()
                server.close()
                assert peer[0] == source


# -- the command line ------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.timeout(60)
def test_the_command_line_relays_and_stops_on_ctrl_c(upstream):
    process = subprocess.Popen(
        [sys.executable, "-m", "conformance.proxy", "--listen", "127.0.0.1:0", "--target",
         "{}:{}".format(*upstream.address), "--max-delay", "0.01", "--seed", "8"],
        cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("proxy listening on 127.0.0.1:"), first
        port = int(first.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        server, _ = upstream.accept()
        with client, server:
            client.sendall("caf\u00e9 line\n".encode())
            assert _read_until(server, b"\n") == "caf\u00e9 line\n".encode()
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=DEADLINE * 2) == 0
            assert _read_until(client, None) == b""
        assert "seed 8" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


def test_bad_options_are_refused():
    finished = subprocess.run([sys.executable, "-m", "conformance.proxy", "--target", "nowhere"],
                              cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert "is not HOST:PORT" in finished.stderr

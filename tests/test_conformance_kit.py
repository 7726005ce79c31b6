"""The conformance kit against real servers: it passes on the reference server,
and it fails, quickly and with a useful report, on broken ones.

The broken servers are the reference server behind a small proxy that spoils
one thing in what the server sends (CR LF endings, a lost MSG, a wrong ERR
code), plus two that are not chat servers at all: one that echoes, one that
never answers. Each proves that the cases it runs can fail.

Nothing here sleeps: the kit waits for lines with deadlines; the proxies and
fake servers wake on socket events and stop when told.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from chat.limits import Limits
from chat.server import ChatServer
from conformance.case import BACKGROUND_CONNECTIONS, Case, Target
from conformance.grammar import parse_hello
from conformance.outcome import CheckFailed
from conformance.report import FAIL, NOT_APPLICABLE, PASS, WARN, format_failure
from conformance.runner import Runner, all_cases, main
from conformance.selfhost import SELF_HOSTED_LIMITS, TIMERS_ROOM_LIMITS, SelfHostedServers
from conformance.spec import load_spec
from tests.conftest import DEADLINE

SPEC = load_spec()
CASES = all_cases(SPEC)
CASES_BY_NAME = {case.name: case for case in CASES}
PLAIN_CASES = [case for case in CASES if "tls" not in case.needs]
REPO = Path(__file__).resolve().parent.parent
#: Cases that run on a server of their own (ctx.start_private_server), which only a
#: self-hosted run (or a run that may start servers) provides.
PRIVATE_SERVER_CASES = {"shutdown", "both-connection-limits", "ping-timeout-zero", "file-data-not-counted",
                        "slow-consumer-error-whole", "optional-commands-not-advertised"}


@pytest.fixture(scope="module")
def servers():
    """The reference server as the kit starts it itself: an open room and a room with a password."""
    with SelfHostedServers() as running:
        yield running


def make_runner(servers: SelfHostedServers, **options) -> Runner:
    runner = Runner(servers.targets(), SPEC, private_servers=servers.private_server, exclusive=True,
                    **options)
    assert runner.probe() is None
    return runner


# -- the reference server passes -------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", PLAIN_CASES, ids=[case.name for case in PLAIN_CASES])
def test_case_passes_on_the_reference_server(servers, case):
    result = make_runner(servers).run_case(case)
    if case.background:
        # The runner runs background cases side by side, counting on this bound.
        target = "{}:{}".format(*result.target.address)
        opened = [entry for entry in result.transcript.entries
                  if entry.kind == "connect" and entry.note.startswith(target)]
        assert len(opened) <= BACKGROUND_CONNECTIONS, [entry.who for entry in opened]
    assert result.verdict == PASS, format_failure(result, SPEC) if result.failures else result.reason


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """The reference server with TLS only, a certificate from a CA made for the test."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    cafile = tmp_path_factory.mktemp("tls") / "ca.pem"
    authority.cert_pem.write_to_path(str(cafile))
    limits = Limits(**{**SELF_HOSTED_LIMITS, **TIMERS_ROOM_LIMITS})
    server = ChatServer("127.0.0.1", None, limits, tls_context=server_context, tls_port=0).start()
    try:
        yield server.tls_address, str(cafile)
    finally:
        server.shutdown()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_case_passes_over_tls(tls_server, case):
    """The whole kit over TLS ([SEC-1]: chat/1 runs unchanged inside it)."""
    (host, port), cafile = tls_server
    target = Target("tls", host, port, ssl_context=ssl.create_default_context(cafile=cafile),
                    server_hostname=host)
    runner = Runner([target], SPEC, exclusive=True)
    assert runner.probe() is None
    result = runner.run_case(case)
    # What cannot apply to one TLS-only room: the password rooms, the private
    # servers of the shutdown case (which it stops), of the optional-commands
    # case (one without them) and of the other private-server cases, a TLS
    # half-close (see the case), the backlog of a closed connection and a TLS
    # client on the plain port (which cannot be made over TLS).
    if case.name.startswith("password-") or case.name in PRIVATE_SERVER_CASES | {
            "half-close", "closed-backlog-handled", "tls-client-on-plain-port"}:
        assert result.verdict == NOT_APPLICABLE, result.reason
    else:
        assert result.verdict == PASS, format_failure(result, SPEC) if result.failures else result.reason


@pytest.mark.timeout(60)
def test_command_line_with_tls_and_cafile(tls_server):
    (host, port), cafile = tls_server
    out = io.StringIO()
    code = main([f"{host}:{port}", "--tls", "--cafile", cafile, "-k", "tls-session", "-k", "spec-example"],
                out=out)
    assert code == 0, out.getvalue()
    assert "pass  tls-session" in out.getvalue()


def test_tls_case_does_not_apply_without_tls(servers):
    result = make_runner(servers).run_case(CASES_BY_NAME["tls-session"])
    assert result.verdict == NOT_APPLICABLE and "--tls" in result.reason


def test_an_expected_feature_that_is_missing_fails(servers):
    result = make_runner(servers, expected_features=["tls"]).run_case(CASES_BY_NAME["tls-session"])
    assert result.verdict == FAIL


# -- the runner's own rules ------------------------------------------------------------------


def _case(name: str, covers: tuple[str, ...], run: Callable) -> Case:
    return Case(name=name, covers=covers, needs=(), quotes=(), source="tests", run=run, kind="python")


def test_a_case_that_hangs_is_stopped_at_the_hard_cap(servers):
    def stuck(ctx):
        alice = ctx.register("alice")
        alice.next_event(timeout=120)  # waits far longer than the cap

    started = time.monotonic()
    result = make_runner(servers, case_cap=1.0).run_case(_case("stuck", ("PING-1",), stuck))
    assert result.verdict == FAIL
    assert "hard time cap" in result.failures[0].actual
    assert time.monotonic() - started < 10


def _background_cases(count: int, body: Callable) -> list[Case]:
    return [dataclasses.replace(_case(f"waits-{i}", ("PING-1",), body), background=True)
            for i in range(count)]


def test_background_cases_run_side_by_side_on_servers_the_kit_started(servers):
    """Each waits at a barrier for all three: run one by one, none would get past it.
    The results still come back in the order of the cases given."""
    barrier = threading.Barrier(3, timeout=DEADLINE)

    def wait_for_the_others(ctx):
        ctx.register("alice")
        barrier.wait()

    cases = [_case("first", ("PING-1",), lambda ctx: None)] + _background_cases(3, wait_for_the_others)
    results = make_runner(servers).run(cases)
    assert [result.case.name for result in results] == ["first", "waits-0", "waits-1", "waits-2"]
    assert [result.verdict for result in results] == [PASS] * 4, [r.failures for r in results]


def test_background_cases_run_one_by_one_on_a_server_others_may_use(servers):
    running, most = [], []
    lock = threading.Lock()

    def count(ctx):
        with lock:
            running.append(ctx.case.name)
            most.append(len(running))
        ctx.register("alice").quiet()
        with lock:
            running.remove(ctx.case.name)

    runner = Runner(servers.targets()[:1], SPEC)  # not exclusive: like HOST:PORT
    assert [result.verdict for result in runner.run(_background_cases(3, count))] == [PASS] * 3
    assert max(most) == 1


@pytest.mark.parametrize(("hello", "slots"), [
    ("HELLO chat/1 max-clients=48 max-per-address=40", 40 // BACKGROUND_CONNECTIONS),
    ("HELLO chat/1 max-clients=10 max-per-address=0", 10 // BACKGROUND_CONNECTIONS),
    ("HELLO chat/1 max-clients=2 max-per-address=1", 1),
    ("HELLO chat/1 max-clients=0 max-per-address=0", 1),
])
def test_background_cases_at_once_leave_room_under_the_connection_limits(hello, slots):
    runner = Runner([Target("server", "127.0.0.1", 1, hello=parse_hello(hello))], SPEC)
    assert runner.background_slots() == slots


def test_a_should_not_met_is_a_warning_unless_strict(servers):
    def slow_compare(ctx):
        raise CheckFailed("constant-time comparison", "it leaked", ids=("PASS-5",))

    case = _case("timing", ("PASS-5",), slow_compare)
    assert make_runner(servers).run_case(case).verdict == WARN
    assert make_runner(servers, strict=True).run_case(case).verdict == FAIL


def test_a_bug_in_a_case_is_reported_as_a_failure_with_its_traceback(servers):
    def buggy(ctx):
        raise KeyError("oops")

    result = make_runner(servers).run_case(_case("buggy", ("PING-1",), buggy))
    assert result.verdict == FAIL
    assert "the kit itself failed: KeyError" in result.failures[0].actual
    assert "Traceback" in result.failures[0].detail


def test_a_password_server_without_the_password_makes_register_not_applicable(servers):
    host, port = servers.password_room.address
    runner = Runner([Target("locked", host, port)], SPEC)
    assert runner.probe() is None
    assert runner.run_case(CASES_BY_NAME["msg-to-everyone"]).verdict == NOT_APPLICABLE
    # A case that speaks to an open room does not apply either; the password cases that need
    # no password still run.
    assert runner.run_case(CASES_BY_NAME["spec-example-chat"]).verdict == NOT_APPLICABLE
    assert runner.run_case(CASES_BY_NAME["password-wrong"]).verdict == PASS


# -- the command line ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_command_line_self_hosted_writes_json_and_junit(tmp_path):
    json_path, junit_path = tmp_path / "report.json", tmp_path / "report.xml"
    out = io.StringIO()
    code = main(["-k", "spec-example", "-k", "framing-crlf", "--json", str(json_path),
                 "--junit-xml", str(junit_path)], out=out)
    assert code == 0, out.getvalue()
    report = json.loads(json_path.read_text())
    assert report["requirements"]["USER-1"]["verdict"] == PASS
    assert report["requirements"]["USER-1"]["cases"]["spec-example-chat"] == PASS
    assert report["requirements"]["FRAME-2"]["level"] == "MUST"
    assert set(report["cases"]) == {"spec-example-chat", "spec-example-errors", "spec-example-users",
                                    "framing-crlf"}
    suite = ET.parse(junit_path).getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "0"
    assert "Summary by SPEC.md section:" in out.getvalue()


def test_no_case_matching_is_a_usage_error():
    assert main(["-k", "no-such-case-anywhere"], out=io.StringIO()) == 2


# -- servers that are not chat servers: fail fast, never hang --------------------------------


class ThreadedTestServer:
    """A loopback TCP server with threads per connection, for the fakes below.

    A subclass says what a connection does in `handle(client)`: it returns the
    sockets it opened and the (function, args) to run in threads. close()
    stops the acceptor, shuts every socket down and joins every thread.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.address = self.listener.getsockname()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept)
        self._acceptor.start()

    def handle(self, client: socket.socket) -> tuple[list[socket.socket], list[tuple[Callable, tuple]]]:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            sockets, jobs = self.handle(client)
            self._sockets += sockets
            for target, args in jobs:
                thread = threading.Thread(target=target, args=args)
                self._threads.append(thread)
                thread.start()

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join()
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join()
        for sock in self._sockets:
            sock.close()


class FakeServer(ThreadedTestServer):
    """A TCP server that is not a chat/1 server: `echo` sends back what it gets,
    `silent` never says anything."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        super().__init__()

    def handle(self, client):
        return [client], [(self._serve, (client,))]

    def _serve(self, client: socket.socket) -> None:
        try:
            while data := client.recv(4096):
                if self.behaviour == "echo":
                    client.sendall(data)
        except OSError:
            pass


@pytest.mark.timeout(60)
@pytest.mark.parametrize("behaviour", ["echo", "silent"])
def test_a_server_that_is_not_chat_fails_fast(behaviour):
    fake = FakeServer(behaviour)
    try:
        out = io.StringIO()
        started = time.monotonic()
        code = main(["{}:{}".format(*fake.address), "--timeout", "0.5"], out=out)
        elapsed = time.monotonic() - started
    finally:
        fake.close()
    assert code == 1
    assert elapsed < 10, f"took {elapsed:.1f} s"
    text = out.getvalue()
    assert "FAIL: preflight" in text and "[HELLO-1]" in text
    assert "Actual (probe-server):   timeout after 0.5 s" in text


def test_a_server_that_is_not_there_fails_fast():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    out = io.StringIO()
    assert main([f"127.0.0.1:{port}"], out=out) == 1
    assert "connect failed" in out.getvalue()


# -- broken servers: the reference server behind a spoiling proxy ----------------------------


class SpoilingProxy(ThreadedTestServer):
    """A proxy in front of a good server that passes client bytes through and
    hands every server line to `spoil(line, count)` (count: lines so far on
    that connection), sending what it returns instead."""

    def __init__(self, upstream: tuple[str, int], spoil: Callable[[bytes, int], bytes]) -> None:
        self.upstream = upstream
        self.spoil = spoil
        super().__init__()

    def handle(self, client):
        server = socket.create_connection(self.upstream)
        return [client, server], [(self._up, (client, server)), (self._down, (server, client))]

    @staticmethod
    def _up(client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                server.sendall(data)
            server.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        buffer, count = b"", 0
        try:
            while data := server.recv(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                out = b""
                for line in lines:
                    count += 1
                    out += self.spoil(line + b"\n", count)
                client.sendall(out)
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass



def run_behind_proxy(servers, spoil, name: str, timeout: float = 1.0):
    case = CASES_BY_NAME[name]
    if "password" in case.needs:
        room = servers.password_room
    elif {"register-timeout", "ping-interval"} & set(case.needs):
        room = servers.timers_room
    else:
        room = servers.open_room
    proxy = SpoilingProxy(room.address, spoil)
    try:
        # No network check: the proxy loses the kit's second PING of the check as well, and
        # every failure here is the server's (tests/test_conformance_fairness.py tests the check).
        runner = Runner([Target("broken", *proxy.address, password=room.password)], SPEC, timeout=timeout,
                        rerun_args="HOST:PORT", network_check=False)
        runner.probe()
        return runner.run_case(case)
    finally:
        proxy.close()


#: These cases run on private servers (against the reference server), which
#: no proxy stands in front of.
SPOILABLE_CASES = [case for case in PLAIN_CASES if case.name not in PRIVATE_SERVER_CASES]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", SPOILABLE_CASES, ids=[case.name for case in SPOILABLE_CASES])
def test_case_fails_when_the_server_loses_a_line(servers, case):
    """Every case can fail: behind a proxy that loses the second line of each
    connection (the reply to the first command), each one does."""
    def lose_second_line(line: bytes, count: int) -> bytes:
        return b"" if count == 2 else line

    result = run_behind_proxy(servers, lose_second_line, case.name, timeout=0.5)
    assert result.verdict == FAIL, result.reason


def crlf_endings(line: bytes, count: int) -> bytes:
    return line[:-1] + b"\r\n"


@pytest.mark.timeout(60)
def test_crlf_line_endings_fail_frame_3(servers):
    result = run_behind_proxy(servers, crlf_endings, "framing-crlf")
    assert result.verdict == FAIL
    assert "FRAME-3" in result.failed_ids()


@pytest.mark.timeout(60)
def test_a_lost_msg_fails_the_ordering_case(servers):
    lost: set[bytes] = set()

    def lose_n3(line: bytes, count: int) -> bytes:
        # Every client loses the third MSG of the first sender, n3.
        if line.startswith(b"MSG ") and line.endswith(b" n3\n") and not lost:
            lost.add(line)
        return b"" if line in lost else line

    result = run_behind_proxy(servers, lose_n3, "concurrent-senders")
    assert result.verdict == FAIL
    assert "ORDER-5" in result.failed_ids()


@pytest.mark.timeout(60)
def test_a_wrong_error_code_fails_with_a_full_report(servers):
    def bad_name_is_bad_syntax(line: bytes, count: int) -> bytes:
        return line.replace(b"ERR BAD_NAME ", b"ERR BAD_SYNTAX ")

    result = run_behind_proxy(servers, bad_name_is_bad_syntax, "names-invalid")
    assert result.verdict == FAIL
    report = format_failure(result, SPEC)
    # The case, the requirement and its sentence, Expected / Actual, the step...
    assert "FAIL: names-invalid" in report
    assert "[NAME-1] MUST" in report and "A name MUST match `name`" in report
    assert "Expected (alice): a line matching /ERR BAD_NAME .*/" in report
    assert "Actual (alice):   'ERR BAD_SYNTAX " in report
    assert "names-invalid.session:" in report
    # ...the timestamped transcript and a reproduction for one client.
    assert "alice  > USER 9lives\\n" in report
    assert "printf 'USER 9lives\\n" in report and "| nc 127.0.0.1" in report
    assert "python3 - <<'EOF'" in report
    assert "Rerun: python -m conformance HOST:PORT -k names-invalid" in report


# -- the pytest plugin -----------------------------------------------------------------------


def run_plugin(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "pytest", "-p", "conformance.plugin", "-p", "no:cacheprovider", "-q",
               "--rootdir", str(tmp_path), *args]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_plugin_runs_each_case_as_a_test_against_a_self_hosted_server(tmp_path):
    finished = run_plugin(tmp_path, "-k", "spec-example or tls-session")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "3 passed, 1 skipped" in finished.stdout


@pytest.mark.timeout(300)
def test_plugin_against_a_given_server_reports_failures(tmp_path):
    fake = FakeServer("silent")
    try:
        finished = run_plugin(tmp_path, "--server", "{}:{}".format(*fake.address), "--conformance-timeout",
                              "0.3", "-k", "spec-example-chat", "-rN")
    finally:
        fake.close()
    assert finished.returncode == 1
    assert "conformance case spec-example-chat [USER-1" in finished.stdout
    assert "FAIL: preflight" in finished.stdout
    assert "1 failed" in finished.stdout

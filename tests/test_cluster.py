"""A cluster of reference servers on one Redis (SPEC.md 11b), end to end.

Each test starts its own redis-server (with its append-only file in the
test's temporary directory) and its servers as processes, so that one can be
killed. Without redis-server the tests are skipped, saying so; with CI=true
(.ci/run installs it) they fail instead, so they cannot be switched off
unnoticed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.engines import Nats
from chat import backplane

REDIS = shutil.which("redis-server")
#: Short leases, so that a killed server's users leave within the test's wait; not
#: so short that a server starved of CPU on a loaded machine (tox runs eight
#: workers) misses its heartbeats for a whole lease and is declared gone.
LEASE = 5
#: Seconds any one expected line may take. A killed server's LEAVE comes a
#: lease and a heartbeat after its last entry ([CLUSTER-5]).
DEADLINE = 10.0 + LEASE

if REDIS is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("redis-server is missing: .ci/run installs it (apt-get install redis-server)")
    pytestmark = pytest.mark.skip(reason="redis-server is not installed (apt-get install redis-server)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Engine:
    """A redis-server of the test's own, durable across its restarts ([CLUSTER-8])."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:
            if "Ready to accept connections" in line:
                return
        raise RuntimeError(f"redis-server did not start (exit {self.process.wait()})")

    def command(self, *args: bytes):
        """One command to this Redis, and its reply."""
        connection = backplane.RedisConnection("127.0.0.1", self.port, 0)
        try:
            return connection.command(*args)
        finally:
            connection.close()

    def wait_for(self, condition, what: str, *keys: bytes, events: bytes = b"Kth"):
        """`condition()`'s value once it holds, within DEADLINE: asked again each time
        Redis says one of `keys` changed (keyspace notifications: `events`, by
        default the changes of streams and hashes; `g` adds DEL), so the test
        waits for the servers' own trim period ([CLUSTER-9]) without polling."""
        watcher = backplane.RedisConnection("127.0.0.1", self.port, 0)
        try:
            watcher.command(b"CONFIG", b"SET", b"notify-keyspace-events", events)
            watcher.send_commands([(b"SUBSCRIBE", *(b"__keyspace@0__:" + key for key in keys))],
                                  timeout=DEADLINE)
            for _ in keys:
                watcher.reply()  # subscribed: from here on no change is missed
            deadline = time.monotonic() + DEADLINE
            while not (value := condition()):
                # Heartbeats change the stream too: the deadline holds however often it wakes.
                assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
                try:
                    watcher.reply()  # the next change to one of the keys
                except TimeoutError:
                    raise AssertionError(f"not within {DEADLINE} s: {what}") from None
            return value
        finally:
            watcher.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: Redis writes its file and exits.
            self.process.wait(timeout=DEADLINE)
            self.process.stdout.close()
            self.process = None


class Server:
    """A reference server of the cluster, in a process of its own."""

    def __init__(self, engine: Engine, lease: int = LEASE, options: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat.server", "--port", "0", "--backplane", engine.url,
             "--backplane-lease", str(lease), "--log-level", "warning", *options],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        line = self.process.stdout.readline()
        match = re.fullmatch(r"chat server listening on (\S+):(\d+)\n", line)
        assert match, f"the server said {line!r}"
        self.address = (match[1], int(match[2]))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=DEADLINE)
        self.process.stdout.close()


class Client:
    def __init__(self, server: Server, name: str | None = None) -> None:
        self.sock = socket.create_connection(server.address, timeout=DEADLINE)
        self.file = self.sock.makefile("rb")
        assert self.line().startswith("HELLO chat/1 ")
        if name:
            self.send(f"USER {name}")
            assert self.line() == f"JOIN {name}"

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> str:
        data = self.file.readline()
        assert data.endswith(b"\n"), f"connection ended: {data!r}"
        return data.decode()[:-1]

    def until(self, wanted: str, prefix: str | None = None) -> list[str]:
        """Every line up to and including `wanted` (or one starting with `prefix`)."""
        lines = [self.line()]
        while lines[-1] != wanted and not (prefix and lines[-1].startswith(prefix)):
            lines.append(self.line())
        return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def engine(tmp_path):
    engine = Engine(tmp_path)
    engine.start()
    yield engine
    engine.stop()


@pytest.fixture
def servers(engine):
    started = [Server(engine), Server(engine)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def clients():
    opened: list[Client] = []

    def open_client(server: Server, name: str | None = None) -> Client:
        client = Client(server, name)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def test_clients_on_two_servers_see_one_room_order_with_nothing_lost_or_doubled(servers, clients):
    # [CLUSTER-1], [CLUSTER-2]: four talkers, two on each server, all at once.
    names = ["ann", "ben", "cat", "dan"]
    people = [clients(servers[i % 2], name) for i, name in enumerate(names)]
    for person in people[:-1]:
        person.until(f"JOIN {names[-1]}")
    for round_ in range(15):  # Within flood-burst (20): no lines held back.
        for name, person in zip(names, people, strict=True):
            person.send(f"MSG {name} {round_}")
    views = []
    for person in people:
        lines = []
        while len(lines) < 15 * len(names):
            line = person.line()
            if line.startswith("MSG "):
                lines.append(line)
        views.append(lines)
    expected = {f"MSG {name} {name} {round_}" for name in names for round_ in range(15)}
    assert set(views[0]) == expected and len(views[0]) == len(expected)
    assert all(view == views[0] for view in views)
    for name in names:  # [ORDER-4]: each sender's lines in the order sent.
        own = [line for line in views[0] if line.startswith(f"MSG {name} ")]
        assert own == [f"MSG {name} {name} {round_}" for round_ in range(15)]


def test_two_servers_racing_for_one_name_give_it_to_one(servers, clients):
    # [CLUSTER-3]: the first USER in the log wins, whatever the timing.
    for attempt in range(5):
        left, right = clients(servers[0]), clients(servers[1])
        name = f"race{attempt}"
        left.send(f"USER {name}")
        right.send(f"USER {name.upper()}")
        replies = sorted([left.line(), right.line()])
        assert replies[0].startswith("ERR NAME_TAKEN ") or replies[1].startswith("ERR NAME_TAKEN "), replies
        assert sum(reply.startswith("JOIN ") for reply in replies) == 1, replies


def test_pm_and_users_reach_across_servers(servers, clients):
    # [CLUSTER-2] PM, [CLUSTER-4] USERS.
    alice = clients(servers[0], "alice")
    bob = clients(servers[1], "bob")
    alice.until("JOIN bob")
    bob.send("PM ALICE psst")
    assert bob.line() == "PM bob alice psst"
    assert alice.line() == "PM bob alice psst"
    alice.send("USERS")
    assert alice.line() == "NAMES alice bob"
    assert alice.line() == "ENDNAMES 2"


def test_a_killed_servers_users_leave_with_timeout_and_their_names_are_free(servers, clients):
    # [CLUSTER-5]
    alice = clients(servers[0], "alice")
    clients(servers[1], "bob")
    alice.until("JOIN bob")
    alice.send("MSG before")
    assert alice.line() == "MSG alice before"
    servers[1].stop(signal.SIGKILL)
    assert alice.line() == "LEAVE bob timeout"
    clients(servers[0], "bob")
    assert alice.line() == "JOIN bob"


def test_a_server_stopped_in_order_sends_its_users_leaves_closed(servers, clients):
    alice = clients(servers[0], "alice")
    clients(servers[1], "bob")
    alice.until("JOIN bob")
    servers[1].stop(signal.SIGTERM)
    assert alice.line() == "LEAVE bob closed"


def test_a_server_paused_past_its_lease_closes_its_clients_and_serves_again(servers, clients):
    # [CLUSTER-7]: the others declared it gone; its clients were told.
    alice = clients(servers[0], "alice")
    bob = clients(servers[1], "bob")
    alice.until("JOIN bob")
    servers[1].process.send_signal(signal.SIGSTOP)
    try:
        assert alice.line() == "LEAVE bob timeout"
    finally:
        servers[1].process.send_signal(signal.SIGCONT)
    assert bob.line() == "ERR BACKPLANE_DOWN this server lost the room's log: connect again"
    assert bob.file.readline() == b""
    clients(servers[1], "bob")
    assert alice.line() == "JOIN bob"


def test_an_engine_restart_refuses_meanwhile_and_loses_or_doubles_nothing_accepted(engine, servers, clients):
    # [CLUSTER-6], [CLUSTER-8]
    alice = clients(servers[0], "alice")
    bob = clients(servers[1], "bob")
    alice.until("JOIN bob")
    alice.send("MSG one")
    bob.send("MSG two")
    # Both accepted (each has its echo) before the engine stops.
    alice_lines = alice.until("MSG alice one")
    bob_lines = bob.until("MSG bob two")
    engine.stop()
    alice.send("MSG during")
    alice_lines += alice.until("ERR BACKPLANE_DOWN the room's log is unreachable: not sent, try again")
    alice.send("PING still-here")  # What needs no log is answered as usual.
    assert alice.line() == "PONG still-here"
    engine.start()
    after = accepted(alice, "alice", "after", alice_lines)
    three = accepted(bob, "bob", "three", bob_lines)
    alice_view = [line for line in alice_lines + alice.until(three) if line.startswith("MSG ")]
    bob_view = [line for line in bob_lines if line.startswith("MSG ")]
    assert alice_view == bob_view
    assert sorted(alice_view[:2]) == ["MSG alice one", "MSG bob two"]
    assert alice_view[2:] == [after, three]


def accepted(client: Client, name: str, text: str, lines: list[str]) -> str:
    """Send MSG `text` until the server takes it (ERR BACKPLANE_DOWN while it
    reconnects, [CLUSTER-6]); the echo. Every line read goes to `lines`."""
    for attempt in range(int(DEADLINE / 0.5)):
        client.send(f"MSG {text} {attempt}")
        lines += client.until(f"MSG {name} {text} {attempt}", "ERR BACKPLANE_DOWN ")
        if lines[-1].startswith("MSG "):
            return lines[-1]
    raise AssertionError(f"MSG {text} refused {int(DEADLINE / 0.5)} times")


def test_a_new_server_learns_the_room_from_the_log(engine, servers, clients):
    alice = clients(servers[0], "alice")
    late = Server(engine)
    try:
        carol = clients(late, "carol")
        carol.send("USERS")
        assert carol.until("ENDNAMES 2")[0] == "NAMES alice carol"
        assert alice.line() == "JOIN carol"
    finally:
        late.stop()



@pytest.mark.once
def test_quick_cluster_benchmarks_lose_nothing_and_report_the_engine(tmp_path):
    """README's cluster commands in their quick form, and the engines
    scenario (about 7 s; nats-server comes with tox's `once` environment)."""
    results = tmp_path / "results.json"
    scenarios = ["cluster-latency", "cluster-fan-out", "cluster-connections", "cluster-file"]
    if Nats.binary() is not None or os.environ.get("CI") == "true":
        scenarios.append("engines")
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(results),
                           *(argument for name in scenarios for argument in ("--scenario", name))],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=300)
    figures = json.loads(results.read_text())["scenarios"] if results.exists() else {}
    errors = {name: figures[name]["errors"] for name in figures if figures[name]["errors"]}
    assert done.returncode == 0, f"errors: {errors}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    for name in scenarios:
        for case in figures[name]["cases"].values():
            for key in ("lost", "extra", "order_errors"):
                assert case["median"].get(key, 0) == 0, (name, key, case["median"])
    cases = figures["cluster-latency"]["cases"]
    [single] = [case for name, case in cases.items() if not name.startswith("2 servers")]
    [cluster] = [case for name, case in cases.items() if name.startswith("2 servers")]
    for case in (single, cluster):
        assert case["median"]["delivered"] > 0
    assert cluster["median"]["redis_rss_kb"] > 0 and "redis_cpu_pct" in cluster["median"]
    assert cluster["median"]["p99_ratio_to_single"] > 0
    [fanout] = [case for name, case in figures["cluster-fan-out"]["cases"].items()
                if name.startswith("2 servers")]
    assert fanout["median"]["lines_per_s_ratio_to_single"] > 0 and fanout["median"]["server_b_rss_kb"] > 0
    [idle] = figures["cluster-connections"]["cases"].values()
    assert idle["median"]["held"] == idle["median"]["clients"] > 0
    assert idle["median"]["server_b_rss_kb"] > 0 and idle["median"]["redis_rss_kb"] > 0
    [across] = [case for name, case in figures["cluster-file"]["cases"].items() if "2 servers" in name]
    assert across["median"]["relayed_mb_per_s"] > 0 and across["median"]["redis_cpu_pct"] > 0
    if "engines" in scenarios:
        assert len(figures["engines"]["cases"]) == 4


@pytest.mark.once
def test_the_whole_kit_passes_against_a_cluster_of_three(engine, servers):
    third = Server(engine)
    try:
        addresses = ",".join("{}:{}".format(*server.address) for server in servers + [third])
        done = subprocess.run([sys.executable, "-m", "conformance", addresses],
                              cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                              timeout=600)
    finally:
        third.stop()
    assert done.returncode == 0, done.stdout[-4000:]
    assert "cluster-one-order" in done.stdout and ", 0 fail," in done.stdout


def test_the_kits_cluster_cases_run_in_a_room_with_a_password(engine, tmp_path):
    # Each case that sends USER itself lets the kit add PASS: none is n/a, or
    # failed, because the room has a password.
    password_file = tmp_path / "password"
    password_file.write_text("sekrit\n")
    pair = [Server(engine, options=("--password-file", str(password_file))) for _ in range(2)]
    try:
        addresses = ",".join("{}:{}".format(*server.address) for server in pair)
        done = subprocess.run([sys.executable, "-m", "conformance", "--password", "sekrit", "-k", "cluster-",
                               addresses], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                              text=True, timeout=120)
    finally:
        for server in pair:
            server.stop()
    assert done.returncode == 0, done.stdout[-4000:]
    # cluster-one-order, cluster-name-race, cluster-users-snapshot, cluster-file-across.
    assert "Cases: 4: 4 pass, 0 fail," in done.stdout, done.stdout[-4000:]


#: [CLUSTER-9]: what the stream may hold once the room is quiet: the entries
#: after the latest snapshot (a lease of heartbeats from two servers, at five a
#: lease each, and the period before the next trim), however many came before.
QUIET_STREAM_MAX = 2 * (2 * 5 + 2)


def talk(people: list[Client], names: list[str], text: str, count: int) -> list[list[str]]:
    """Each sends `count` MSGs (within flood-burst), and all of them reach
    everyone, in one order. Each one's MSG lines, in the order received."""
    for round_ in range(count):
        for name, person in zip(names, people, strict=True):
            person.send(f"MSG {text} {name} {round_}")
    expected = {f"MSG {name} {text} {name} {round_}" for round_ in range(count) for name in names}
    views = [read_msgs(person, len(expected)) for person in people]
    assert set(views[0]) == expected and all(view == views[0] for view in views)
    return views


def read_msgs(person: Client, count: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < count:
        if (line := person.line()).startswith("MSG "):
            lines.append(line)
    return lines


def test_the_stream_stays_bounded_and_a_new_server_starts_from_a_snapshot(engine, servers, clients):
    # [CLUSTER-9]: trimmed to what every live server applied; [CLUSTER-10]: a
    # server starting after its first entries were trimmed learns the room.
    names = ["ann", "ben"]
    people = [clients(servers[0], "ann"), clients(servers[1], "ben")]
    people[0].until("JOIN ben")
    for round_ in range(3):
        talk(people, names, f"r{round_}", 15)
        # More entries than the bound were appended this round alone.
        engine.wait_for(lambda: engine.command(b"XLEN", backplane.STREAM) <= QUIET_STREAM_MAX,
                        f"the stream trimmed to {QUIET_STREAM_MAX} entries after round {round_}",
                        backplane.STREAM)
    first = engine.command(b"XRANGE", backplane.STREAM, b"-", b"+", b"COUNT", b"1")
    assert not first or b" user " not in first[0][1][1], "the JOINs were never trimmed"
    late = Server(engine)
    try:
        carol = clients(late, "carol")
        carol.send("USERS")
        assert carol.until("ENDNAMES 3")[0] == "NAMES ann ben carol"
        assert people[0].until("JOIN carol")
        talk(people + [carol], names + ["carol"], "after", 3)
    finally:
        late.stop()


def test_a_slow_server_holds_the_trim_back_and_misses_nothing(engine, clients):
    # [CLUSTER-9]: a server paused for less than its lease is live: the stream
    # is not trimmed past what it applied, and its client gets every line.
    lease = 20  # Paused for well under it, however loaded the machine (a heartbeat period: 4 s).
    fast, slow = Server(engine, lease), Server(engine, lease)
    try:
        names = ["ann", "abe", "amy"]
        people = [clients(fast, name) for name in names]
        bob = clients(slow, "bob")
        people[0].until("JOIN bob")
        slow.process.send_signal(signal.SIGSTOP)
        try:
            [view, *_] = talk(people, names, "while-bob-sleeps", 15)
            [(last_id, _)] = engine.command(b"XREVRANGE", backplane.STREAM, b"+", b"-", b"COUNT", b"1")
            # The fast server has applied every MSG, taken a snapshot after them
            # and trimmed (one pipeline): only the slow one holds the stream back.
            def snapshot_id():
                return backplane.id_key(engine.command(b"HGET", backplane.SNAPSHOT, b"id") or b"0")

            engine.wait_for(lambda: snapshot_id() >= backplane.id_key(last_id), "a snapshot after the MSGs",
                            backplane.SNAPSHOT)
            assert engine.command(b"XLEN", backplane.STREAM) > 15 * len(names)
        finally:
            slow.process.send_signal(signal.SIGCONT)
        assert read_msgs(bob, len(view)) == view
        engine.wait_for(lambda: engine.command(b"XLEN", backplane.STREAM) <= QUIET_STREAM_MAX,
                        "the stream trimmed once the slow server caught up", backplane.STREAM)
    finally:
        fast.stop()
        slow.stop()


def test_the_pytest_plugin_spreads_a_cases_clients_over_a_clusters_servers(servers, tmp_path):
    # conformance/plugin.py's --server takes a cluster as `python -m conformance` does.
    repo = Path(__file__).resolve().parent.parent
    environment = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def plugin(addresses: list[tuple[str, int]]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "conformance.plugin", "-p", "no:cacheprovider", "-q",
             "--rootdir", str(tmp_path), "--conformance-timeout", "3", "-k", "cluster-one-order",
             "--server", ",".join("{}:{}".format(*address) for address in addresses)],
            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240)

    finished = plugin([server.address for server in servers])
    assert finished.returncode == 0 and "1 passed" in finished.stdout, finished.stdout + finished.stderr
    # Its second server taken away, the case fails: its clients did go to it.
    finished = plugin([servers[0].address, ("127.0.0.1", free_port())])
    assert finished.returncode == 1 and "1 failed" in finished.stdout, finished.stdout + finished.stderr


# -- [CLUSTER-11], [CLUSTER-12]: files across servers -------------------------------------


class DataConnection:
    """A data connection ([FILE-15]): DATA <token>, READY, then the file's bytes."""

    def __init__(self, server: Server, token: str) -> None:
        self.sock = socket.create_connection(server.address, timeout=DEADLINE)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"HELLO chat/1 ")
        self.sock.sendall(f"DATA {token}\n".encode())

    def ready(self) -> bytes:
        return self.file.readline()

    def read_to_end(self) -> tuple[bytes, str]:
        chunks = []
        try:
            while chunk := self.file.read1(1 << 20):
                chunks.append(chunk)
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        return b"".join(chunks), "end"

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def offer_and_accept(alice: Client, bob: Client, data: bytes, tid: str) -> tuple[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    alice.send(f"OFFER bob {tid} {len(data)} {digest} file.bin")
    offer = f"OFFER alice bob {tid} {len(data)} {digest} file.bin"
    assert bob.until(offer)[-1] == alice.until(offer)[-1]
    bob.send(f"ACCEPT alice {tid}")
    alice_token = alice.until("", prefix=f"ACCEPTED alice {tid} ")[-1].split()[3]
    bob_token = bob.until("", prefix=f"ACCEPTED alice {tid} ")[-1].split()[3]
    return alice_token, bob_token


@pytest.fixture
def parties(servers, clients) -> tuple[Client, Client]:
    """alice on the first server, bob on the second, each in the room of the other."""
    alice = clients(servers[0], "alice")
    bob = clients(servers[1], "bob")
    alice.until("JOIN bob")
    return alice, bob


@contextlib.contextmanager
def relay(alice: Client, bob: Client, data: bytes, tid: str, sender_server: Server, recipient_server: Server):
    """alice offers bob `data`, bob accepts, and each party's data connection
    reaches the server given and has READY: yields (sending, receiving, alice's token)."""
    alice_token, bob_token = offer_and_accept(alice, bob, data, tid)
    sending = DataConnection(sender_server, alice_token)
    receiving = DataConnection(recipient_server, bob_token)
    try:
        assert sending.ready() == receiving.ready() == f"READY alice {tid} {len(data)}\n".encode()
        yield sending, receiving, alice_token
    finally:
        sending.close()
        receiving.close()


def test_a_file_crosses_servers_whichever_server_each_data_connection_reaches(engine, servers, parties):
    alice, bob = parties
    data = os.urandom(20 * 1024 * 1024 + 123)  # Many chunks, and a short last one.
    # Each data connection reaches the other party's server.
    with relay(alice, bob, data, "big", servers[1], servers[0]) as (sending, receiving, _):
        def send() -> None:
            sending.sock.sendall(data)
            sending.sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        got, how = receiving.read_to_end()
        sender.join()
    assert how == "end" and len(got) == len(data) and got == data  # in order, unchanged, then FIN
    bob.send("RECEIVED alice big ok")
    assert alice.until("ENDED alice big done") and bob.until("ENDED alice big done")
    # The recipient's server removed the relay's keys once it had read the end.
    assert engine.command(b"KEYS", b"chat1:file:*") == []


def test_a_cancel_cuts_a_relay_between_servers_on_both_sides(engine, servers, parties):
    alice, bob = parties
    data = bytes(8 * 1024 * 1024)
    with relay(alice, bob, data, "c1", servers[0], servers[1]) as (sending, receiving, alice_token):
        sending.sock.sendall(data[:1024 * 1024])  # Part of it, then the sender stops.
        first = receiving.file.read1(1 << 20)
        assert first and set(first) == {0}
        alice.send("CANCEL alice c1")
        assert alice.until("ENDED alice c1 cancelled") and bob.until("ENDED alice c1 cancelled")
        got, how = receiving.read_to_end()
        assert how == "reset" or len(first) + len(got) < len(data)  # [FILE-15]: a cut, never an end
    stream = b"chat1:file:" + alice_token.encode()
    engine.wait_for(lambda: engine.command(b"KEYS", b"chat1:file:*") == [], "the relay's keys removed",
                    stream, stream + b":credit", events=b"Kgtl")


def test_a_relay_whose_other_servers_side_died_ends_aborted_after_file_expiry(engine, clients):
    # Both parties stay in the room, so no LEAVE would end the transfer: the
    # recipient's side ends it once nothing came for file-expiry seconds.
    three = [Server(engine, options=("--file-expiry", "3")) for _ in range(3)]
    try:
        alice = clients(three[0], "alice")
        bob = clients(three[1], "bob")
        alice.until("JOIN bob")
        data = bytes(4 * 1024 * 1024)
        with relay(alice, bob, data, "d1", three[2], three[1]) as (sending, receiving, _):
            sending.sock.sendall(data[:512 * 1024])
            assert receiving.file.read1(1 << 20)
            three[2].stop(signal.SIGKILL)  # The sender's side, mid-relay.
            started = time.monotonic()
            assert alice.until("ENDED alice d1 aborted") and bob.until("ENDED alice d1 aborted")
            assert time.monotonic() - started >= 1.5  # Not at once: after file-expiry (3 s) without a chunk.
            got, how = receiving.read_to_end()
            assert how == "reset"  # [FILE-15]: a cut, never an orderly end
    finally:
        for server in three:
            server.stop()


def test_a_stalled_recipient_holds_a_relay_between_servers_to_its_window(engine, servers, parties):
    # [FILE-20] across servers: the recipient reads nothing, so its server
    # hands nothing on and gives no credit back; the sender's server then
    # stops at FILE_WINDOW chunks in Redis however much the sender offers.
    alice, bob = parties
    data = bytes(64 * 1024 * 1024)
    with relay(alice, bob, data, "w1", servers[0], servers[1]) as (sending, receiving, alice_token):
        def send() -> None:
            with contextlib.suppress(OSError):  # The CANCEL below cuts it.
                sending.sock.sendall(data)

        sender = threading.Thread(target=send)
        stream = b"chat1:file:" + alice_token.encode()
        lengths: list[int] = []

        def window_full() -> bool:
            lengths.append(engine.command(b"XLEN", stream))
            return lengths[-1] >= backplane.FILE_WINDOW

        sender.start()
        engine.wait_for(window_full, "a full window of chunks in Redis", stream, events=b"Kt")
        assert max(lengths) == backplane.FILE_WINDOW
        alice.send("CANCEL alice w1")
        assert alice.until("ENDED alice w1 cancelled")
    sender.join(DEADLINE)
    assert not sender.is_alive()

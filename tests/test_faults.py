"""Faults: connections reset at every point of a session, and shutdown under load.

A reset (RST: SO_LINGER on with a zero timeout, then close) is what a crashed
client, a killed process or a NAT timeout looks like to the server. Wherever it
happens, the others must see exactly one `LEAVE <name> closed` if the victim
had registered and nothing if it had not ([LEAVE-3], [LEAVE-4], [USER-3]), the
server must keep serving, and nothing may be logged as a failure.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from chat.limits import Limits
from tests.conftest import DEADLINE, LineClient, start_server_process

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def reset(client: LineClient) -> None:
    """Close with RST instead of FIN."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def reader_thread_name(client: LineClient) -> str:
    """The name the reference server gives the thread serving this client."""
    host, port = client.sock.getsockname()[:2]
    return f"client-{host}:{port}"


def join_threads_named(names: set[str], deadline: float = DEADLINE) -> None:
    """Wait until the server's threads with these names have ended: by then the
    server has handled everything those connections did, their end included.
    A thread that is not running has ended already (the caller makes sure the
    server accepted the connection before it asks)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pending = [thread for thread in threading.enumerate() if thread.name in names]
        if not pending:
            break
        for thread in pending:
            if thread.ident is None:
                # Still inside an acceptor's Thread.start() (four acceptors
                # run at once): it cannot be joined until it has started.
                time.sleep(0.001)
            else:
                thread.join(max(0.0, end - time.monotonic()))
    alive = [t.name for t in threading.enumerate() if t.name in names]
    assert not alive, f"the server never finished with {alive}"


@pytest.fixture
def thread_crashes():
    """Exceptions that escaped any thread: the server logs its own failures,
    so an escaped one is a bug that the log would not show, and that pytest
    would report only as a warning. Here it fails the test."""
    crashes: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = crashes.append
    yield crashes
    threading.excepthook = previous
    assert not [(c.thread, c.exc_type, c.exc_value) for c in crashes]


def assert_no_failure_logged(caplog) -> None:
    failures = [r for r in caplog.records if r.name.startswith("chat") and r.levelno >= logging.ERROR]
    assert not failures and "Traceback" not in caplog.text, caplog.text


# ---------------------------------------------------------------------------
# RST at every point: each scenario takes the victim (connected, nothing read),
# resets it, and returns the outcomes the observer may see of it: the list of
# lines about the victim the observer receives after the scenario began.
# ---------------------------------------------------------------------------

Scenario = Callable[[LineClient, LineClient], list[list[str]]]


def before_hello(victim: LineClient, observer: LineClient) -> list[list[str]]:
    reset(victim)  # HELLO may be on its way, or not even sent
    return [[]]


def after_hello(victim: LineClient, observer: LineClient) -> list[list[str]]:
    victim.expect_prefix("HELLO chat/1 ")
    reset(victim)
    return [[]]


def mid_line_before_user(victim: LineClient, observer: LineClient) -> list[list[str]]:
    victim.expect_prefix("HELLO chat/1 ")
    victim.send_raw(b"USER vic")  # [FRAME-10]: never a registration for "vic"
    reset(victim)
    return [[]]


def user_sent_join_unread(victim: LineClient, observer: LineClient) -> list[list[str]]:
    victim.expect_prefix("HELLO chat/1 ")
    victim.send("USER victim")
    reset(victim)
    # The reset may overtake the USER (Linux drops unread bytes on RST): then
    # nothing happened; otherwise a JOIN and exactly one LEAVE, in that order.
    return [[], ["JOIN victim", "LEAVE victim closed"]]


def right_after_user(victim: LineClient, observer: LineClient) -> list[list[str]]:
    victim.register("victim")
    observer.expect("JOIN victim")
    reset(victim)
    return [["LEAVE victim closed"]]


def mid_line_after_registering(victim: LineClient, observer: LineClient) -> list[list[str]]:
    victim.register("victim")
    observer.expect("JOIN victim")
    victim.send_raw(b"MSG half a li")  # never broadcast
    reset(victim)
    return [["LEAVE victim closed"]]


def mid_broadcast(victim: LineClient, observer: LineClient) -> list[list[str]]:
    """The victim reads nothing while 150 long lines are broadcast to it: they
    fill its receive buffer, the server's send buffer, and wait in the server's
    queue (about 135 KB, under outbound-max, so it is not dropped as slow)."""
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    victim.register("victim")
    observer.expect("JOIN victim")
    text = "b" * 900
    for n in range(150):
        observer.send(f"MSG {n} {text}")
    assert observer.barrier() == [f"MSG observer {n} {text}" for n in range(150)]
    reset(victim)
    return [["LEAVE victim closed"]]


def plain_close_with_unread_lines(victim: LineClient, observer: LineClient) -> list[list[str]]:
    """No SO_LINGER: close() with unread received bytes makes the kernel send
    the RST itself."""
    victim.register("victim")
    observer.expect("JOIN victim")
    for n in range(5):
        observer.send(f"MSG unread {n}")
    observer.barrier()
    victim.close()
    return [["LEAVE victim closed"]]


def lines_not_yet_read_by_the_server(victim: LineClient, observer: LineClient) -> list[list[str]]:
    """200 complete lines in flight towards the server when the RST comes: the
    server handles some prefix of them (which one depends on what it had read),
    each once and in order, and then the victim leaves once."""
    victim.register("victim")
    observer.expect("JOIN victim")
    victim.send_raw(b"".join(b"MSG m%d\n" % n for n in range(200)))
    reset(victim)
    return [[f"MSG victim m{n}" for n in range(k)] + ["LEAVE victim closed"] for k in range(201)]


SCENARIOS: list[Scenario] = [
    before_hello, after_hello, mid_line_before_user, user_sent_join_unread, right_after_user,
    mid_line_after_registering, mid_broadcast, plain_close_with_unread_lines,
    lines_not_yet_read_by_the_server,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__.replace("_", "-") for s in SCENARIOS])
def test_reset_at_every_point(server, connect, caplog, thread_crashes, scenario):
    observer = connect().register("observer")
    lurker = connect()                      # connected, never registered
    lurker.expect_prefix("HELLO chat/1 ")
    victim = connect()
    victim_thread = reader_thread_name(victim)
    outcomes = scenario(victim, observer)
    # The server still serves. Its accept queue is first in, first out, so by
    # the time the probe is in, the victim's connection has been taken too.
    probe = connect().register("probe")
    join_threads_named({victim_thread})
    lines = observer.barrier()
    assert lines.count("JOIN probe") == 1, lines
    about_victim = [line for line in lines if line != "JOIN probe"]
    assert about_victim in outcomes, f"the others saw {about_victim!r}"
    # The probe joined the room's order at its JOIN ([ORDER-2], [USER-3]): it
    # sees the victim's LEAVE only if that came after.
    assert probe.barrier() == lines[lines.index("JOIN probe") + 1:]
    assert lurker.barrier() == []           # unregistered: never a broadcast
    probe.send("MSG after")
    probe.expect("MSG probe after")
    observer.expect("MSG probe after")
    assert_no_failure_logged(caplog)


def test_a_burst_of_resets_before_and_after_accept(server, connect, caplog, thread_crashes):
    """Many connections reset in a burst, some of them before the server has
    even accepted them, while two registered clients talk: none of them may
    register, crash a thread, or disturb the others."""
    alice = connect().register("alice")
    bob = connect().register("bob")
    alice.expect("JOIN bob")
    names = set()
    for n in range(150):
        victim = LineClient(server.address)
        names.add(reader_thread_name(victim))
        if n % 3 == 2:
            victim.send_raw(b"USER burs")  # a partial line, never a registration
        reset(victim)
        if n % 10 == 0:
            alice.send(f"MSG {n}")
    messages = [f"MSG alice {n}" for n in range(0, 150, 10)]
    assert alice.barrier() == messages
    probe = connect().register("probe")
    join_threads_named(names)  # accepted before the probe, so all handled now
    assert alice.barrier() == ["JOIN probe"]
    assert bob.barrier() == messages + ["JOIN probe"]
    assert probe.barrier() == []
    probe.send("LEAVE")
    probe.expect("LEAVE probe quit")
    assert_no_failure_logged(caplog)


@pytest.mark.parametrize("flood_rate", [0, 100], ids=["no-flood-limit", "flood-limited"])
def test_half_close_after_a_burst_handles_every_complete_line(make_server, flood_rate):
    """A client sends 60 lines and half a line in one write and shuts its
    sending side at once. Every complete line is handled as if the connection
    stayed open ([FRAME-10]), even when flood control holds them back
    ([LIMIT-4]: delayed, never dropped); the half line is dropped, and the end
    of the stream is a LEAVE closed."""
    server = make_server(Limits(max_per_address=0, flood_rate=flood_rate, flood_burst=10,
                                register_timeout=0, ping_interval=0))
    observer = LineClient(server.address).register("observer")
    flooder = LineClient(server.address).register("flooder")
    observer.expect("JOIN flooder")
    started = time.monotonic()
    flooder.send_raw(b"".join(b"MSG %d\n" % n for n in range(60)) + b"MSG half")
    flooder.sock.shutdown(socket.SHUT_WR)
    expected = [f"MSG flooder {n}" for n in range(60)]
    assert [observer.line() for _ in range(60)] == expected
    took = time.monotonic() - started
    observer.expect("LEAVE flooder closed")
    assert observer.barrier() == []
    echoes = []
    with pytest.raises(EOFError):
        while True:
            echoes.append(flooder.line())
    assert echoes == expected
    if flood_rate:
        # At most burst + rate x t lines in t seconds: 60 lines need 0.5 s.
        assert took >= (60 - 10) / flood_rate - 0.01, f"60 lines handled in {took:.3f} s"
    for client in (observer, flooder):
        client.close()


# ---------------------------------------------------------------------------
# Shutdown under load ([LIMIT-7])
# ---------------------------------------------------------------------------


EOF = "<EOF>"
WINDOW = 20


@pytest.mark.timeout(60)
def test_sigterm_under_load_tells_everyone_and_exits_cleanly():
    """Four clients send as fast as they can and read everything, from
    threads; SIGTERM comes in the middle of it. Every client must get its
    lines in order without gaps, then ERR SHUTTING_DOWN, then EOF; the
    process must exit 0 and print no traceback."""
    process, address = start_server_process("--max-per-address", "0", "--flood-rate", "0")
    clients: list[LineClient] = []
    threads: list[threading.Thread] = []
    stop_sending = threading.Event()
    try:
        names = [f"load{i}" for i in range(4)]
        for name in names:
            clients.append(LineClient(address).register(name))
        for client in clients:
            client.barrier()  # the JOINs of those who came later
        received: dict[str, list[str]] = {name: [] for name in names}
        sent = dict.fromkeys(names, 0)
        flowing = {name: threading.Event() for name in names}
        # Closed loop, as people chat: a client has at most WINDOW lines of its
        # own in flight. Open loop, Python readers on two shared cores fall
        # behind four Python writers, and the server rightly drops them as
        # slow consumers ([LIMIT-6]) before the SIGTERM.
        window = {name: threading.Semaphore(WINDOW) for name in names}

        def read(client: LineClient) -> None:
            """Every line until EOF; a reset is recorded as such, not as EOF."""
            lines = received[client.name]
            own = f"MSG {client.name} ".encode()
            buffer = b""
            client.sock.settimeout(15)
            try:
                while data := client.sock.recv(65536):
                    *complete, buffer = (buffer + data).split(b"\n")
                    for line in complete:
                        lines.append(line.decode())
                        if line.startswith(own):
                            window[client.name].release()
                    if len(lines) >= 200:
                        flowing[client.name].set()
                lines.append(EOF if not buffer else f"<EOF after {buffer!r}>")
            except Exception as error:  # checked by the test thread
                lines.append(repr(error))
            finally:
                flowing[client.name].set()

        def send(client: LineClient) -> None:
            try:
                for n in range(50_000):
                    while not window[client.name].acquire(timeout=0.1):
                        if stop_sending.is_set():
                            return
                    if stop_sending.is_set():
                        return
                    client.send(f"MSG {n}")
                    sent[client.name] = n + 1
            except OSError:
                pass  # the server went away, as it should

        for client in clients:
            threads.append(threading.Thread(target=read, args=(client,), name=f"read-{client.name}"))
            threads.append(threading.Thread(target=send, args=(client,), name=f"send-{client.name}"))
        for thread in threads:
            thread.start()
        for event in flowing.values():
            assert event.wait(15), "the chat never got going"
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
        took = time.monotonic() - signalled
        stop_sending.set()
        for thread in threads:
            thread.join(20)
        assert not [t.name for t in threads if t.is_alive()]
        stdout, stderr = process.communicate(timeout=5)
        print(f"\nSIGTERM under load: exit {code} after {took:.2f} s; "
              f"sent {sum(sent.values())} lines, received "
              f"{sum(len(lines) for lines in received.values())}")
        assert code == 0, stderr
        assert "Traceback" not in stderr, stderr
        assert "chat server stopped" in stdout
        assert took < 10, f"shutdown took {took:.1f} s ([LIMIT-7] allows 1 s of grace)"
        for name, lines in received.items():
            assert lines[-1] == EOF, f"{name}: {lines[-3:]}"
            assert lines[-2].startswith("ERR SHUTTING_DOWN "), f"{name}: {lines[-3:]}"
            # [ORDER-5]: each sender's lines arrive in order, none lost or doubled.
            numbers: dict[str, list[int]] = {other: [] for other in names}
            for line in lines[:-2]:
                verb, sender, text = line.split(" ", 2)
                assert verb == "MSG", f"{name} got {line!r}"
                numbers[sender].append(int(text))
            for sender, got in numbers.items():
                assert got == list(range(len(got))), f"{name} got {sender}'s lines out of order"
                assert len(got) <= sent[sender]
    finally:
        stop_sending.set()
        if process.poll() is None:
            process.kill()
        process.communicate()
        for client in clients:
            client.close()
        for thread in threads:
            thread.join(DEADLINE)

"""The threaded server on port 0: the original project's classic bugs, one by one.

The conformance kit checks the protocol as a black box; these tests check what
only the reference server's own tests can: threads, shutdown, signals, logs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from chat.limits import Limits
from chat.server import ChatServer
from tests.conftest import TEST_LIMITS, LineClient, start_server_process

pytestmark = pytest.mark.timeout(60)


def test_one_recv_is_not_one_message(server, connect):
    alice = connect().register("alice")
    # Two commands in one write, then one command split over three writes.
    alice.send_raw(b"MSG one\nMSG two\nMS")
    alice.send_raw(b"G thr")
    alice.send_raw(b"ee\n")
    assert [alice.line() for _ in range(3)] == ["MSG alice one", "MSG alice two", "MSG alice three"]


def test_refused_name_claim_never_evicts_the_owner(server, connect):
    alice = connect().register("alice")
    for claim in ("alice", "ALICE", "Alice"):
        intruder = connect()
        intruder.expect_prefix("HELLO")
        intruder.send(f"USER {claim}")
        intruder.expect_prefix("ERR NAME_TAKEN ")
        intruder.close()
    alice.send("MSG still me")
    assert alice.barrier() == ["MSG alice still me"]


def test_join_leave_churn_while_broadcasting_loses_nothing(server, connect):
    """The original server iterated a shared dict without a lock and kicked
    senders while others joined. Bounded: 2 senders x 100 lines, 50 churners."""
    senders = [connect().register(f"sender{i}") for i in range(2)]
    watcher = connect().register("watcher")
    errors = []

    def churn():
        try:
            for i in range(50):
                c = LineClient(server.address)
                c.register(f"churn{i}")
                c.send("LEAVE")
                while c.line() != f"LEAVE churn{i} quit":
                    pass
                c.close()
        except Exception as error:  # reported by the main thread
            errors.append((i, error))

    churner = threading.Thread(target=churn)
    churner.start()
    for n in range(100):
        for sender in senders:
            sender.send(f"MSG {sender.name} {n}")
    churner.join()
    assert not errors
    received = {s.name: [] for s in senders}
    seen_join, seen_leave = set(), set()
    while sum(len(v) for v in received.values()) < 200:
        verb, name, *rest = watcher.line().split(" ", 2)
        if verb == "MSG":
            received[name].append(int(rest[0].split()[1]))
        elif verb == "JOIN":
            seen_join.add(name)
        elif verb == "LEAVE":
            assert name in seen_join, "a LEAVE before its JOIN"
            seen_leave.add(name)
    for line in watcher.barrier():
        verb, name, *_ = line.split(" ")
        (seen_join if verb == "JOIN" else seen_leave).add(name)
    for name, numbers in received.items():
        assert numbers == list(range(100)), f"{name}'s lines lost, doubled or reordered"
    assert seen_join - {s.name for s in senders} == seen_leave == {f"churn{i}" for i in range(50)}
    for sender in senders:
        sender.barrier()  # drain the room's lines
        sender.send("MSG still connected")
        assert sender.barrier()[-1] == f"MSG {sender.name} still connected"


def test_a_reader_that_stops_reading_delays_no_one_and_is_dropped(make_server, log_records):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=0,
                                ping_interval=0, outbound_max=64 * 1024))
    stalled = LineClient(server.address)
    # A small receive buffer so the kernel holds little for it.
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.register("stalled")
    talker = LineClient(server.address).register("talker")
    listener = LineClient(server.address).register("listener")
    assert talker.line() == "JOIN listener"
    text = "x" * 900
    # What the talker and the listener see of the room, in order.
    talker_view: list[str] = []
    listener_view: list[str] = []
    # Keep talking until the stalled reader is dropped; each round trips a
    # barrier, so the talker itself never falls behind, and the listener
    # reads as it goes, so only the stalled reader does (otherwise the
    # listener too could be dropped, once the kernel's buffers were full).
    for sent in range(1, 2001):
        talker.send(f"MSG {sent} {text}")
        lines = talker.barrier()
        assert f"MSG talker {sent} {text}" in lines
        talker_view += lines
        while (line := listener.line()) != f"MSG talker {sent} {text}":
            listener_view.append(line)
        listener_view.append(line)
        if "LEAVE stalled slow" in lines:
            break
    else:
        pytest.fail("the stalled reader was never dropped")
    if "LEAVE stalled slow" not in listener_view:
        listener_view.append(listener.line())
    # The listener got every line, once, in the room's order, and the LEAVE.
    assert listener_view == talker_view
    assert [line for line in talker_view if line.startswith("MSG")] == [
        f"MSG talker {n} {text}" for n in range(1, sent + 1)]
    assert talker_view.count("LEAVE stalled slow") == 1
    dropped, = log_records.wait_for("disconnect")  # the operator hears of it
    assert (dropped.fields["name"], dropped.fields["reason"]) == ("stalled", "slow")
    for client in (stalled, talker, listener):
        client.close()


def test_abrupt_reset_mid_line_is_a_leave_closed(server, connect, caplog):
    alice = connect().register("alice")
    bob = connect().register("bob")
    alice.expect("JOIN bob")
    bob.send_raw(b"MSG half a li")
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    bob.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bob.close()
    alice.expect("LEAVE bob closed")
    assert alice.barrier() == []
    assert "Traceback" not in caplog.text


def test_a_bug_in_one_connection_drops_only_that_connection(server, connect, monkeypatch, caplog):
    alice = connect().register("alice")
    bob = connect().register("bob")
    alice.expect("JOIN bob")
    room = server._room
    handle = room.handle

    def buggy_handle(session, item, now):
        if item == b"MSG boom":
            raise RuntimeError("a deliberate bug")
        return handle(session, item, now)

    monkeypatch.setattr(room, "handle", buggy_handle)
    with caplog.at_level(logging.ERROR, logger="chat.server"):
        bob.send("MSG boom")
        alice.expect("LEAVE bob closed")
    assert "a deliberate bug" in caplog.text
    alice.send("MSG fine")
    assert alice.barrier() == ["MSG alice fine"]


def test_shutdown_tells_everyone_and_joins_every_thread(connect, server):
    registered = connect().register("alice")
    unregistered = connect()
    unregistered.expect_prefix("HELLO")
    started = time.monotonic()
    server.shutdown()
    took = time.monotonic() - started
    for client in (registered, unregistered):
        client.expect_prefix("ERR SHUTTING_DOWN ")
        client.expect_closed()
    assert took < 5, f"shutdown took {took:.1f} s"  # [LIMIT-7] allows 1 s of grace
    # no_threads_left_behind (conftest) then checks that no thread survived.


def test_shutdown_does_not_wait_for_a_client_that_never_reads(make_server):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=0,
                                ping_interval=0, outbound_max=0))
    stalled = LineClient(server.address)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.register("stalled")
    talker = LineClient(server.address).register("talker")
    for n in range(200):
        talker.send(f"MSG {n} {'y' * 900}")
    talker.barrier()
    started = time.monotonic()
    server.shutdown()
    assert time.monotonic() - started < 5
    stalled.close()
    talker.close()


def test_listens_on_ipv6_loopback(make_server):
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        server = make_server(host="::1")
    except OSError as error:
        pytest.skip(f"no IPv6 loopback on this machine: {error}")
    client = LineClient(server.address)
    client.register("six")
    client.send("MSG over v6")
    assert client.barrier() == ["MSG six over v6"]
    client.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_within_a_second(signum):
    process, address = start_server_process("--max-per-address", "0")
    try:
        client = LineClient(address).register("alice")
        process.send_signal(signum)
        client.expect_prefix("ERR SHUTTING_DOWN ")
        client.expect_closed()
        assert process.wait(timeout=10) == 0
        stdout, stderr = process.communicate()
        assert "chat server stopped" in stdout
        assert "Traceback" not in stderr
        client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_password_is_read_from_the_environment_not_argv():
    process, address = start_server_process("--quiet", env=dict(os.environ, CHAT_PASSWORD="hunter2"))
    try:
        client = LineClient(address)
        assert "password=1" in client.line().split(" ")  # Optional commands and files follow it.
        client.send("USER alice")
        client.expect_prefix("ERR PASSWORD_REQUIRED ")
        client.send("PASS hunter2")
        client.expect("OK PASS")
        client.send("USER alice")
        client.expect("JOIN alice")
        client.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()


def test_server_help_lists_every_limit():
    result = subprocess.run([sys.executable, "-m", "chat.server", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("--host", "--port", "--max-clients", "--max-per-address", "--register-timeout",
                   "--ping-interval", "--ping-timeout", "--flood-rate", "--flood-burst",
                   "--outbound-max", "--password-file"):
        assert option in result.stdout


def test_port_in_use_is_a_clear_error(server):
    result = subprocess.run(
        [sys.executable, "-m", "chat.server", "--port", str(server.address[1])],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_context_manager_shuts_down():
    with ChatServer("127.0.0.1", 0, TEST_LIMITS).start() as server:
        client = LineClient(server.address).register("ctx")
    client.expect_prefix("ERR SHUTTING_DOWN")
    client.close()


def test_the_acceptor_survives_when_no_thread_can_be_started(server, monkeypatch, caplog):
    """A system thread limit refuses one client; it must not stop the acceptor."""
    real_start = threading.Thread.start
    refused_once = threading.Event()

    def start(thread):
        if thread.name.startswith("client-") and not refused_once.is_set():
            refused_once.set()
            raise RuntimeError("can't start new thread")
        return real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    refused = LineClient(server.address)
    refused.expect_closed()
    refused.close()
    assert "can't start new thread" in caplog.text
    accepted = LineClient(server.address).register("after")
    accepted.close()

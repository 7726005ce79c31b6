"""File sharing end to end (SPEC.md section 11a): the reference server and the client's
file module (chat/client_files.py) on loopback.

Each test checks what the people involved see (their chat lines), what lands on disk,
and that nothing is left behind: no thread (conftest's autouse check), no socket (the
process's descriptors), no temporary file, and nothing seen by a third user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from chat import server as server_module
from chat.client_files import (
    FileTransfers,
    IncomingFile,
    OfferReceived,
    StartData,
    TransferEnded,
    free_path,
    open_data_connection,
    receive_file,
    send_file,
)
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient

FILE_LIMITS = dataclasses.replace(TEST_LIMITS, file_max=64 * 1024 * 1024, file_per_user=3, file_per_server=8,
                                  file_expiry=30)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def data_connections_closed(log_records, baseline: int):
    """Both data connections' ends, once logged (the server logs a data connection
    after closing its socket); by then the descriptors are back to `baseline`."""
    ends = log_records.wait_for("disconnect", count=2)
    assert open_descriptors() <= baseline
    return ends


class Party:
    """A chat client with a file book: the lines it sends, the events it gets."""

    def __init__(self, address, name: str) -> None:
        self.address = address
        self.chat = LineClient(address).register(name)
        self.files = FileTransfers(name)

    def events(self):
        """The file events of the next line (which must be a file line; JOINs are skipped)."""
        line = self.chat.line()
        while line.startswith("JOIN "):
            line = self.chat.line()
        events = self.files.server_line(line)
        assert events is not None, f"{self.chat.name}: expected a file line, got {line!r}"
        return events

    def offer(self, recipient: Party, path: Path) -> None:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.chat.send(self.files.offer(recipient.chat.name, path, len(data), digest))


@pytest.fixture
def file_server(make_server):
    return make_server(FILE_LIMITS)


@pytest.fixture
def parties(file_server):
    made = []

    def make(name: str) -> Party:
        party = Party(file_server.address, name)
        made.append(party)
        return party

    yield make
    for party in made:
        party.chat.close()


def offer_and_accept(alice: Party, bob: Party, source: Path, downloads: Path):
    """alice offers `source`, bob accepts into `downloads`: (alice's, bob's) StartData transfers."""
    alice.offer(bob, source)
    [received] = bob.events()
    [_] = alice.events()
    assert isinstance(received, OfferReceived)
    target = free_path(downloads, received.transfer.shown_name)
    bob.chat.send(bob.files.accept(received.transfer, target))
    [sender_start] = alice.events()
    [recipient_start] = bob.events()
    assert isinstance(sender_start, StartData) and isinstance(recipient_start, StartData)
    return sender_start.transfer, recipient_start.transfer


def run_transfer(address, sending, receiving, *, send=None):
    """Both data connections in threads; returns (the IncomingFile, whether it ended in order)."""
    incoming = IncomingFile(receiving.path)
    result = {}

    def receive():
        sock, first = open_data_connection(address, receiving.token)
        result["orderly"] = receive_file(sock, first, incoming, receiving.size)

    def deliver():
        sock, _ = open_data_connection(address, sending.token)
        if send is None:
            send_file(sock, sending.path, sending.size)
        else:
            send(sock)

    threads = [threading.Thread(target=receive), threading.Thread(target=deliver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 4)
    assert not any(thread.is_alive() for thread in threads)
    return incoming, result.get("orderly", False)


def test_a_file_reaches_its_recipient_checked_and_only_then_under_its_name(file_server, parties, tmp_path,
                                                                          log_records):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    source = tmp_path / "holiday photo.jpg"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    alice, bob, carol = parties("alice"), parties("bob"), parties("carol")
    baseline = open_descriptors()
    sending, receiving = offer_and_accept(alice, bob, source, downloads)
    incoming, orderly = run_transfer(file_server.address, sending, receiving)
    assert orderly and incoming.matches(receiving.size, receiving.sha256)
    assert not (downloads / "holiday photo.jpg").exists()  # not before ENDED done
    bob.chat.send(bob.files.verdict(receiving, True))
    for party in (alice, bob):
        [ended] = party.events()
        assert isinstance(ended, TransferEnded) and ended.reason == "done"
    assert incoming.commit() == downloads / "holiday photo.jpg"
    assert (downloads / "holiday photo.jpg").read_bytes() == source.read_bytes()
    assert os.listdir(downloads) == ["holiday photo.jpg"]  # no temporary file left
    assert carol.chat.barrier() == []  # carol saw nothing of it
    # The operator's log says a file went from whom to whom, and never which file.
    # Nobody else disconnects in this test: the two ends logged are the data connections'.
    ends = data_connections_closed(log_records, baseline)
    assert [record.fields["reason"] for record in ends] == ["relayed", "relayed"]
    assert [record.fields["outcome"] for record in log_records.events("relay")] == ["ok"]
    assert not any("holiday" in record.getMessage() for record in list(log_records.records))


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("who", ["sender", "recipient"])
def test_a_data_connection_that_stops_mid_way_aborts_the_transfer_for_both(
        file_server, parties, tmp_path, who, how, log_records):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(32 * 1024 * 1024))
    alice, bob = parties("alice"), parties("bob")
    baseline = open_descriptors()
    sending, receiving = offer_and_accept(alice, bob, source, tmp_path)
    incoming = IncomingFile(receiving.path)
    stop = threading.Event()

    def hang_up(sock):
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def send_half(sock):
        sock.sendall(source.read_bytes()[:1024 * 1024])
        hang_up(sock)

    def receive_a_little(sock, first):
        sock.recv(65536)
        hang_up(sock)

    def recipient():
        sock, first = open_data_connection(file_server.address, receiving.token)
        if who == "recipient":
            receive_a_little(sock, first)
        else:
            receive_file(sock, first, incoming, receiving.size)

    def sender():
        sock, _ = open_data_connection(file_server.address, sending.token)
        try:
            if who == "sender":
                send_half(sock)
            else:
                send_file(sock, sending.path, sending.size)
        except OSError:
            pass  # the server cut it: the relay failed on the other side
        stop.set()

    threads = [threading.Thread(target=recipient), threading.Thread(target=sender)]
    for thread in threads:
        thread.start()
    for party in (alice, bob):
        [ended] = party.events()
        assert ended.reason == "aborted"
    for thread in threads:
        thread.join(DEADLINE * 2)
    assert stop.is_set()
    assert incoming.size < receiving.size
    incoming.discard()
    assert os.listdir(tmp_path) == ["big.bin"]
    data_connections_closed(log_records, baseline)


def test_a_wrong_hash_is_caught_by_the_recipient_and_both_are_told(file_server, parties, tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"what was offered")
    alice, bob = parties("alice"), parties("bob")
    alice.chat.send(alice.files.offer("bob", source, 16, hashlib.sha256(b"something else!!").hexdigest()))
    [received] = bob.events()
    alice.events()
    bob.chat.send(bob.files.accept(received.transfer, tmp_path / "saved.txt"))
    [sending], [receiving] = alice.events(), bob.events()
    incoming, orderly = run_transfer(file_server.address, sending.transfer, receiving.transfer)
    assert orderly and not incoming.matches(16, received.transfer.sha256)
    bob.chat.send(bob.files.verdict(receiving.transfer, False))
    assert [e.reason for e in alice.events()] == ["corrupt"] == [e.reason for e in bob.events()]
    incoming.discard()
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


@pytest.mark.parametrize("sent, reason", [(b"short", "aborted"), (b"much too long!" * 4, "oversize")])
def test_a_sender_that_lies_about_the_size_is_caught_by_the_server(file_server, parties, tmp_path, sent,
                                                                 reason):
    source = tmp_path / "a.txt"
    source.write_bytes(b"exactly 20 bytes....")
    alice, bob = parties("alice"), parties("bob")
    sending, receiving = offer_and_accept(alice, bob, source, tmp_path / "x")

    def lie(sock):
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)
        try:
            sock.recv(1)
        except OSError:
            pass
        sock.close()

    (tmp_path / "x").mkdir()
    incoming, orderly = run_transfer(file_server.address, sending, receiving, send=lie)
    assert not orderly
    assert [e.reason for e in alice.events()] == [reason] == [e.reason for e in bob.events()]
    incoming.discard()
    assert os.listdir(tmp_path / "x") == []


def test_an_offer_to_a_user_who_leaves_ends_gone_for_the_sender(parties, tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    alice, bob = parties("alice"), parties("bob")
    alice.chat.expect("JOIN bob")
    alice.offer(bob, source)
    alice.events()
    bob.chat.send("LEAVE")
    [ended] = alice.events()
    assert ended.reason == "gone"
    alice.chat.expect("LEAVE bob quit")
    assert list(alice.files) == []


def test_a_hundred_offers_from_one_user_stop_at_the_per_user_limit(parties, tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello")
    alice, bob, carol = parties("alice"), parties("bob"), parties("carol")
    alice.chat.expect("JOIN bob")
    alice.chat.expect("JOIN carol")
    bob.chat.expect("JOIN carol")
    for _ in range(100):
        alice.offer(bob, source)
    replies = [alice.chat.line() for _ in range(100)]
    assert [r.split()[0] for r in replies[:3]] == ["OFFER"] * 3
    assert all(r.startswith("ERR TOO_MANY_TRANSFERS ") for r in replies[3:])
    assert [line.split()[0] for line in bob.chat.barrier()] == ["OFFER"] * 3
    assert carol.chat.barrier() == []


def test_a_path_traversal_name_is_saved_in_the_downloads_folder_only(file_server, parties, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    alice, bob = parties("alice"), parties("bob")
    data = b"not a password file"
    evil = "../../.bashrc"  # (bidirectional characters never get this far: [FRAME-8])
    alice.chat.send(f"OFFER bob e1 {len(data)} {hashlib.sha256(data).hexdigest()} {evil}")
    [received] = bob.events()
    alice.events()
    shown = received.transfer.shown_name
    assert "/" not in shown and ".." not in shown and not shown.startswith(".")
    assert free_path(downloads, shown).parent == downloads
    bob.chat.send(bob.files.reject(received.transfer))
    assert [e.reason for e in bob.events()] == ["rejected"] == [e.reason for e in alice.events()]
    assert os.listdir(downloads) == [] and not (tmp_path / ".bashrc").exists()


def test_while_chat_lines_flow_a_relay_keeps_to_the_busy_budget_and_a_cancel_cuts_its_wait(
        make_server, tmp_path, monkeypatch, log_records):
    """The relays yield to chat (RelayPacer in chat/server.py; SPEC.md 11a.3, rationale):
    while lines flow, every relay together moves at most RELAY_BUSY_RATE bytes a second,
    beyond the budget's depth and one overdraft (two chunks) and the one window that a
    relay's first look may let through before it has seen the chat. A small budget makes
    that bound far below what loopback does unpaced; a slower machine only moves less."""
    rate, chunk = 1_000_000, 64 * 1024
    monkeypatch.setattr(server_module, "RELAY_BUSY_RATE", rate)
    monkeypatch.setattr(server_module, "RELAY_BUSY_CHUNK", chunk)
    monkeypatch.setattr(server_module, "CHAT_BUSY_LINES", 2)  # 20 lines a second: carol sends more
    # Busy stays busy for long after carol's last line, so that a stall of this (shared)
    # machine cannot turn it quiet under the test's feet.
    monkeypatch.setattr(server_module, "CHAT_BUSY_HOLD", 30.0)
    server = make_server(FILE_LIMITS)
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(16 * 1024 * 1024))
    alice, bob = Party(server.address, "alice"), Party(server.address, "bob")
    carol = LineClient(server.address).register("carol")
    chatting = threading.Event()
    stop = threading.Event()

    def chat():
        # PING and its PONG: one line sent by the server each, to carol alone.
        for number in itertools.count():
            carol.send(f"PING c{number}")
            carol.expect(f"PONG c{number}")
            if number == 20:
                chatting.set()
            if stop.wait(0.005):  # carol's own pace, at most 200 lines a second
                return

    chatter = threading.Thread(target=chat)
    chatter.start()
    try:
        assert chatting.wait(DEADLINE)
        baseline = open_descriptors()
        sending, receiving = offer_and_accept(alice, bob, source, tmp_path)
        started = time.monotonic()
        measured = {}
        enough = 2 * 1000 * 1000  # well above the slack below, far below the file

        def recipient():
            sock, first = open_data_connection(server.address, receiving.token)
            received = len(first)
            try:
                while received < enough:
                    data = sock.recv(65536)
                    if not data:
                        break
                    received += len(data)
                measured.update(received=received, seconds=time.monotonic() - started)
                alice.chat.send(alice.files.cancel(sending))  # while the relay waits for its budget
                while sock.recv(65536):
                    pass
            except OSError:
                pass  # the cut: a reset
            finally:
                sock.close()

        def sender():
            sock, _ = open_data_connection(server.address, sending.token)
            try:
                send_file(sock, sending.path, sending.size)
            except OSError:
                pass  # the cut
            finally:
                sock.close()

        threads = [threading.Thread(target=recipient), threading.Thread(target=sender)]
        for thread in threads:
            thread.start()
        for party in (alice, bob):
            [ended] = party.events()
            assert isinstance(ended, TransferEnded) and ended.reason == "cancelled"
        for thread in threads:
            thread.join(DEADLINE)
        assert not any(thread.is_alive() for thread in threads)
        slack = 2 * chunk + server_module.RELAY_WINDOW
        assert measured["received"] >= enough
        assert measured["received"] <= rate * measured["seconds"] + slack, (
            f"{measured['received']} bytes in {measured['seconds']:.3f} s while chat was busy: "
            f"more than {rate} bytes a second")
        data_connections_closed(log_records, baseline)
    finally:
        stop.set()
        chatter.join(DEADLINE)
        for client in (alice.chat, bob.chat, carol):
            client.close()

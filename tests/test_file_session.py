"""chat/client_files.FileSession, the file sharing of a front end, against the reference
server: the commands typed, the notices shown, the data threads, the file saved."""

from __future__ import annotations

import dataclasses
import os
import queue
import socket
from pathlib import Path

import pytest

from chat.client_files import DataFinished, FileSession, Hashed, Reply
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient

LIMITS = dataclasses.replace(TEST_LIMITS, file_max=10 * 1000 * 1000)


class FrontEnd:
    """What a front end does around a FileSession: a chat connection, a queue for
    what the threads post, and every notice kept."""

    def __init__(self, address, name: str, downloads: Path) -> None:
        self.chat = LineClient(address).register(name)
        self.posted: queue.SimpleQueue = queue.SimpleQueue()
        self.files = FileSession(lambda: socket.create_connection(address, timeout=DEADLINE),
                                 self.posted.put, downloads)
        self.files.me = name
        self.files.file_max = LIMITS.file_max
        self.notices: list[str] = []

    def carry_out(self, reply: Reply) -> None:
        for line in reply.lines:
            self.chat.send(line)
        self.notices += reply.notices

    def type(self, text: str) -> None:
        assert self.files.handles(text)
        self.carry_out(self.files.command(text))

    def until_line(self, prefix: str) -> None:
        """Handle server lines (and posted events between them) until one starts with prefix."""
        while True:
            while not self.posted.empty():
                self.carry_out(self.files.posted(self.posted.get()))
            try:
                line = self.chat.line(0.05)
            except TimeoutError:
                continue
            reply = self.files.server_line(line)
            if reply is not None:
                self.carry_out(reply)
            if line.startswith(prefix):
                return

    def until_posted(self, kind: type) -> None:
        while True:
            event = self.posted.get(timeout=DEADLINE)
            self.carry_out(self.files.posted(event))
            if isinstance(event, kind):
                return


@pytest.fixture
def two(make_server, tmp_path):
    server = make_server(LIMITS)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alice = FrontEnd(server.address, "alice", tmp_path / "a")
    bob = FrontEnd(server.address, "bob", tmp_path / "b")
    alice.chat.expect("JOIN bob")
    yield alice, bob
    for side in (alice, bob):
        side.files.close()
        side.chat.close()


def test_send_accept_and_the_file_is_saved_checked(two, tmp_path):
    alice, bob = two
    source = tmp_path / "a" / "notes.txt"
    source.write_bytes(os.urandom(300_000))
    alice.type(f"/send bob {source}")
    alice.until_posted(Hashed)
    alice.until_line("OFFER ")
    bob.until_line("OFFER ")
    assert any("alice offers you notes.txt (300.0 KB): /accept alice/1" in n for n in bob.notices)
    bob.type("/accept")
    bob.until_line("ACCEPTED ")
    alice.until_line("ACCEPTED ")
    bob.until_posted(DataFinished)  # the recipient's thread: then it sends RECEIVED
    bob.until_line("ENDED ")
    alice.until_line("ENDED ")
    assert (tmp_path / "b" / "notes.txt").read_bytes() == source.read_bytes()
    assert os.listdir(tmp_path / "b") == ["notes.txt"]
    assert any("saved as" in n for n in bob.notices)
    assert any("complete" in n for n in alice.notices)
    bob.type("/transfers")
    assert bob.notices[-1] == "no transfers"


def test_a_server_without_file_sharing_is_named(two):
    alice, _ = two
    alice.files.file_max = 0
    alice.type("/send bob /etc/hostname")
    assert alice.notices[-1] == "this server does not relay files (its HELLO has no file-max)"


def test_accept_never_replaces_a_file_and_reject_declines(two, tmp_path):
    alice, bob = two
    source = tmp_path / "a" / "x.bin"
    source.write_bytes(b"x")
    existing = tmp_path / "b" / "mine.bin"
    existing.write_bytes(b"mine")
    alice.type(f"/send bob {source}")
    alice.until_line("OFFER ")
    bob.until_line("OFFER ")
    bob.type(f"/accept alice/1 {existing}")
    assert "never replaced" in bob.notices[-1]
    bob.type("/reject")
    bob.until_line("ENDED ")
    alice.until_line("ENDED ")
    assert "declined" in alice.notices[-1]
    assert existing.read_bytes() == b"mine"


def test_usage_and_unknown_references(two, tmp_path):
    alice, _ = two
    alice.type("/send bob")
    alice.type(f"/send bob {tmp_path / 'nothing'}")
    alice.type("/cancel 7")
    assert alice.notices[-3:] == ["usage: /send NAME PATH", f"no such file: {tmp_path / 'nothing'}",
                                  "no such transfer: 7"]

"""File sharing in the CLI as a person sees it (SPEC.md 11a): two real clients in
pseudo-terminals (tests/test_cli_screen.py's Terminal), one offering a file with
/send, the other told of it and accepting it with /accept; the file lands in the
recipient's downloads folder, checked, and only there."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.conftest import TEST_LIMITS
from tests.test_cli_screen import ENTER, Terminal, joined  # noqa: F401 - the fixtures' type

pytest.importorskip("pyte", reason="pyte emulates the terminal these tests read (test extra)")

LIMITS = dataclasses.replace(TEST_LIMITS, file_max=10 * 1000 * 1000)


@pytest.fixture
def people(make_server, tmp_path):
    server = make_server(LIMITS)
    opened: list[Terminal] = []

    def start(name: str) -> Terminal:
        downloads = tmp_path / f"{name}-downloads"
        downloads.mkdir()
        terminal = Terminal(server.address[1], "--name", name, "--downloads", str(downloads),
                            state=tmp_path / "state")
        opened.append(terminal)
        return terminal

    yield start
    for terminal in opened:
        terminal.close()


@pytest.mark.timeout(60)
def test_send_accept_and_the_file_arrives_checked(people, tmp_path):
    source = tmp_path / "holiday notes.txt"
    source.write_bytes(os.urandom(2_000_000))
    alice = people("alice")
    alice.wait_for(r"\* online \(1\): alice")
    bob = people("bob")
    bob.wait_for(r"\* online \(2\): alice, bob")
    alice.type(f"/send bob {source}")
    alice.type(ENTER)
    alice.wait_for(r"offered holiday notes\.txt to bob")
    bob.wait_for(r"alice offers you holiday notes\.txt \(2\.0 MB\): /accept alice/1")
    bob.type("/accept")
    bob.type(ENTER)
    bob.wait_for(r"holiday notes\.txt: complete, size and SHA-256 checked; saved as .*")
    alice.wait_for(r"holiday notes\.txt \(alice/1\): complete")
    saved = tmp_path / "bob-downloads" / "holiday notes.txt"
    assert saved.read_bytes() == source.read_bytes()
    assert os.listdir(tmp_path / "bob-downloads") == ["holiday notes.txt"]
    bob.type("/transfers")
    bob.type(ENTER)
    bob.wait_for(r" no transfers$")


@pytest.mark.timeout(60)
def test_a_declined_offer_and_a_server_without_files(people, make_server, tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 10)
    alice = people("alice")
    alice.wait_for(r"\* online \(1\): alice")
    bob = people("bob")
    bob.wait_for(r"\* online \(2\): alice, bob")
    alice.type(f"/send bob {source}" + "\r")
    bob.wait_for(r"alice offers you a\.bin")
    bob.type("/reject\r")
    alice.wait_for(r"a\.bin \(alice/1\): declined by the recipient")
    assert os.listdir(tmp_path / "bob-downloads") == []

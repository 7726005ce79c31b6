"""chat/client_files.py without a server: the receiver's safety rules ([FILE-17]), the
client's book of transfers, progress, and the temporary file that becomes the final one."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat.client_files import (
    FileTransfers,
    IncomingFile,
    OfferReceived,
    OfferSent,
    Progress,
    StartData,
    TransferEnded,
    describe,
    format_duration,
    format_size,
    free_path,
    hash_file,
    safe_filename,
)

SHA = "cd" * 32
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def assert_safe(name: str) -> None:
    assert name and len(name) <= 120
    assert "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith(".") and not name.startswith(" ")
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name)


@pytest.mark.parametrize("offered, shown", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "____etc_passwd"),
    ("..\\..\\boot.ini", "____boot.ini"),
    (".bashrc", "bashrc"),
    ("...", "_."),
    ("", "file"),
    (" ", "file"),
    ("photo\u202egpj.exe", "photo_gpj.exe"),
    ("a\x00b\x1bc", "a_b_c"),
    ("CON.txt", "_CON.txt"),
    ("x" * 300 + ".tar.gz", "x" * 117 + ".gz"),
])
def test_offered_names_are_made_safe(offered, shown):
    assert safe_filename(offered) == shown
    assert_safe(safe_filename(offered))


@given(st.text())
def test_any_offered_name_comes_out_safe(offered):
    assert_safe(safe_filename(offered))


@given(st.text(alphabet=BIDI + "ab./\\"))
def test_no_bidirectional_character_survives(offered):
    assert not set(safe_filename(offered)) & set(BIDI)


def test_free_path_never_names_an_existing_file(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"mine")
    (tmp_path / "a (2).txt").write_bytes(b"mine too")
    assert free_path(tmp_path, "a.txt") == tmp_path / "a (3).txt"
    assert free_path(tmp_path, "b.txt") == tmp_path / "b.txt"
    assert free_path(tmp_path, "noext", exists=lambda p: p.name == "noext") == tmp_path / "noext (2)"


def test_an_incoming_file_gets_its_name_only_when_committed(tmp_path):
    incoming = IncomingFile(tmp_path / "final.bin")
    incoming.write(b"hello ")
    incoming.write(b"world")
    assert incoming.matches(11, hashlib.sha256(b"hello world").hexdigest())
    assert not incoming.matches(12, hashlib.sha256(b"hello world").hexdigest())
    assert not incoming.matches(11, SHA)
    assert not (tmp_path / "final.bin").exists()
    assert incoming.commit().read_bytes() == b"hello world"
    assert os.listdir(tmp_path) == ["final.bin"]


def test_an_incoming_file_never_replaces_one_that_appeared_meanwhile(tmp_path):
    incoming = IncomingFile(tmp_path / "final.bin")
    incoming.write(b"theirs")
    (tmp_path / "final.bin").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        incoming.commit()
    assert (tmp_path / "final.bin").read_bytes() == b"mine"
    incoming.discard()
    incoming.discard()  # twice is harmless
    assert os.listdir(tmp_path) == ["final.bin"]


def test_hash_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc" * 100_000)
    assert hash_file(path) == (300_000, hashlib.sha256(b"abc" * 100_000).hexdigest())


def test_the_book_follows_an_offer_from_both_sides():
    alice, bob = FileTransfers("alice"), FileTransfers("bob")
    line = alice.offer("bob", Path("/tmp/a b.txt"), 5, SHA)
    assert line == f"OFFER bob 1 5 {SHA} a b.txt"
    echo = f"OFFER alice bob 1 5 {SHA} a b.txt"
    [sent] = alice.server_line(echo)
    [received] = bob.server_line(echo)
    assert isinstance(sent, OfferSent) and sent.transfer.path == Path("/tmp/a b.txt")
    assert isinstance(received, OfferReceived) and received.transfer.ref == "alice/1"
    assert bob.find(None, incoming=True) is received.transfer
    assert bob.find("alice/1") is received.transfer and bob.find("1") is received.transfer
    assert bob.accept(received.transfer, Path("/d/a b.txt")) == "ACCEPT alice 1"
    [start] = bob.server_line("ACCEPTED alice 1 tok")
    assert isinstance(start, StartData) and start.transfer.token == "tok"
    assert "from alice" in describe(start.transfer) and "accepted" in describe(start.transfer)
    assert bob.verdict(start.transfer, True) == "RECEIVED alice 1 ok"
    assert bob.cancel(start.transfer) == "CANCEL alice 1" and bob.reject(start.transfer) == "REJECT alice 1"
    [ended] = bob.server_line("ENDED alice 1 done")
    assert isinstance(ended, TransferEnded) and ended.reason == "done" and list(bob) == []
    assert bob.server_line("ENDED alice 1 done") == [] and bob.server_line("ACCEPTED alice 9 t") == []
    assert bob.server_line("MSG alice hi") is None


def test_find_says_what_is_wrong():
    book = FileTransfers("me")
    with pytest.raises(LookupError, match="no such transfer"):
        book.find(None)
    book.server_line(f"OFFER alice me 1 5 {SHA} a")
    book.server_line(f"OFFER carol me 1 5 {SHA} b")
    with pytest.raises(LookupError, match="which one"):
        book.find("1")
    assert book.find("carol/1").filename == "b"
    assert [t.reason for t in book.forget_all()] == ["gone", "gone"]


def test_progress_gives_rate_and_time_left():
    progress = Progress(1000, now=0.0)
    assert progress.time_left() is None and "--:-- left" in progress.bar()
    progress.update(100, 1.0)
    progress.update(200, 2.0)
    assert progress.rate() == 100.0 and progress.time_left() == 8.0
    assert progress.bar(10) == "[##--------]  20%  100 B/s  0:08 left"
    progress.update(1000, 10.0)
    assert progress.bar(10).startswith("[##########] 100%")


def test_sizes_and_durations_read_well():
    assert [format_size(n) for n in (5, 1500, 2_500_000, 3e12)] == ["5 B", "1.5 KB", "2.5 MB", "3000.0 GB"]
    assert [format_duration(s) for s in (0, 61, 3725)] == ["0:00", "1:01", "1h02m"]

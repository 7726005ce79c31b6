"""File sharing in the desktop client (chat/gui/files.py, SPEC.md 11a): the accept
dialog when a file is offered, the "Send file..." button, and the Transfers window's
progress bar, with the window on a private X display and the other party a raw client
driving chat/client_files.py. The dialogs are answered by the test (GuiFiles.dialogs)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from chat.client_files import (
    FileTransfers,
    IncomingFile,
    OfferReceived,
    StartData,
    open_data_connection,
    receive_file,
    send_file,
)

pytest.importorskip("tkinter", reason="this Python has no tkinter")

from tests import test_gui  # noqa: E402  (after the tkinter check)

# The GUI tests' fixtures, shared: the X display, the window, the window as alice, other people.
x_display, gui, alice, others = test_gui.x_display, test_gui.gui, test_gui.alice, test_gui.others


class Answers:
    """The user's answers to the file dialogs."""

    def __init__(self, accept=True, folder="", recipient=None, file=""):
        self.accepts, self.folder_chosen, self.recipient_named, self.file = accept, folder, recipient, file
        self.asked: list[str] = []

    def file_to_send(self):
        self.asked.append("file")
        return self.file

    def recipient(self, names):
        self.asked.append("recipient")
        return self.recipient_named

    def accept(self, transfer):
        self.asked.append(f"accept {transfer.shown_name}")
        return self.accepts

    def folder(self, initial):
        self.asked.append("folder")
        return self.folder_chosen


def file_line(client, book):
    line = client.line()
    while line.startswith(("JOIN ", "NAMES", "ENDNAMES")):
        line = client.line()
    [event] = book.server_line(line)
    return event


def test_an_offered_file_is_asked_about_shown_in_progress_and_saved(alice, server, others, tmp_path):
    folder = tmp_path / "saved here"
    folder.mkdir()
    answers = alice.app.files.dialogs = Answers(accept=True, folder=str(folder))
    bob = others("bob")
    bob_book = FileTransfers("bob")
    data = os.urandom(3_000_000)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    bob.send(bob_book.offer("alice", source, len(data), hashlib.sha256(data).hexdigest()))
    file_line(bob, bob_book)
    alice.wait_for("bob offers you report.pdf")
    assert answers.asked == ["accept report.pdf", "folder"]
    start = file_line(bob, bob_book)
    assert isinstance(start, StartData)
    alice.wait_until(lambda: alice.app.files.rows, lambda: "no progress bar")  # the Transfers window
    sent = threading.Thread(target=lambda: send_file(
        open_data_connection(server.address, start.transfer.token)[0], source, len(data)))
    sent.start()
    alice.wait_for("complete, size and SHA-256 checked; saved as")
    sent.join(5)
    assert file_line(bob, bob_book).reason == "done"
    assert (folder / "report.pdf").read_bytes() == data
    assert os.listdir(folder) == ["report.pdf"]
    alice.wait_until(lambda: not alice.app.files.rows, lambda: alice.app.files.rows)


def test_a_declined_offer_saves_nothing(alice, server, others, tmp_path):
    answers = alice.app.files.dialogs = Answers(accept=False)
    bob = others("bob")
    bob_book = FileTransfers("bob")
    bob.send(bob_book.offer("alice", tmp_path / "x.bin", 3, hashlib.sha256(b"abc").hexdigest()))
    file_line(bob, bob_book)
    alice.wait_for("declined by the recipient")
    assert answers.asked == ["accept x.bin"]
    assert file_line(bob, bob_book).reason == "rejected"


def test_the_send_file_button_offers_a_file_and_sends_it(alice, server, others, tmp_path):
    bob = others("bob")
    alice.wait_for("bob joined")
    data = os.urandom(500_000)
    source = tmp_path / "photo.jpg"
    source.write_bytes(data)
    answers = alice.app.files.dialogs = Answers(recipient="bob", file=str(source))
    alice.app.files.button.invoke()
    assert answers.asked == ["recipient", "file"]
    bob_book = FileTransfers("bob")
    alice.wait_for("offered photo.jpg to bob")
    offer = file_line(bob, bob_book)
    assert isinstance(offer, OfferReceived) and offer.transfer.size == len(data)
    bob.send(bob_book.accept(offer.transfer, tmp_path / "got.jpg"))
    start = file_line(bob, bob_book)
    incoming = IncomingFile(tmp_path / "got.jpg")
    result = {}

    def receive():
        sock, first = open_data_connection(server.address, start.transfer.token)
        result["complete"] = receive_file(sock, first, incoming, len(data))

    receiving = threading.Thread(target=receive)
    receiving.start()
    alice.wait_for("waiting for bob's check")
    receiving.join(5)
    assert result["complete"] and incoming.matches(len(data), offer.transfer.sha256)
    bob.send(bob_book.verdict(start.transfer, True))
    alice.wait_for("complete, size and SHA-256 checked")
    incoming.discard()

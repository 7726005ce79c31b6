"""A 200 MB file between two clients through the reference server, the SHA-256 checked,
in the clear and inside TLS (issue 12's "done when"). In tox's `once` group: a few
seconds each, and the outcome does not depend on the interpreter.

The clients are chat/client_files.py driven as the CLI drives it: offer, accept into a
downloads folder, the two data connections in threads, the recipient's check, the
verdict, and the file given its final name only after `ENDED ... done`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import ssl
import threading

import pytest

from chat.client_files import (
    FileTransfers,
    IncomingFile,
    OfferReceived,
    StartData,
    free_path,
    hash_file,
    open_data_connection,
    receive_file,
    send_file,
)
from chat.server import ChatServer
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient

trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")

pytestmark = pytest.mark.timeout(300)

SIZE = 200 * 1000 * 1000
LIMITS = dataclasses.replace(TEST_LIMITS, file_max=SIZE)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("outbox") / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as file:
        for offset in range(0, SIZE, len(block)):
            file.write(block[:min(len(block), SIZE - offset)])
    return path


@pytest.fixture(scope="module")
def certificate_authority():
    return trustme.CA()


class TLSLineClient(LineClient):
    def __init__(self, address, context):
        raw = socket.create_connection(address, timeout=DEADLINE)
        self.sock = context.wrap_socket(raw, server_hostname=address[0])
        self._buffer = b""
        self.name = None


def file_line(client: LineClient, book: FileTransfers):
    line = client.line()
    while line.startswith("JOIN "):
        line = client.line()
    events = book.server_line(line)
    assert events, f"expected a file line, got {line!r}"
    return events[0]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_two_clients_exchange_a_200_mb_file_checked(tls, big_file, tmp_path, certificate_authority):
    client_context = None
    server_context = None
    if tls:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
        client_context = ssl.create_default_context()
        certificate_authority.configure_trust(client_context)
    server = ChatServer("127.0.0.1", None if tls else 0, LIMITS, tls_context=server_context,
                        tls_port=0).start()
    address = server.tls_address if tls else server.address
    try:
        def client(name):
            chat = TLSLineClient(address, client_context) if tls else LineClient(address)
            return chat.register(name), FileTransfers(name)

        (alice, alice_book), (bob, bob_book) = client("alice"), client("bob")
        size, digest = hash_file(big_file)
        alice.send(alice_book.offer("bob", big_file, size, digest))
        offer = file_line(bob, bob_book)
        file_line(alice, alice_book)
        assert isinstance(offer, OfferReceived) and offer.transfer.size == SIZE
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        bob.send(bob_book.accept(offer.transfer, free_path(downloads, offer.transfer.shown_name)))
        sending, receiving = file_line(alice, alice_book), file_line(bob, bob_book)
        assert isinstance(sending, StartData) and isinstance(receiving, StartData)
        incoming = IncomingFile(receiving.transfer.path)
        outcome = {}

        def receive():
            sock, first = open_data_connection(address, receiving.transfer.token, tls=client_context)
            outcome["orderly"] = receive_file(sock, first, incoming, SIZE)

        def deliver():
            sock, _ = open_data_connection(address, sending.transfer.token, tls=client_context)
            send_file(sock, big_file, SIZE)

        threads = [threading.Thread(target=receive), threading.Thread(target=deliver)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        assert not any(thread.is_alive() for thread in threads)
        assert outcome["orderly"] and incoming.matches(SIZE, digest)
        bob.send(bob_book.verdict(receiving.transfer, True))
        assert file_line(bob, bob_book).reason == "done" == file_line(alice, alice_book).reason
        saved = incoming.commit()
        assert saved == downloads / "big.bin"
        assert hash_file(saved) == (SIZE, hashlib.sha256(big_file.read_bytes()).hexdigest())
        assert os.listdir(downloads) == ["big.bin"]
        alice.close()
        bob.close()
    finally:
        server.shutdown()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_two_cli_clients_exchange_a_200_mb_file_checked(tls, big_file, tmp_path, certificate_authority):
    """The same through the real CLI (chat-client in pseudo-terminals): /send, /accept."""
    pytest.importorskip("pyte", reason="pyte emulates the terminal the CLI runs in (test extra)")
    from tests.test_cli_screen import Terminal

    server_context, args = None, []
    if tls:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
        cafile = tmp_path / "ca.pem"
        certificate_authority.cert_pem.write_to_path(str(cafile))
        args = ["--cafile", str(cafile)]
    server = ChatServer("127.0.0.1", None if tls else 0, LIMITS, tls_context=server_context,
                        tls_port=0).start()
    port = (server.tls_address if tls else server.address)[1]
    terminals = []
    try:
        def person(name):
            downloads = tmp_path / f"{name}-downloads"
            downloads.mkdir()
            terminal = Terminal(port, "--name", name, "--downloads", str(downloads), *args,
                                state=tmp_path / "state")
            terminals.append(terminal)
            return terminal

        alice = person("alice")
        alice.wait_for(r"\* online \(1\): alice")
        bob = person("bob")
        bob.wait_for(r"\* online \(2\): alice, bob")
        alice.type(f"/send bob {big_file}\r")
        bob.wait_for(r"alice offers you big\.bin \(200\.0 MB\)", deadline=30)
        bob.type("/accept\r")
        bob.wait_for(r"big\.bin: complete, size and SHA-256 checked; saved as", deadline=120)
        alice.wait_for(r"big\.bin \(alice/1\): complete", deadline=30)
        saved = tmp_path / "bob-downloads" / "big.bin"
        assert hash_file(saved) == hash_file(big_file)
        assert os.listdir(tmp_path / "bob-downloads") == ["big.bin"]
    finally:
        for terminal in terminals:
            terminal.close()
        server.shutdown()

"""TLS ([SEC-1]): the same protocol inside TLS, beside the plain listener.

Certificates are made at test time by trustme, so no key is ever committed.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from chat.server import ChatServer
from tests.conftest import TEST_LIMITS, LineClient, start_server_process

trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def certificate_authority():
    return trustme.CA()


@pytest.fixture
def tls_server(certificate_authority):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    server = ChatServer("127.0.0.1", 0, TEST_LIMITS, tls_context=context, tls_port=0).start()
    yield server
    server.shutdown()


@pytest.fixture
def client_context(certificate_authority):
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    return context


class TLSLineClient(LineClient):
    def __init__(self, address, context):
        raw = socket.create_connection(address, timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname=address[0])
        self._buffer = b""
        self.name = None


def test_tls_and_plain_clients_share_one_room(tls_server, client_context):
    secure = TLSLineClient(tls_server.tls_address, client_context).register("secure")
    plain = LineClient(tls_server.address).register("plain")
    secure.expect("JOIN plain")
    secure.send("MSG over tls")
    plain.expect("MSG secure over tls")
    plain.send("PM secure and back")
    plain.expect("PM plain secure and back")
    secure.expect("MSG secure over tls")
    secure.expect("PM plain secure and back")
    secure.send("LEAVE")
    secure.expect("LEAVE secure quit")
    secure.expect_closed()
    plain.expect("LEAVE secure quit")
    secure.close()
    plain.close()


def test_a_large_burst_over_tls_arrives_whole(tls_server, client_context):
    client = TLSLineClient(tls_server.tls_address, client_context).register("bulk")
    lines = [f"MSG {n} {'z' * 900}" for n in range(300)]
    client.send_raw("".join(line + "\n" for line in lines).encode())
    for n in range(300):
        client.expect(f"MSG bulk {n} {'z' * 900}")
    assert client.barrier() == []
    client.close()


def test_plain_text_on_the_tls_port_harms_no_one(tls_server, client_context):
    secure = TLSLineClient(tls_server.tls_address, client_context).register("secure")
    confused = socket.create_connection(tls_server.tls_address, timeout=5)
    confused.sendall(b"USER mallory\n" * 10)
    # The server gives up on the handshake and closes; no HELLO in the clear.
    data = b""
    while chunk := confused.recv(4096):
        data += chunk
    assert b"HELLO" not in data
    confused.close()
    secure.send("MSG still fine")
    assert secure.barrier() == ["MSG secure still fine"]
    secure.close()


def test_an_untrusted_certificate_is_refused_by_the_client(tls_server):
    context = ssl.create_default_context()  # trusts the system CAs, not ours
    raw = socket.create_connection(tls_server.tls_address, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()


def test_server_command_line_serves_tls(certificate_authority, client_context, tmp_path):
    cert = certificate_authority.issue_cert("127.0.0.1")
    cert_file = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    process, address = start_server_process("--tls-port", "0", "--tls-cert", str(cert_file), "--tls-only",
                                            banner="chat server listening with TLS on ")
    try:
        client = TLSLineClient(address, client_context).register("cli")
        client.send("MSG hi")
        client.expect("MSG cli hi")
        client.close()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()

"""TLS ([SEC-1]): the same protocol inside TLS, beside the plain listener.

Certificates are made at test time by trustme, so no key is ever committed.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import subprocess
import sys

import pytest

from chat.client import PLAIN_SERVER_REASONS
from chat.server import ChatServer
from chat.transport import FIRST_BYTE_WAIT
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient, start_server_process

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
    # [SEC-3]: told in the clear to use TLS, and closed; no HELLO in the clear.
    data = b""
    while chunk := confused.recv(4096):
        data += chunk
    assert re.fullmatch(rb"ERR TLS_REQUIRED [^\n]+\n", data), data
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


# -- the wrong port ([SEC-3], [SEC-4]) ---------------------------------------------------------


def test_a_plain_client_that_waits_for_hello_on_the_tls_port_is_told_to_use_tls(tls_server):
    waiting = LineClient(tls_server.tls_address)
    line = waiting.line(deadline=FIRST_BYTE_WAIT + DEADLINE)
    assert line.startswith("ERR TLS_REQUIRED "), line
    waiting.expect_closed()
    waiting.close()


def test_a_tls_client_on_the_plain_port_is_closed_and_logged(tls_server, client_context, log_records):
    raw = socket.create_connection(tls_server.address, timeout=5)
    with pytest.raises(ssl.SSLError) as failure:
        client_context.wrap_socket(raw, server_hostname="127.0.0.1")
    raw.close()
    # What the reference client and the kit turn into "try without --tls".
    assert failure.value.reason in PLAIN_SERVER_REASONS
    record, = log_records.wait_for("tls-client-on-plain-port")
    assert record.fields["address"] == "127.0.0.1"


def write_ca(certificate_authority, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(path))
    return str(path)


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chat.client", "--name", "alice", *args],
                          input="", capture_output=True, text=True, timeout=30)


def test_the_client_says_try_tls_on_the_tls_port(tls_server):
    result = run_client("--port", str(tls_server.tls_address[1]))
    assert result.returncode == 1
    assert "this port speaks TLS, try --tls" in result.stdout + result.stderr


def test_the_client_says_try_without_tls_on_the_plain_port(tls_server, certificate_authority, tmp_path):
    result = run_client("--port", str(tls_server.address[1]), "--cafile",
                        write_ca(certificate_authority, tmp_path))
    assert result.returncode == 1
    assert "this port speaks plain chat/1, not TLS: try without --tls" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_kit_takes_cafile_for_tls(tls_server, certificate_authority, tmp_path):
    """--cafile implies --tls, as in the client: no 59 failures on HELLO-1."""
    host, port = tls_server.tls_address
    result = subprocess.run([sys.executable, "-m", "conformance", f"{host}:{port}", "--cafile",
                             write_ca(certificate_authority, tmp_path), "-k", "tls-session"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 pass" in result.stdout


def test_the_kit_says_try_tls_on_the_tls_port(tls_server):
    host, port = tls_server.tls_address
    result = subprocess.run([sys.executable, "-m", "conformance", f"{host}:{port}", "-k", "tls-session",
                             "--timeout", str(FIRST_BYTE_WAIT + DEADLINE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "this port speaks TLS, try --tls" in result.stdout, result.stdout


def test_the_kit_suggests_tls_when_hello_does_not_come_in_its_time(tls_server):
    """The kit's default --timeout (2 s) ends before FIRST_BYTE_WAIT: it says why HELLO may not come."""
    host, port = tls_server.tls_address
    result = subprocess.run([sys.executable, "-m", "conformance", f"{host}:{port}", "-k", "tls-session"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "If this port speaks TLS, try --tls." in result.stdout, result.stdout


def test_a_failed_handshake_is_logged(tls_server, log_records):
    broken = socket.create_connection(tls_server.tls_address, timeout=5)
    broken.sendall(b"\x16\x03\x01\x00\x05hello")  # a record that is no ClientHello
    while broken.recv(4096):
        pass
    broken.close()
    record, = log_records.wait_for("tls-handshake-failed")
    assert record.levelno == logging.WARNING and record.fields["address"] == "127.0.0.1"

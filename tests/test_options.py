"""Bad options and files: one line that names the option, exit status 2, no traceback.

Each case runs the real command (`python -m chat.server` or `chat.client`) as
a person would, and reads its stderr and exit status. Option types are also
tested directly (chat/options.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from chat import options

pytestmark = pytest.mark.timeout(60)

trustme = pytest.importorskip("trustme", reason="trustme makes the test certificates")


def run(module: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin, capture_output=True,
                          text=True, timeout=30)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory):
    """A certificate, its key, a key of another certificate, and a combined file."""
    directory = tmp_path_factory.mktemp("pem")
    authority = trustme.CA()
    issued, other = authority.issue_cert("127.0.0.1"), authority.issue_cert("127.0.0.1")
    files = {
        "cert": issued.cert_chain_pems[0].bytes(),
        "key": issued.private_key_pem.bytes(),
        "other-key": other.private_key_pem.bytes(),
        "both": issued.private_key_and_cert_chain_pem.bytes(),
        "not-pem": b"this is no certificate\n",
        "empty": b"",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(data)
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], ["--port", "70000", "0 to 65535"]),
    (["--port", "-1"], ["--port", "-1"]),
    (["--port", "five"], ["--port", "five"]),
    (["--tls-port", "65536"], ["--tls-port", "65536"]),
    (["--max-clients", "-5"], ["--max-clients", "-5", "whole number"]),
    (["--flood-rate", "1.5"], ["--flood-rate", "1.5"]),
    (["--inbound-max", "99999999999"], ["--inbound-max", "99999999999"]),
    (["--flood-burst", "0", "--flood-rate", "5"], ["--flood-burst", "LIMIT-12"]),
    (["--tls-cert", "/nonexistent"], ["--tls-cert", "/nonexistent", "No such file"]),
    (["--tls-key", "/nonexistent"], ["--tls-key", "/nonexistent"]),
    (["--password-file", "/nonexistent"], ["--password-file", "/nonexistent", "No such file"]),
    (["--tls-only"], ["--tls-only", "--tls-cert"]),
    (["--log-level", "loud"], ["--log-level", "loud"]),
    (["--log-format", "xml"], ["--log-format", "xml"]),
    (["--host", "no-such-host.invalid", "--port", "0"], ["--host", "no-such-host.invalid"]),
    (["--no-such-option"], ["--no-such-option"]),
])
def test_a_bad_server_option_is_one_line_and_status_2(args, words):
    assert_one_line_error(run("chat.server", *args), "chat-server:", *words)


@pytest.mark.parametrize("files, words", [
    (["cert"], ["--tls-cert", "no PEM certificate and private key", "--tls-key"]),
    (["cert", "other-key"], ["--tls-cert", "does not match"]),
    (["not-pem"], ["--tls-cert", "not-pem.pem"]),
    (["cert", "not-pem"], ["--tls-cert", "not-pem.pem"]),
    (["key"], ["--tls-cert", "key.pem"]),
])
def test_a_bad_certificate_or_key_is_one_line_and_status_2(pem_files, files, words):
    args = ["--port", "0", "--tls-port", "0", "--tls-cert", pem_files[files[0]]]
    if len(files) > 1:
        args += ["--tls-key", pem_files[files[1]]]
    assert_one_line_error(run("chat.server", *args), "chat-server:", *words)


def test_an_empty_password_file_is_refused_rather_than_opening_the_room(pem_files):
    assert_one_line_error(run("chat.server", "--port", "0", "--password-file", pem_files["empty"]),
                          "--password-file", "empty")


def test_a_password_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00password\n")
    assert_one_line_error(run("chat.server", "--port", "0", "--password-file", str(path)),
                          "--password-file", str(path))


@pytest.mark.parametrize("port", ["-1", "70000", "0", "http"])
def test_a_bad_client_port_is_one_line_and_status_2(port):
    assert_one_line_error(run("chat.client", "--name", "alice", "--port", port),
                          "chat-client:", "--port", port)


# -- the option types themselves -----------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("0", 0), ("65535", 65535), ("5000", 5000)])
def test_port_accepts_0_to_65535(text, value):
    assert options.port(text) == value


@pytest.mark.parametrize("function, text", [
    (options.port, "65536"), (options.port, "-1"), (options.port, "0x10"),
    (options.connect_port, "0"), (options.whole_number, "-1"), (options.whole_number, "1e3"),
])
def test_option_types_refuse_with_a_sentence(function, text):
    with pytest.raises(argparse.ArgumentTypeError, match=text):
        function(text)


def test_readable_file_says_why(tmp_path):
    path = tmp_path / "present"
    path.write_text("x")
    assert options.readable_file(str(path)) == str(path)
    with pytest.raises(argparse.ArgumentTypeError, match="No such file"):
        options.readable_file(str(tmp_path / "absent"))

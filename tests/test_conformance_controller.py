"""The kit starts the server itself: --server-cmd (any server, as a command) and the
in-process controller behind the self-hosted run.

The reference server, started as a command through its own template, passes every
case of the kit, none n/a (TLS included, with a certificate made for the test), and
every verdict names the configuration it came from. A template that cannot set a
limit makes the cases that need it n/a, naming the missing placeholder; a server that
does not start is reported at once, with its output.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shlex
import socket
import sys
import xml.etree.ElementTree as ET

import pytest

from chat.limits import Limits
from conformance.controller import (
    LIMIT_FIELDS,
    CommandController,
    InProcessController,
    ServerSettings,
    ServerStartFailed,
    template_fields,
)
from conformance.outcome import NotApplicable
from conformance.report import PASS
from conformance.runner import main
from conformance.selfhost import SELF_HOSTED_LIMITS, KitServers
from tests.conftest import DEADLINE

PYTHON = shlex.quote(sys.executable)
#: The reference server's template: every limit it has an option for, the password
#: as a file, TLS as one word each (left out when the kit has no certificate).
REFERENCE_TEMPLATE = (
    f"{PYTHON} -m chat.server --port {{port}} --max-clients {{max_clients}} "
    "--max-per-address {max_per_address} --register-timeout {register_timeout} "
    "--ping-interval {ping_interval} --ping-timeout {ping_timeout} --flood-rate {flood_rate} "
    "--flood-burst {flood_burst} --outbound-max {outbound_max} --inbound-max {inbound_max} "
    "--nick {nick} --action {action} --file-max {file_max} --file-per-user {file_per_user} "
    "--file-per-server {file_per_server} --file-expiry {file_expiry} --password-file={password_file} "
    "--tls-cert={tls_cert} --tls-key={tls_key} --tls-port={tls_port} --quiet")


def test_the_limit_placeholders_are_the_fields_of_chat_limits():
    assert LIMIT_FIELDS == tuple(f.name for f in dataclasses.fields(Limits) if f.name != "password")


@pytest.mark.parametrize("template, message", [
    ("myserver --port 5000", "no placeholder"),
    ("myserver --max-clients {max_clients}", "no {port}"),
    ("myserver --port {port} --colour {colour}", "unknown placeholder {colour}"),
    ("myserver --port {port:>5}", "unknown placeholder {port}"),
])
def test_a_template_the_kit_cannot_use_is_refused(template, message):
    with pytest.raises(ValueError, match=message):
        template_fields(template)
    assert main(["--server-cmd", template], out=io.StringIO()) == 2


def test_words_whose_placeholders_are_all_empty_are_left_out():
    controller = CommandController(f"{PYTHON} -c pass {{port}} --password={{password}} "
                                   "--tls-port={tls_port}")
    assert controller.unsettable(ServerSettings({"max_clients": 3}, password="x")) == ["max_clients"]
    assert not controller.offers_tls


@pytest.mark.timeout(300)
def test_the_reference_server_as_a_command_passes_every_case_none_not_applicable(tmp_path):
    """The issue's "done when": `python -m conformance --server-cmd ...` runs every case
    against the reference server, and each verdict says which configuration it came from."""
    trustme = pytest.importorskip("trustme", reason="the TLS case needs a certificate made for the test")
    authority = trustme.CA()
    cert, cafile = tmp_path / "server.pem", tmp_path / "ca.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert))
    authority.cert_pem.write_to_path(str(cafile))
    json_path, junit_path, out = tmp_path / "report.json", tmp_path / "report.xml", io.StringIO()

    code = main(["--server-cmd", REFERENCE_TEMPLATE, "--tls-cert", str(cert), "--cafile", str(cafile),
                 "--json", str(json_path), "--junit-xml", str(junit_path)], out=out)

    text = out.getvalue()
    # The report's failures come first in the output, its summary and the
    # configurations last: show the start, where a failure says what it was.
    assert code == 0, text[:8000]
    report = json.loads(json_path.read_text())
    verdicts = {name: case["verdict"] for name, case in report["cases"].items()}
    assert set(verdicts.values()) == {PASS}, {name: v for name, v in verdicts.items() if v != PASS}
    for name, case in report["cases"].items():
        assert "--server-cmd " in case["configuration"], name
        assert "-m chat.server --port" in case["configuration"], name
    assert report["cases"]["register-timeout"]["configuration"].startswith("timers room: ")
    assert report["cases"]["password-accepted"]["configuration"].startswith("password room: ")
    assert report["cases"]["tls-session"]["configuration"].startswith("open room, TLS port: ")
    # The shutdown case stopped a private server of its own with SIGTERM ([LIMIT-7]).
    assert "; private server: --server-cmd " in report["cases"]["shutdown"]["configuration"]
    assert "Verdicts came from these server configurations:" in text
    suite = ET.parse(junit_path).getroot()
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    configurations = [p.get("value") for p in suite.iter("property") if p.get("name") == "configuration"]
    assert len(configurations) == len(verdicts)


@pytest.mark.timeout(60)
def test_a_limit_the_template_cannot_set_makes_its_cases_not_applicable_and_says_why():
    template = f"{PYTHON} -m chat.server --port {{port}} --quiet"  # every limit at the server's default
    out = io.StringIO()
    assert main(["--server-cmd", template, "-k", "register-timeout", "-k", "spec-example-chat",
                 "-k", "password-accepted"], out=out) == 0
    text = out.getvalue()
    assert "pass  spec-example-chat" in text
    # No {password} or {password_file}: no password room, so the password cases do not apply.
    assert "password room" not in text.split("\n\n")[0]
    assert " n/a  password-accepted" in text
    assert " n/a  register-timeout" in text and "has no {register_timeout}" in text
    assert ("asked for register-timeout=3, the server advertises 30 "
            "(the template has no {register_timeout})") in text


def test_a_private_server_with_a_limit_the_template_cannot_set_is_not_applicable():
    with KitServers(CommandController(f"{PYTHON} -m chat.server --port {{port}} --quiet")) as servers:
        with pytest.raises(NotApplicable, match=r"has no \{register_timeout\}"):
            servers.private_server(register_timeout=1)
        # A setting the kit has no placeholder for at all: no template can set it.
        with pytest.raises(NotApplicable, match=r"has no \{colour\}"):
            servers.private_server(colour=3)


@pytest.mark.timeout(60)
def test_a_server_that_exits_at_once_is_reported_with_its_output():
    template = f"{PYTHON} -c \"import sys; print('no such option'); sys.exit(3)\" {{port}}"
    out = io.StringIO()
    assert main(["--server-cmd", template], out=out) == 2
    assert "exited with code 3 before it listened" in out.getvalue()
    assert "| no such option" in out.getvalue()


@pytest.mark.timeout(60)
def test_a_server_that_ignores_sigterm_is_killed_and_reported():
    ignores = (f"{PYTHON} -c \"import signal, socket, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
               "s = socket.create_server(('127.0.0.1', int(sys.argv[1]))); signal.pause()\" {port}")
    controller = CommandController(ignores)
    server = controller.start(ServerSettings(dict(SELF_HOSTED_LIMITS)))
    with pytest.raises(ServerStartFailed, match="did not exit within"):
        server.shutdown()
    assert server.process.poll() is not None


def test_the_self_hosted_run_has_three_rooms_and_names_their_configuration():
    with KitServers(InProcessController()) as servers:
        targets = servers.targets()
    assert [t.label for t in targets] == ["open room", "password room", "timers room"]
    assert targets[1].password and not targets[0].password
    assert "register-timeout=3" in targets[2].configuration
    assert all(t.configuration.startswith(f"{t.label}: reference server in process") for t in targets)


@pytest.mark.timeout(60)
def test_sigterm_reaches_a_server_started_by_a_wrapper():
    """`go run`, `npm start` or `sh -c` run the server as a child: SIGTERM goes to the whole
    process group, so the server itself stops too and leaves nothing listening."""
    # The shell ignores SIGTERM and waits for its child, as `go run` does; the server,
    # which handles SIGTERM, stops, and only then does the shell exit, with 0.
    wrapped = (f"sh -c 'trap \"\" TERM; {PYTHON} -m chat.server --port \"$0\" --quiet; "
               "echo the server has stopped' {port}")
    server = CommandController(wrapped).start(ServerSettings(dict(SELF_HOSTED_LIMITS)))
    address = server.address
    server.shutdown()
    assert server.process.returncode == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=DEADLINE).close()

"""What the server tells its operator (chat/logs.py, and the events chat/server.py logs).

Tests read the records (the `log_records` fixture), never the clock: a test
waits for the record it expects, with a deadline.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import sys

import pytest

from chat import logs
from chat.limits import Limits
from chat.server import SUMMARY_PERIOD, exposure_warnings
from tests.conftest import DEADLINE, LineClient, start_server_process

pytestmark = pytest.mark.timeout(60)

SECRET_TEXT = "the-secret-plan-42"
PASSWORD = "hunter2-correct-horse"


def fields(record: logging.LogRecord) -> dict:
    return record.fields


# -- one line per event ------------------------------------------------------------------


def test_connect_register_and_leave_are_logged_with_address_name_and_reason(make_server, log_records):
    server = make_server()
    alice = LineClient(server.address).register("alice")
    alice.send("LEAVE")
    alice.expect("LEAVE alice quit")
    alice.expect_closed()
    connect, = log_records.wait_for("connect")
    register, = log_records.wait_for("register")
    end, = log_records.wait_for("disconnect")
    assert fields(connect)["address"] == "127.0.0.1" and connect.levelno == logging.INFO
    assert fields(register)["name"] == "alice"
    assert (fields(end)["name"], fields(end)["reason"]) == ("alice", "quit")
    assert end.getMessage() == f"disconnect id={fields(end)['id']} address=127.0.0.1 name=alice reason=quit"
    assert {record.name for record in (connect, register, end)} == {"chat.server.conn"}
    alice.close()


def test_refusals_are_warnings_with_their_code(make_server, log_records):
    server = make_server(Limits(max_clients=1, max_per_address=0, flood_rate=0, register_timeout=0,
                                ping_interval=0))
    holder = LineClient(server.address)
    holder.expect_prefix("HELLO ")
    refused = LineClient(server.address)
    refused.expect_prefix("ERR SERVER_FULL ")
    refused.expect_closed()
    record, = log_records.wait_for("refused")
    assert record.levelno == logging.WARNING and fields(record)["reason"] == "SERVER_FULL"
    for client in (holder, refused):
        client.close()


def test_a_bad_password_is_logged_without_the_password(make_server, log_records):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=0, ping_interval=0,
                                password=PASSWORD))
    guesser = LineClient(server.address)
    guesser.expect_prefix("HELLO ")
    guesser.send(f"PASS {PASSWORD}-wrong")
    guesser.expect_prefix("ERR BAD_PASSWORD ")
    guesser.expect_closed()
    record, = log_records.wait_for("disconnect")
    assert record.levelno == logging.WARNING and fields(record)["reason"] == "BAD_PASSWORD"
    assert PASSWORD not in dump(log_records.records)
    guesser.close()


def test_a_timeout_is_logged(make_server, log_records):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=1, ping_interval=0))
    squatter = LineClient(server.address)
    squatter.expect_prefix("HELLO ")
    squatter.expect_prefix("ERR REGISTRATION_TIMEOUT ")
    squatter.expect_closed()
    record, = log_records.wait_for("disconnect")
    assert fields(record)["reason"] == "REGISTRATION_TIMEOUT"
    squatter.close()


def test_message_text_never_reaches_the_log(make_server, log_records):
    server = make_server()
    alice = LineClient(server.address).register("alice")
    bob = LineClient(server.address).register("bob")
    alice.send(f"MSG {SECRET_TEXT}")
    alice.send(f"PM bob {SECRET_TEXT}")
    bob.send(f"MSG {SECRET_TEXT} with a space")
    bob.barrier()
    for client in (alice, bob):
        client.close()
    log_records.wait_for("disconnect", 2)
    server.summarize(1.0)
    assert SECRET_TEXT not in dump(log_records.records)


def dump(records: list[logging.LogRecord]) -> str:
    """Everything either format would write."""
    formatter = logs.JSONFormatter()
    return "\n".join(record.getMessage() + formatter.format(record) for record in records)


# -- the summary -------------------------------------------------------------------------------


def test_the_summary_counts_clients_lines_and_drops(make_server, log_records):
    server = make_server(Limits(max_per_address=0, flood_rate=10, flood_burst=5, inbound_max=10,
                                register_timeout=0, ping_interval=0))
    alice = LineClient(server.address).register("alice")
    bob = LineClient(server.address).register("bob")
    alice.expect("JOIN bob")
    alice.send("MSG one")
    bob.expect("MSG alice one")
    alice.expect("MSG alice one")
    flooder = LineClient(server.address)
    flooder.expect_prefix("HELLO ")
    flooder.send_raw(b"\n" * 100)
    flooder.expect_prefix("ERR EXCESS_FLOOD ")
    log_records.wait_for("disconnect")
    server.summarize(2.0)
    summary, = log_records.events("summary")
    assert summary.name == "chat.server.stats" and summary.levelno == logging.INFO
    values = fields(summary)
    assert values["clients"] == 2 and values["registered"] == 2 and values["connects"] == 3
    assert values["drops_flood"] == 1 and values["drops_slow"] == 0
    # In: USER, USER, MSG (the flood came in one read, over the bound: none of it was
    # handled). Out: HELLO x3, JOIN alice to 1, JOIN bob to 2, MSG to 2, the ERR.
    assert (values["lines_in_per_s"], values["lines_out_per_s"]) == (3 / 2.0, 9 / 2.0)
    assert values["bytes_queued"] == 0
    # Counted afresh after each summary.
    server.summarize(1.0)
    assert fields(log_records.events("summary")[1])["drops_flood"] == 0
    assert SUMMARY_PERIOD >= 1
    for client in (alice, bob, flooder):
        client.close()


# -- the formats ------------------------------------------------------------------------------


def record_of(message: str = "disconnect", **extra) -> logging.LogRecord:
    record = logging.LogRecord("chat.server.conn", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_format_is_one_object_per_line_with_the_fields():
    record = record_of("disconnect id=3 address=192.0.2.1 name=alice reason=quit", event="disconnect",
                       fields={"id": 3, "address": "192.0.2.1", "name": "alice", "reason": "quit",
                               "tls": None})
    line = logs.JSONFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == "disconnect" and entry["name"] == "alice" and entry["id"] == 3
    assert entry["level"] == "info" and entry["logger"] == "chat.server.conn"
    assert entry["time"].endswith("Z") and "tls" not in entry


def test_json_format_carries_a_traceback_and_records_without_an_event():
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        record = record_of("connection 3 failed")
        record.exc_info = sys.exc_info()
    entry = json.loads(logs.JSONFormatter().format(record))
    assert "event" not in entry and "RuntimeError: a bug" in entry["traceback"]


def test_text_values_with_spaces_are_quoted():
    stream = io.StringIO()
    handler = logs.configure("info", "text", stream)
    try:
        logs.event(logs.SERVER, logging.WARNING, "exposed", detail="in the clear")
        logs.event(logs.SERVER, logging.DEBUG, "not-written")
        logs.event(logs.SERVER, logging.INFO, "stopped")
    finally:
        logging.getLogger("chat").removeHandler(handler)
        logging.getLogger("chat").setLevel(logging.NOTSET)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith('WARNING chat.server exposed detail="in the clear"')
    assert lines[1].endswith("INFO chat.server stopped") and len(lines) == 2


# -- rate limiting -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_counts_what_it_suppresses_and_reports_it_once():
    clock = Clock()
    limiter = logs.RateLimiter(allowed=2, window=10.0, clock=clock)
    assert [limiter.admit("refused") for _ in range(5)] == [(True, 0), (True, 0), (False, 0),
                                                            (False, 0), (False, 0)]
    assert limiter.admit("other") == (True, 0)  # kinds are counted apart
    clock.now = 10.0
    assert limiter.admit("refused") == (True, 3)
    assert limiter.admit("refused") == (True, 0)


def test_a_flood_of_refusals_writes_a_few_lines_and_says_how_many_were_suppressed(log_records):
    clock = Clock()
    limited = logs.LimitedEvents(logs.RateLimiter(allowed=3, window=10.0, clock=clock))
    for index in range(100):
        limited(logs.CONNECTIONS, logging.WARNING, "refused", address=f"192.0.2.{index}")
    clock.now = 11.0
    limited(logs.CONNECTIONS, logging.WARNING, "refused", address="192.0.2.200")
    limited(logs.CONNECTIONS, logging.DEBUG - 1, "below-every-level")
    assert len(log_records.events("refused")) == 4
    suppressed, = log_records.events("suppressed")
    assert suppressed.getMessage() == "97 similar messages suppressed (refused)"


# -- start-up -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bound, password, plain, expected", [
    ("127.0.0.1", None, True, []),
    ("::1", None, True, []),
    ("0.0.0.0", None, True, ["no password", "in the clear"]),
    ("::", "pw", True, ["in the clear"]),
    ("192.0.2.7", None, False, ["no password"]),
    ("192.0.2.7", "pw", False, []),
    ("fe80::1%eth0", "pw", True, ["in the clear"]),
])
def test_exposure_warnings_say_what_is_exposed(bound, password, plain, expected):
    warnings = exposure_warnings(bound, bound, Limits(password=password), plain=plain)
    for warning, words in zip(warnings, expected, strict=True):
        assert words in warning and bound in warning


def test_an_unparsable_bound_address_is_not_loopback():
    assert exposure_warnings("example.invalid", "example.invalid", Limits(password="pw"), plain=True)


def run_server(*args: str) -> tuple[str, str]:
    """Start `chat-server ARGS`, connect and register once, stop it: (stdout, stderr)."""
    process, address = start_server_process(*args, env=dict(os.environ, CHAT_PASSWORD=""))
    try:
        client = LineClient(address).register("alice")
        process.send_signal(signal.SIGTERM)
        client.expect_prefix("ERR SHUTTING_DOWN ")
        client.close()
        process.wait(timeout=DEADLINE * 2)
        return process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_command_line_logs_start_events_and_stop_as_text():
    _, stderr = run_server()
    assert " INFO chat.server listening address=127.0.0.1:" in stderr
    assert " INFO chat.server.conn register id=1 address=127.0.0.1 name=alice" in stderr
    assert " INFO chat.server stopped" in stderr


def test_json_log_format_writes_one_object_per_line():
    _, stderr = run_server("--log-format", "json")
    entries = [json.loads(line) for line in stderr.splitlines()]
    assert [entry["event"] for entry in entries if entry["event"] in ("listening", "register", "stopped")] \
        == ["listening", "register", "stopped"]


def test_quiet_writes_only_warnings():
    _, stderr = run_server("--quiet")
    assert stderr == ""


def test_log_level_warning_is_what_quiet_means():
    _, stderr = run_server("--log-level", "warning")
    assert stderr == ""

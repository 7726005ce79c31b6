"""The client core and file sharing (SPEC.md 11a): the core hands the commands and
the server's file lines to the front end's FileSession, and keeps each reply matched
to its command ([CMD-3]) while it does."""

from __future__ import annotations

import pytest

from chat import protocol
from chat.client_core import ClientCore, Error, FileCommand, FileLine, Notice, Send
from tests.test_client_core import registered_core

SHA = "ab" * 32


@pytest.mark.parametrize("typed", ["/send bob ~/a.txt", "/accept", "/reject alice/1", "/cancel 2",
                                   "/transfers", "/SEND bob x"])
def test_file_commands_go_to_the_front_end(typed):
    assert registered_core().user_input(typed, 1.0) == [FileCommand(typed)]


def test_a_file_command_needs_a_connection():
    core = ClientCore("alice")
    assert core.send_file_command("CANCEL alice 1", 0.0) == [
        Notice("not sent (not connected): CANCEL alice 1")]


def test_the_offers_echo_answers_the_offer_and_an_err_then_answers_the_next_command():
    core = registered_core()
    assert core.send_file_command(f"OFFER bob 1 5 {SHA} a.txt", 1.0) == [Send(f"OFFER bob 1 5 {SHA} a.txt")]
    assert core.outstanding == 1
    echo = f"OFFER alice bob 1 5 {SHA} a.txt"
    assert core.line_received(echo, 1.1) == [FileLine(echo)]
    assert core.outstanding == 0
    core.send_file_command("CANCEL bob 7", 1.2)
    assert core.line_received("ERR NO_SUCH_TRANSFER no such transfer of yours", 1.3) == [
        Error("NO_SUCH_TRANSFER", "no such transfer of yours")]
    assert core.outstanding == 0


def test_news_about_a_transfer_is_not_taken_for_a_reply():
    core = registered_core()
    core.send_file_command("ACCEPT bob 1", 1.0)
    # bob's other transfer ends meanwhile: news, not the reply to our ACCEPT.
    assert core.line_received("ENDED bob 2 expired", 1.1) == [FileLine("ENDED bob 2 expired")]
    assert core.outstanding == 1
    assert core.line_received("ACCEPTED bob 1 tok", 1.2) == [FileLine("ACCEPTED bob 1 tok")]
    assert core.outstanding == 0
    core.send_file_command("RECEIVED bob 1 ok", 1.3)
    assert core.line_received("ENDED bob 1 done", 1.4) == [FileLine("ENDED bob 1 done")]
    assert core.outstanding == 0
    offered = f"OFFER carol alice 3 5 {SHA} x"
    assert core.line_received(offered, 1.5) == [FileLine(offered)]
    assert core.outstanding == 0


@pytest.mark.parametrize("line", ["OFFER alice bob 1 5", "OFFER 9x bob 1 5 h n", "ACCEPTED alice 1_2 t",
                                  "ENDED alice", "ENDED alice 1"])
def test_malformed_file_lines_are_unknown(line):
    assert isinstance(protocol.parse_server_line(line), protocol.ServerUnknown)


def test_file_lines_are_typed():
    assert protocol.parse_server_line("ENDED alice 12 done") == protocol.ServerFile(
        "ENDED", "alice", "12", "ENDED alice 12 done")
    assert protocol.parse_server_line(f"OFFER a b 3 5 {SHA} n m").tid == "3"

"""Unit tests of the kit's pure layers: the transcript parser (SPEC.md Appendix A),
the server-line grammar, HELLO parsing, SPEC.md parsing, and the Peer's line
reading over a socketpair (no server)."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.grammar import HELLO_PARAMETERS, check_server_line, hello_order_problems, parse_hello
from conformance.outcome import CheckFailed
from conformance.peer import Closed, Line, Peer, TimedOut, Transcript
from conformance.session import (
    Close,
    Connect,
    ExpectAny,
    ExpectClosed,
    ExpectLine,
    ExpectNames,
    ExpectRegex,
    Keepalive,
    Quiet,
    Register,
    Send,
    SendRaw,
    SessionSyntaxError,
    decode_escapes,
    escape_bytes,
    extract_session_blocks,
    parse_session,
    substitute,
)
from conformance.spec import INFORMATIVE, parse_spec, requirement_level

# -- the session format --------------------------------------------------------------------

EVERY_STEP = """\
case: every-step
covers: MSG-1 PM-1
covers: USERS-1
needs: ping-interval
quote: a sentence
# a comment, and a blank line

alice keepalive manual
alice register
bob connect
bob <~ HELLO chat/1 .*
bob > USER {bob}
bob >raw MSG a\\r\\n\\x01\\\\{alice|upper}
bob < JOIN {bob}
bob <any MSG {alice} x || MSG {bob} y
bob <names {alice} {bob}
bob quiet
bob close
alice > LEAVE
alice <closed
"""


def test_every_step_kind_is_parsed_with_its_fields():
    session = parse_session(EVERY_STEP, source="every.session")
    assert session.name == "every-step"
    assert session.covers == ("MSG-1", "PM-1", "USERS-1")
    assert session.needs == ("ping-interval",)
    assert session.quotes == ("a sentence",)
    assert session.aliases == ("alice", "bob")
    kinds = [type(step) for step in session.steps]
    assert kinds == [Keepalive, Register, Connect, ExpectRegex, Send, SendRaw, ExpectLine, ExpectAny,
                     ExpectNames, Quiet, Close, Send, ExpectClosed]
    keepalive, _, _, regex, send, raw, line, any_of, names, *_ = session.steps
    assert keepalive.mode == "manual"
    assert regex.pattern == "HELLO chat/1 .*"
    assert send.text == "USER {bob}"
    assert raw.text == "MSG a\\r\\n\\x01\\\\{alice|upper}"
    assert line.text == "JOIN {bob}" and line.line == 14
    assert any_of.options == ("MSG {alice} x", "MSG {bob} y")
    assert names.names == ("{alice}", "{bob}")


def test_send_keeps_leading_spaces_and_empty_send_is_an_empty_line():
    session = parse_session("case: x\ncovers: A-1\na connect\na >  MSG x\na >\n")
    assert session.steps[1].text == " MSG x"
    assert session.steps[2].text == ""


def test_placeholders_in_any_field_are_aliases_too():
    session = parse_session("case: x\ncovers: A-1\na register\na > PM {ghost} hi\n")
    assert session.aliases == ("a", "ghost")


def test_substitution_upper_cases_and_escapes_in_regexes():
    names = {"alice": "t-ab", "bob": "tcd"}
    assert substitute("PM {alice} {bob|upper} hi", names) == "PM t-ab TCD hi"
    assert substitute("{alice}", names, regex=True) == "t\\-ab"
    assert substitute("x{3} {alice}", names) == "x{3} t-ab"  # a quantifier is not a placeholder


@pytest.mark.parametrize("text, expected", [
    ("plain", b"plain"),
    ("\\r\\n", b"\r\n"),
    ("\\x00\\xff\\xC3", b"\x00\xff\xc3"),
    ("back\\\\slash", b"back\\slash"),
    ("café", "café".encode()),
])
def test_raw_escapes(text, expected):
    assert decode_escapes(text) == expected


@pytest.mark.parametrize("text", ["\\t", "\\x1", "\\xzz", "trailing\\", "\\u00e9"])
def test_other_escapes_are_errors(text):
    with pytest.raises(ValueError):
        decode_escapes(text)


@given(st.binary())
def test_escape_bytes_round_trips(data):
    assert decode_escapes(escape_bytes(data)) == data


@pytest.mark.parametrize("text, message", [
    ("covers: A-1\na connect\n", "exactly one 'case:'"),
    ("case: x\na connect\n", "lists no requirement"),
    ("case: x\ncovers: not-an-id\na connect\n", "not a requirement ID"),
    ("case: x\ncovers: A-1\n", "has no steps"),
    ("case: x\ncovers: A-1\na connect\ncase: y\n", "after the first step"),
    ("case: x\ncovers: A-1\nflavour: y\na connect\n", "unknown header"),
    ("case: x\ncovers: A-1\na connect\na dance\n", "unknown step"),
    ("case: x\ncovers: A-1\na connect\na >raw \\q\n", "bad escape"),
    ("case: x\ncovers: A-1\na connect\na <~ (unclosed\n", "bad regular expression"),
    ("case: x\ncovers: A-1\na connect\na > {a|lower}\n", "unknown modifier"),
    ("case: x\ncovers: A-1\na > MSG hi\n", "not connected"),
    ("case: x\ncovers: A-1\na connect\na connect\n", "already connected"),
    ("case: x\ncovers: A-1\na connect\na close\na quiet\n", "not connected"),
    ("case: x\ncovers: A-1\na connect\na keepalive sometimes\n", "keepalive takes"),
    ("case: Bad Name\ncovers: A-1\na connect\n", "case name"),
    ("case: x\ncovers: A-1\nAlice connect\n", "not a header nor a step"),
])
def test_mistakes_are_reported_with_their_line(text, message):
    with pytest.raises(SessionSyntaxError, match=message):
        parse_session(text, source="bad.session")


def test_error_names_file_and_line():
    with pytest.raises(SessionSyntaxError) as error:
        parse_session("case: x\ncovers: A-1\na connect\na dance\n", source="bad.session")
    assert str(error.value).startswith("bad.session:4:")


def test_reconnecting_after_close_is_allowed():
    session = parse_session("case: x\ncovers: A-1\na connect\na close\na register\na <closed\na connect\n")
    assert [type(s) for s in session.steps] == [Connect, Close, Register, ExpectClosed, Connect]


@pytest.mark.parametrize("body, by_hand", [
    ("a connect\na > USER {a}\n", True),
    ("a connect\na >raw PASS x\\n\n", True),
    ("a register\na > USER {b}\n", False),  # a registered client: ALREADY_REGISTERED either way
    ("a connect\na > USERS\n", False),
    ("a register\n", False),
])
def test_open_room_detection(body, by_hand):
    assert parse_session("case: x\ncovers: A-1\n" + body).sends_user_itself is by_hand


def test_session_blocks_are_extracted_from_markdown_with_their_heading_and_line():
    markdown = "# T\n\n### 1.1 First\n\n```session\ncase: a\n```\n\ntext\n```abnf\nx\n```\n" \
               "### 1.2 Second\n```session\ncase: b\ncovers: X-1\n```\n"
    blocks = extract_session_blocks(markdown)
    assert [(b.heading, b.text, b.first_line) for b in blocks] == [
        ("1.1 First", "case: a", 6), ("1.2 Second", "case: b\ncovers: X-1", 15)]


def test_an_unclosed_session_block_is_an_error():
    with pytest.raises(SessionSyntaxError, match="never closed"):
        extract_session_blocks("```session\ncase: a\n")


# -- the server-line grammar and HELLO --------------------------------------------------------

HELLO = "HELLO chat/1 " + " ".join(f"{key}={n}" for n, key in enumerate(HELLO_PARAMETERS[:-1], start=1)) \
    + " password=1"


@pytest.mark.parametrize("line", [
    HELLO, "JOIN alice", "LEAVE a-b_c closed", "MSG bob  hi there  ", "MSG bob café ☕",
    "PM alice bob x", "NAMES a b c", "ENDNAMES 3", "PING !~", "PONG t", "OK PASS",
    "ERR NAME_TAKEN someone has it",
])
def test_well_formed_server_lines_pass(line):
    assert check_server_line(line.encode() + b"\n", 1024, 32) == []


@pytest.mark.parametrize("raw, requirement", [
    (b"JOIN alice\r\n", "FRAME-3"),
    (b"JOIN alice", "FRAME-1"),
    (b"MSG bob \xff\n", "FRAME-1"),
    (b"MSG bob \xe2\x80\xae\n", "GRAM-1"),
    (b"MSG bob    \n", "GRAM-1"),
    (b"ERR NAME_TAKEN\n", "GRAM-1"),
    (b"LEAVE alice bored\n", "GRAM-1"),
    (b"JOIN 9lives\n", "GRAM-1"),
    (b"HELLO chat/2 line-max=1\n", "GRAM-1"),
    (b"MSG bob " + b"x" * 1100 + b"\n", "FRAME-6"),
    (b"NAMES " + b"abc " * 300 + b"abc\n", "USERS-3"),
])
def test_malformed_server_lines_cite_the_rule_they_break(raw, requirement):
    assert requirement in [v.requirement_id for v in check_server_line(raw, 1024, 32)]


def test_hello_is_read_and_unknown_parameters_are_kept_but_harmless():
    hello = parse_hello(HELLO + " x-new=9")
    assert hello.line_max == 1 and hello.password and hello.get("x-new") == 9
    assert hello_order_problems(hello) == []


def test_hello_problems_name_missing_and_misordered_parameters():
    hello = parse_hello("HELLO chat/1 name-max=32 line-max=1024")
    problems = hello_order_problems(hello)
    assert "missing max-clients" in problems
    assert any(problem.startswith("order is name-max line-max") for problem in problems)


def test_not_a_hello():
    with pytest.raises(ValueError):
        parse_hello("HELLO irc/2 line-max=1")


# -- SPEC.md parsing --------------------------------------------------------------------------

MINI_SPEC = """\
# Title

## 1. Language

The few that bind clients ([B-2]) are checked elsewhere.

## 2. Things

- [A-1] The server MUST answer `ERR PASSWORD_REQUIRED`
  on two lines.
- [A-2] It SHOULD be quick.
- [B-1] A server MAY offer TLS.
- [B-2] A client MUST answer PING.
- [B-3] The echo is the reply.

```abnf
- [Z-1] not a requirement: inside a code block, MUST
```
"""


def test_requirements_levels_sections_and_client_rules_are_read_from_the_spec():
    spec = parse_spec(MINI_SPEC)
    assert list(spec.requirements) == ["A-1", "A-2", "B-1", "B-2", "B-3"]
    a1 = spec.requirements["A-1"]
    assert a1.text == "The server MUST answer `ERR PASSWORD_REQUIRED` on two lines."
    assert (a1.level, a1.section, a1.line) == ("MUST", "2. Things", 9)
    assert [spec.requirements[i].level for i in ("A-2", "B-1", "B-3")] == ["SHOULD", "MAY", INFORMATIVE]
    assert spec.must_ids() == ["A-1", "B-2"]
    assert spec.must_ids(server_only=True) == ["A-1"]


def test_a_code_span_is_not_a_key_word():
    assert requirement_level("answer with `ERR PASSWORD_REQUIRED`") == INFORMATIVE
    assert requirement_level("MUST NOT lose") == "MUST"


# -- the Peer's reading, over a socketpair -----------------------------------------------------


@pytest.fixture
def wired_peer():
    """A Peer attached to one end of a socketpair; the test writes to the other."""
    ours, theirs = socket.socketpair()
    peer = Peer("alice", ("socketpair", 0), Transcript(), timeout=1.0).attach(ours)
    yield peer, theirs
    peer.close()
    theirs.close()


def test_lines_split_across_reads_and_several_per_read(wired_peer):
    peer, server = wired_peer
    server.sendall(b"HELLO chat/1 line-max=1024 name-max=32\nJO")
    assert peer.next_event().text.startswith("HELLO ")
    assert peer.hello.line_max == 1024
    pieces = (b"IN a", b"lice\nMSG ", b"alice hi\n")
    writer = threading.Thread(target=lambda: [server.sendall(piece) for piece in pieces])
    writer.start()
    assert peer.expect_line("JOIN alice").raw == b"JOIN alice\n"
    assert peer.expect_line("MSG alice hi").text == "MSG alice hi"
    writer.join()


def test_a_ping_is_answered_and_skipped_unless_manual(wired_peer):
    peer, server = wired_peer
    server.sendall(b"PING k1\nPONG mine\n")
    assert peer.next_event().text == "PONG mine"
    assert server.recv(100) == b"PONG k1\n"
    peer.keepalive_manual = True
    server.sendall(b"PING k2\n")
    assert peer.next_event().text == "PING k2"


def test_outsiders_are_skipped(wired_peer):
    peer, server = wired_peer
    peer.is_outsider = lambda text: text.split(" ")[1] == "stranger"
    server.sendall(b"JOIN stranger\nMSG stranger hi\nJOIN alice\n")
    assert peer.next_event().text == "JOIN alice"


def test_timeout_and_close_are_outcomes_not_exceptions(wired_peer):
    peer, server = wired_peer
    assert peer.next_event(0.05) == TimedOut(0.05)
    server.sendall(b"LEAVE alice quit\n")
    server.close()
    assert isinstance(peer.next_event(), Line)
    closed = peer.next_event()
    assert isinstance(closed, Closed) and closed.how == "EOF"
    peer.expect_closed()


def test_expectation_failures_say_expected_and_actual(wired_peer):
    peer, server = wired_peer
    server.sendall(b"JOIN bob\n")
    with pytest.raises(CheckFailed) as failure:
        peer.expect_line("JOIN alice")
    assert (failure.value.expected, failure.value.actual) == ("'JOIN alice'", "'JOIN bob'")
    with pytest.raises(CheckFailed) as failure:
        peer.expect_error("NAME_TAKEN", timeout=0.05)
    assert failure.value.actual == "timeout after 0.05 s"


def test_stream_rules_are_checked_on_every_line(wired_peer):
    peer, server = wired_peer
    server.sendall(b"JOIN first\r\nHELLO chat/1 line-max=9\nJOIN bob\nLEAVE bob quit\nLEAVE bob quit\n")
    for _ in range(4):
        peer.next_event()
    assert [v.requirement_id for v in peer.violations] == ["FRAME-3", "HELLO-1", "HELLO-1", "LEAVE-4"]


def test_names_reply_is_checked_for_count_and_doubles(wired_peer):
    peer, server = wired_peer
    server.sendall(b"NAMES a b\nNAMES c\nENDNAMES 3\nNAMES a A\nENDNAMES 2\n")
    assert peer.expect_names(["a", "c"]) == ["a", "b", "c"]
    with pytest.raises(CheckFailed, match="listed more than once: A a"):
        peer.expect_names([])


def test_the_transcript_shows_every_byte_with_escapes(wired_peer):
    peer, server = wired_peer
    peer.send_raw(b"MSG \xff\r\n")
    server.sendall(b"ERR BAD_ENCODING no\n")
    peer.next_event()
    text = peer.transcript.format()
    assert "alice  > MSG \\xff\\r\\n" in text
    assert "alice  < ERR BAD_ENCODING no\\n" in text

"""Hostile and malformed input: each bad input has exactly one behaviour.

For every bad input of SPEC.md section 10 the tests check four things: the exact
ERR code ([ERR-2]); that the session goes on (nothing else arrives, and a
barrier, a MSG or a USER afterwards works) or that the connection closes where
the table says; and that another registered client sees nothing ([ERR-3]).

The property tests at the end feed the server random byte streams split at
random points, and check every line every client receives against a small
model of the protocol written from SPEC.md alone (not from chat/protocol.py).
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.limits import Limits
from chat.protocol import LineBuffer, ProtocolError
from chat.server import ChatServer
from tests.conftest import DEADLINE, TEST_LIMITS, LineClient

pytestmark = pytest.mark.timeout(60)

LINE_MAX = TEST_LIMITS.line_max


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def hello_params(line: str) -> dict[str, int]:
    assert line.startswith("HELLO chat/1 "), line
    return {key: int(value) for key, value in
            (field.split("=", 1) for field in line.split(" ")[2:])}


def expect_error(client: LineClient, code: str) -> None:
    """The next line is `ERR <code> <text>` with a non-empty text ([GRAM-1])."""
    line = client.line()
    match = re.fullmatch(r"ERR ([A-Z_]+) (.*)", line)
    assert match and match.group(1) == code and match.group(2).strip(), \
        f"expected ERR {code} <text>, got {line!r}"


@pytest.fixture(scope="module")
def server():
    """One server for the module's many small cases, instead of the conftest
    one per test: stopping a server costs up to 0.1 s, here 200 times over."""
    server = ChatServer("127.0.0.1", 0, TEST_LIMITS).start()
    yield server
    server.shutdown()


@pytest.fixture(autouse=True)
def every_connection_gone_after_each_test():
    """Runs its teardown after `connect` has closed the test's clients: waits
    until the server has finished with them, so the next test finds the room
    empty and every name free."""
    yield
    left = join_readers_except(set())
    assert not left, f"server threads left running: {left}"


@pytest.fixture
def bystander(server, connect) -> LineClient:
    """A registered client that must never see anything of someone else's error."""
    return connect().register("bystander")


def open_victim(connect, bystander: LineClient, registered: bool) -> LineClient:
    victim = connect()
    if registered:
        victim.register("victim")
        bystander.expect("JOIN victim")
    else:
        victim.expect_prefix("HELLO chat/1 ")
    return victim


def assert_session_goes_on(victim: LineClient, bystander: LineClient, registered: bool) -> None:
    """After the one ERR: nothing more for the victim, nothing at all for the
    bystander ([ERR-3]), and the victim's session still works in its state."""
    assert victim.barrier() == [], "more than one reply to one bad line ([CMD-3])"
    assert bystander.barrier() == [], "another client saw something of the error ([ERR-3])"
    if registered:
        victim.send("MSG still here")
        victim.expect("MSG victim still here")
        bystander.expect("MSG victim still here")
    else:
        victim.send("USER victim")
        victim.expect("JOIN victim")
        bystander.expect("JOIN victim")
    assert bystander.barrier() == []


both_states = pytest.mark.parametrize("registered", [False, True], ids=["connected", "registered"])


def test_hello_advertises_the_limits_these_tests_assume(connect):
    params = hello_params(connect().line())
    assert params["line-max"] == LINE_MAX and params["name-max"] == 32


@both_states
def test_empty_lines_get_no_reply_and_have_no_effect(connect, bystander, registered):
    victim = open_victim(connect, bystander, registered)
    victim.send_raw(b"\n\r\n\n\r\n")
    assert_session_goes_on(victim, bystander, registered)  # [FRAME-9]


# ---------------------------------------------------------------------------
# [FRAME-5] Overlong lines
# ---------------------------------------------------------------------------


@both_states
@pytest.mark.parametrize("payload", [
    b"MSG " + b"x" * LINE_MAX + b"\n",
    b"x" * (LINE_MAX + 5000) + b"\n",               # several line-max long, one reply
    b"MSG " + b"x" * (LINE_MAX - 5) + b"\r\n",       # line-max + 1 with the CR counted
    b"MSG " + b"\xff" * LINE_MAX + b"\n",            # [FRAME-11]: length before encoding
    b"MSG " + b"\x1b" * LINE_MAX + b"\n",            # length before characters
], ids=["msg", "many-times-line-max", "crlf-one-over", "bad-utf8-too", "controls-too"])
def test_overlong_line_that_ends(connect, bystander, registered, payload):
    victim = open_victim(connect, bystander, registered)
    victim.send_raw(payload)
    expect_error(victim, "LINE_TOO_LONG")
    assert_session_goes_on(victim, bystander, registered)


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_line_of_exactly_line_max_bytes_is_accepted(connect, bystander, terminator):
    victim = open_victim(connect, bystander, True)
    text = b"y" * (LINE_MAX - len(b"MSG ") - len(terminator))
    victim.send_raw(b"MSG " + text + terminator)
    victim.expect("MSG victim " + text.decode())
    bystander.expect("MSG victim " + text.decode())
    # One byte more is one byte too many.
    victim.send_raw(b"MSG " + text + b"y" + terminator)
    expect_error(victim, "LINE_TOO_LONG")
    assert_session_goes_on(victim, bystander, True)


@both_states
def test_a_line_that_never_ends_is_refused_before_any_lf(connect, bystander, registered):
    victim = open_victim(connect, bystander, registered)
    victim.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    trickle = b"MSG " + b"z" * (LINE_MAX - 4)
    assert len(trickle) == LINE_MAX
    for start in range(0, LINE_MAX, 64):
        victim.send_raw(trickle[start:start + 64])
    # line-max bytes and no LF: the ERR comes now, not at the LF ([FRAME-5]).
    expect_error(victim, "LINE_TOO_LONG")
    # The rest of that line, however long, is discarded without another reply.
    for _ in range(5):
        victim.send_raw(b"MSG " + b"z" * (LINE_MAX - 4))
    victim.send_raw(b"still the same line\n")
    assert_session_goes_on(victim, bystander, registered)


# ---------------------------------------------------------------------------
# [FRAME-7] Invalid UTF-8
# ---------------------------------------------------------------------------


@both_states
@pytest.mark.parametrize("payload", [
    b"MSG \x80\n",                       # lone continuation byte
    b"MSG abc\xbf def\n",                # continuation byte after ASCII
    b"MSG \xe2\x82\n",                   # truncated three-byte sequence
    b"MSG caf\xc3\n",                    # truncated at the end of the line
    b"MSG \xc3\r\n",                     # truncated before CR LF
    b"MSG \xc0\xaf\n",                   # overlong encoding of '/'
    b"MSG \xe0\x80\xaf\n",               # three-byte overlong
    b"MSG \xed\xa0\x80\n",               # UTF-16 surrogate U+D800
    b"MSG \xed\xbf\xbf\n",               # surrogate U+DFFF
    b"MSG \xf4\x90\x80\x80\n",           # beyond U+10FFFF
    b"MSG \xff\xfe\n",                   # bytes that never occur in UTF-8
    b"M\xffG hi\n",                      # in the verb: encoding before verb ([FRAME-11])
    b"USER \xc3\n",                      # in a name
    b"MSG \x00\xff\n",                   # encoding before characters ([FRAME-11])
], ids=["lone-continuation", "stray-continuation", "truncated", "truncated-at-end",
        "truncated-before-crlf", "overlong-c0af", "overlong-e080af", "surrogate-d800",
        "surrogate-dfff", "beyond-10ffff", "ff-fe", "in-verb", "in-name", "before-nul"])
def test_invalid_utf8_is_bad_encoding(connect, bystander, registered, payload):
    victim = open_victim(connect, bystander, registered)
    victim.send_raw(payload)
    expect_error(victim, "BAD_ENCODING")
    assert_session_goes_on(victim, bystander, registered)


# ---------------------------------------------------------------------------
# [FRAME-8] Control characters and the characters that fake lines or senders
# ---------------------------------------------------------------------------


@both_states
@pytest.mark.parametrize("payload", [
    b"MSG a\x00b\n",                         # NUL
    b"MSG \x01\n",                           # SOH
    b"MSG tab\there\n",                      # HT is a control character too
    b"MSG \x07bell\n",                       # BEL
    b"MSG a\x0bb\x0cc\n",                    # VT, FF
    b"MSG \x1b[2J\x1b[H\n",                  # ESC: clear the screen
    b"MSG \x1b]0;owned\x07\n",               # ESC: set the terminal title
    b"MSG \x1b[31mred\n",                    # ESC: colour
    b"MSG hi\rMSG bob fake\n",               # CR inside a line
    b"MSG hi\r\r\n",                         # a second CR before the CR LF
    b"MSG \x7f\n",                           # DEL
    "MSG \u0080\n".encode(),                 # C1: first
    "MSG \u0085next line\n".encode(),        # C1: NEL
    "MSG \u009b2J\n".encode(),               # C1: CSI, an ESC [ in one character
    "MSG \u009f\n".encode(),                 # C1: last
    "MSG \u202eevil\n".encode(),             # RIGHT-TO-LEFT OVERRIDE
    "MSG \u202a\n".encode(),                 # LEFT-TO-RIGHT EMBEDDING
    "MSG \u2066\n".encode(),                 # LEFT-TO-RIGHT ISOLATE
    "MSG \u2069\n".encode(),                 # POP DIRECTIONAL ISOLATE
    "MSG one\u2028two\n".encode(),           # LINE SEPARATOR
    "MSG one\u2029two\n".encode(),           # PARAGRAPH SEPARATOR
    b"USER bob\x00\n",                       # in a name
    b"FOO \x1b\n",                           # characters before verb ([FRAME-11])
    b"MSG\x00\n",                            # characters before syntax
], ids=["nul", "soh", "tab", "bel", "vt-ff", "esc-clear", "esc-title", "esc-colour",
        "cr-inside", "double-cr", "del", "c1-80", "c1-nel", "c1-csi", "c1-9f", "bidi-202e",
        "bidi-202a", "bidi-2066", "bidi-2069", "u2028", "u2029", "in-name", "before-verb",
        "before-syntax"])
def test_control_characters_are_bad_character(connect, bystander, registered, payload):
    victim = open_victim(connect, bystander, registered)
    victim.send_raw(payload)
    expect_error(victim, "BAD_CHARACTER")
    assert_session_goes_on(victim, bystander, registered)


# ---------------------------------------------------------------------------
# [CMD-2] Unknown commands and [GRAM-2] bad syntax: the same in both states
# ---------------------------------------------------------------------------


@both_states
@pytest.mark.parametrize("line", [
    "msg hi", "Msg hi", "user bob", "users", "ping x", "leave",   # verbs are case-sensitive
    "HELLO", "QUIT", "JOIN #room", "WHOIS bob", "PRIVMSG bob :hi", "NAMES",
    " MSG hi",                 # a leading space: the verb is empty
    " ",                       # a line of one space is not an empty line
    "MSG\u00a0hi",             # NO-BREAK SPACE is not the separator
    "USERSX", "LEAVEX", "MSGhi",
], ids=lambda line: repr(line))
def test_unknown_commands(connect, bystander, registered, line):
    victim = open_victim(connect, bystander, registered)
    victim.send(line)
    expect_error(victim, "UNKNOWN_COMMAND")
    assert_session_goes_on(victim, bystander, registered)


@both_states
@pytest.mark.parametrize("line", [
    "MSG", "MSG ", "MSG    ",                  # missing, empty and all-space text
    "PM", "PM bystander", "PM bystander ", "PM bystander    ",
    "PM  bystander hi",                        # two spaces: an empty name
    "PM 9lives hi", "PM " + "n" * 33 + " hi",  # not a name
    "USERS now", "USERS ",                     # an extra field
    "LEAVE now", "LEAVE ",                     # an extra field: no LEAVE, no close
    "PING", "PING ", "PING a b", "PING " + "t" * 65,
    "PONG", "PONG ", "PONG a b",
    "PASS", "PASS ", "PASS   ",                # syntax before state for PASS
    "USER",                                    # ... and for USER ([STATE-1])
], ids=lambda line: repr(line))
def test_missing_or_extra_fields_are_bad_syntax(connect, bystander, registered, line):
    victim = open_victim(connect, bystander, registered)
    victim.send(line)
    expect_error(victim, "BAD_SYNTAX")
    assert_session_goes_on(victim, bystander, registered)


def test_the_longest_ping_token_is_fine(connect, bystander):
    victim = open_victim(connect, bystander, False)
    victim.send("PING " + "t" * 64)
    victim.expect("PONG " + "t" * 64)
    assert_session_goes_on(victim, bystander, False)


# ---------------------------------------------------------------------------
# Names ([NAME-1], [NAME-2]) and the state table ([STATE-1])
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "",                          # empty
    "n" * 33,                    # one too long
    "a b", "alice ", " alice",   # spaces
    "9lives", "_x", "-x",        # not starting with a letter
    "\u0430lice",                # Cyrillic a: a look-alike of alice
    "caf\u00e9", "\u00e5ngstr\u00f6m",
    "a.b", "a@b", "a!", "a:b", "#room",
], ids=lambda name: repr(name))
def test_bad_names(connect, bystander, name):
    victim = open_victim(connect, bystander, False)
    victim.send(f"USER {name}")
    expect_error(victim, "BAD_NAME")
    assert_session_goes_on(victim, bystander, False)


def test_a_name_of_exactly_name_max_characters_is_fine(connect, bystander):
    victim = connect()
    assert hello_params(victim.line())["name-max"] == 32
    name = "N" + "n" * 31
    victim.send(f"USER {name}")
    victim.expect(f"JOIN {name}")
    bystander.expect(f"JOIN {name}")


@pytest.mark.parametrize("claim", ["bystander", "BYSTANDER", "Bystander", "bYsTaNdEr"])
def test_a_name_differing_only_in_case_is_taken_and_the_holder_is_untouched(
        connect, bystander, claim):
    victim = open_victim(connect, bystander, False)
    victim.send(f"USER {claim}")
    expect_error(victim, "NAME_TAKEN")
    assert_session_goes_on(victim, bystander, False)
    # [NAME-2]: the holder keeps its name, exactly as it registered it.
    bystander.send("MSG still me")
    bystander.expect("MSG bystander still me")
    victim.expect("MSG bystander still me")


@pytest.mark.parametrize("line", ["MSG hi", "PM bystander hi", "USERS"])
def test_commands_before_user_are_not_registered(connect, bystander, line):
    victim = open_victim(connect, bystander, False)
    victim.send(line)
    expect_error(victim, "NOT_REGISTERED")
    assert_session_goes_on(victim, bystander, False)


@pytest.mark.parametrize("line", [
    "USER victim", "USER VICTIM", "USER other", "USER bystander",
    "USER 9lives",             # [STATE-1]: ALREADY_REGISTERED before BAD_NAME
    "USER ",                   # ... and before BAD_NAME for an empty name
    "PASS secret",
])
def test_a_second_user_is_already_registered_and_the_name_stays(connect, bystander, line):
    victim = open_victim(connect, bystander, True)
    victim.send(line)
    expect_error(victim, "ALREADY_REGISTERED")
    assert_session_goes_on(victim, bystander, True)  # the MSG still says "victim"


def test_pm_to_nobody_is_no_such_user(connect, bystander):
    victim = open_victim(connect, bystander, True)
    victim.send("PM nobody hi")
    expect_error(victim, "NO_SUCH_USER")
    assert_session_goes_on(victim, bystander, True)


def test_an_unregistered_client_sees_no_broadcast(connect, bystander):
    lurker = open_victim(connect, bystander, False)
    bystander.send("MSG secret")
    bystander.expect("MSG bystander secret")
    assert lurker.barrier() == []  # [USER-3]


def test_lower_case_leave_does_not_close_and_leave_with_a_field_does_not_either(connect, bystander):
    victim = open_victim(connect, bystander, True)
    victim.send("leave")
    expect_error(victim, "UNKNOWN_COMMAND")
    victim.send("LEAVE now")
    expect_error(victim, "BAD_SYNTAX")
    assert victim.barrier() == []   # still open
    assert bystander.barrier() == []
    victim.send("LEAVE")
    victim.expect("LEAVE victim quit")
    victim.expect_closed()
    bystander.expect("LEAVE victim quit")


def test_lines_after_leave_have_no_effect(connect, bystander):
    victim = open_victim(connect, bystander, True)
    victim.send_raw(b"LEAVE\nMSG after leave\nUSERS\nPING late\n")
    victim.expect("LEAVE victim quit")
    victim.expect_closed()                      # [STATE-2]: nothing more, not even PONG
    assert bystander.barrier() == ["LEAVE victim quit"]


# ---------------------------------------------------------------------------
# [SEC-2] Text can neither inject a line nor pretend to come from someone else
# ---------------------------------------------------------------------------


def test_text_cannot_inject_a_second_line(connect, bystander):
    victim = open_victim(connect, bystander, True)
    victim.send_raw(b"MSG hi\rMSG bob fake\n")
    expect_error(victim, "BAD_CHARACTER")
    # CR LF ends the first line, which is then an ordinary MSG; the second has a NUL.
    victim.send_raw(b"MSG hi\r\nMSG\x00bob fake\n")
    victim.expect("MSG victim hi")
    expect_error(victim, "BAD_CHARACTER")
    victim.send_raw("MSG hi\u2028MSG bob fake\n".encode())
    expect_error(victim, "BAD_CHARACTER")
    victim.send_raw(b"PM bystander hi\rPM bob x\n")
    expect_error(victim, "BAD_CHARACTER")
    assert victim.barrier() == []
    assert bystander.barrier() == ["MSG victim hi"]


@pytest.mark.parametrize("text", [
    "bob: hi",
    "MSG bob fake",
    "<bob> hi",
    "PM bob victim secret",
    "   leading, double  and trailing spaces   ",
    "\u00a0",                              # NO-BREAK SPACE alone is visible text
    "caf\u00e9 \u05e9\u05dc\u05d5\u05dd \U0001f600 \u200d",
], ids=["colon", "fake-msg", "angle", "fake-pm", "spaces", "nbsp", "unicode"])
def test_text_arrives_unchanged_and_under_the_senders_name(connect, bystander, text):
    victim = open_victim(connect, bystander, True)
    victim.send(f"MSG {text}")
    victim.expect(f"MSG victim {text}")
    bystander.expect(f"MSG victim {text}")
    victim.send(f"PM bystander {text}")
    victim.expect(f"PM victim bystander {text}")
    bystander.expect(f"PM victim bystander {text}")
    assert bystander.barrier() == []


def test_a_pm_reaches_no_third_party(connect, bystander):
    victim = open_victim(connect, bystander, True)
    carol = connect().register("carol")
    for client in (victim, bystander):
        client.expect("JOIN carol")
    victim.send("PM bystander for you only")
    victim.expect("PM victim bystander for you only")
    bystander.expect("PM victim bystander for you only")
    assert carol.barrier() == []


# ---------------------------------------------------------------------------
# The input backlog ([LIMIT-8] to [LIMIT-10]): a burst that costs nothing
# ---------------------------------------------------------------------------

#: The limits of issue 10's report: the defaults, with the timers off so that
#: only the input bound can free a slot (the registration timeout would free
#: it after 30 s, and hide a lock-out shorter than that).
BURST_LIMITS = Limits(register_timeout=0, ping_interval=0)


def send_and_abandon(address: tuple[str, int], data: bytes, reset: bool) -> None:
    """Connect, read HELLO, send `data`, and close (FIN) or reset (RST).

    HELLO is read first, as nc would print it: closing a socket with unread
    bytes makes the kernel reset the connection instead of closing it."""
    client = LineClient(address)
    client.expect_prefix("HELLO chat/1 ")
    client.send_raw(data)
    if reset:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("registered", [False, True], ids=["unregistered", "registered"])
@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
def test_a_burst_of_abandoned_floods_does_not_lock_the_address_out(make_server, log_records,
                                                                  reset, registered):
    """Issue 10: from one address, max-per-address times: connect, send 1,000
    empty lines, close (or reset). Each connection ends within the bound the
    limits give ([LIMIT-9]: inbound-max / flood-rate seconds; here it is an
    excess flood, [LIMIT-8], or a reset, [LIMIT-10], so at once), and then a
    new connection from that address gets HELLO, not TOO_MANY_CONNECTIONS.
    Before the bound, the address was locked out for 98 s."""
    server = make_server(BURST_LIMITS)
    limits = server.limits
    bound = limits.inbound_max / limits.flood_rate  # [LIMIT-9]
    for index in range(limits.max_per_address):
        user = f"USER flooder{index}\n".encode() if registered else b""
        send_and_abandon(server.address, user + b"\n" * 1000, reset)
    ends = log_records.wait_for("disconnect", limits.max_per_address, timeout=bound + DEADLINE)
    reasons = {record.fields["reason"] for record in ends}
    # A reset may reach the server before the lines, which are then gone with it.
    assert reasons <= ({"flood", "closed"} if reset else {"flood"}), reasons
    newcomer = LineClient(server.address)
    newcomer.expect_prefix("HELLO chat/1 ")  # not ERR TOO_MANY_CONNECTIONS
    newcomer.close()


@pytest.mark.timeout(60)
def test_abandoned_lines_within_the_bound_hold_the_slot_no_longer_than_the_bound(make_server, log_records):
    """[LIMIT-9]: lines within inbound-max, then a close: they are handled at
    the flood rate (empty lines: no reply, so no reset comes back), and each
    connection ends within inbound-max / flood-rate seconds of its close."""
    server = make_server(Limits(max_per_address=3, flood_rate=50, flood_burst=5, inbound_max=40,
                                register_timeout=0, ping_interval=0))
    limits = server.limits
    for _ in range(limits.max_per_address):
        send_and_abandon(server.address, b"\n" * (limits.flood_burst + limits.inbound_max), reset=False)
    ends = log_records.wait_for("disconnect", limits.max_per_address,
                                timeout=limits.inbound_max / limits.flood_rate + DEADLINE)
    assert {record.fields["reason"] for record in ends} == {"closed"}  # not an excess flood
    server.summarize(1.0)
    summary, = log_records.events("summary")
    sent = limits.max_per_address * (limits.flood_burst + limits.inbound_max)
    assert summary.fields["lines_in_per_s"] == sent  # every line was handled ([FRAME-10])
    newcomer = LineClient(server.address)
    newcomer.expect_prefix("HELLO chat/1 ")
    newcomer.close()


def test_a_paste_of_a_hundred_lines_arrives_in_full_and_in_order(make_server):
    """[LIMIT-8] keeps [LIMIT-4]'s promise: a person pasting a long text into
    nc sees it arrive slowly, all of it. 100 lines in one write, with the
    default inbound-max (200) and a flood rate that keeps the test short."""
    server = make_server(Limits(max_per_address=0, flood_rate=100, register_timeout=0,
                                ping_interval=0))
    reader = LineClient(server.address).register("reader")
    paster = LineClient(server.address).register("paster")
    reader.expect("JOIN paster")
    paster.send_raw(b"".join(b"MSG line %d of the paste\n" % i for i in range(100)))
    for i in range(100):
        reader.expect(f"MSG paster line {i} of the paste")
    assert paster.barrier() == [f"MSG paster line {i} of the paste" for i in range(100)]
    for client in (reader, paster):
        client.close()


def test_an_excess_flood_is_dropped_and_the_others_see_leave_flood(make_server):
    server = make_server(Limits(max_per_address=0, flood_rate=10, flood_burst=5, inbound_max=20,
                                register_timeout=0, ping_interval=0))
    bystander = LineClient(server.address).register("bystander")
    flooder = LineClient(server.address).register("flooder")
    bystander.expect("JOIN flooder")
    flooder.send_raw(b"PING x\n" * 100)
    lines = []
    while not (line := flooder.line()).startswith("ERR "):
        lines.append(line)
    assert lines == ["PONG x"] * len(lines) and len(lines) < 100 - 20
    assert re.fullmatch(r"ERR EXCESS_FLOOD .+", line), line
    flooder.expect_closed()
    assert bystander.barrier() == ["LEAVE flooder flood"]
    for client in (bystander, flooder):
        client.close()


# ---------------------------------------------------------------------------
# The errors that close ([ERR-2]): each closes exactly its own connection
# ---------------------------------------------------------------------------


def test_wrong_password_closes_only_that_connection(make_server):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=0,
                                ping_interval=0, password="s3cret"))
    bystander = LineClient(server.address)
    bystander.expect_prefix("HELLO chat/1 ")
    bystander.send("PASS s3cret")
    bystander.expect("OK PASS")
    bystander.send("USER bystander")
    bystander.expect("JOIN bystander")
    guesser = LineClient(server.address)
    assert hello_params(guesser.line())["password"] == 1
    guesser.send("USER guesser")
    expect_error(guesser, "PASSWORD_REQUIRED")       # does not close
    # A wrong guess and a USER in one write: the USER comes after a closing
    # ERR and must have no effect ([STATE-2]).
    guesser.send_raw(b"PASS s3cre\nUSER guesser\nPASS s3cret\n")
    expect_error(guesser, "BAD_PASSWORD")
    guesser.expect_closed()
    assert bystander.barrier() == []
    for client in (bystander, guesser):
        client.close()


def test_connections_beyond_max_clients_are_refused_and_the_slot_comes_back(make_server):
    server = make_server(Limits(max_clients=2, max_per_address=0, flood_rate=0,
                                register_timeout=0, ping_interval=0))
    bystander = LineClient(server.address).register("bystander")
    victim = LineClient(server.address).register("victim")
    bystander.expect("JOIN victim")
    extra = LineClient(server.address)
    expect_error(extra, "SERVER_FULL")  # instead of HELLO ([HELLO-1])
    extra.expect_closed()
    victim.send("LEAVE")
    victim.expect("LEAVE victim quit")
    victim.expect_closed()
    # [LIMIT-3]: seen closed, so the slot is free at once.
    again = LineClient(server.address).register("again")
    assert bystander.barrier() == ["LEAVE victim quit", "JOIN again"]
    for client in (bystander, victim, extra, again):
        client.close()


def test_connections_beyond_max_per_address_are_refused(make_server):
    server = make_server(Limits(max_per_address=2, flood_rate=0, register_timeout=0,
                                ping_interval=0))
    bystander = LineClient(server.address).register("bystander")
    second = LineClient(server.address)
    second.expect_prefix("HELLO chat/1 ")
    extra = LineClient(server.address)
    expect_error(extra, "TOO_MANY_CONNECTIONS")
    extra.expect_closed()
    second.send("LEAVE")       # unregistered: closes with no reply ([LEAVE-2])
    second.expect_closed()
    again = LineClient(server.address)
    again.expect_prefix("HELLO chat/1 ")
    assert bystander.barrier() == []
    for client in (bystander, second, extra, again):
        client.close()


@pytest.mark.timeout(20)
def test_a_client_that_never_registers_is_timed_out_alone(make_server):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=1,
                                ping_interval=0))
    connecting = time.monotonic()
    squatter = LineClient(server.address)
    squatter.expect_prefix("HELLO chat/1 ")
    bystander = LineClient(server.address).register("bystander")
    expect_error(squatter, "REGISTRATION_TIMEOUT")
    waited = time.monotonic() - connecting
    squatter.expect_closed()
    assert waited >= 1.0, f"timed out after {waited:.2f} s, before the advertised 1 s ([KEEP-4])"
    assert bystander.barrier() == []
    for client in (bystander, squatter):
        client.close()


@pytest.mark.timeout(20)
def test_a_client_that_never_answers_ping_is_timed_out_alone(make_server):
    server = make_server(Limits(max_per_address=0, flood_rate=0, register_timeout=0,
                                ping_interval=1, ping_timeout=1))
    bystander = LineClient(server.address).register("bystander")
    seen: list[str] = []

    def keep_alive() -> None:
        """The bystander answers its own PINGs until the mute client has left."""
        end = time.monotonic() + DEADLINE
        try:
            while "LEAVE mute timeout" not in seen and time.monotonic() < end:
                line = bystander.line()
                if line.startswith("PING "):
                    bystander.send("PONG " + line[5:])
                else:
                    seen.append(line)
        except (OSError, EOFError) as error:
            seen.append(repr(error))

    keeper = threading.Thread(target=keep_alive, name="keep-alive")
    keeper.start()
    try:
        mute = LineClient(server.address)
        mute.expect_prefix("HELLO chat/1 ")
        last_heard = time.monotonic()       # the server hears the USER after this
        mute.send("USER mute")
        mute.expect("JOIN mute")
        mute.expect_prefix("PING ")
        pinged = time.monotonic() - last_heard
        expect_error(mute, "PING_TIMEOUT")
        dropped = time.monotonic() - last_heard
        mute.expect_closed()
    finally:
        keeper.join(DEADLINE + 1)
    assert seen == ["JOIN mute", "LEAVE mute timeout"]
    # [KEEP-4]: never before the advertised seconds.
    assert pinged >= 1.0 and dropped >= 2.0, (pinged, dropped)
    for client in (bystander, mute):
        client.close()


# ---------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------

# A model of the server written from SPEC.md, for the property test below.
# TOO_LONG stands for a line refused by [FRAME-5].
TOO_LONG = object()
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAME = re.compile("[A-Za-z][A-Za-z0-9_-]{0,31}")
_TOKEN = re.compile("[\x21-\x7e]{1,64}")


def frame(stream: bytes, line_max: int) -> list[object]:
    """[FRAME-5], [FRAME-10]: the lines of a whole stream that is then closed."""
    *complete, tail = stream.split(b"\n")
    items: list[object] = [TOO_LONG if len(line) + 1 > line_max else line for line in complete]
    if len(tail) >= line_max:
        items.append(TOO_LONG)  # refused without its LF; the rest is discarded
    return items


def _is_text(text: str) -> bool:
    return text.strip(" ") != ""


class Model:
    """What a client sending `stream` then closing must see, and what the
    registered `members` (who stay) must see of it."""

    def __init__(self, stream: bytes, line_max: int, members: list[str]) -> None:
        self.members = members
        self.name: str | None = None
        self.replies: list[str] = []                  # lines to the fuzzer, in order
        self.seen_by: dict[str, list[str]] = {m: [] for m in members}  # its lines, to each member
        self.left: str | None = None                  # its LEAVE reason
        for item in frame(stream, line_max):
            if self.left:
                break
            self._line(item)
        if self.name and not self.left:
            self.left = "closed"
            self._broadcast(f"LEAVE {self.name} closed", to_self=False)

    def _broadcast(self, line: str, to_self: bool = True) -> None:
        if to_self:
            self.replies.append(line)
        for member in self.members:
            self.seen_by[member].append(line)

    def _err(self, code: str) -> None:
        self.replies.append(f"ERR {code}")

    def _member(self, name: str) -> str | None:
        everyone = self.members + ([self.name] if self.name else [])
        return next((m for m in everyone if m.lower() == name.lower()), None)

    def _line(self, item: object) -> None:
        if item is TOO_LONG:
            return self._err("LINE_TOO_LONG")
        line = item[:-1] if item.endswith(b"\r") else item
        if not line:
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._err("BAD_ENCODING")
        if _CONTROL.search(text):
            return self._err("BAD_CHARACTER")
        verb, space, rest = text.partition(" ")
        rest = rest if space else None
        registered = self.name is not None
        if verb == "PING" or verb == "PONG":
            if rest is None or not _TOKEN.fullmatch(rest):
                return self._err("BAD_SYNTAX")
            if verb == "PING":
                self.replies.append(f"PONG {rest}")
        elif verb == "PASS":
            if rest is None or not _is_text(rest):
                return self._err("BAD_SYNTAX")
            if registered:
                return self._err("ALREADY_REGISTERED")
            self.replies.append("OK PASS")
        elif verb == "USER":  # [STATE-1]: BAD_SYNTAX, ALREADY_REGISTERED, BAD_NAME, NAME_TAKEN
            if rest is None:
                return self._err("BAD_SYNTAX")
            if registered:
                return self._err("ALREADY_REGISTERED")
            if not _NAME.fullmatch(rest):
                return self._err("BAD_NAME")
            if self._member(rest):
                return self._err("NAME_TAKEN")
            self.name = rest
            self._broadcast(f"JOIN {rest}")
        elif verb == "MSG":
            if rest is None or not _is_text(rest):
                return self._err("BAD_SYNTAX")
            if not registered:
                return self._err("NOT_REGISTERED")
            self._broadcast(f"MSG {self.name} {rest}")
        elif verb == "PM":
            name, space, text = (rest or "").partition(" ")
            if not space or not _NAME.fullmatch(name) or not _is_text(text):
                return self._err("BAD_SYNTAX")
            if not registered:
                return self._err("NOT_REGISTERED")
            recipient = self._member(name)
            if recipient is None:
                return self._err("NO_SUCH_USER")
            line = f"PM {self.name} {recipient} {text}"
            self.replies.append(line)
            if recipient != self.name:
                self.seen_by[recipient].append(line)
        elif verb == "USERS":
            if rest is not None:
                return self._err("BAD_SYNTAX")
            if not registered:
                return self._err("NOT_REGISTERED")
            names = sorted(self.members + [self.name])
            self.replies += ["NAMES " + " ".join(names), f"ENDNAMES {len(names)}"]
        elif verb == "LEAVE":
            if rest is not None:
                return self._err("BAD_SYNTAX")
            if registered:
                self._broadcast(f"LEAVE {self.name} quit")
                self.left = "quit"
            else:
                self.left = "unregistered"
        else:
            return self._err("UNKNOWN_COMMAND")
        return None


def normalize(line: str) -> str:
    """ERR text is for people ([ERR-1]); NAMES order is not specified ([USERS-3])."""
    if line.startswith("ERR "):
        match = re.fullmatch(r"ERR ([A-Z_]+) (.*)", line)
        assert match and match.group(2).strip(), f"malformed ERR line {line!r}"
        return f"ERR {match.group(1)}"
    if line.startswith("NAMES "):
        return "NAMES " + " ".join(sorted(line.split(" ")[1:]))
    return line


_PIECES = [
    b"USER fuzz\n", b"USER Fuzz\n", b"USER alice\n", b"USER BOB\n", b"USER 9lives\n", b"USER \n",
    b"USER\n", b"USER a b\n", b"USER \xd0\xb0lice\n", b"USER " + b"n" * 33 + b"\n",
    b"MSG hello\n", b"MSG bob: hi\n", b"MSG   \n", b"MSG\n", b"MSG hi\rMSG bob fake\n",
    b"MSG  spaced  out \r\n", b"MSG caf\xc3\xa9\n", b"MSG \xc0\xaf\n", b"MSG \xed\xa0\x80\n",
    b"MSG \x1b[2J\n", b"MSG \xe2\x80\xae\n", b"MSG \xc2\x85\n", b"MSG \xe2\x80\xa8\n",
    b"PM alice psst\n", b"PM BOB hi\n", b"PM fuzz me\n", b"PM nobody x\n", b"PM alice\n",
    b"PM  alice x\n", b"USERS\n", b"USERS x\n", b"PING tok\n", b"PING\n", b"PING a b\n",
    b"PONG x\n", b"PASS pw\n", b"PASS\n", b"LEAVE\n", b"LEAVE now\n", b"leave\n", b"msg hi\n",
    b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\xff",
]


#: Characters that make text interesting: harmless ones, names, and every kind
#: of character [FRAME-8] refuses.
_HAZARDS = ["a", "Z", "0", " ", "  ", "-", "_", ":", "alice ", "BOB ", "fuzz ", "nobody ",
            "\u00e9", "\u00a0", "\u0430", "\U0001f600", "\ufeff", "\u200f", "\x00", "\t", "\r",
            "\x1b", "\x1b[2J", "\x7f", "\u0085", "\u009b", "\u202e", "\u2028", "\u2029", "\u2069"]
_VERBS = ["MSG", "PM", "USER", "USERS", "PING", "PONG", "PASS", "LEAVE", "msg", "User", "FOO", ""]


@st.composite
def fuzz_streams(draw) -> tuple[bytes, list[int]]:
    """A byte stream and the points at which to split it into sendall calls."""
    line = st.builds(
        lambda verb, separator, text, eol: (verb + separator + text).encode() + eol,
        st.sampled_from(_VERBS), st.sampled_from(["", " ", " ", "  "]),
        st.lists(st.sampled_from(_HAZARDS), max_size=6).map("".join),
        st.sampled_from([b"\n", b"\r\n"]))
    piece = st.one_of(
        line, line, line,          # weighted: mostly lines that nearly make sense
        st.sampled_from(_PIECES),
        st.binary(max_size=40),
        st.text(max_size=20).map(lambda text: b"MSG " + text.encode() + b"\n"),
        st.builds(lambda unit, count: unit * count,
                  st.sampled_from([b"x", b" ", b"\xff", b"\r", b"\x00", b"\xc3\xa9"]),
                  st.integers(1, LINE_MAX + 100)),
        st.integers(LINE_MAX - 3, LINE_MAX + 1).map(
            lambda size: b"MSG " + b"y" * (size - 5) + b"\n"),  # around the limit
    )
    stream = draw(st.one_of(
        st.binary(max_size=3000),
        st.lists(piece, max_size=20).map(b"".join),
        st.lists(piece, max_size=20).map(b"".join),
    ))
    if draw(st.booleans()):
        stream = b"USER fuzz\n" + stream
    stream += draw(st.sampled_from([b"", b"", b"LEAVE\n", b"LEAVE\r\n"]))
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=8, unique=True))
    return stream, sorted(cuts)


def server_readers() -> dict[str, threading.Thread]:
    """The reference server's reader threads (one per connection), by name."""
    return {t.name: t for t in threading.enumerate() if t.name.startswith("client-")}


def join_readers_except(keep: set[str], deadline: float = DEADLINE) -> list[threading.Thread]:
    """Wait (with a deadline) for every reader thread but `keep` to end; return
    those still alive."""
    end = time.monotonic() + deadline
    for name, thread in server_readers().items():
        if name not in keep:
            thread.join(max(0.0, end - time.monotonic()))
    return [t for name, t in server_readers().items() if name not in keep]


def broadcasts(lines: list[str]) -> list[str]:
    return [line for line in lines if line.split(" ", 1)[0] in ("JOIN", "LEAVE", "MSG")]


@pytest.mark.timeout(120)
def test_random_byte_streams_do_not_disturb_the_room(caplog):
    """One client sends random bytes split at random points; two registered
    clients chat meanwhile. Every client must see exactly what the model says:
    the fuzzer every reply in order, the others their own chat plus whatever
    the fuzzer legitimately broadcast or sent them, and nothing else."""
    caplog.set_level(logging.WARNING, logger="chat.server")
    server = ChatServer("127.0.0.1", 0, TEST_LIMITS).start()
    alice = LineClient(server.address).register("alice")
    bob = LineClient(server.address).register("bob")
    alice.expect("JOIN bob")
    chatters = {"alice": alice, "bob": bob}
    steady = set(server_readers())
    assert len(steady) == 2
    examples = [0]

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(fuzz_streams())
    def example(case: tuple[bytes, list[int]]) -> None:
        stream, cuts = case
        model = Model(stream, LINE_MAX, list(chatters))
        examples[0] += 1
        number = examples[0]
        fuzzer = LineClient(server.address)
        probe = None
        texts = [f"{number}-{i}" for i in range(3)]
        sent = {name: [f"MSG {name} {text}" for text in texts] for name in chatters}
        failures: list[BaseException] = []

        def chat(name: str) -> None:
            try:
                for text in texts:
                    chatters[name].send(f"MSG {text}")
            except BaseException as error:  # reported by the test thread
                failures.append(error)

        threads = [threading.Thread(target=chat, args=(name,), name=f"chat-{name}")
                   for name in chatters]
        ok = False
        try:
            fuzzer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for thread in threads:
                thread.start()
            for start, end in zip([0] + cuts, cuts + [len(stream)], strict=True):
                try:
                    fuzzer.send_raw(stream[start:end])
                except OSError:
                    break  # closed after LEAVE and its grace: the rest is moot
            fuzzer.sock.shutdown(socket.SHUT_WR)
            received = []
            try:
                while True:
                    received.append(fuzzer.line())
            except EOFError:
                pass
            for thread in threads:
                thread.join(DEADLINE)
            assert not failures, failures

            # The fuzzer: HELLO, then exactly the model's replies, plus the
            # others' chat while (and only while) it was registered.
            assert received and received[0].startswith("HELLO chat/1 ")
            others = tuple(f"MSG {name} " for name in chatters)
            own = [normalize(line) for line in received[1:] if not line.startswith(others)]
            assert own == model.replies

            # Every MSG of the chatters applied, then everyone's view collected.
            seen = {name: [] for name in chatters}
            for name in ("alice", "bob", "alice"):
                seen[name] += chatters[name].barrier()
            room = broadcasts(seen["alice"])
            assert broadcasts(seen["bob"]) == room, "two members saw different orders ([ORDER-2])"
            for name in chatters:
                mine = [line for line in seen[name] if line.startswith(others)]
                rest = [line for line in seen[name] if not line.startswith(others)]
                for sender in chatters:
                    assert [line for line in mine if line.startswith(f"MSG {sender} ")] == sent[sender]
                assert rest == model.seen_by[name], f"{name} saw the wrong lines of the fuzzer"
            # While registered, the fuzzer saw the room's order ([ORDER-2], [USER-3]).
            if model.name:
                first = room.index(f"JOIN {model.name}")
                last = room.index(f"LEAVE {model.name} {model.left}")
                expected_room = room[first:last + (model.left == "quit")]
            else:
                expected_room = []
            assert broadcasts(received[1:]) == expected_room

            # The server still serves: a new client registers and leaves.
            probe = LineClient(server.address).register(f"probe{number}")
            probe.send("LEAVE")
            probe.expect(f"LEAVE probe{number} quit")
            probe.expect_closed()
            for client in chatters.values():
                assert client.barrier() == [f"JOIN probe{number}", f"LEAVE probe{number} quit"]
            ok = True
        finally:
            for thread in threads:
                if thread.ident is not None:
                    thread.join(DEADLINE)
            fuzzer.close()
            if probe is not None:
                probe.close()
            left = join_readers_except(steady)
            # Leave the room as it was, even after a failure, so shrinking works.
            leftovers = [client.barrier() for client in chatters.values()]
        assert not left, f"server threads left running: {left}"
        if ok:
            assert leftovers == [[], []]
        errors = [r for r in caplog.records if r.name == "chat.server" and r.levelno >= logging.ERROR]
        assert not errors, caplog.text

    try:
        example()
        print(f"\nfuzzed {examples[0]} streams")
    finally:
        alice.close()
        bob.close()
        server.shutdown()
    assert "Traceback" not in caplog.text


def _items(items: list) -> list:
    return [("TOO_LONG", item.code.value) if isinstance(item, ProtocolError) else item for item in items]


@settings(max_examples=300, deadline=None)
@given(stream=st.binary(max_size=300) | st.lists(
           st.sampled_from([b"a", b"bc", b"\n", b"\r\n", b"\r", b"x" * 17]), max_size=40).map(b"".join),
       line_max=st.integers(1, 40),
       cuts=st.lists(st.integers(0, 300), max_size=20))
def test_line_buffer_gives_the_same_items_however_the_stream_is_split(stream, line_max, cuts):
    whole = LineBuffer(line_max).feed(stream)
    split = LineBuffer(line_max)
    pieces = []
    points = sorted({c for c in cuts if c <= len(stream)})
    for start, end in zip([0] + points, points + [len(stream)], strict=True):
        pieces += split.feed(stream[start:end])
    bytewise = LineBuffer(line_max)
    one_by_one = [item for i in range(len(stream)) for item in bytewise.feed(stream[i:i + 1])]
    assert _items(pieces) == _items(whole) == _items(one_by_one)
    # And they are the lines SPEC.md defines ([FRAME-2], [FRAME-5], [FRAME-10]).
    expected = [("TOO_LONG", "LINE_TOO_LONG") if item is TOO_LONG
                else item[:-1] if item.endswith(b"\r") else item
                for item in frame(stream, line_max)]
    assert _items(whole) == expected

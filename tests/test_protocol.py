"""chat/protocol.py: framing, parsing and formatting, byte by byte.

Every framing case is fed three ways, as h11's tests do: whole, one byte at a
time, and followed by more data, because TCP may split or join lines anywhere
([FRAME-4]).
"""

import pytest

from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, LineBuffer, ProtocolError, parse_command


def feed_whole(data, line_max=1024):
    return LineBuffer(line_max).feed(data)


def feed_bytewise(data, line_max=1024):
    buffer = LineBuffer(line_max)
    items = []
    for i in range(len(data)):
        items += buffer.feed(data[i:i + 1])
    return items


def feed_with_trailing(data, line_max=1024):
    """The same data, then a complete line and the start of another."""
    items = LineBuffer(line_max).feed(data + b"USERS\nUS")
    assert items[-1] == b"USERS"
    return items[:-1]


FEEDERS = [feed_whole, feed_bytewise, feed_with_trailing]


def simplify(items):
    return [item.code if isinstance(item, ProtocolError) else item for item in items]


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize("data, expected", [
    (b"MSG hi\n", [b"MSG hi"]),
    (b"MSG hi\r\n", [b"MSG hi"]),                        # [FRAME-2]
    (b"MSG a\nMSG b\n", [b"MSG a", b"MSG b"]),            # [FRAME-4]
    (b"\n", [b""]),                                      # [FRAME-9]: the room ignores it
    (b"\r\n", [b""]),
    (b"MSG a\rb\n", [b"MSG a\rb"]),                      # a lone CR stays, to be refused
    (b"MSG \xff\n", [b"MSG \xff"]),                      # framing does not decode
])
def test_line_buffer_splits_lines(feed, data, expected):
    assert feed(data) == expected


@pytest.mark.parametrize("feed", FEEDERS)
def test_line_of_exactly_line_max_bytes_is_accepted(feed):
    line = b"M" * 9 + b"\n"   # 10 bytes with its LF
    assert feed(line, line_max=10) == [b"M" * 9]


@pytest.mark.parametrize("feed", FEEDERS)
def test_crlf_counts_towards_line_max(feed):
    assert simplify(feed(b"M" * 8 + b"\r\n", line_max=10)) == [b"M" * 8]
    assert simplify(feed(b"M" * 9 + b"\r\n", line_max=10)) == [ErrorCode.LINE_TOO_LONG]


@pytest.mark.parametrize("feed", FEEDERS)
def test_overlong_line_is_one_error_and_the_next_line_survives(feed):
    data = b"X" * 25 + b"\nMSG ok\n"
    assert simplify(feed(data, line_max=10)) == [ErrorCode.LINE_TOO_LONG, b"MSG ok"]


def test_overlong_line_is_refused_before_its_lf_arrives():
    # [FRAME-5]: a client trickling bytes without an LF gets its answer at once.
    buffer = LineBuffer(10)
    assert buffer.feed(b"X" * 9) == []
    assert simplify(buffer.feed(b"X")) == [ErrorCode.LINE_TOO_LONG]
    assert buffer.feed(b"X" * 100) == []          # still the same line: discarded
    assert buffer.feed(b"X\nMSG ok\n") == [b"MSG ok"]


def test_incomplete_line_is_never_returned():
    # [FRAME-10]: what is left when the stream ends simply stays in the buffer.
    assert LineBuffer().feed(b"MSG done\nMSG unfinish") == [b"MSG done"]


@pytest.mark.parametrize("line, expected", [
    (b"PASS open sesame", protocol.Pass("open sesame")),
    (b"USER alice", protocol.User("alice")),
    (b"USER not a name", protocol.User("not a name")),   # BAD_NAME is the room's call
    (b"USER ", protocol.User("")),
    (b"MSG hello, room", protocol.Msg("hello, room")),
    (b"MSG  leading space", protocol.Msg(" leading space")),
    (b"MSG caf\xc3\xa9 \xe2\x9c\x93", protocol.Msg("caf\u00e9 \u2713")),
    (b"PM bob psst, bob", protocol.Pm("bob", "psst, bob")),
    (b"USERS", protocol.Users()),
    (b"PING t-1", protocol.Ping("t-1")),
    (b"PONG " + b"x" * 64, protocol.Pong("x" * 64)),
    (b"LEAVE", protocol.Leave()),
    (b"", None),
])
def test_parse_command_accepts(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize("line, code", [
    (b"MSG \xff", ErrorCode.BAD_ENCODING),                 # [FRAME-7]
    (b"MSG \xc3", ErrorCode.BAD_ENCODING),                 # truncated sequence
    (b"MSG a\x00b", ErrorCode.BAD_CHARACTER),              # [FRAME-8]
    (b"MSG a\rb", ErrorCode.BAD_CHARACTER),
    (b"MSG a\tb", ErrorCode.BAD_CHARACTER),
    (b"MSG a\x1b[2Jb", ErrorCode.BAD_CHARACTER),
    (b"MSG a\x7fb", ErrorCode.BAD_CHARACTER),
    (b"MSG a\xc2\x9bb", ErrorCode.BAD_CHARACTER),          # C1 CSI
    (b"MSG \xe2\x80\xaeevil", ErrorCode.BAD_CHARACTER),    # U+202E right-to-left override
    (b"MSG a\xe2\x80\xa8b", ErrorCode.BAD_CHARACTER),      # U+2028 line separator
    (b"MSG a\xe2\x81\xa6b", ErrorCode.BAD_CHARACTER),      # U+2066 isolate
    (b"MSG a\xe2\x80\x8fb", ErrorCode.BAD_CHARACTER),      # U+200F right-to-left mark
    (b"MSG a\xd8\x9cb", ErrorCode.BAD_CHARACTER),          # U+061C Arabic letter mark
    (b"msg hi", ErrorCode.UNKNOWN_COMMAND),                # [CMD-2]: verbs are upper case
    (b"HELLO", ErrorCode.UNKNOWN_COMMAND),
    (b" MSG hi", ErrorCode.UNKNOWN_COMMAND),
    (b"MSG", ErrorCode.BAD_SYNTAX),                        # [GRAM-2]
    (b"MSG ", ErrorCode.BAD_SYNTAX),
    (b"MSG    ", ErrorCode.BAD_SYNTAX),
    (b"PASS", ErrorCode.BAD_SYNTAX),
    (b"PASS  ", ErrorCode.BAD_SYNTAX),
    (b"USER", ErrorCode.BAD_SYNTAX),
    (b"PM", ErrorCode.BAD_SYNTAX),
    (b"PM bob", ErrorCode.BAD_SYNTAX),
    (b"PM bob ", ErrorCode.BAD_SYNTAX),
    (b"PM  bob hi", ErrorCode.BAD_SYNTAX),
    (b"PM 9lives hi", ErrorCode.BAD_SYNTAX),
    (b"USERS now", ErrorCode.BAD_SYNTAX),
    (b"LEAVE bye", ErrorCode.BAD_SYNTAX),
    (b"PING", ErrorCode.BAD_SYNTAX),
    (b"PING a b", ErrorCode.BAD_SYNTAX),
    (b"PING " + b"x" * 65, ErrorCode.BAD_SYNTAX),
    (b"PONG", ErrorCode.BAD_SYNTAX),
    (b"PONG ", ErrorCode.BAD_SYNTAX),
])
def test_parse_command_refuses(line, code):
    with pytest.raises(ProtocolError) as caught:
        parse_command(line)
    assert caught.value.code is code
    assert caught.value.text  # [ERR-1]: text for people, never empty


def test_checks_run_in_the_order_of_frame_11():
    # Invalid UTF-8 and a control character and an unknown verb: encoding wins.
    with pytest.raises(ProtocolError) as caught:
        parse_command(b"nope \x00 \xff")
    assert caught.value.code is ErrorCode.BAD_ENCODING
    with pytest.raises(ProtocolError) as caught:
        parse_command(b"nope \x00")
    assert caught.value.code is ErrorCode.BAD_CHARACTER


@pytest.mark.parametrize("name, valid", [
    ("a", True), ("Alice", True), ("bob_2-x", True), ("a" * 32, True),
    ("", False), ("a" * 33, False), ("9lives", False), ("_x", False),
    ("al ice", False), ("\u0430lice", False), ("al\u00efce", False), ("bob!", False),
])
def test_is_valid_name(name, valid):
    assert protocol.is_valid_name(name) is valid


def test_replace_control_characters_for_display():
    assert protocol.replace_control_characters("a\x1b[2Jb\u202ec") == "a\ufffd[2Jb\ufffdc"
    assert protocol.replace_control_characters("plain caf\u00e9") == "plain caf\u00e9"


def test_name_key_ignores_ascii_case():
    assert protocol.name_key("AlIcE") == protocol.name_key("alice")


def test_error_codes_that_close():
    closing = {code.value for code in ErrorCode if code.closes}
    assert closing == {"BAD_PASSWORD", "SERVER_FULL", "TOO_MANY_CONNECTIONS",
                       "REGISTRATION_TIMEOUT", "PING_TIMEOUT", "SLOW_CONSUMER", "SHUTTING_DOWN",
                       "EXCESS_FLOOD", "TLS_REQUIRED", "BAD_TOKEN"}


def test_format_server_lines():
    assert protocol.format_join("alice") == b"JOIN alice\n"
    assert protocol.format_leave("alice", "quit") == b"LEAVE alice quit\n"
    assert protocol.format_msg("alice", "hi there") == b"MSG alice hi there\n"
    assert protocol.format_pm("alice", "bob", "psst") == b"PM alice bob psst\n"
    assert protocol.format_ping("k1") == b"PING k1\n"
    assert protocol.format_pong("k1") == b"PONG k1\n"
    assert protocol.format_ok_pass() == b"OK PASS\n"
    assert protocol.format_error(ErrorCode.NAME_TAKEN, "alice is taken") == b"ERR NAME_TAKEN alice is taken\n"
    assert protocol.format_msg("alice", "caf\u00e9") == "MSG alice caf\u00e9\n".encode()


def test_hello_advertises_every_limit_in_order():
    hello = protocol.format_hello(Limits(register_timeout=7, password="pw"))
    assert hello == (b"HELLO chat/1 line-max=1024 name-max=32 max-clients=1000 max-per-address=10 "
                     b"register-timeout=7 ping-interval=60 ping-timeout=30 flood-rate=10 "
                     b"flood-burst=20 outbound-max=262144 password=1 inbound-max=200 nick=1 action=1 "
                     b"file-max=1073741824 file-per-user=4 file-per-server=32 file-expiry=120\n")


@pytest.mark.parametrize("field, value", [("register_timeout", 0.5), ("flood_rate", -1), ("line_max", "9")])
def test_limits_are_whole_numbers(field, value):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: value})


def test_a_flood_rate_needs_a_burst_of_at_least_one():
    with pytest.raises(ValueError, match="LIMIT-12"):
        Limits(flood_rate=5, flood_burst=0)
    assert Limits(flood_rate=0, flood_burst=0).flood_burst == 0


def test_names_lines_respect_line_max_and_list_everyone_once():
    names = [f"user{i:03d}" for i in range(100)]
    lines = protocol.format_names(names, line_max=64)
    assert lines[-1] == b"ENDNAMES 100\n"
    listed = []
    for line in lines[:-1]:
        assert len(line) <= 64
        verb, *fields = line.decode().split()
        assert verb == "NAMES"
        listed += fields
    assert listed == names


def test_names_of_a_room_of_one():
    assert protocol.format_names(["solo"]) == [b"NAMES solo\n", b"ENDNAMES 1\n"]


@pytest.mark.parametrize("line, verb, fields", [
    ("MSG alice hi there", "MSG", ("alice", "hi there")),
    ("PM alice bob a b c", "PM", ("alice", "bob", "a b c")),
    ("ERR NAME_TAKEN alice is taken", "ERR", ("NAME_TAKEN", "alice is taken")),
    ("JOIN alice", "JOIN", ("alice",)),
    ("NAMES a b c", "NAMES", ("a", "b", "c")),
    ("USERS", "USERS", ()),
    ("FUTURE x y", "FUTURE", ("x", "y")),
])
def test_parse_reply(line, verb, fields):
    assert protocol.parse_reply(line) == protocol.Reply(verb, fields)


def test_hello_params_keeps_unknown_keys_and_skips_junk():
    reply = protocol.parse_reply("HELLO chat/1 line-max=512 shiny-new=7 junk password=0")
    assert protocol.hello_params(reply) == {"line-max": 512, "shiny-new": 7, "password": 0}


def test_formatted_lines_round_trip_through_the_client_parser():
    line = protocol.format_pm("alice", "bob", "x y").decode().rstrip("\n")
    assert protocol.parse_reply(line).fields == ("alice", "bob", "x y")


# ---------------------------------------------------------------------------
# Server lines, typed (for clients)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("line, value", [
    ("HELLO chat/1 line-max=512 shiny-new=7 junk password=0",
     protocol.ServerHello("chat/1", (("line-max", 512), ("shiny-new", 7), ("password", 0)))),
    ("JOIN alice", protocol.ServerJoin("alice")),
    ("LEAVE alice quit", protocol.ServerLeave("alice", "quit")),
    ("MSG alice hi  there ", protocol.ServerMsg("alice", "hi  there ")),
    ("PM alice bob a b c", protocol.ServerPm("alice", "bob", "a b c")),
    ("NAMES a b c", protocol.ServerNames(("a", "b", "c"))),
    ("ENDNAMES 3", protocol.ServerEndNames(3)),
    ("PING t1", protocol.ServerPing("t1")),
    ("PONG t1", protocol.ServerPong("t1")),
    ("OK PASS", protocol.ServerOk("PASS")),
    ("ERR NAME_TAKEN alice is taken", protocol.ServerErr("NAME_TAKEN", "alice is taken")),
    ("ERR NEWER_CODE", protocol.ServerErr("NEWER_CODE", "")),
])
def test_server_line_is_parsed_into_its_typed_value(line, value):
    assert protocol.parse_server_line(line) == value


@pytest.mark.parametrize("line", [
    "", "FUTURE x y", "HELLO", "JOIN", "JOIN 9lives", "LEAVE alice", "MSG alice",
    "MSG 9x hi", "PM alice bob", "PM alice 9x hi", "NAMES", "NAMES a 9b", "ENDNAMES x",
    "PING", "PONG " + "x" * 65, "OK", "ERR",
])
def test_server_line_that_breaks_its_rule_is_unknown_not_an_exception(line):
    assert protocol.parse_server_line(line) == protocol.ServerUnknown(line)


def test_server_hello_param_with_default():
    hello = protocol.parse_server_line("HELLO chat/1 line-max=512")
    assert hello.param("line-max") == 512 and hello.param("nick") == 0


@pytest.mark.parametrize("code, closes", [
    ("BAD_PASSWORD", True), ("NAME_TAKEN", False), ("SOME_FUTURE_CODE", False)])
def test_server_err_knows_which_codes_close(code, closes):
    assert protocol.ServerErr(code, "").closes is closes


@pytest.mark.parametrize("line, command", [
    (b"NICK carol", protocol.Nick("carol")),
    (b"NICK 9x", protocol.Nick("9x")),  # The room checks the name ([NICK-3]).
    (b"ACT  waves ", protocol.Act(" waves ")),
])
def test_optional_commands_parse_where_offered(line, command):
    assert protocol.parse_command(line, frozenset({"NICK", "ACT"})) == command


@pytest.mark.parametrize("line, code", [
    (b"NICK", ErrorCode.BAD_SYNTAX), (b"ACT", ErrorCode.BAD_SYNTAX), (b"ACT  ", ErrorCode.BAD_SYNTAX)])
def test_optional_commands_syntax(line, code):
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_command(line, frozenset({"NICK", "ACT"}))
    assert raised.value.code is code


@pytest.mark.parametrize("line", [b"NICK carol", b"NICK", b"ACT x"])
def test_optional_commands_not_offered_are_unknown(line):
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_command(line)
    assert raised.value.code is ErrorCode.UNKNOWN_COMMAND


@pytest.mark.parametrize("line, value", [
    ("NICK alice carol", protocol.ServerNick("alice", "carol")),
    ("ACT alice waves  hi", protocol.ServerAct("alice", "waves  hi")),
])
def test_optional_server_lines_are_typed(line, value):
    assert protocol.parse_server_line(line) == value


@pytest.mark.parametrize("line", ["NICK alice", "NICK alice 9x", "ACT alice", "ACT 9x hi"])
def test_broken_optional_server_lines_are_unknown(line):
    assert protocol.parse_server_line(line) == protocol.ServerUnknown(line)


def test_optional_server_lines_format():
    assert protocol.format_nick("alice", "carol") == b"NICK alice carol\n"
    assert protocol.format_act("alice", "waves") == b"ACT alice waves\n"

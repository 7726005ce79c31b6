"""Tests of the client core, chat/client_core.py: calls in, effects out.

No sockets, no threads, no clock: time is a number passed in, and so is the
jitter of the reconnect backoff. The core is a pure layer: these tests reach
every branch through its public calls (tox checks 100%).
"""

from __future__ import annotations

import pytest

from chat import client_core
from chat.client_core import (
    Acked,
    Action,
    AskName,
    AskPassword,
    Clear,
    ClientCore,
    ConfirmPaste,
    Connect,
    Connected,
    Disconnect,
    Disconnected,
    Error,
    Failed,
    Joined,
    Lag,
    Left,
    Lost,
    Message,
    Names,
    NickChanged,
    Notice,
    Private,
    QueryClosed,
    QueryOpened,
    Quit,
    Reconnecting,
    Send,
    Unsent,
    mentions,
    split_text,
)

HELLO = ("HELLO chat/1 line-max={line_max} name-max=32 max-clients=0 max-per-address=0 "
         "register-timeout=30 ping-interval=0 ping-timeout=0 flood-rate=0 flood-burst=0 "
         "outbound-max=0 password={password}")


def hello(line_max: int = 1024, password: int = 0, features: str = "") -> str:
    return (HELLO.format(line_max=line_max, password=password) + " " + features).rstrip()


def connected_core(name: str | None = "alice", **options) -> ClientCore:
    core = ClientCore(name, **options)
    assert core.start(0.0) == [Connect()]
    assert core.connected(0.0) == [Connected()]
    return core


def registered_core(name: str = "alice", others: tuple[str, ...] = ("bob",), line_max: int = 1024,
                    features: str = "nick=1 action=1", **options) -> ClientCore:
    core = connected_core(name, **options)
    assert core.line_received(hello(line_max, features=features), 0.0) == [Send(f"USER {name}")]
    assert core.line_received(f"JOIN {name}", 0.0) == [Joined(name, own=True), Send("USERS")]
    assert core.line_received(" ".join(("NAMES", name, *others)), 0.0) == []
    names = tuple(sorted((name, *others), key=str.lower))
    assert core.line_received(f"ENDNAMES {len(names)}", 0.0) == [Names(names)]
    assert core.registered and core.members == list(names)
    return core


def sends(effects) -> list[str]:
    return [effect.line for effect in effects if isinstance(effect, Send)]


# ---------------------------------------------------------------------------
# Starting and registering
# ---------------------------------------------------------------------------


def test_without_a_name_the_core_asks_before_connecting():
    # The name is asked for before the connection exists, so no
    # register-timeout ([KEEP-3]) runs while the person thinks.
    core = ClientCore()
    assert core.start(0.0) == [AskName(None)]
    assert core.name_given("  9lives ", 1.0) == [AskName(client_core._bad_name("9lives"))]
    assert core.name_given("", 1.0) == [AskName("a name is needed")]
    assert core.name_given(" alice ", 2.0) == [Connect()]
    assert core.connected(3.0) == [Connected()]
    assert core.line_received(hello(), 3.0) == [Send("USER alice")]


def test_an_invalid_name_given_up_front_is_asked_for_again():
    assert ClientCore("9lives").start(0.0) == [AskName(client_core._bad_name("9lives"))]


def test_a_name_given_while_connecting_is_used_once_hello_comes():
    core = ClientCore("alice")
    core.start(0.0)
    assert core.name_given("carol", 0.0) == []
    core.connected(0.0)
    assert core.line_received(hello(), 0.0) == [Send("USER carol")]


def test_own_join_registers_and_asks_who_is_online():
    core = registered_core(others=("bob", "Carol"))
    assert core.members == ["alice", "bob", "Carol"]
    assert core.name == "alice" and core.connected_now


def test_password_is_sent_when_hello_asks_for_it():
    core = connected_core(password="sesame")
    assert core.line_received(hello(password=1), 0.0) == [Send("PASS sesame")]
    assert core.line_received("OK PASS", 0.0) == [Send("USER alice")]


def test_password_is_asked_for_when_not_known():
    core = connected_core()
    assert core.line_received(hello(password=1), 0.0) == [AskPassword()]
    assert core.password_given("sesame", 0.0) == [Send("PASS sesame")]
    assert core.line_received("OK PASS", 0.0) == [Send("USER alice")]


def test_password_given_when_not_registering_is_only_remembered():
    core = ClientCore("alice")
    assert core.password_given("sesame", 0.0) == []
    assert core.password == "sesame"


def test_password_required_after_user_asks_for_the_password_or_sends_it():
    core = connected_core()
    core.line_received(hello(), 0.0)
    assert core.line_received("ERR PASSWORD_REQUIRED send PASS", 0.0) == [
        Error("PASSWORD_REQUIRED", "send PASS"), AskPassword()]
    core = connected_core(password="sesame")
    core.line_received(hello(), 0.0)
    assert core.line_received("ERR PASSWORD_REQUIRED send PASS", 0.0) == [Send("PASS sesame")]


def test_bad_password_ends_the_session_without_reconnecting():
    core = connected_core(password="wrong")
    core.line_received(hello(password=1), 0.0)
    assert core.line_received("ERR BAD_PASSWORD wrong password", 0.0) == [
        Error("BAD_PASSWORD", "wrong password")]
    assert core.password is None
    assert core.connection_lost(0.0, 0.5) == [
        Disconnected("closed by the server (BAD_PASSWORD)"), Quit(1)]


def test_a_refused_name_is_asked_for_again_while_connected():
    core = connected_core()
    core.line_received(hello(), 0.0)
    assert core.line_received("ERR NAME_TAKEN alice is taken", 0.0) == [
        Error("NAME_TAKEN", "alice is taken"),
        AskName("the name alice was refused (NAME_TAKEN)")]
    assert core.name_given("alice2", 1.0) == [Send("USER alice2")]


def test_a_reconnect_while_asking_for_a_name_waits_for_the_answer():
    core = connected_core()
    core.line_received(hello(), 0.0)
    core.line_received("ERR NAME_TAKEN alice is taken", 0.0)
    core.connection_lost(1.0, 0.5)
    assert core.tick(2.0) == [Connect()]
    core.connected(2.0)
    assert core.line_received(hello(), 2.0) == []
    assert core.name_given("alice2", 3.0) == [Send("USER alice2")]


def test_the_register_timeout_while_asking_for_a_name_connects_again_once_answered():
    core = connected_core()
    core.line_received(hello(), 0.0)
    core.line_received("ERR NAME_TAKEN alice is taken", 0.0)
    # The person thinks for longer than register-timeout: the server gives up.
    assert core.line_received("ERR REGISTRATION_TIMEOUT no USER within 30 s", 30.0) == []
    assert core.connection_lost(30.0, 0.5) == []
    assert core.tick(31.0) == []
    assert core.name_given("alice2", 40.0) == [Connect()]
    core.connected(40.0)
    assert core.line_received(hello(), 40.0) == [Send("USER alice2")]


def test_a_plain_connection_to_a_tls_port_says_to_use_tls():
    core = connected_core()
    # [SEC-3]: the ERR comes instead of HELLO.
    effects = core.line_received("ERR TLS_REQUIRED this port speaks TLS", 0.0)
    assert effects == [Error("TLS_REQUIRED", "this port speaks TLS, try --tls")]


def test_a_hello_of_another_version_ends_the_session():
    core = connected_core()
    assert core.line_received("HELLO chat/2 line-max=1024", 0.0) == [
        Notice("the server speaks chat/2, this client chat/1"), Disconnect()]
    assert core.connection_lost(0.0, 0.5) == [
        Disconnected("the server speaks another protocol"), Quit(1)]


def test_hello_parameters_are_kept_and_unknown_ones_ignored():
    core = connected_core()
    core.line_received(hello(line_max=512, features="shiny=7"), 0.0)
    assert core.line_max == 512 and core.features["shiny"] == 7


# ---------------------------------------------------------------------------
# What the user types
# ---------------------------------------------------------------------------


def test_own_message_shows_once_pending_then_acknowledged_by_its_echo():
    core = registered_core()
    assert core.user_input("hello", 1.0) == [
        Send("MSG hello"), Message("alice", "hello", own=True, pending=True, id=1)]
    assert core.outstanding == 1
    # [MSG-2]: the echo is the acknowledgement, not a second message.
    assert core.line_received("MSG alice hello", 1.25) == [Acked(1, 0.25)]


def test_an_own_msg_nobody_waits_for_is_shown_as_own():
    core = registered_core()
    assert core.line_received("MSG alice from elsewhere", 0.0) == [
        Message("alice", "from elsewhere", own=True)]


def test_a_refused_message_is_marked_failed():
    core = registered_core()
    core.user_input("@zed hi", 0.0)
    assert core.line_received("ERR NO_SUCH_USER zed is not online", 0.0) == [
        Failed(1, "NO_SUCH_USER", "zed is not online")]


@pytest.mark.parametrize("typed", ["/quit", "/QUIT", "/Exit", "exit", "Exit", "EXIT "])
def test_quit_commands_are_case_insensitive_and_send_leave(typed):
    core = registered_core()
    assert core.user_input(typed, 0.0) == [Send("LEAVE")]
    assert core.line_received("LEAVE alice quit", 0.0) == [Left("alice", "quit", own=True)]
    assert core.connection_lost(0.0, 0.5) == [Quit(0)]


@pytest.mark.parametrize("typed", ["/names", "/USERS", "/who"])
def test_names_commands_ask_who_is_online(typed):
    core = registered_core()
    assert core.user_input(typed, 0.0) == [Send("USERS")]
    core.line_received("NAMES alice", 0.0)
    core.line_received("NAMES bob dave", 0.0)
    assert core.line_received("ENDNAMES 3", 0.0) == [Names(("alice", "bob", "dave"))]


@pytest.mark.parametrize("typed, line", [
    ("@bob psst", "PM bob psst"),
    ("/msg bob psst", "PM bob psst"),
    ("/MSG bob  two  spaces", "PM bob  two  spaces"),
])
def test_private_message_forms(typed, line):
    core = registered_core()
    effects = core.user_input(typed, 0.0)
    assert effects[0] == Send(line)
    assert effects[1] == Private("alice", "bob", line.split(" ", 2)[2], own=True, pending=True, id=1)
    assert effects[1].peer == "bob"
    assert core.line_received("PM alice bob " + line.split(" ", 2)[2], 0.5) == [Acked(1, 0.5)]


@pytest.mark.parametrize("typed, notice", [
    ("@9x hi", "usage: @name text"),
    ("@bob", "usage: @name text"),
    ("/msg bob", "usage: /msg name text"),
    ("/msg", "usage: /msg name text"),
    ("/frobnicate", "unknown command /frobnicate; /help lists them"),
    ("/me", "usage: /me text"),
    ("/nick", "usage: /nick name"),
    ("/nick 9x", client_core._bad_name("9x")),
    ("/query", "usage: /query name"),
    ("/query 9x", client_core._bad_name("9x")),
    ("/help", client_core.HELP),
    ("tab\x1bescape", "not sent: the text holds control characters"),
])
def test_bad_or_local_commands_are_explained_and_not_sent(typed, notice):
    core = registered_core()
    assert core.user_input(typed, 0.0) == [Notice(notice)]


def test_blank_input_does_nothing_and_clear_clears():
    core = registered_core()
    assert core.user_input("   ", 0.0) == []
    assert core.user_input("/clear", 0.0) == [Clear()]


def test_double_slash_and_leading_space_send_text_as_is():
    core = registered_core()
    assert sends(core.user_input("//me is text", 0.0)) == ["MSG /me is text"]
    assert sends(core.user_input(" @not a pm", 0.0)) == ["MSG  @not a pm"]
    assert sends(core.user_input(" exit", 0.0)) == ["MSG  exit"]


def test_pasted_tab_becomes_spaces():
    core = registered_core()
    assert sends(core.user_input("a\tb", 0.0)) == ["MSG a       b"]


def test_long_text_is_split_to_fit_line_max_at_spaces():
    core = registered_core(line_max=64)
    text = " ".join(["word"] * 40)
    lines = sends(core.user_input(text, 0.0))
    assert len(lines) > 1
    assert all(len(line.encode()) + 1 <= 64 for line in lines)
    assert " ".join(line.removeprefix("MSG ") for line in lines) == text


def test_split_text_cuts_between_utf8_characters_when_there_is_no_space():
    pieces = split_text("é" * 10, 5)
    assert pieces == ["éé"] * 5
    # Spaces are text too; only pieces of nothing but spaces are dropped.
    assert split_text("ab" + " " * 10 + "cd", 4) == ["ab  ", "  cd"]


def test_a_short_paste_is_sent_as_lines_of_text_not_commands():
    core = registered_core()
    assert sends(core.user_input("one\r\n/quit\rthree\n\n", 0.0)) == [
        "MSG one", "MSG /quit", "MSG three"]


def test_a_long_paste_asks_first():
    core = registered_core()
    paste = "\n".join(f"line {n}" for n in range(30))
    [confirm] = core.user_input(paste, 0.0)
    assert confirm == ConfirmPaste(tuple(paste.split("\n")), 30)
    assert len(sends(core.paste_answer(True, 0.0))) == 30
    assert core.paste_answer(True, 0.0) == []  # Nothing waits any more.
    core.user_input(paste, 0.0)
    assert core.paste_answer(False, 0.0) == [Notice("paste not sent")]


def test_a_confirmed_paste_after_the_connection_went_is_kept():
    core = registered_core()
    paste = "\n".join(f"line {n}" for n in range(30))
    core.user_input(paste, 0.0)
    core.connection_lost(0.0, 0.5)
    assert core.paste_answer(True, 0.0)[1] == Unsent(paste)


def test_text_typed_while_disconnected_is_kept_for_the_input_line():
    core = registered_core()
    core.connection_lost(0.0, 0.5)
    for typed in ("hello", "/names", "a\nb"):
        assert core.user_input(typed, 0.0) == [
            Notice("not sent: not connected; the text stays in the input line"), Unsent(typed)]


def test_query_sends_plain_text_privately_until_closed():
    core = registered_core(others=("Bob",))
    assert core.user_input("/query bob", 0.0) == [QueryOpened("Bob")]
    assert sends(core.user_input("psst", 0.0)) == ["PM Bob psst"]
    assert core.user_input("/me waves", 0.0) == [
        Notice("/me goes to the room only: chat/1 has no private actions")]
    # A front end with a window per conversation says where the text belongs.
    assert sends(core.user_input("all", 0.0, to=None)) == ["MSG all"]
    assert core.user_input("/query", 0.0) == [QueryClosed("Bob")]
    assert sends(core.user_input("all", 0.0)) == ["MSG all"]
    assert core.user_input("/query unknown", 0.0) == [QueryOpened("unknown")]


def test_me_sends_act_when_the_server_has_it():
    core = registered_core()
    assert core.user_input("/me waves", 0.0) == [
        Send("ACT waves"), Action("alice", "waves", own=True, pending=True, id=1)]


def test_own_action_is_acknowledged_by_its_echo_and_others_are_shown():
    core = registered_core()
    core.user_input("/ME waves", 1.0)
    assert core.line_received("ACT alice waves", 1.5) == [Acked(1, 0.5)]
    assert core.line_received("ACT alice again", 2.0) == [Action("alice", "again", own=True)]
    assert core.line_received("ACT bob pokes alice", 2.0) == [
        Action("bob", "pokes alice", mention=True)]


def test_own_nick_renames_us_and_others_follow_in_members_and_query():
    core = registered_core()
    core.user_input("/query bob", 0.0)
    assert core.user_input("/nick carol", 0.0) == [Send("NICK carol")]
    assert core.line_received("NICK alice carol", 0.0) == [NickChanged("alice", "carol", own=True)]
    assert core.name == "carol"
    # Our new name is what mentions and echoes are matched against.
    assert core.line_received("MSG bob hi carol", 0.0)[0].mention
    assert core.line_received("NICK bob Bobby", 0.0) == [NickChanged("bob", "Bobby")]
    assert core.members == ["Bobby", "carol"] and core.query == "Bobby"
    assert core.line_received("NICK dave erin", 0.0) == [NickChanged("dave", "erin")]
    assert core.query == "Bobby"
    core.user_input("/query", 0.0)
    assert core.line_received("NICK Bobby bob", 0.0) == [NickChanged("Bobby", "bob")]


def test_me_and_nick_against_a_server_without_the_features_say_so():
    core = registered_core(features="")
    assert core.user_input("/me waves", 0.0) == [
        Notice("this server does not support /me (its HELLO has no action=1)")]
    assert core.user_input("/nick carol", 0.0) == [
        Notice("this server does not support /nick (its HELLO has no nick=1)")]


def test_nick_when_registered_sends_nick():
    core = registered_core()
    assert core.user_input("/nick carol", 0.0) == [Send("NICK carol")]
    assert core.line_received("ERR NAME_TAKEN carol is taken", 0.0) == [
        Error("NAME_TAKEN", "carol is taken")]


def test_nick_before_registering_chooses_the_name_to_register_with():
    core = ClientCore("alice")
    assert core.user_input("/nick carol", 0.0) == [Notice("you will register as carol")]
    core = connected_core()
    core.line_received(hello(), 0.0)
    core.line_received("ERR NAME_TAKEN alice is taken", 0.0)
    assert core.user_input("/nick carol", 0.0) == [Send("USER carol")]


# ---------------------------------------------------------------------------
# What the server sends
# ---------------------------------------------------------------------------


def test_room_events_are_typed_and_members_follow_them():
    core = registered_core()
    assert core.line_received("JOIN carol", 0.0) == [Joined("carol")]
    assert core.members == ["alice", "bob", "carol"]
    assert core.line_received("MSG carol hi all", 0.0) == [Message("carol", "hi all")]
    assert core.line_received("LEAVE carol timeout", 0.0) == [Left("carol", "timeout")]
    assert core.members == ["alice", "bob"]


def test_a_message_naming_us_is_a_mention():
    core = registered_core()
    assert core.line_received("MSG bob hey ALICE, look", 0.0) == [
        Message("bob", "hey ALICE, look", mention=True)]
    assert core.line_received("MSG bob malice aforethought", 0.0) == [
        Message("bob", "malice aforethought")]


def test_mentions():
    assert mentions("hi alice!", "alice") and not mentions("alice_x", "alice")
    assert not mentions("anything", None)


def test_incoming_and_unexpected_own_private_messages():
    core = registered_core()
    assert core.line_received("PM bob alice psst", 0.0) == [Private("bob", "alice", "psst")]
    assert core.line_received("PM alice bob echo", 0.0) == [
        Private("alice", "bob", "echo", own=True)]


def test_server_ping_is_answered():
    core = registered_core()
    assert core.line_received("PING k1", 0.0) == [Send("PONG k1")]


def test_unknown_and_broken_lines_are_shown_raw_with_controls_replaced():
    core = registered_core()
    assert core.line_received("FUTURE thing", 0.0) == [Notice("? FUTURE thing")]
    assert core.line_received("MSG bob \x1b[2Jgotcha", 0.0) == [
        Message("bob", "\N{REPLACEMENT CHARACTER}[2Jgotcha")]


def test_replies_nobody_waits_for_do_no_harm():
    core = registered_core()
    assert core.line_received("PONG stray", 0.0) == []
    assert core.line_received("OK PASS", 0.0) == []
    assert core.line_received("ERR BAD_SYNTAX what", 0.0) == [Error("BAD_SYNTAX", "what")]
    core.user_input("/names", 0.0)
    assert core.line_received("ERR BAD_SYNTAX what", 0.0) == [Error("BAD_SYNTAX", "what")]


def test_a_stray_endnames_before_registering():
    core = connected_core()
    assert core.line_received("ENDNAMES 0", 0.0) == [Names(())]


# ---------------------------------------------------------------------------
# Time: lag, stalls, leaving
# ---------------------------------------------------------------------------


def test_lag_is_measured_with_a_ping_of_our_own():
    core = registered_core()
    assert core.tick(1.0) == []
    assert core.tick(client_core.LAG_PING_INTERVAL) == [Send("PING lag-1")]
    assert core.line_received("PONG lag-1", client_core.LAG_PING_INTERVAL + 0.125) == [Lag(0.125)]
    assert core.lag == 0.125


def test_a_stalled_server_shows_as_growing_lag_then_a_reconnect():
    core = registered_core()
    core.user_input("hello", 10.0)
    assert core.tick(10.0 + client_core.STALL_NOTICE) == [Lag(client_core.STALL_NOTICE, stalled=True)]
    assert core.tick(20.0) == [Lag(10.0, stalled=True)]
    assert core.stalled
    # The server wakes up: the stall ends.
    assert core.line_received("MSG alice hello", 21.0) == [Lag(11.0), Acked(1, 11.0)]
    core.user_input("again", 30.0)
    assert core.tick(21.0 + client_core.STALL_DISCONNECT) == [
        Notice(f"the server has said nothing for {client_core.STALL_DISCONNECT:.0f} s; reconnecting"),
        Disconnect()]


def test_leave_that_is_never_answered_times_out():
    core = registered_core()
    assert core.quit(0.0) == [Send("LEAVE")]
    assert core.tick(client_core.LEAVE_TIMEOUT) == [
        Notice("the server did not close the connection after LEAVE"), Disconnect()]
    assert core.connection_lost(client_core.LEAVE_TIMEOUT, 0.5) == [
        Disconnected("the server closed the connection"), Quit(1)]
    assert core.quit(10.0) == []
    assert core.connection_lost(10.0, 0.5) == []
    assert core.tick(10.0) == []


def test_quit_before_registering_and_before_connecting():
    core = connected_core()
    assert core.quit(0.0) == [Send("LEAVE"), Disconnect()]
    assert core.connection_lost(0.0, 0.5) == [Quit(1)]
    core = ClientCore()
    core.start(0.0)
    assert core.quit(0.0) == [Quit(1)]


def test_input_while_quitting_is_not_sent():
    core = registered_core()
    core.quit(0.0)
    assert core.user_input("late", 0.0)[1] == Unsent("late")


# ---------------------------------------------------------------------------
# Reconnecting
# ---------------------------------------------------------------------------


def test_a_lost_connection_reconnects_with_backoff_and_reclaims_the_name():
    core = registered_core()
    core.user_input("in flight", 0.0)
    assert core.connection_lost(1.0, 0.5) == [
        Lost(1), Disconnected("the server closed the connection"), Reconnecting(1, 1.0)]
    assert not core.registered and core.members == []
    assert core.tick(1.5) == []
    assert core.tick(2.0) == [Connect()]
    # The attempt fails: the next wait is twice as long (jitter 0: 50% of it).
    assert core.connect_failed("refused", 2.0, 0.0) == [
        Disconnected("cannot connect: refused"), Reconnecting(2, 1.0)]
    [_, reconnecting] = core.connect_failed("refused", 3.0, 0.999)
    assert reconnecting.delay == pytest.approx(4 * 1.499)
    assert core.tick(100.0) == [Connect()]
    core.connected(100.0)
    assert core.line_received(hello(), 100.0) == [Send("USER alice")]
    # The old connection still holds the name: say so, and try again.
    [notice] = core.line_received("ERR NAME_TAKEN alice is taken", 100.0)
    assert "still taken" in notice.text
    assert core.tick(100.0 + client_core.RECLAIM_RETRY) == [Send("USER alice")]
    assert core.line_received("JOIN alice", 106.0) == [Joined("alice", own=True), Send("USERS")]
    # Registered again: the backoff starts over.
    core.connection_lost(107.0, 0.5)
    core.tick(108.0)
    assert core.connect_failed("refused", 108.0, 0.5)[1] == Reconnecting(2, 2.0)


def test_server_shutdown_reconnects_an_interactive_client():
    core = registered_core()
    assert core.line_received("ERR SHUTTING_DOWN bye", 0.0) == [Error("SHUTTING_DOWN", "bye")]
    assert core.connection_lost(0.0, 0.5) == [
        Disconnected("the server is shutting down"), Reconnecting(1, 1.0)]


def test_without_reconnect_server_shutdown_exits_zero_unless_a_line_was_lost():
    core = registered_core(reconnect=False)
    core.line_received("ERR SHUTTING_DOWN bye", 0.0)
    assert core.connection_lost(0.0, 0.5)[-1] == Quit(0)
    core = registered_core(reconnect=False)
    core.user_input("unlucky", 0.0)
    core.line_received("ERR SHUTTING_DOWN bye", 0.0)
    assert core.connection_lost(0.0, 0.5)[-1] == Quit(1)


def test_without_reconnect_a_failed_connection_ends_the_session():
    core = ClientCore("alice", reconnect=False)
    core.start(0.0)
    assert core.connect_failed("refused", 0.0, 0.5) == [
        Disconnected("cannot connect: refused"), Quit(1)]


def test_timers_do_nothing_while_idle():
    assert ClientCore().tick(5.0) == []


# ---------------------------------------------------------------------------
# Tab completion
# ---------------------------------------------------------------------------


def test_tab_completes_names_and_cycles():
    core = registered_core(others=("bob", "Bert", "carol"))
    text, cursor = core.complete("b", 1)
    assert (text, cursor) == ("Bert: ", 6)
    assert core.complete(text, cursor) == ("bob: ", 5)
    assert core.complete("bob: ", 5) == ("Bert: ", 6)


def test_tab_in_the_middle_of_a_line_and_after_at():
    core = registered_core(others=("bob", "carol"))
    assert core.complete("hi ca how", 5) == ("hi carol how", 9)
    assert core.complete("@b", 2) == ("@bob ", 5)


def test_tab_completes_commands_and_leaves_no_match_alone():
    core = registered_core()
    assert core.complete("/qu", 3) == ("/query ", 7)
    assert core.complete("/query ", 7) == ("/quit ", 6)
    assert core.complete("zz", 2) == ("zz", 2)
    assert core.complete("al", 2) == ("al", 2)  # Not ourselves.

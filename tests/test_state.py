"""chat/state.py: the room's rules, checked as returned actions, with fake time."""

import pytest

from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, ProtocolError
from chat.state import Broadcast, ChatRoom, Close, Register, Send, TokenBucket, Unregister

NO_TIMERS = Limits(register_timeout=0, ping_interval=0, max_per_address=0)


def connect(room, address="127.0.0.1", now=0.0):
    session, actions = room.connect(address, now)
    assert actions == [Send(session, protocol.format_hello(room.limits))]
    return session


def register(room, name, now=0.0):
    session = connect(room, now=now)
    actions = room.handle(session, f"USER {name}".encode(), now)
    assert actions == [Register(session), Broadcast(f"JOIN {name}\n".encode())]
    return session


def error_code(actions):
    """The code of the single ERR among the actions."""
    [line] = [a.line for a in actions if isinstance(a, Send)]
    assert line.startswith(b"ERR ")
    return ErrorCode(line.split()[1].decode())


@pytest.fixture
def room():
    return ChatRoom(NO_TIMERS)


def test_msg_is_broadcast_to_everyone_sender_included(room):
    alice = register(room, "alice")
    assert room.handle(alice, b"MSG hi", 1.0) == [Broadcast(b"MSG alice hi\n")]


def test_pm_reaches_recipient_and_sender_with_registered_spelling(room):
    alice, bob = register(room, "Alice"), register(room, "Bob")
    line = b"PM Alice Bob psst\n"
    assert room.handle(alice, b"PM bOB psst", 1.0) == [Send(bob, line), Send(alice, line)]


def test_pm_to_oneself_is_delivered_once(room):
    alice = register(room, "alice")
    assert room.handle(alice, b"PM alice note", 1.0) == [Send(alice, b"PM alice alice note\n")]


def test_pm_to_unknown_user_gets_no_such_user(room):
    alice = register(room, "alice")
    assert error_code(room.handle(alice, b"PM ghost hi", 1.0)) is ErrorCode.NO_SUCH_USER


def test_name_taken_ignores_case_and_leaves_the_owner_alone(room):
    alice = register(room, "alice")
    intruder = connect(room)
    assert error_code(room.handle(intruder, b"USER ALICE", 1.0)) is ErrorCode.NAME_TAKEN
    assert not alice.closing and alice.name == "alice" and not intruder.registered
    # The intruder may still pick a free name.
    assert room.handle(intruder, b"USER carol", 1.0)[0] == Register(intruder)


@pytest.mark.parametrize("line", [b"USER ", b"USER 9lives", b"USER a b", b"USER " + b"a" * 33])
def test_bad_names_are_refused(room, line):
    session = connect(room)
    assert error_code(room.handle(session, line, 1.0)) is ErrorCode.BAD_NAME


def test_second_user_is_already_registered(room):
    alice = register(room, "alice")
    assert error_code(room.handle(alice, b"USER bob", 1.0)) is ErrorCode.ALREADY_REGISTERED
    assert error_code(room.handle(alice, b"PASS x", 1.0)) is ErrorCode.ALREADY_REGISTERED
    assert alice.name == "alice"


@pytest.mark.parametrize("line", [b"MSG hi", b"PM bob hi", b"USERS"])
def test_commands_before_user_are_not_registered(room, line):
    session = connect(room)
    assert error_code(room.handle(session, line, 1.0)) is ErrorCode.NOT_REGISTERED


def test_syntax_is_checked_before_state(room):
    session = connect(room)
    assert error_code(room.handle(session, b"MSG", 1.0)) is ErrorCode.BAD_SYNTAX


def test_framing_errors_become_err_lines(room):
    session = connect(room)
    error = ProtocolError(ErrorCode.LINE_TOO_LONG, "too long")
    assert room.handle(session, error, 1.0) == [Send(session, b"ERR LINE_TOO_LONG too long\n")]


def test_ping_pong_and_empty_lines(room):
    session = connect(room)
    assert room.handle(session, b"PING abc", 1.0) == [Send(session, b"PONG abc\n")]
    assert room.handle(session, b"PONG abc", 1.0) == []
    assert room.handle(session, b"", 1.0) == []


def test_users_lists_everyone_in_join_order(room):
    register(room, "alice")
    bob = register(room, "bob")
    assert room.handle(bob, b"USERS", 1.0) == [
        Send(bob, b"NAMES alice bob\n"), Send(bob, b"ENDNAMES 2\n")]


def test_leave_reaches_everyone_leaver_first_then_closes(room):
    register(room, "alice")
    bob = register(room, "bob")
    assert room.handle(bob, b"LEAVE", 1.0) == [
        Broadcast(b"LEAVE bob quit\n"), Unregister(bob), Close(bob)]
    assert bob.closing
    assert room.handle(bob, b"MSG still here?", 1.0) == []   # [STATE-2]
    # [NAME-4]: the name is free again.
    assert register(room, "BOB").name == "BOB"


def test_leave_before_user_closes_silently(room):
    session = connect(room)
    assert room.handle(session, b"LEAVE", 1.0) == [Close(session)]


def test_abrupt_disconnect_tells_the_others_once(room):
    register(room, "alice")
    bob = register(room, "bob")
    assert room.disconnect(bob, "closed") == [
        Unregister(bob), Broadcast(b"LEAVE bob closed\n"), Close(bob)]
    assert room.disconnect(bob, "closed") == []


def test_slow_consumer_is_dropped(room):
    bob = register(room, "bob")
    assert room.slow_consumer(bob) == [Unregister(bob), Broadcast(b"LEAVE bob slow\n"), Close(bob)]


def test_max_clients_refuses_with_server_full_and_frees_on_release():
    room = ChatRoom(Limits(max_clients=1, max_per_address=0))
    first = connect(room)
    refused, actions = room.connect("10.0.0.2", 0.0)
    assert error_code(actions) is ErrorCode.SERVER_FULL and actions[-1] == Close(refused)
    room.release(refused)  # never counted: nothing to free
    room.release(first)
    room.release(first)    # twice is harmless
    connect(room, "10.0.0.2")


def test_max_per_address_counts_each_address():
    room = ChatRoom(Limits(max_per_address=2))
    a1 = connect(room, "10.0.0.1")
    connect(room, "10.0.0.1")
    connect(room, "10.0.0.2")
    refused, actions = room.connect("10.0.0.1", 0.0)
    assert error_code(actions) is ErrorCode.TOO_MANY_CONNECTIONS
    room.release(a1)
    connect(room, "10.0.0.1")


def test_password_required_then_bad_password_closes():
    room = ChatRoom(Limits(password="s3cret", max_per_address=0))
    session = connect(room)
    assert error_code(room.handle(session, b"USER alice", 1.0)) is ErrorCode.PASSWORD_REQUIRED
    actions = room.handle(session, b"PASS guess", 1.0)
    assert error_code(actions) is ErrorCode.BAD_PASSWORD and actions[-1] == Close(session)


def test_right_password_lets_user_in():
    room = ChatRoom(Limits(password="s3cret", max_per_address=0))
    session = connect(room)
    assert room.handle(session, b"PASS s3cret", 1.0) == [Send(session, b"OK PASS\n")]
    assert room.handle(session, b"USER alice", 1.0)[0] == Register(session)


def test_pass_without_a_password_is_accepted(room):
    session = connect(room)
    assert room.handle(session, b"PASS anything", 1.0) == [Send(session, b"OK PASS\n")]


def test_no_timers_means_no_timeouts(room):
    register(room, "alice")
    connect(room)
    assert room.tick(1e9) == []


def test_registration_timeout():
    room = ChatRoom(Limits(register_timeout=5, ping_interval=0, max_per_address=0))
    late = connect(room, now=0.0)
    registered = register(room, "alice", now=0.0)
    assert room.tick(4.9) == []
    actions = room.tick(5.0)
    assert error_code(actions) is ErrorCode.REGISTRATION_TIMEOUT
    assert actions[-1] == Close(late) and not registered.closing
    assert room.tick(10.0) == []


def test_keepalive_pings_an_idle_client_then_times_it_out():
    room = ChatRoom(Limits(register_timeout=0, ping_interval=10, ping_timeout=5, max_per_address=0))
    alice, bob = register(room, "alice"), register(room, "bob")
    room.handle(bob, b"MSG busy", 8.0)
    [ping] = room.tick(10.0)
    assert ping.session is alice and ping.line.startswith(b"PING ")
    assert room.tick(14.9) == []                  # bob was heard at 8: not idle yet... until 18
    actions = room.tick(15.0)
    assert error_code(actions) is ErrorCode.PING_TIMEOUT
    assert Broadcast(b"LEAVE alice timeout\n") in actions and actions[-1] == Close(alice)


def test_a_ping_timeout_of_zero_pings_but_never_closes():
    room = ChatRoom(Limits(register_timeout=0, ping_interval=10, ping_timeout=0, max_per_address=0))
    alice = register(room, "alice")
    [ping] = room.tick(10.0)                      # [KEEP-6]: the PING still goes out...
    assert ping.session is alice and ping.line.startswith(b"PING ")
    assert room.tick(1000.0) == [] and not alice.closing   # ...but nobody is closed for silence


def test_any_line_answers_the_servers_ping():
    room = ChatRoom(Limits(register_timeout=0, ping_interval=10, ping_timeout=5, max_per_address=0))
    alice = register(room, "alice")
    assert len(room.tick(10.0)) == 1
    room.handle(alice, b"PONG whatever", 12.0)    # [KEEP-1]
    assert room.tick(16.0) == []
    assert len(room.tick(22.0)) == 1              # idle again: a new PING


def test_shutdown_tells_every_open_connection_once(room):
    alice = register(room, "alice")
    waiting = connect(room)
    room.handle(waiting, b"LEAVE", 1.0)           # already closing: not told again
    actions = room.shutdown()
    assert actions == [Send(alice, b"ERR SHUTTING_DOWN the server is shutting down\n"), Close(alice)]
    assert room.shutdown() == []


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.delay(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.delay(0.0) == pytest.approx(0.1)
    assert bucket.delay(0.0) == pytest.approx(0.2)
    assert bucket.delay(10.0) == 0.0              # refilled, capped at the burst


def test_token_bucket_off():
    assert TokenBucket(rate=0, burst=0, now=0.0).delay(0.0) == 0.0


# -- optional commands (SPEC.md 6.8): NICK and ACT ------------------------------------------


def test_nick_renames_at_one_instant_and_frees_the_old_name(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    assert room.handle(alice, b"NICK carol", 1.0) == [Broadcast(b"NICK alice carol\n")]
    assert room.handle(bob, b"MSG hi", 1.0) == [Broadcast(b"MSG bob hi\n")]
    assert room.handle(alice, b"MSG me", 1.0) == [Broadcast(b"MSG carol me\n")]
    assert error_code(room.handle(bob, b"PM alice hi", 1.0)) is ErrorCode.NO_SUCH_USER
    assert room.handle(bob, b"PM CAROL hi", 1.0) == [
        Send(alice, b"PM bob carol hi\n"), Send(bob, b"PM bob carol hi\n")]
    # The old name is free; the renamed member keeps its place in the list.
    register(room, "alice")
    assert room.handle(bob, b"USERS", 1.0) == [
        Send(bob, b"NAMES carol bob alice\n"), Send(bob, b"ENDNAMES 3\n")]


def test_nick_may_change_the_case_of_ones_own_name(room):
    alice = register(room, "alice")
    assert room.handle(alice, b"NICK ALICE", 1.0) == [Broadcast(b"NICK alice ALICE\n")]
    assert room.handle(alice, b"NICK ALICE", 1.0) == [Broadcast(b"NICK ALICE ALICE\n")]


@pytest.mark.parametrize("line, code", [
    (b"NICK", ErrorCode.BAD_SYNTAX),
    (b"NICK 9lives", ErrorCode.BAD_NAME),
    (b"NICK ", ErrorCode.BAD_NAME),
    (b"NICK BOB", ErrorCode.NAME_TAKEN),
])
def test_refused_nick_changes_nothing(room, line, code):
    alice, bob = register(room, "alice"), register(room, "bob")
    assert error_code(room.handle(alice, line, 1.0)) is code
    assert room.handle(alice, b"MSG still", 1.0) == [Broadcast(b"MSG alice still\n")]
    assert bob.name == "bob"


def test_nick_and_act_before_user_are_not_registered_after_syntax(room):
    alice = connect(room)
    assert error_code(room.handle(alice, b"NICK", 1.0)) is ErrorCode.BAD_SYNTAX
    assert error_code(room.handle(alice, b"NICK 9x", 1.0)) is ErrorCode.NOT_REGISTERED
    assert error_code(room.handle(alice, b"ACT", 1.0)) is ErrorCode.BAD_SYNTAX
    assert error_code(room.handle(alice, b"ACT hi", 1.0)) is ErrorCode.NOT_REGISTERED


def test_act_is_broadcast_with_its_text_unchanged(room):
    alice = register(room, "alice")
    assert room.handle(alice, b"ACT  waves  ", 1.0) == [Broadcast(b"ACT alice  waves  \n")]
    assert error_code(room.handle(alice, b"ACT   ", 1.0)) is ErrorCode.BAD_SYNTAX


@pytest.mark.parametrize("line", [b"NICK carol", b"NICK", b"ACT waves", b"ACT"])
def test_without_the_features_nick_and_act_are_unknown_commands(line):
    room = ChatRoom(Limits(register_timeout=0, ping_interval=0, nick=0, action=0))
    alice = register(room, "alice")
    assert error_code(room.handle(alice, line, 1.0)) is ErrorCode.UNKNOWN_COMMAND
    assert b" nick=0 action=0" in protocol.format_hello(room.limits)

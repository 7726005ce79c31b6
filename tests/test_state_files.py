"""chat/state.py and chat/protocol.py for file sharing (SPEC.md section 11a): the room's
actions for OFFER, ACCEPT, REJECT, CANCEL, RECEIVED and DATA, with fake time; the lines
parsed and formatted."""

import pytest

from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, ProtocolError, parse_command, parse_reply
from chat.state import Broadcast, ChatRoom, Close, CutRelay, Relay, Send, Unregister
from chat.transfers import RECIPIENT, SENDER
from tests.test_state import connect, error_code, register

SHA = "ab" * 32
FILES = Limits(register_timeout=0, ping_interval=0, max_per_address=0, file_max=1000, file_per_user=2,
               file_per_server=4, file_expiry=10)


@pytest.fixture
def room():
    return ChatRoom(FILES)


def offer(room, sender, recipient_name, tid="f1", size=5, now=0.0):
    return room.handle(sender, f"OFFER {recipient_name} {tid} {size} {SHA} my file.txt".encode(), now)


def accepted(room, alice, bob, tid="f1"):
    """alice offers bob, bob accepts: the (sender, recipient) tokens."""
    offer(room, alice, bob.name, tid)
    actions = room.handle(bob, f"ACCEPT {alice.name} {tid}".encode(), 1.0)
    assert [a.session for a in actions] == [alice, bob]
    return tuple(a.line.split()[-1].decode() for a in actions)


# -- protocol ----------------------------------------------------------------------------


@pytest.mark.parametrize("line, command", [
    (f"OFFER bob f1 5 {SHA} a b.txt", protocol.Offer("bob", "f1", 5, SHA, "a b.txt")),
    ("ACCEPT alice f1", protocol.Accept("alice", "f1")),
    ("REJECT alice f1", protocol.Reject("alice", "f1")),
    ("CANCEL alice F16charsAAAAAAAA", protocol.Cancel("alice", "F16charsAAAAAAAA")),
    ("RECEIVED alice f1 ok", protocol.Received("alice", "f1", True)),
    ("RECEIVED alice f1 corrupt", protocol.Received("alice", "f1", False)),
    ("DATA 0123abcd", protocol.Data("0123abcd")),
])
def test_file_commands_parse_when_files_are_on(line, command):
    assert parse_command(line.encode(), files=True) == command


@pytest.mark.parametrize("line", [
    "OFFER", f"OFFER bob f1 5 {SHA}", f"OFFER bob f1 5 {SHA}  ", f"OFFER 9bob f1 5 {SHA} a",
    f"OFFER bob f_1 5 {SHA} a", f"OFFER bob f1 -5 {SHA} a", f"OFFER bob f1 12345678901 {SHA} a",
    f"OFFER bob f1 5 {SHA.upper()} a", "OFFER bob f1 5 abc a",
    "ACCEPT", "ACCEPT alice", "ACCEPT alice f1 x", "ACCEPT alice f1-2", "REJECT 1 f1",
    "CANCEL alice 12345678901234567", "RECEIVED alice f1", "RECEIVED alice f1 fine",
    "RECEIVED 9 f1 ok", "RECEIVED alice f_1 ok", "DATA", "DATA a b",
])
def test_malformed_file_commands_are_bad_syntax(line):
    with pytest.raises(ProtocolError) as raised:
        parse_command(line.encode(), files=True)
    assert raised.value.code is ErrorCode.BAD_SYNTAX


@pytest.mark.parametrize("verb", ["OFFER", "ACCEPT", "REJECT", "CANCEL", "RECEIVED", "DATA"])
def test_file_verbs_are_unknown_when_files_are_off(verb):
    with pytest.raises(ProtocolError) as raised:
        parse_command(f"{verb} alice f1".encode())
    assert raised.value.code is ErrorCode.UNKNOWN_COMMAND


def test_server_lines_of_file_sharing():
    assert protocol.format_offer("a", "b", "f1", 5, SHA, "x y") == f"OFFER a b f1 5 {SHA} x y\n".encode()
    assert protocol.format_accepted("a", "f1", "tok") == b"ACCEPTED a f1 tok\n"
    assert protocol.format_ended("a", "f1", "done") == b"ENDED a f1 done\n"
    assert protocol.format_ready("a", "f1", 5) == b"READY a f1 5\n"
    assert parse_reply(f"OFFER a b f1 5 {SHA} x y").fields == ("a", "b", "f1", "5", SHA, "x y")
    assert parse_reply("ENDED a f1 done").fields == ("a", "f1", "done")


def test_bad_token_closes_and_the_others_do_not():
    assert ErrorCode.BAD_TOKEN.closes
    assert not ErrorCode.NO_SUCH_TRANSFER.closes


def test_hello_advertises_the_file_limits_last():
    assert FILES.hello_params()[-4:] == [("file-max", 1000), ("file-per-user", 2),
                                        ("file-per-server", 4), ("file-expiry", 10)]


def test_file_limits_are_all_on_or_file_max_is_off():
    with pytest.raises(ValueError):
        Limits(file_max=10, file_per_user=0)
    assert Limits(file_max=0, file_per_user=0).file_max == 0


# -- the room ------------------------------------------------------------------------------


def test_an_offer_reaches_both_parties_the_senders_copy_last(room):
    alice, bob = register(room, "alice"), register(room, "Bob")
    register(room, "carol")
    line = f"OFFER alice Bob f1 5 {SHA} my file.txt\n".encode()
    assert offer(room, alice, "bob") == [Send(bob, line), Send(alice, line)]


def test_an_offer_to_oneself_is_sent_once(room):
    alice = register(room, "alice")
    line = f"OFFER alice alice f1 5 {SHA} my file.txt\n".encode()
    assert offer(room, alice, "alice") == [Send(alice, line)]


def test_file_commands_need_a_name_but_syntax_comes_first(room):
    stranger = connect(room)
    assert error_code(room.handle(stranger, b"OFFER bob f1 x y z", 0.0)) is ErrorCode.BAD_SYNTAX
    assert error_code(offer(room, stranger, "bob")) is ErrorCode.NOT_REGISTERED
    assert error_code(room.handle(stranger, b"CANCEL bob f1", 0.0)) is ErrorCode.NOT_REGISTERED


def test_an_offer_to_nobody_and_over_the_limits(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    assert error_code(offer(room, alice, "ghost")) is ErrorCode.NO_SUCH_USER
    assert error_code(offer(room, alice, "bob", size=1001)) is ErrorCode.FILE_TOO_LARGE
    offer(room, alice, "bob")
    assert error_code(offer(room, alice, "bob")) is ErrorCode.TRANSFER_EXISTS
    assert bob.name == "bob"


def test_accept_sends_each_party_its_own_token(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    sender_token, recipient_token = accepted(room, alice, bob)
    assert sender_token != recipient_token and len(sender_token) == 32


@pytest.mark.parametrize("verb, reason", [("REJECT", "rejected"), ("CANCEL", "cancelled")])
def test_reject_and_cancel_end_it_for_both_the_actors_line_last(room, verb, reason):
    alice, bob = register(room, "alice"), register(room, "bob")
    offer(room, alice, "bob")
    line = f"ENDED alice f1 {reason}\n".encode()
    ended = room.handle(bob, f"{verb} alice f1".encode(), 1.0)
    assert ended == [Send(alice, line), Send(bob, line), CutRelay(ended[-1].transfer)]


def test_a_third_user_gets_no_such_transfer(room):
    alice, bob, carol = register(room, "alice"), register(room, "bob"), register(room, "carol")
    offer(room, alice, "bob")
    assert error_code(room.handle(carol, b"ACCEPT alice f1", 1.0)) is ErrorCode.NO_SUCH_TRANSFER
    assert bob.name == "bob"


def test_data_connections_become_relays_and_the_verdict_ends_it(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    sender_token, recipient_token = accepted(room, alice, bob)
    data_in = connect(room)
    [relay_in] = room.handle(data_in, f"DATA {recipient_token}".encode(), 2.0)
    assert isinstance(relay_in, Relay) and (relay_in.side, relay_in.size) == (RECIPIENT, 5)
    assert relay_in.ready == b"READY alice f1 5\n"
    assert data_in.closing  # no more lines on it, and no timers
    data_out = connect(room)
    [relay_out] = room.handle(data_out, f"DATA {sender_token}".encode(), 2.0)
    assert relay_out.side == SENDER and relay_out.transfer is relay_in.transfer
    assert room.relay_finished(relay_in.transfer, "ok", 3.0) == []
    line = b"ENDED alice f1 done\n"
    assert room.handle(bob, b"RECEIVED alice f1 ok", 4.0)[:2] == [Send(alice, line), Send(bob, line)]


def test_a_failed_relay_tells_both(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    tokens = accepted(room, alice, bob)
    relays = [room.handle(connect(room), f"DATA {token}".encode(), 2.0)[0] for token in tokens]
    line = b"ENDED alice f1 oversize\n"
    ended = room.relay_finished(relays[0].transfer, "oversize", 3.0)
    assert ended[:2] == [Send(alice, line), Send(bob, line)]


def test_data_with_a_bad_token_closes_and_data_from_a_member_is_refused(room):
    alice = register(room, "alice")
    stranger = connect(room)
    actions = room.handle(stranger, b"DATA nothing", 0.0)
    assert error_code(actions) is ErrorCode.BAD_TOKEN and Close(stranger) in actions
    assert error_code(room.handle(alice, b"DATA nothing", 0.0)) is ErrorCode.ALREADY_REGISTERED


def test_a_leaving_party_ends_its_transfers_before_its_leave(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    offer(room, alice, "bob")
    actions = room.handle(bob, b"LEAVE", 1.0)
    assert actions[0] == Send(alice, b"ENDED alice f1 gone\n")
    assert actions[2:] == [Broadcast(b"LEAVE bob quit\n"), Unregister(bob), Close(bob)]
    offer(room, alice, "alice", tid="f2")  # to herself: nobody is left to tell
    actions = room.disconnect(alice, "closed")
    assert [type(action) for action in actions] == [CutRelay, Unregister, Broadcast, Close]


def test_offers_expire_on_the_watchdogs_tick(room):
    alice, bob = register(room, "alice"), register(room, "bob")
    offer(room, alice, "bob", now=0.0)
    assert room.tick(9.9) == []
    line = b"ENDED alice f1 expired\n"
    assert room.tick(10.0)[:2] == [Send(alice, line), Send(bob, line)]
    assert error_code(room.handle(bob, b"ACCEPT alice f1", 11.0)) is ErrorCode.OFFER_EXPIRED


def test_a_room_without_files_knows_no_file_verbs_and_leaves_as_before():
    room = ChatRoom(Limits(register_timeout=0, ping_interval=0, file_max=0))
    alice = register(room, "alice")
    assert error_code(offer(room, alice, "alice")) is ErrorCode.UNKNOWN_COMMAND
    assert room.tick(1000.0) == []
    assert room.handle(alice, b"LEAVE", 0.0) == [Broadcast(b"LEAVE alice quit\n"), Unregister(alice),
                                                Close(alice)]

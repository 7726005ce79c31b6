"""chat/cluster.py: two servers' rooms sharing one log, with the log simulated
as a list and its time passed in (SPEC.md 11b). No sockets, no waiting."""

import threading

import pytest

from chat import backplane, cluster, protocol, server
from chat.cluster import Append, ClusterRoom, Entry, decode, encode, stamp_of
from chat.limits import Limits
from chat.protocol import ErrorCode
from chat.state import Broadcast, Close, Register, Send, Unregister

NO_TIMERS = Limits(register_timeout=0, ping_interval=0, max_per_address=0)
LEASE_MS = 2000


class Log:
    """The room's log: entries appended in order, applied by every room in order."""

    def __init__(self, *rooms):
        self.rooms = rooms
        self.entries: list[tuple[int, Entry]] = []
        self.now_ms = 1_000_000
        #: What each room's server did with each entry: room -> actions.
        self.seen = {room: [] for room in rooms}

    def take(self, actions):
        """The actions other than appends; the appends go to the log."""
        rest = []
        for action in actions:
            if isinstance(action, Append):
                self.entries.append((self.now_ms, action.entry))
                self.now_ms += 1
            else:
                rest.append(action)
        return rest

    def run(self):
        """Every room applies every entry not applied yet; returns {room: actions}."""
        out = {room: [] for room in self.rooms}
        for stamp, entry in self.entries:
            for room in self.rooms:
                out[room] += self.take(room.apply(stamp, entry))
        self.entries.clear()
        return out


def ids(*names):
    """new_id for a room: the given ids, in turn."""
    names = list(names)
    return lambda: names.pop(0)


@pytest.fixture
def rooms():
    one = ClusterRoom(NO_TIMERS, "one", lease=LEASE_MS / 1000, new_id=ids("one-b"))
    two = ClusterRoom(NO_TIMERS, "two", lease=LEASE_MS / 1000)
    return one, two, Log(one, two)


def connect(room):
    session, _ = room.connect("127.0.0.1", 0.0)
    return session


def register(room, log, name):
    session = connect(room)
    assert log.take(room.handle(session, f"USER {name}".encode(), 0.0)) == []
    assert room.awaiting.pop(session).kind == "user"
    out = log.run()
    assert Register(session) in out[room]
    return session


def broadcasts(actions):
    return [a.line for a in actions if isinstance(a, Broadcast)]


# -- the log's format -------------------------------------------------------------------


@pytest.mark.parametrize("entry", [
    Entry("s1", 3, 7, "msg", ("  two  spaces and more ",)),
    Entry("s1", 3, 8, "pm", ("bob", "hi there")),
    Entry("s1", 3, 9, "users"),
    Entry("s1", 0, 0, "alive", ("2000",)),
])
def test_entries_survive_the_log_unchanged(entry):
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize("data", [b"\xff", b"s1 1 2", b"s1 1 2 bogus x", b"s1 x 2 msg hi",
                                  b"s1 1 2 users extra", b"s1 1 2 msg", b"s1 1 2 pm bob"])
def test_what_is_not_an_entry_is_skipped(data):
    assert decode(data) is None


def test_the_logs_time_is_the_ids_milliseconds():
    assert stamp_of("1700000000123-4") == 1700000000123


# -- [CLUSTER-1] to [CLUSTER-4]: one room in the log's order --------------------------


def test_join_and_msg_reach_both_servers_in_the_logs_order(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    bob = register(two, log, "bob")
    assert log.take(one.handle(alice, b"MSG hi", 1.0)) == []
    assert log.take(two.handle(bob, b"ACT waves", 1.0)) == []
    out = log.run()
    assert broadcasts(out[one]) == broadcasts(out[two]) == [b"MSG alice hi\n", b"ACT bob waves\n"]


def test_the_first_user_in_the_log_takes_the_name(rooms):
    one, two, log = rooms
    first, second = connect(one), connect(two)
    log.take(one.handle(first, b"USER Alice", 0.0))
    log.take(two.handle(second, b"USER aLICE", 0.0))
    out = log.run()
    assert out[one] == [Register(first), Broadcast(b"JOIN Alice\n")]
    assert out[two] == [Broadcast(b"JOIN Alice\n"),
                        Send(second, protocol.format_error(ErrorCode.NAME_TAKEN, "aLICE is taken"))]
    assert not second.registered


def test_user_checks_before_the_log_are_local(rooms):
    one, _, log = rooms
    session = connect(one)
    actions = one.handle(session, b"USER 9lives", 0.0)
    assert actions[0].line.startswith(b"ERR BAD_NAME ")
    alice = register(one, log, "alice")
    assert one.handle(alice, b"USER again", 0.0)[0].line.startswith(b"ERR ALREADY_REGISTERED ")
    locked = ClusterRoom(Limits(register_timeout=0, ping_interval=0, password="pw"), "x")
    stranger = connect(locked)
    assert locked.handle(stranger, b"USER bob", 0.0)[0].line.startswith(b"ERR PASSWORD_REQUIRED ")


def test_ping_is_answered_at_once_and_msg_before_user_is_refused_locally(rooms):
    one, _, _ = rooms
    session = connect(one)
    assert one.handle(session, b"PING t", 0.0) == [Send(session, b"PONG t\n")]
    assert one.handle(session, b"MSG hi", 0.0)[0].line.startswith(b"ERR NOT_REGISTERED ")
    assert one.handle(session, b"LEAVE", 0.0) == [Close(session)]  # [LEAVE-2]
    assert one.awaiting == {}


def test_pm_reaches_a_user_on_the_other_server_and_the_sender(rooms):
    one, two, log = rooms
    alice, bob = register(one, log, "alice"), register(two, log, "Bob")
    log.take(one.handle(alice, b"PM bob psst", 1.0))
    out = log.run()
    assert out[one] == [Send(alice, b"PM alice Bob psst\n")]
    assert out[two] == [Send(bob, b"PM alice Bob psst\n")]


def test_pm_to_oneself_comes_once_and_to_nobody_is_no_such_user(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    log.take(one.handle(alice, b"PM alice note", 1.0))
    log.take(one.handle(alice, b"PM ghost hi", 1.0))
    out = log.run()
    assert out[one] == [Send(alice, b"PM alice alice note\n"),
                        Send(alice, protocol.format_error(ErrorCode.NO_SUCH_USER, "ghost is not online"))]
    assert out[two] == []


def test_users_lists_both_servers_at_its_place_in_the_log(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    register(two, log, "bob")
    log.take(one.handle(alice, b"USERS", 1.0))
    carol = connect(two)
    log.take(two.handle(carol, b"USER carol", 1.0))  # After the USERS in the log: not listed.
    out = log.run()
    assert out[one][:2] == [Send(alice, b"NAMES alice bob\n"), Send(alice, b"ENDNAMES 2\n")]
    assert out[two] == [Register(carol), Broadcast(b"JOIN carol\n")]


def test_nick_is_decided_in_the_logs_order(rooms):
    one, two, log = rooms
    alice, bob = register(one, log, "alice"), register(two, log, "bob")
    log.take(one.handle(alice, b"NICK carol", 1.0))
    log.take(two.handle(bob, b"NICK Carol", 1.0))
    out = log.run()
    assert broadcasts(out[one]) == broadcasts(out[two]) == [b"NICK alice carol\n"]
    assert out[two][-1] == Send(bob, protocol.format_error(ErrorCode.NAME_TAKEN, "Carol is taken"))
    assert alice.name == "carol"
    assert one.handle(alice, b"NICK 9x", 1.0)[0].line.startswith(b"ERR BAD_NAME ")
    log.take(two.handle(bob, b"PM CAROL hi", 1.0))
    assert log.run()[one] == [Send(alice, b"PM bob carol hi\n")]


def test_leave_is_the_leavers_reply_then_it_is_closed(rooms):
    one, two, log = rooms
    alice, bob = register(one, log, "alice"), register(two, log, "bob")
    log.take(one.handle(alice, b"LEAVE", 1.0))
    assert alice.closing
    log.take(one.handle(alice, b"MSG too late", 1.0))  # [STATE-2]: no effect.
    out = log.run()
    assert out[one] == [Broadcast(b"LEAVE alice quit\n"), Unregister(alice), Close(alice)]
    assert out[two] == [Broadcast(b"LEAVE alice quit\n")]
    log.take(two.handle(bob, b"PM alice hi", 1.0))
    assert log.run()[two][0].line.startswith(b"ERR NO_SUCH_USER ")


def test_a_connection_that_ends_leaves_through_the_log(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    register(two, log, "bob")
    assert log.take(one.disconnect(alice, "closed")) == [Unregister(alice), Close(alice)]
    assert one.disconnect(alice, "closed") == []
    out = log.run()
    assert out[one] == out[two] == [Broadcast(b"LEAVE alice closed\n")]


def test_a_connection_that_ends_before_its_user_comes_back_joins_then_leaves(rooms):
    one, two, log = rooms
    alice = connect(one)
    log.take(one.handle(alice, b"USER alice", 0.0))
    assert log.take(one.disconnect(alice, "closed")) == [Close(alice)]
    one.release(alice)
    out = log.run()
    assert broadcasts(out[two]) == [b"JOIN alice\n", b"LEAVE alice closed\n"]
    assert out[one] == [Broadcast(b"JOIN alice\n"), Broadcast(b"LEAVE alice closed\n")]


def test_entries_after_a_members_leave_change_nothing(rooms):
    one, two, log = rooms
    log.entries.append((log.now_ms, Entry("two", 99, 1, "msg", ("ghost",))))
    assert log.run() == {one: [], two: []}


def test_a_closing_session_gets_nothing_more_from_the_log(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    log.take(one.handle(alice, b"USERS", 1.0))
    alice.closing = True
    assert log.run()[one] == []


# -- [CLUSTER-5], [CLUSTER-7]: a silent server is gone -----------------------------------


def heartbeat(log, room):
    log.take([Append(room.heartbeat(), False)])


def test_a_silent_servers_users_leave_with_reason_timeout_after_its_lease(rooms):
    one, two, log = rooms
    register(one, log, "alice")
    register(two, log, "bob")
    heartbeat(log, two)
    for _ in range(LEASE_MS // 400 + 1):  # Only one speaks for a lease and more.
        log.now_ms += 400
        heartbeat(log, one)
    out = log.run()
    assert broadcasts(out[one]) == broadcasts(out[two]) == [b"LEAVE bob timeout\n"]
    # Its later entries are ignored: it is gone for good.
    log.entries.append((log.now_ms, Entry("two", 1, 9, "msg", ("late",))))
    assert log.run() == {one: [], two: []}


def test_a_silent_log_blames_nobody(rooms):
    one, two, log = rooms
    register(one, log, "alice")
    register(two, log, "bob")
    log.now_ms += 10 * LEASE_MS  # The engine was down: nobody could write.
    heartbeat(log, one)
    log.now_ms += LEASE_MS // 2 - 1
    heartbeat(log, one)
    assert log.run() == {one: [], two: []}


def test_a_server_declared_gone_closes_its_clients_and_takes_a_new_id(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    joining = connect(one)
    log.take(one.handle(joining, b"USER late", 0.0))
    log.entries.pop()  # Still on its way: the server was cut off.
    leaving = register(one, log, "dora")
    one.disconnect(leaving, "closed")
    log.entries.clear()
    register(two, log, "bob")
    heartbeat(log, two)
    for _ in range(LEASE_MS // 400 + 1):
        log.now_ms += 400
        heartbeat(log, two)
    out = log.run()
    down = protocol.format_error(ErrorCode.BACKPLANE_DOWN, "this server lost the room's log: connect again")
    assert out[one] == [Unregister(alice), Broadcast(b"LEAVE alice timeout\n"),
                        Broadcast(b"LEAVE dora timeout\n"),
                        Send(alice, down), Close(alice), Send(joining, down), Close(joining)]
    assert one.server_id == "one-b" and one.own_ids == {"one", "one-b"}
    newcomer = register(one, log, "erin")
    assert newcomer.registered


def test_a_heartbeat_carries_the_lease(rooms):
    one, _, _ = rooms
    assert one.heartbeat() == Entry("one", 0, 0, "alive", (str(LEASE_MS),))


# -- [CLUSTER-9], [CLUSTER-10]: snapshots, so that the log can be trimmed --------------


def test_a_server_started_from_a_snapshot_holds_the_room_as_the_others_do(rooms):
    one, two, log = rooms
    register(one, log, "alice")
    bob = register(two, log, "bob")
    log.take(two.handle(bob, b"NICK Bobby", 0.0))
    heartbeat(log, two)
    log.run()
    log.now_ms += 400
    heartbeat(log, one)
    log.run()
    three = ClusterRoom(NO_TIMERS, "three", lease=LEASE_MS / 1000)
    assert three.restore(one.snapshot(), fresh=True) == []
    assert three.snapshot() == one.snapshot() == two.snapshot()
    log.rooms += (three,)
    log.seen[three] = []
    carol = register(three, log, "carol")
    assert log.take(three.handle(carol, b"USERS", 0.0)) == []
    out = log.run()
    assert [a.line for a in out[three] if isinstance(a, Send)] == \
        [b"NAMES alice Bobby carol\n", b"ENDNAMES 3\n"]
    # The leases came with it: a server silent since goes at the same entry everywhere.
    for _ in range(LEASE_MS // 400 + 1):
        log.now_ms += 400
        heartbeat(log, two)
        heartbeat(log, three)
    out = log.run()
    assert broadcasts(out[three]) == broadcasts(out[two]) == [b"LEAVE alice timeout\n"]
    assert three.gone == two.gone == {"one"}


def test_a_server_trimmed_past_closes_its_clients_and_takes_the_room_from_a_snapshot(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    register(two, log, "bob")
    state = two.snapshot()
    down = protocol.format_error(ErrorCode.BACKPLANE_DOWN, "this server lost the room's log: connect again")
    assert one.restore(state, fresh=False) == [Unregister(alice), Broadcast(b"LEAVE alice timeout\n"),
                                               Send(alice, down), Close(alice)]
    assert one.server_id == "one-b" and one.snapshot() == state


# -- [CLUSTER-6]: the log is unreachable -------------------------------------------------


def test_a_refused_command_is_an_err_and_changes_nothing(rooms):
    one, two, log = rooms
    alice = connect(one)
    log.take(one.handle(alice, b"USER alice", 0.0))
    log.entries.clear()
    assert one.refused(alice) == [Send(alice, protocol.format_error(
        ErrorCode.BACKPLANE_DOWN, "the room's log is unreachable: not sent, try again"))]
    assert not alice.registered
    assert one.disconnect(alice, "closed") == [Close(alice)]  # No LEAVE: it never joined.


def test_a_refused_leave_closes_now_and_its_leave_waits_for_the_log(rooms):
    one, two, log = rooms
    alice = register(one, log, "alice")
    log.take(one.handle(alice, b"LEAVE", 1.0))
    log.entries.clear()
    actions = one.refused(alice)
    assert actions[0] == Unregister(alice) and actions[-1] == Close(alice)
    assert log.take(actions) == [Unregister(alice), Close(alice)]
    assert broadcasts(log.run()[two]) == [b"LEAVE alice quit\n"]


def test_a_refused_command_of_a_closing_or_gone_session_sends_nothing(rooms):
    one, _, log = rooms
    stranger = connect(one)
    stranger.closing = True
    assert one.refused(stranger) == []
    gone = connect(one)
    one.release(gone)
    assert one.refused(gone) == []


def test_shutdown_sends_the_leaves_of_registered_and_joining_users(rooms):
    one, two, log = rooms
    register(one, log, "alice")
    joining = connect(one)
    log.take(one.handle(joining, b"USER bob", 0.0))
    connect(one)  # Never asked for a name: no LEAVE.
    log.take(one.shutdown())
    out = log.run()
    assert broadcasts(out[two]) == [b"JOIN bob\n", b"LEAVE alice closed\n", b"LEAVE bob closed\n"]


def test_a_refused_connection_holds_no_slot(rooms):
    full = ClusterRoom(Limits(max_clients=1, register_timeout=0, ping_interval=0), "x")
    connect(full)
    session, actions = full.connect("127.0.0.1", 0.0)
    assert not session.counted and actions[-1] == Close(session)


def test_default_ids_are_random():
    assert ClusterRoom(NO_TIMERS).server_id != ClusterRoom(NO_TIMERS).server_id
    assert cluster.DEFAULT_LEASE >= 1


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(("url", "parsed"), [
    ("redis://127.0.0.1:6390/2", ("127.0.0.1", 6390, 2)),
    ("redis://redis.example", ("redis.example", 6379, 0)),
])
def test_a_backplane_url_gives_host_port_and_database(url, parsed):
    assert backplane.parse_url(url) == parsed


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://", "redis://host/zero"])
def test_a_wrong_backplane_url_is_a_one_line_option_error(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        server.build_parser().parse_args(["--backplane", url])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--backplane" in error and url in error and error.count("\n") == 1, error


def test_a_lease_of_zero_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        server.main(["--backplane", "redis://127.0.0.1:1/0", "--backplane-lease", "0"])
    assert exit_info.value.code == 2
    assert "--backplane-lease" in capsys.readouterr().err


# -- which lines may stream (chat/backplane.py, Stream) ---------------------------------


def test_only_msg_act_and_pm_of_a_registered_client_stream(rooms):
    one, _, log = rooms
    stranger = connect(one)
    assert not one.streamable(stranger, b"MSG hi")  # NOT_REGISTERED is a local reply.
    alice = register(one, log, "alice")
    for line in (b"MSG hi", b"ACT waves", b"PM bob hi"):
        assert one.streamable(alice, line), line
    for line in (b"PING t", b"USERS", b"NICK x", b"LEAVE", b"MSG", b"BOGUS", b"\xff"):
        assert not one.streamable(alice, line), line
    assert not one.streamable(alice, protocol.ProtocolError(ErrorCode.LINE_TOO_LONG, "long"))
    alice.closing = True
    assert not one.streamable(alice, b"MSG hi")


def test_a_refused_entry_of_a_session_gone_sends_nothing(rooms):
    one, _, log = rooms
    alice = register(one, log, "alice")
    log.take(one.handle(alice, b"MSG hi", 1.0))
    [(_, entry)] = log.entries
    assert one.refused_entry(entry)[0].line.startswith(b"ERR BACKPLANE_DOWN ")
    one.release(alice)
    assert one.refused_entry(entry) == []


# -- the backplane's bookkeeping, without Redis -------------------------------------


class RecordingServer:
    """What Backplane needs of a ChatServer: its lock, _apply and _stopping."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.applied = []

    def _apply(self, actions):
        self.applied += actions


def test_a_refusal_waits_for_the_entries_of_that_client_before_it(rooms):
    # [ORDER-4] with [CLUSTER-6]: MSG 1 was appended just before Redis went
    # away, MSG 2 was refused; MSG 1's echo comes back first, then the ERR.
    one, _, log = rooms
    alice = register(one, log, "alice")
    server_stub = RecordingServer()
    plane = backplane.Backplane("redis://127.0.0.1:1/0", server_stub, one)
    appends = []
    for text in (b"MSG one", b"MSG two", b"MSG three"):
        [append] = one.handle(alice, text, 1.0)
        plane.submit(append)
        appends.append(append)
    plane._refuse([appends[1]])
    assert server_stub.applied == []  # Not before MSG one is back.
    for append in (appends[0], appends[2]):
        with server_stub._lock:
            server_stub._apply(one.apply(log.now_ms, append.entry))
            plane._settle(append.entry, "applied")
    [_, refusal, _] = server_stub.applied
    assert refusal.session is alice and refusal.line.startswith(b"ERR BACKPLANE_DOWN ")
    assert server_stub.applied == [Broadcast(b"MSG alice one\n"), refusal, Broadcast(b"MSG alice three\n")]
    for append in appends:
        plane.wait(append.entry.seq)  # All settled: no wait.
    assert plane._order == {} and plane._pending == {}


def test_a_senders_entries_out_at_once_are_a_sliding_window(rooms):
    # Stream: at STREAM_MAX out, the next MSG waits for the oldest only (the
    # log gives them back in order), so a fast sender's pipeline stays full;
    # a line that needs the room's state waits for all of them.
    one, _, log = rooms
    alice = register(one, log, "alice")
    plane = backplane.Backplane("redis://127.0.0.1:1/0", RecordingServer(), one)
    waited = []
    plane.wait = waited.append
    stream = plane.stream(alice)
    seqs = []
    for number in range(backplane.STREAM_MAX + 2):
        line = b"MSG %d" % number
        stream.before(line)
        one.handle(alice, line, 1.0)
        seqs.append(one.awaiting[alice].seq)
        stream.after()
    assert waited == seqs[:2]
    stream.before(b"USERS")
    assert waited == seqs[:2] + [seqs[-1]]
    stream.finish()  # Nothing out any more: no wait.
    assert waited == seqs[:2] + [seqs[-1]]


# -- [CLUSTER-11], [CLUSTER-12]: file sharing across servers ------------------------------

FILES = Limits(register_timeout=0, ping_interval=0, max_per_address=0, file_max=1000, file_per_user=2,
               file_per_server=3, file_expiry=5)
HASH = "ab" * 32


@pytest.fixture
def file_rooms():
    one = ClusterRoom(FILES, "one", lease=LEASE_MS / 1000, new_id=ids("one-b"))
    two = ClusterRoom(FILES, "two", lease=LEASE_MS / 1000)
    return one, two, Log(one, two)


def sent(actions, session):
    return [a.line for a in actions if isinstance(a, Send) and a.session is session]


def command(room, log, session, line):
    """`line` from `session`: what is decided at once (nothing, if it went to the log)."""
    actions = log.take(room.handle(session, line.encode(), 0.0))
    room.awaiting.pop(session, None)
    return actions


def offered(file_rooms, size=10):
    """alice (on one) offers bob (on two) a file; both have seen the OFFER."""
    one, two, log = file_rooms
    alice, bob = register(one, log, "alice"), register(two, log, "bob")
    log.run()
    assert command(one, log, alice, f"OFFER bob t1 {size} {HASH} a file.txt") == []
    out = log.run()
    line = f"OFFER alice bob t1 {size} {HASH} a file.txt\n".encode()
    assert sent(out[one], alice) == [line] and sent(out[two], bob) == [line]
    return alice, bob


def accepted(file_rooms, alice, bob):
    """bob accepts: each gets ACCEPTED with a token of its own; (alice's token, bob's)."""
    one, two, log = file_rooms
    command(two, log, bob, "ACCEPT alice t1")
    out = log.run()
    [to_alice], [to_bob] = sent(out[one], alice), sent(out[two], bob)
    assert to_alice.startswith(b"ACCEPTED alice t1 ") and to_bob.startswith(b"ACCEPTED alice t1 ")
    return to_alice.split()[3].decode(), to_bob.split()[3].decode()


def test_a_file_goes_across_servers_with_its_data_connections_anywhere(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    alice_token, bob_token = accepted(file_rooms, alice, bob)
    # bob's data connection reaches server one, alice's server two.
    bob_data, alice_data = connect(one), connect(two)
    command(one, log, bob_data, f"DATA {bob_token}")
    out = log.run()
    [relay] = out[one]
    assert isinstance(relay, cluster.Relay) and relay.session is bob_data and relay.side == "recipient"
    assert relay.ready == b"READY alice t1 10\n" and bob_data.closing
    assert out[two] == []  # Not both yet: nobody is told to go.
    command(two, log, alice_data, f"DATA {alice_token}")
    out = log.run()
    [relay, changed] = out[two]
    assert relay.session is alice_data and relay.side == "sender" and changed.transfer is relay.transfer
    [changed] = out[one]  # Both are here: each server's side may send READY.
    assert isinstance(changed, cluster.TransferChanged) and changed.transfer.state == "relaying"
    assert cluster.transfer_id(relay.transfer) == cluster.transfer_id(changed.transfer) == alice_token
    # The relay's outcome goes to the log; RECEIVED after it ends the transfer.
    assert log.take(two.relay_finished(relay.transfer, "ok", 0.0)) == []
    out = log.run()
    assert [type(a) for a in out[one]] == [type(a) for a in out[two]] == [cluster.TransferChanged]
    command(two, log, bob, "RECEIVED alice t1 ok")
    out = log.run()
    assert sent(out[one], alice) == [b"ENDED alice t1 done\n"] == sent(out[two], bob)
    assert any(isinstance(a, cluster.CutRelay) for a in out[one])
    # Both tokens are spent on every server.
    late = connect(one)
    command(one, log, late, f"DATA {alice_token}")
    out = log.run()
    assert sent(out[one], late)[0].startswith(b"ERR BAD_TOKEN ") and Close(late) in out[one]


def test_a_failed_relay_ends_the_transfer_for_both(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    alice_token, bob_token = accepted(file_rooms, alice, bob)
    for room, token in ((one, alice_token), (two, bob_token)):
        command(room, log, connect(room), f"DATA {token}")
    relays = [a for a in log.run()[one] if isinstance(a, cluster.Relay)]
    log.take(one.relay_finished(relays[0].transfer, "aborted", 0.0))
    out = log.run()
    assert sent(out[one], alice) == [b"ENDED alice t1 aborted\n"] == sent(out[two], bob)
    # An outcome of a transfer that ended already changes nothing.
    log.take(two.relay_finished(relays[0].transfer, "aborted", 0.0))
    assert log.run() == {one: [], two: []}


def test_the_checks_of_an_offer_are_the_rooms_and_answer_the_offerer_only(file_rooms):
    one, two, log = file_rooms
    alice, bob = register(one, log, "alice"), register(two, log, "bob")
    log.run()
    for line, code in ((f"OFFER carol t1 10 {HASH} f", "NO_SUCH_USER"),
                       (f"OFFER bob t1 1001 {HASH} f", "FILE_TOO_LARGE")):
        command(one, log, alice, line)
        out = log.run()
        assert [m.split()[1] for m in sent(out[one], alice)] == [code.encode()] and out[two] == []
    command(two, log, bob, "ACCEPT alice t9")
    assert sent(log.run()[two], bob)[0].startswith(b"ERR NO_SUCH_TRANSFER ")


def test_a_self_offer_is_sent_once(file_rooms):
    one, _, log = file_rooms
    alice = register(one, log, "alice")
    command(one, log, alice, f"OFFER alice t1 3 {HASH} f")
    assert sent(log.run()[one], alice) == [f"OFFER alice alice t1 3 {HASH} f\n".encode()]


def test_reject_and_cancel_end_the_transfer_for_both_the_actor_last(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    command(two, log, bob, "REJECT alice t1")
    out = log.run()
    assert sent(out[one], alice) == [b"ENDED alice t1 rejected\n"] == sent(out[two], bob)
    command(one, log, alice, f"OFFER bob t2 5 {HASH} f")
    log.run()
    command(one, log, alice, "CANCEL alice t2")
    out = log.run()
    assert sent(out[one], alice) == [b"ENDED alice t2 cancelled\n"] == sent(out[two], bob)


def test_a_leaving_party_ends_its_transfers_before_its_leave(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    log.take(one.disconnect(alice, "closed"))
    out = log.run()
    assert out[two] == [Send(bob, b"ENDED alice t1 gone\n"), cluster.CutRelay(out[two][1].transfer),
                        Broadcast(b"LEAVE alice closed\n")]


def test_a_silent_servers_transfers_end_gone(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    heartbeat(log, two)
    for _ in range(LEASE_MS // 400 + 1):
        log.now_ms += 400
        heartbeat(log, two)
    out = log.run()
    assert sent(out[two], bob) == [b"ENDED alice t1 gone\n"]


def test_an_offer_expires_on_the_logs_clock_not_the_servers(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    assert one.tick(1e9) == []  # This server's clock decides nothing.
    offered_at = log.now_ms - 1  # The OFFER's place in the log.
    log.now_ms = offered_at + 5000 - 1
    heartbeat(log, one)
    assert sent(log.run()[one], alice) == []
    log.now_ms = offered_at + 5000
    heartbeat(log, one)
    out = log.run()
    assert sent(out[one], alice) == [b"ENDED alice t1 expired\n"] == sent(out[two], bob)
    command(two, log, bob, "ACCEPT alice t1")
    assert sent(log.run()[two], bob)[0].startswith(b"ERR OFFER_EXPIRED ")


def test_file_commands_before_user_and_data_after_it_are_refused_at_once(file_rooms):
    one, _, log = file_rooms
    stranger = connect(one)
    [error] = command(one, log, stranger, f"OFFER bob t1 3 {HASH} f")
    assert error.line.startswith(b"ERR NOT_REGISTERED ")
    alice = register(one, log, "alice")
    [error] = command(one, log, alice, "DATA 0123")
    assert error.line.startswith(b"ERR ALREADY_REGISTERED ")


def test_a_file_entry_of_a_member_gone_or_for_a_room_without_files_does_nothing(file_rooms):
    one, two, log = file_rooms
    log.entries.append((log.now_ms, Entry("two", 42, 1, "cancel", ("alice", "t1"))))
    log.entries.append((log.now_ms, Entry("two", 0, 2, "relayed", ("nothing", "ok"))))
    assert log.run() == {one: [], two: []}
    without = ClusterRoom(Limits(register_timeout=0, ping_interval=0, max_per_address=0, file_max=0), "three")
    plain_log = Log(without)
    alice = register(without, plain_log, "alice")
    plain_log.entries.append((plain_log.now_ms, Entry("two", 1, 1, "data", ("token",))))
    assert plain_log.run()[without] == []
    plain_log.take(without.disconnect(alice, "closed"))
    assert broadcasts(plain_log.run()[without]) == [b"LEAVE alice closed\n"]


def test_a_restored_server_forgets_the_transfers_it_knew(file_rooms):
    one, two, log = file_rooms
    alice, bob = offered(file_rooms)
    alice_token, _ = accepted(file_rooms, alice, bob)
    actions = one.restore(two.snapshot(), fresh=False)
    assert [a for a in actions if isinstance(a, cluster.CutRelay)][0].transfer.tokens["sender"] == alice_token
    late = connect(one)
    command(one, log, late, f"DATA {alice_token}")
    assert sent(log.run()[one], late)[0].startswith(b"ERR BAD_TOKEN ")


def test_file_entries_survive_the_log_and_a_member_has_an_id():
    entry = Entry("s1", 3, 7, "offer", ("bob", "t1", "10", HASH, "a  file .txt"))
    assert decode(encode(entry)) == entry
    assert cluster.Member("alice", "s1", 3).id == "s1/3"

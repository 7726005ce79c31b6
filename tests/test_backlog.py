"""The input bound, purely: InputBacklog, ChatRoom.excess_flood, looks_like_tls.

[LIMIT-4] delays a connection's lines, [LIMIT-8] bounds how many may wait,
[LIMIT-10] discards them after a reset; [SEC-3] and [SEC-4] tell TLS from
plain text by the first bytes. Time is passed in, so nothing here waits.
"""

from __future__ import annotations

import pytest

from chat.limits import Limits
from chat.protocol import ErrorCode, ProtocolError, looks_like_tls
from chat.state import Broadcast, ChatRoom, Close, InputBacklog, Send, TokenBucket, Unregister

LIMITS = Limits(flood_rate=10, flood_burst=3, inbound_max=5)


def drain(backlog: InputBacklog, now: float) -> list:
    """Everything take() gives at `now`."""
    taken = []
    while (item := backlog.take(now)) is not None:
        taken.append(item)
    return taken


def test_a_burst_is_handled_at_once_and_the_rest_at_the_flood_rate():
    backlog = InputBacklog(LIMITS, now=0.0)
    assert backlog.add([b"1", b"2", b"3", b"4", b"5"], now=0.0)
    assert drain(backlog, 0.0) == [b"1", b"2", b"3"]
    assert len(backlog) == 2
    assert backlog.wait(0.0) == pytest.approx(0.1)
    assert drain(backlog, 0.05) == []
    assert backlog.wait(0.05) == pytest.approx(0.05)
    assert drain(backlog, 0.1) == [b"4"]
    assert drain(backlog, 0.2) == [b"5"]
    assert backlog.wait(0.2) == 0.0 and len(backlog) == 0


def test_empty_lines_and_framing_errors_wait_like_lines():
    backlog = InputBacklog(LIMITS, now=0.0)
    error = ProtocolError(ErrorCode.LINE_TOO_LONG, "too long")
    assert backlog.add([b"", error, b"", b""], now=0.0)
    assert drain(backlog, 0.0) == [b"", error, b""]
    assert drain(backlog, 0.1) == [b""]


def test_a_paste_of_burst_plus_inbound_max_lines_is_within_the_bound():
    backlog = InputBacklog(LIMITS, now=0.0)
    assert backlog.add([b"x"] * (3 + 5), now=0.0)  # [LIMIT-8]: flood-burst + inbound-max


def test_one_line_more_is_an_excess_flood():
    backlog = InputBacklog(LIMITS, now=0.0)
    assert not backlog.add([b"x"] * (3 + 5 + 1), now=0.0)


def test_lines_already_due_do_not_count_against_the_bound():
    backlog = InputBacklog(LIMITS, now=0.0)
    assert backlog.add([b"x"] * 8, now=0.0)
    assert len(drain(backlog, 0.0)) == 3
    # The allowance is spent and 5 wait, one of them holding its allowance already:
    # one more line is one too many, until the allowance refills.
    assert backlog.take(0.0) is None
    assert not backlog.add([b"y"], now=0.0)
    assert backlog.add([], now=0.2)  # two lines' worth refilled by now


def test_without_flood_control_nothing_waits_and_nothing_is_bounded():
    backlog = InputBacklog(Limits(flood_rate=0, inbound_max=5), now=0.0)
    assert backlog.add([b"x"] * 1000, now=0.0)
    assert len(drain(backlog, 0.0)) == 1000


def test_inbound_max_0_switches_the_bound_off():
    backlog = InputBacklog(Limits(flood_rate=10, flood_burst=3, inbound_max=0), now=0.0)
    assert backlog.add([b"x"] * 1000, now=0.0)


def test_discard_drops_what_waits():
    backlog = InputBacklog(LIMITS, now=0.0)
    backlog.add([b"x"] * 6, now=0.0)
    drain(backlog, 0.0)
    assert backlog.discard() == 3  # [LIMIT-10]
    assert len(backlog) == 0 and backlog.wait(0.0) == 0.0 and backlog.take(1.0) is None


def test_token_bucket_available_takes_nothing():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert bucket.available(0.0) == 3
    assert bucket.available(0.0) == 3
    for _ in range(4):
        bucket.delay(0.0)
    assert bucket.available(0.0) == 0  # a debt is not an allowance
    assert bucket.available(0.2) == 1


def test_excess_flood_sends_the_error_then_leave_flood_to_the_others():
    room = ChatRoom(LIMITS)
    flooder, _ = room.connect("192.0.2.1", 0.0)
    room.handle(flooder, b"USER alice", 0.0)
    actions = room.excess_flood(flooder)
    assert isinstance(actions[0], Send) and actions[0].line.startswith(b"ERR EXCESS_FLOOD ")
    assert actions[1:] == [Unregister(flooder), Broadcast(b"LEAVE alice flood\n"), Close(flooder)]
    assert flooder.ended == "flood"
    assert room.excess_flood(flooder) == []  # once closing, nothing more


def test_closing_errors_and_leave_reasons_are_kept_for_the_log():
    room = ChatRoom(Limits(password="secret"))
    guesser, _ = room.connect("192.0.2.1", 0.0)
    room.handle(guesser, b"PASS wrong", 0.0)
    assert guesser.ended == "BAD_PASSWORD"
    leaver, _ = room.connect("192.0.2.2", 0.0)
    room.handle(leaver, b"LEAVE", 0.0)
    assert leaver.ended == "quit"


@pytest.mark.parametrize("data, tls", [
    (b"\x16\x03\x01\x00\xa5", True),    # a ClientHello record
    (b"\x16", True),                    # one byte of it so far
    (b"\x16\x02", False),               # not a version TLS has
    (b"USER alice\n", False),
    (b"", False),
])
def test_looks_like_tls(data, tls):
    assert looks_like_tls(data) is tls

"""chat/transfers.py, the bookkeeping of file transfers (SPEC.md section 11a), with no I/O:
every rule through the public functions, time passed in."""

from __future__ import annotations

import itertools

import pytest

from chat.protocol import ErrorCode
from chat.transfers import (
    ACCEPTED,
    OFFERED,
    RECIPIENT,
    RELAYED,
    RELAYING,
    SENDER,
    Grant,
    RelayPacing,
    TransferError,
    TransferTable,
    new_token,
)

ALICE, BOB, CAROL = object(), object(), object()
SHA = "0" * 64


def table(per_user=2, per_server=3, expiry=10, file_max=1000):
    tokens = (f"token{n}" for n in itertools.count(1))
    return TransferTable(file_max, per_user, per_server, expiry, make_token=lambda: next(tokens))


def code_of(call, *args) -> ErrorCode:
    with pytest.raises(TransferError) as raised:
        call(*args)
    return raised.value.code


def offered(files, key=("alice", "f1"), size=5, now=0.0, sender=ALICE, recipient=BOB):
    return files.offer(sender, recipient, key, size, SHA, "a.txt", now)


def test_an_offer_is_open_and_counted_until_it_ends():
    files = table()
    transfer = offered(files)
    assert (transfer.state, transfer.deadline, len(files)) == (OFFERED, 10.0, 1)
    assert transfer.parties() == [ALICE, BOB]
    assert files.find(BOB, ("alice", "f1")) is transfer
    assert files.cancel(ALICE, ("alice", "f1")).reason == "cancelled"
    assert len(files) == 0
    assert code_of(files.find, ALICE, ("alice", "f1")) is ErrorCode.NO_SUCH_TRANSFER


def test_offer_checks_in_the_order_of_file_5():
    files = table(per_user=2, per_server=3)
    assert code_of(offered, files, ("alice", "big"), 1001) is ErrorCode.FILE_TOO_LARGE
    offered(files, ("alice", "f1"), 1000)  # file-max itself is allowed
    assert code_of(offered, files, ("alice", "f1")) is ErrorCode.TRANSFER_EXISTS
    offered(files, ("alice", "f2"))
    assert code_of(offered, files, ("alice", "f3")) is ErrorCode.TOO_MANY_TRANSFERS
    offered(files, ("carol", "f1"), sender=CAROL)
    assert code_of(offered, files, ("carol", "f2"), 5, 0.0, CAROL) is ErrorCode.TRANSFERS_FULL


def test_a_sender_with_two_transfers_keeps_its_count_when_one_ends():
    files = table(per_user=2)
    offered(files, ("alice", "f1"))
    offered(files, ("alice", "f2"))
    files.reject(BOB, ("alice", "f1"))
    offered(files, ("alice", "f3"))  # one slot free again
    assert code_of(offered, files, ("alice", "f4")) is ErrorCode.TOO_MANY_TRANSFERS


def test_only_the_two_parties_see_a_transfer():
    files = table()
    offered(files)
    for call in (files.find, files.cancel):
        assert code_of(call, CAROL, ("alice", "f1")) is ErrorCode.NO_SUCH_TRANSFER
    assert code_of(files.accept, CAROL, ("alice", "f1"), 0.0) is ErrorCode.NO_SUCH_TRANSFER


def test_accept_gives_each_side_its_token_and_a_new_deadline():
    files = table()
    offered(files)
    transfer = files.accept(BOB, ("alice", "f1"), 4.0)
    assert (transfer.state, transfer.deadline) == (ACCEPTED, 14.0)
    assert transfer.tokens == {SENDER: "token1", RECIPIENT: "token2"}


def test_only_the_recipient_answers_and_only_once():
    files = table()
    offered(files)
    assert code_of(files.accept, ALICE, ("alice", "f1"), 0.0) is ErrorCode.WRONG_STATE
    assert code_of(files.reject, ALICE, ("alice", "f1")) is ErrorCode.WRONG_STATE
    files.accept(BOB, ("alice", "f1"), 0.0)
    assert code_of(files.accept, BOB, ("alice", "f1"), 0.0) is ErrorCode.WRONG_STATE
    assert code_of(files.reject, BOB, ("alice", "f1")) is ErrorCode.WRONG_STATE


def test_an_offer_to_oneself_is_answered_by_oneself():
    files = table()
    transfer = offered(files, recipient=ALICE)
    assert transfer.parties() == [ALICE]
    assert files.accept(ALICE, ("alice", "f1"), 0.0).state == ACCEPTED


def test_tokens_open_one_data_connection_each_and_relaying_has_no_deadline():
    files = table()
    offered(files)
    transfer = files.accept(BOB, ("alice", "f1"), 0.0)
    assert files.attach("token2") == (transfer, RECIPIENT)
    assert transfer.state == ACCEPTED
    assert code_of(files.attach, "token2") is ErrorCode.BAD_TOKEN  # once only
    assert files.attach("token1") == (transfer, SENDER)
    assert (transfer.state, transfer.deadline) == (RELAYING, None)
    assert files.expire(1000.0) == []


def test_the_tokens_of_an_ended_transfer_open_nothing():
    files = table()
    offered(files)
    files.accept(BOB, ("alice", "f1"), 0.0)
    files.cancel(BOB, ("alice", "f1"))
    assert code_of(files.attach, "token1") is ErrorCode.BAD_TOKEN


def relaying(files):
    offered(files)
    transfer = files.accept(BOB, ("alice", "f1"), 0.0)
    files.attach("token1")
    files.attach("token2")
    return transfer


def test_a_relay_that_went_well_waits_for_the_verdict():
    files = table()
    transfer = relaying(files)
    assert code_of(files.received, BOB, ("alice", "f1"), True) is ErrorCode.WRONG_STATE
    assert files.relay_finished(transfer, "ok", 5.0) is None
    assert (transfer.state, transfer.deadline) == (RELAYED, 15.0)
    assert code_of(files.received, ALICE, ("alice", "f1"), True) is ErrorCode.WRONG_STATE
    assert files.received(BOB, ("alice", "f1"), True).reason == "done"


def test_a_corrupt_verdict_ends_it_corrupt():
    files = table()
    transfer = relaying(files)
    files.relay_finished(transfer, "ok", 0.0)
    assert files.received(BOB, ("alice", "f1"), False).reason == "corrupt"


@pytest.mark.parametrize("outcome", ["aborted", "oversize"])
def test_a_failed_relay_ends_the_transfer_with_its_outcome(outcome):
    files = table()
    transfer = relaying(files)
    assert files.relay_finished(transfer, outcome, 0.0) is transfer
    assert transfer.reason == outcome and len(files) == 0


def test_a_relay_that_ends_after_the_transfer_changes_nothing():
    files = table()
    transfer = relaying(files)
    files.cancel(ALICE, ("alice", "f1"))
    assert files.relay_finished(transfer, "aborted", 0.0) is None
    # A new transfer under the same tid is another transfer: the old relay's end is not its.
    newer = offered(files)
    assert files.relay_finished(transfer, "aborted", 0.0) is None
    assert newer.reason is None


def test_a_relay_reported_before_both_sides_arrived_changes_nothing():
    files = table()
    offered(files)
    transfer = files.accept(BOB, ("alice", "f1"), 0.0)
    assert files.relay_finished(transfer, "aborted", 0.0) is None
    assert transfer.state == ACCEPTED


def test_each_waiting_state_expires_after_expiry_seconds_and_not_before():
    files = table(per_server=3)
    waiting_for_answer = offered(files, ("alice", "f1"), now=0.0)
    waiting_for_data = offered(files, ("alice", "f2"), now=0.0)
    files.accept(BOB, ("alice", "f2"), 5.0)
    waiting_for_verdict = offered(files, ("carol", "f1"), now=0.0, sender=CAROL)
    files.accept(BOB, ("carol", "f1"), 0.0)
    files.attach("token3")
    files.attach("token4")
    files.relay_finished(waiting_for_verdict, "ok", 8.0)
    assert files.expire(9.99) == []
    assert files.expire(10.0) == [waiting_for_answer]
    assert files.expire(15.0) == [waiting_for_data]
    assert files.expire(18.0) == [waiting_for_verdict]
    assert waiting_for_answer.reason == "expired"


def test_an_expired_transfer_is_named_as_such_for_expiry_seconds():
    files = table()
    offered(files, now=0.0)
    files.expire(10.0)
    assert code_of(files.accept, BOB, ("alice", "f1"), 11.0) is ErrorCode.OFFER_EXPIRED
    assert code_of(files.cancel, ALICE, ("alice", "f1")) is ErrorCode.OFFER_EXPIRED
    assert code_of(files.cancel, CAROL, ("alice", "f1")) is ErrorCode.NO_SUCH_TRANSFER
    files.expire(19.99)
    assert code_of(files.cancel, ALICE, ("alice", "f1")) is ErrorCode.OFFER_EXPIRED
    files.expire(20.0)
    assert code_of(files.cancel, ALICE, ("alice", "f1")) is ErrorCode.NO_SUCH_TRANSFER


def test_a_new_offer_under_an_expired_tid_is_the_one_named():
    files = table()
    offered(files, now=0.0)
    files.expire(10.0)
    newer = offered(files, now=11.0)
    assert files.cancel(BOB, ("alice", "f1")) is newer


def test_a_party_gone_ends_its_transfers_and_only_those():
    files = table(per_server=3)
    sent = offered(files, ("alice", "f1"))
    received = offered(files, ("carol", "f1"), sender=CAROL, recipient=ALICE)
    others = offered(files, ("carol", "f2"), sender=CAROL, recipient=BOB)
    assert files.party_gone(ALICE) == [sent, received]
    assert {sent.reason, received.reason} == {"gone"}
    assert files.find(BOB, ("carol", "f2")) is others


def test_tokens_are_128_random_bits_in_hex():
    token = new_token()
    assert len(token) == 32 and int(token, 16) >= 0 and token != new_token()


# -- RelayPacing: the relays' budget while chat is busy -----------------------------------------

RATE, CHUNK, BUSY_LINES, WINDOW, HOLD = 1000.0, 100, 10, 0.1, 1.0
WANTED = 1_000_000
#: Lines sent a second well above the busy rate (BUSY_LINES per WINDOW).
CHATTY = 10 * BUSY_LINES / WINDOW


def pacing(now=0.0, lines_sent=0) -> RelayPacing:
    return RelayPacing(RATE, CHUNK, BUSY_LINES, WINDOW, HOLD, now, lines_sent)


def test_while_chat_is_quiet_a_relay_moves_all_it_wants_and_owes_nothing():
    pace = pacing()
    for step in range(1, 50):
        now = step * WINDOW
        # One line short of busy in every window.
        grant = pace.allowance(now, step * (BUSY_LINES - 1), WANTED)
        assert grant == Grant(WANTED)
        pace.moved(grant, WANTED)
    assert not pace.busy(5.0, 49 * (BUSY_LINES - 1))


def test_chat_is_busy_as_soon_as_busy_lines_are_sent_within_a_window():
    pace = pacing()
    assert not pace.busy(0.01, BUSY_LINES - 1)
    assert pace.busy(0.02, BUSY_LINES)
    assert pace.allowance(0.02, BUSY_LINES, CHUNK // 2) == Grant(CHUNK // 2, charged=CHUNK // 2)
    assert pace.allowance(0.02, BUSY_LINES, WANTED) == Grant(CHUNK, charged=CHUNK)


def test_a_trickle_between_looks_far_apart_is_busy_only_at_the_busy_rate():
    # A relay may not look for seconds (it waited for its sender): the lines sent since
    # are judged by their average rate, not as if they had all come within one window.
    assert not pacing().busy(10.0, 10 * BUSY_LINES / WINDOW - 1)
    assert pacing().busy(10.0, 10 * BUSY_LINES / WINDOW)


def test_busy_lasts_hold_seconds_after_it_was_last_seen():
    pace = pacing()
    assert pace.busy(0.05, BUSY_LINES)
    assert pace.busy(0.05 + HOLD / 2, BUSY_LINES)        # no line since: still busy
    assert pace.busy(0.05 + HOLD - 0.001, BUSY_LINES)
    assert not pace.busy(0.05 + HOLD, BUSY_LINES)
    assert pace.allowance(0.05 + HOLD, BUSY_LINES, WANTED) == Grant(WANTED)


def test_a_grant_may_overdraw_the_budget_once_and_the_next_waits_for_it():
    pace = pacing()
    assert pace.allowance(0.0, BUSY_LINES, WANTED).count == CHUNK   # a full bucket
    assert pace.allowance(0.0, BUSY_LINES, WANTED).count == CHUNK   # overdrawn, once
    grant = pace.allowance(0.0, BUSY_LINES, WANTED)
    assert grant.count == 0 and grant.wait == pytest.approx(CHUNK / RATE)
    assert pace.allowance(grant.wait, BUSY_LINES, WANTED).count == CHUNK


def test_what_a_grant_leaves_unused_goes_back_to_the_budget():
    pace = pacing()
    for _ in range(3):   # a relay whose sender had nothing to read, three times
        pace.moved(pace.allowance(0.0, BUSY_LINES, WANTED), 0)
    pace.moved(pace.allowance(0.0, BUSY_LINES, WANTED), CHUNK // 2)
    assert pace.allowance(0.0, BUSY_LINES, WANTED).count == CHUNK   # still within the bucket
    assert pace.allowance(0.0, BUSY_LINES, WANTED).count == 0


def busy_relays(relays: int, seconds: float, share: float) -> int:
    """`relays` relays on the fastest machine there is (a move takes no time), all asking
    at each instant before any of them moves, each moving `share` of what it was granted,
    while chat sends CHATTY lines a second: the bytes they move in `seconds` of busy chat."""
    start = WINDOW  # chat began at 0: busy from the relays' first look
    pace = pacing()
    now, moved, ready = start, 0, [start] * relays
    while now < start + seconds:
        lines = int(now * CHATTY)
        grants = [pace.allowance(now, lines, WANTED) for relay in range(relays) if ready[relay] <= now]
        for grant in grants:
            assert grant.count < WANTED  # never the quiet answer
            pace.moved(grant, int(grant.count * share))
            moved += int(grant.count * share)
        waits = [grant.wait for grant in grants if not grant.count]
        if waits:
            now += min(waits)
    return moved


@pytest.mark.parametrize("relays", [1, 2, 5])
@pytest.mark.parametrize("share", [1.0, 0.25])
def test_while_chat_is_busy_all_relays_together_keep_to_the_rate(relays, share):
    seconds = 3.0
    assert busy_relays(relays, seconds, share) <= RATE * seconds + 2 * CHUNK


@pytest.mark.parametrize("relays", [1, 2, 5])
def test_relays_that_move_all_they_are_granted_spend_the_whole_budget(relays):
    seconds = 3.0
    assert busy_relays(relays, seconds, 1.0) >= RATE * seconds - CHUNK

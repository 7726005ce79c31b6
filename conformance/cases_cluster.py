"""Cluster cases (SPEC.md 11b): one room across the servers given as
`python -m conformance HOST:PORT,HOST:PORT,...`.

Every other case runs against a cluster too, its clients going to the
servers in turn (Target.address_for); these check what a cluster can most
easily get wrong: one order across servers, the name race between servers,
USERS against lines coming from another server. Against one server (a
cluster of one) they check the same of its connections ([ORDER-2], [NAME-2],
[USERS-2]). A cluster's failures (a server killed, the engine restarted) are
beyond a kit: the reference server's tests cause them (tests/test_cluster.py).
"""

from __future__ import annotations

import os
import threading

from conformance.case import CaseContext, python_case
from conformance.cases_files import DataLink, accept, expect_ended, offer, send_through
from conformance.peer import Line, Peer

#: Messages each talker sends in cluster-one-order: within any flood-burst
#: a server may advertise ([LIMIT-12] allows 1, but the reference's is 20 and
#: the case waits at flood-rate otherwise, see _send_paced).
MESSAGES_EACH = 5
#: Attempts at the name race: each is a fresh pair of connections.
RACES = 4
#: Bytes of cluster-file-across's file: several of any relay's chunks (the
#: reference's are 64 KiB), within what a server's `file-max` usually allows.
ACROSS_BYTES = 600 * 1024


def _msg_lines(peer: Peer, count: int, ids: tuple[str, ...]) -> list[str]:
    """The next `count` MSG lines `peer` receives (other lines are skipped)."""
    lines: list[str] = []
    while len(lines) < count:
        event = peer.next_event()
        if not isinstance(event, Line):
            raise peer.fail(f"{count} MSG lines ({len(lines)} so far)", event, ids)
        if event.text.startswith("MSG "):
            lines.append(event.text)
    return lines


@python_case("cluster-one-order", covers=["CLUSTER-1", "CLUSTER-2", "ORDER-2", "ORDER-4"], quote=[
    "every server MUST apply the log's entries in the log's order",
    "Every registered client, on whichever server, MUST receive the broadcast lines (JOIN, LEAVE, MSG, "
    "ACT, NICK) in the log's order",
])
def cluster_one_order(ctx: CaseContext) -> None:
    """Three clients on the servers in turn talk at once: each receives every
    MSG once, all in one order, each sender's in the order sent; and a
    sender's PING after its MSG comes back after the echo ([PING-2])."""
    burst = ctx.hello.flood_burst
    ctx.require(not ctx.hello.flood_rate or burst >= MESSAGES_EACH + 2,
                f"flood-burst={burst} would hold back the case's {MESSAGES_EACH + 2} lines")
    aliases = ["ann", "ben", "cat"]
    peers = [ctx.register(alias) for alias in aliases]
    for peer in peers[:-1]:
        peer.read_until(lambda line: line.text == f"JOIN {ctx.name_for(aliases[-1])}", ids=("CLUSTER-2",))

    def talk(alias: str, peer: Peer) -> None:
        for number in range(MESSAGES_EACH):
            peer.send_line(f"MSG {alias} {number}")

    threads = [threading.Thread(target=talk, args=pair) for pair in zip(aliases, peers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = MESSAGES_EACH * len(aliases)
    views = [_msg_lines(peer, total, ("CLUSTER-2",)) for peer in peers]
    expected = sorted(f"MSG {ctx.name_for(alias)} {alias} {number}"
                      for alias in aliases for number in range(MESSAGES_EACH))
    for alias, view in zip(aliases, views, strict=True):
        if sorted(view) != expected:
            raise ctx.fail(f"each of the {total} MSG lines once", " | ".join(view), ids=["CLUSTER-2"],
                           who=alias)
        if view != views[0]:
            raise ctx.fail(f"the order {aliases[0]} saw: {' | '.join(views[0])}", " | ".join(view),
                           ids=["CLUSTER-2", "ORDER-2"], who=alias)
    for alias in aliases:
        own = [line for line in views[0] if line.startswith(f"MSG {ctx.name_for(alias)} ")]
        if own != [f"MSG {ctx.name_for(alias)} {alias} {n}" for n in range(MESSAGES_EACH)]:
            raise ctx.fail("each sender's MSG lines in the order sent", " | ".join(own),
                           ids=["ORDER-4"], who=alias)
    for peer in peers:
        peer.quiet(ids=("CLUSTER-1",))


@python_case("cluster-name-race", covers=["CLUSTER-3", "NAME-2"], open_room=True, quote=[
    "of two USER (or NICK) entries for one name, the first in the log takes it and the later one MUST "
    "be answered `ERR NAME_TAKEN`",
])
def cluster_name_race(ctx: CaseContext) -> None:
    """Two connections on two servers ask for one name (differing in case)
    at the same moment: one gets its JOIN, the other NAME_TAKEN."""
    for attempt in range(RACES):
        name = ctx.new_name()
        left = ctx.peer(f"left{attempt}")
        right = ctx.peer(f"right{attempt}")
        for peer in (left, right):
            peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))
        # In a room with a password the kit puts PASS before each USER (open_room).
        left.send_line(f"USER {name}")
        right.send_line(f"USER {name.upper()}")
        replies = {}
        for peer, asked in ((left, name), (right, name.upper())):
            event = peer.next_event()
            if not isinstance(event, Line) or event.text not in (f"JOIN {asked}",) and not \
                    event.text.startswith("ERR NAME_TAKEN "):
                raise peer.fail(f"'JOIN {asked}' or 'ERR NAME_TAKEN ...'", event, ids=("CLUSTER-3",))
            replies[peer.label] = event.text
        joined = [label for label, text in replies.items() if text.startswith("JOIN ")]
        if len(joined) != 1:
            raise ctx.fail("exactly one JOIN and one ERR NAME_TAKEN",
                           " and ".join(f"{label}: {text}" for label, text in replies.items()),
                           ids=["CLUSTER-3", "NAME-2"])
        left.close()
        right.close()


@python_case("cluster-users-snapshot", covers=["CLUSTER-4", "USERS-2", "CLUSTER-2"], open_room=True, quote=[
    "USERS MUST be answered from the room as it stands at its own entry in the log",
])
def cluster_users_snapshot(ctx: CaseContext) -> None:
    """alice asks USERS while carol registers on another server: if the list
    has carol, carol's JOIN came before it; if not, it comes after. A PM
    crosses servers too."""
    alice = ctx.register("alice")
    bob = ctx.register("bob")
    alice.read_until(lambda line: line.text == f"JOIN {ctx.name_for('bob')}", ids=("CLUSTER-2",))
    bob.send_line(f"PM {ctx.name_for('alice')} psst")
    pm = f"PM {ctx.name_for('bob')} {ctx.name_for('alice')} psst"
    bob.expect_line(pm, ids=("PM-1",))
    alice.expect_line(pm, ids=("CLUSTER-2", "PM-1"))
    while ctx.target.others and ctx.target.address_for(len(ctx.peers)) == alice.address:
        ctx.peer("idle")  # So that carol is on another server than alice.
    carol = ctx.peer("carol")
    carol.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))
    carol_name = ctx.name_for("carol")
    carol.send_line(f"USER {carol_name}")
    alice.send_line("USERS")
    before = alice.read_until(lambda line: line.text.startswith("NAMES "), ids=("USERS-1",))
    listed = before[-1].text.split(" ")[1:]
    while True:
        line = alice.next_event()
        if not isinstance(line, Line):
            raise alice.fail("NAMES lines, then ENDNAMES", line, ids=("USERS-1",))
        if line.text.startswith("ENDNAMES "):
            break
        listed += line.text.split(" ")[1:]
    joined_before = any(line.text == f"JOIN {carol_name}" for line in before)
    if (carol_name in listed) != joined_before:
        raise ctx.fail("carol listed exactly when her JOIN came before the NAMES lines",
                       f"listed: {carol_name in listed}, JOIN before: {joined_before}",
                       ids=["CLUSTER-4", "USERS-2"], who="alice")
    if not joined_before:
        alice.expect_line(f"JOIN {carol_name}", ids=("CLUSTER-4",))
    if not {ctx.name_for("alice"), ctx.name_for("bob")} <= set(listed):
        raise ctx.fail("alice and bob listed", " ".join(listed), ids=["CLUSTER-4"], who="alice")
    carol.expect_line(f"JOIN {carol_name}", ids=("USER-1",))


@python_case("cluster-file-across", covers=["CLUSTER-11", "CLUSTER-12", "FILE-16"], needs=["file-max"],
             quote=[
    "A cluster that advertises `file-max` > 0 MUST put OFFER, ACCEPT, REJECT, CANCEL, RECEIVED and DATA in "
    "the log like the commands of [CLUSTER-1]",
    "The two data connections of a transfer MAY reach two servers.",
])
def cluster_file_across(ctx: CaseContext) -> None:
    """A file of several chunks goes from alice to bob, each on a server of
    their own, with each data connection on another server than its party's
    (with two servers: on the other party's); then the sender's token, used
    already, is refused on yet another server: a token works once in the
    whole cluster. Against one server: a transfer, and its token once."""
    alice = ctx.register("alice")
    bob = ctx.register("bob")
    alice.expect_line(f"JOIN {bob.name}")
    data = os.urandom(min(ACROSS_BYTES, ctx.hello.get("file-max")))
    offer(alice, bob, "x1", data)
    sender_token, recipient_token = accept(alice, bob, "x1")
    # Clients go to the servers in turn: bob's data connection to the next
    # server after bob's, alice's to the one after that.
    receiving = DataLink(ctx, "bob-data")
    receiving.present(recipient_token)
    sending = DataLink(ctx, "alice-data")
    sending.present(sender_token)
    receiving.expect_ready(alice.name, "x1", len(data), ids=("CLUSTER-12", "FILE-15"))
    sending.expect_ready(alice.name, "x1", len(data), ids=("CLUSTER-12", "FILE-15"))
    got, how = send_through(sending, receiving, data)
    if how != "EOF" or got != data:
        actual = f"{len(got)} bytes ({'the same' if got == data else 'different'}), then {how}"
        raise ctx.fail(f"the {len(data)} bytes sent, unchanged, then an orderly end", actual,
                       ids=["CLUSTER-12", "FILE-15"], who=receiving.label)
    bob.send_line(f"RECEIVED {alice.name} x1 ok")
    expect_ended(alice, bob, "x1", "done", ids=("CLUSTER-11", "FILE-18"))
    again = ctx.peer("alice-data-again")
    again.expect_match(r"HELLO chat/1 .*")
    again.send_line(f"DATA {sender_token}")
    again.expect_error("BAD_TOKEN", ids=("CLUSTER-11", "FILE-16"))
    again.expect_closed(ids=("FILE-16",))
    alice.quiet()
    bob.quiet()

"""The cases of the input bound ([LIMIT-8] to [LIMIT-11]) and of the wrong port ([SEC-3], [SEC-4]).

Beside conformance/cases.py and under the same rules (its docstring): random
names, no sleeping for the server, a limit tested only when the server
advertises one small enough to reach quickly. Each case sends its lines in
one write, as a paste or a flood does, and the bounds it checks are derived
from HELLO's `flood-rate`, `flood-burst` and `inbound-max`.
"""

from __future__ import annotations

import math
import time

from conformance.case import CaseContext, python_case
from conformance.grammar import parse_hello
from conformance.peer import Line, Peer

#: The longest a case waits for flood control to let a paste through.
LONGEST_DRIP = 5.0
#: The most lines a case writes at once (a server with a larger inbound-max
#: is not flooded: the case does not apply).
MOST_LINES = 5000
#: Seconds a plain client on a TLS port may wait for ERR TLS_REQUIRED when it
#: sends nothing ([SEC-3] says "a few seconds").
FEW_SECONDS = 10.0


def _expect_hello(peer: Peer) -> Line:
    return peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))


# -- 11. Limits: the inbound bound -------------------------------------------------------------


@python_case("inbound-max-advertised", covers=["LIMIT-11"], quote=[
    "HELLO MUST carry `inbound-max` (lines) as the first parameter after `password`",
])
def inbound_max_advertised(ctx: CaseContext) -> None:
    """HELLO carries `inbound-max=N` right after `password=`."""
    peer = ctx.peer("alice")
    line = _expect_hello(peer)
    keys = list(parse_hello(line.text).order)
    after = keys[keys.index("password") + 1] if "password" in keys[:-1] else None
    if after != "inbound-max":
        raise ctx.fail("HELLO chat/1 ... password=N inbound-max=N ...", repr(line.text),
                       ids=["LIMIT-11"], who="alice")
    peer.quiet(ids=("LIMIT-11",))  # exactly one HELLO: nothing else was pending


def _watcher_and_sender(ctx: CaseContext) -> tuple[Peer, Peer]:
    """bob, registered first, then alice, whose JOIN bob has seen."""
    bob = ctx.register("bob")
    alice = ctx.register("alice")
    bob.expect_line(f"JOIN {alice.name}")
    return bob, alice


def _flood_limits(ctx: CaseContext) -> tuple[int, int, int]:
    rate, burst, bound = ctx.hello.flood_rate, ctx.hello.flood_burst, ctx.hello.inbound_max
    ctx.require(burst + bound + rate <= MOST_LINES,
                f"inbound-max={bound} and flood-burst={burst} need more than {MOST_LINES} lines at once")
    return rate, burst, bound


@python_case("excess-flood", covers=["LIMIT-8", "LEAVE-3", "ERR-2"], needs=["flood-rate", "inbound-max"],
             quote=[
    "the server MUST send `ERR EXCESS_FLOOD`, close the connection, and send `LEAVE <name> flood` to the "
    "others.",
])
def excess_flood(ctx: CaseContext) -> None:
    """flood-burst + inbound-max + (a second's worth, at least 10) PINGs in
    one write: more lines wait than inbound-max allows, so the server answers
    a prefix of them in order, then `ERR EXCESS_FLOOD`, and closes; the
    others see `LEAVE name flood`. (Reading the write takes the server
    milliseconds; the extra second of lines is far more than flood control
    lets through meanwhile.)"""
    rate, burst, bound = _flood_limits(ctx)
    bob, alice = _watcher_and_sender(ctx)
    count = burst + bound + max(10, rate)
    alice.send_raw("".join(f"PING x{i}\n" for i in range(count)).encode())
    answered = 0
    while True:
        event = alice.next_event(ctx.timeout + 1.0)
        if isinstance(event, Line) and event.text == f"PONG x{answered}":
            answered += 1
            continue
        if isinstance(event, Line) and event.text.startswith("ERR EXCESS_FLOOD "):
            break
        raise alice.fail(f"'PONG x{answered}', or ERR EXCESS_FLOOD after more than inbound-max={bound} "
                         f"of {count} lines waited", event, ("LIMIT-8",))
    if answered >= count - bound:
        raise ctx.fail(f"ERR EXCESS_FLOOD only if more than inbound-max={bound} lines waited",
                       f"after {answered} of {count} lines were answered", ids=["LIMIT-8"], who="alice")
    alice.expect_closed(ids=("LIMIT-8", "ERR-2"))
    bob.expect_line(f"LEAVE {alice.name} flood", ids=("LIMIT-8", "LEAVE-3"))
    bob.quiet(ids=("LIMIT-8",))


@python_case("paste-arrives-in-full", background=True, covers=["LIMIT-8", "LIMIT-4", "ORDER-5"],
             needs=["flood-rate", "inbound-max"], quote=[
    "A client that sends at most `flood-burst + inbound-max` lines at once, its allowance full, loses none "
    "of them: they arrive at `flood-rate`.",
])
def paste_arrives_in_full(ctx: CaseContext) -> None:
    """A paste of flood-burst + inbound-max MSG lines, less the two lines
    registering may have taken from the allowance (PASS, USER), in one write:
    every line reaches the others, in order, and the sender is not dropped."""
    rate, burst, bound = _flood_limits(ctx)
    count = burst + bound - 2
    drip = (count - burst) / rate
    ctx.require(drip <= LONGEST_DRIP, f"the paste would take {drip:.1f} s at flood-rate={rate} "
                                      f"(at most {LONGEST_DRIP:g} s)")
    bob, alice = _watcher_and_sender(ctx)
    alice.send_raw("".join(f"MSG paste line {i}\n" for i in range(count)).encode())
    for i in range(count):
        bob.expect_line(f"MSG {alice.name} paste line {i}", timeout=ctx.timeout + drip,
                        ids=("LIMIT-8", "ORDER-5"))
    for i in range(count):
        alice.expect_line(f"MSG {alice.name} paste line {i}", timeout=ctx.timeout + drip,
                          ids=("LIMIT-8", "ORDER-5"))
    alice.quiet(ids=("LIMIT-8",))


@python_case("closed-backlog-handled", covers=["LIMIT-9", "FRAME-10", "LIMIT-4"],
             needs=["flood-rate", "inbound-max"], quote=[
    "After a client's end of stream ([FRAME-10]), its lines still waiting for [LIMIT-4]'s allowance MUST be "
    "handled at the flood rate",
])
def closed_backlog_handled(ctx: CaseContext) -> None:
    """flood-burst + k PINGs (k about half a second's worth, within
    inbound-max) in one write, then the client closes its sending side: every
    PING is still answered, in order, the last no sooner than k / flood-rate
    seconds after the write, and then the server closes."""
    ctx.require(ctx.target.ssl_context is None,
                "half-closing a TLS connection while still reading is not possible with Python's "
                "ssl module; run this case without --tls")
    rate, burst, bound = _flood_limits(ctx)
    extra = max(2, min(bound - 2, math.ceil(rate * 0.5)))
    ctx.require(extra / rate <= LONGEST_DRIP, f"{extra} lines at flood-rate={rate} take too long")
    alice = ctx.register("alice")
    started = time.monotonic()
    tokens = [f"c{i}" for i in range(burst + extra)]
    alice.send_raw("".join(f"PING {token}\n" for token in tokens).encode())
    alice.shutdown_write()
    last = None
    for token in tokens:
        last = alice.expect_line(f"PONG {token}", timeout=ctx.timeout + extra / rate, ids=("LIMIT-9",))
    bound_s = extra / rate
    if last.at - started < bound_s * 0.95 - 0.005:
        raise ctx.fail(f"the last PONG no sooner than {bound_s:.3f} s after the write (flood-rate={rate})",
                       f"after {last.at - started:.3f} s", ids=["LIMIT-9", "LIMIT-4"], who="alice")
    alice.expect_closed(ids=("LIMIT-9", "FRAME-10"))


@python_case("reset-discards-backlog", covers=["LIMIT-10", "LEAVE-3"], needs=["flood-rate", "inbound-max"],
             quote=[
    "When a client resets its connection, the server MUST discard the lines of it not yet handled",
])
def reset_discards_backlog(ctx: CaseContext) -> None:
    """flood-burst + k MSG lines in one write (k: two seconds' worth, within
    inbound-max), then a reset: the others see `LEAVE name closed` before the
    last of them, which flood control could not have let through in the
    milliseconds the reset takes to arrive."""
    rate, burst, bound = _flood_limits(ctx)
    extra = min(bound - 2, 2 * rate)  # registering may have taken two lines' allowance
    ctx.require(extra >= 10, f"inbound-max={bound} is too small to tell discarded lines from delayed ones")
    bob, alice = _watcher_and_sender(ctx)
    count = burst + extra
    alice.send_raw("".join(f"MSG backlog {i}\n" for i in range(count)).encode())
    alice.reset()
    received = 0
    while True:
        event = bob.next_event(ctx.timeout + extra / rate)
        if isinstance(event, Line) and event.text == f"MSG {alice.name} backlog {received}":
            received += 1
            continue
        if isinstance(event, Line) and event.text == f"LEAVE {alice.name} closed":
            break
        raise bob.fail(f"'MSG {alice.name} backlog {received}' or 'LEAVE {alice.name} closed'", event,
                       ("LIMIT-10", "LEAVE-3"))
    if received >= count:
        raise ctx.fail(f"LEAVE before all {count} lines: those waiting for flood control discarded",
                       f"all {count} lines were handled after the reset", ids=["LIMIT-10"], who="bob")
    bob.quiet(ids=("LIMIT-10",))


# -- 12. Security: the wrong port ----------------------------------------------------------------


@python_case("plain-client-on-tls-port", covers=["SEC-3"], needs=["tls"], quote=[
    "SHOULD be sent `ERR TLS_REQUIRED <text>` in the clear and closed",
])
def plain_client_on_tls_port(ctx: CaseContext) -> None:
    """A plain client on the TLS port that speaks first (USER) is told
    `ERR TLS_REQUIRED` and closed; so is one that waits for HELLO."""
    talker = ctx.peer("alice", address=ctx.target.address)
    talker.send_line(f"USER {ctx.name_for('alice')}")
    talker.expect_error("TLS_REQUIRED", ids=("SEC-3",))
    talker.expect_closed(ids=("SEC-3",))
    waiter = ctx.peer("bob", address=ctx.target.address)
    waiter.expect_error("TLS_REQUIRED", timeout=FEW_SECONDS, ids=("SEC-3",))
    waiter.expect_closed(ids=("SEC-3",))


#: The first bytes of a TLS 1.2/1.3 ClientHello: a handshake record (0x16,
#: version 3.1), then a ClientHello (1) of 0x4a bytes; the rest is padding.
CLIENT_HELLO_START = b"\x16\x03\x01\x00\x4e\x01\x00\x00\x4a\x03\x03" + bytes(32) + b"\x00" * 42


@python_case("tls-client-on-plain-port", covers=["SEC-4", "ERR-3"], quote=[
    "On a plain port, a connection whose first bytes are 0x16 0x03 (a TLS ClientHello) SHOULD be closed at "
    "once with no reply",
    "An error caused by one client MUST NOT be visible to any other client.",
])
def tls_client_on_plain_port(ctx: CaseContext) -> None:
    """The start of a TLS ClientHello on the plain port: after HELLO (sent
    before the server could know), the server closes with no other line;
    another client, connected all along, notices nothing."""
    ctx.require(ctx.target.ssl_context is None, "the target is a TLS port: see plain-client-on-tls-port")
    bob = ctx.peer("bob")
    _expect_hello(bob)
    alice = ctx.peer("alice")
    _expect_hello(alice)
    alice.send_raw(CLIENT_HELLO_START)
    alice.expect_closed(ids=("SEC-4",))
    bob.quiet(ids=("ERR-3",))

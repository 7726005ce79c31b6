"""Keepalive cases for what SPEC.md section 9 had left to guess: which input
counts as a sign of life, and what `ping-timeout=0` means.

- empty lines count ([FRAME-12]: "no effect" is no reply, not "not received");
- bytes of an unfinished line do not ([KEEP-5]);
- `ping-interval` > 0 with `ping-timeout` = 0 pings but never closes ([KEEP-6]).

The rules of cases.py hold here too (random names, no sleeping for the
server, timers tested only when small). The timer cases of cases.py
(register-timeout, ping-timeout, keepalive-answered) stay there.
"""

from __future__ import annotations

import re
import time

from conformance.case import CaseContext, python_case
from conformance.cases import _timer
from conformance.peer import Line, Peer, TimedOut

#: Seconds between a client's lines (or bytes) in these cases, as a share of
#: ping-interval: four of them fall in every interval.
SIGNS_PER_INTERVAL = 4


def _silent_client(ctx: CaseContext, alias: str, address: tuple[str, int] | None = None) -> Peer:
    """A registered client that does not answer the server's PINGs by itself."""
    peer = ctx.peer(alias, address=address)
    peer.keepalive_manual = True
    ctx.register(alias, peer=peer)
    return peer


def _finish_alive(peer: Peer, requirement: str) -> None:
    """The client is still connected and nothing but PINGs was pending: a barrier
    (answering the server's PINGs from now on)."""
    peer.keepalive_manual = False
    peer.barrier(ids=(requirement,))


@python_case("empty-lines-keep-alive", covers=["FRAME-12"], needs=["ping-interval"], quote=[
    "An empty line is still a line received: it MUST count towards [LIMIT-4] (as [LIMIT-5] says) and "
    "MUST count as a sign of life for [KEEP-1].",
])
def empty_lines_keep_alive(ctx: CaseContext) -> None:
    """A client that sends nothing but empty lines, a few every ping-interval,
    and never answers a PING, is still connected after ping-interval plus
    ping-timeout and more: the empty lines are its sign of life. (Whether
    the server PINGs it anyway is its own business; the kit does not answer.)"""
    interval = _timer(ctx, "ping-interval")
    answer_within = _timer(ctx, "ping-timeout")
    alice = _silent_client(ctx, "alice")
    every = interval / SIGNS_PER_INTERVAL
    until = time.monotonic() + interval + answer_within + 1
    while (left := until - time.monotonic()) > 0:
        alice.send_raw(b"\n")
        event = alice.next_event(min(every, left), log_timeout=False)
        if isinstance(event, TimedOut) or (isinstance(event, Line) and event.text.startswith("PING ")):
            continue
        raise alice.fail(f"nothing (an empty line every {every:g} s keeps the client alive)", event,
                         ids=("FRAME-12",))
    _finish_alive(alice, "FRAME-12")


@python_case("half-a-line-is-not-alive", covers=["KEEP-5"], needs=["ping-interval"], quote=[
    "bytes of a line not yet ended MUST NOT count as a sign of life, for the PING or for the timeout.",
])
def half_a_line_is_not_alive(ctx: CaseContext) -> None:
    """A client that, after registering, sends one byte of an unfinished line
    a few times every ping-interval (never its LF) and never answers a PING
    is PINGed after ping-interval and then closed with ERR PING_TIMEOUT, as if
    it had sent nothing."""
    interval = _timer(ctx, "ping-interval")
    answer_within = _timer(ctx, "ping-timeout")
    alice = _silent_client(ctx, "alice")
    every = interval / SIGNS_PER_INTERVAL
    trickle = iter(b"MSG " + b"t" * (ctx.hello.line_max - 8))

    def trickle_until(pattern: str, within: float, what: str) -> Line:
        until = time.monotonic() + within
        while (left := until - time.monotonic()) > 0:
            alice.send_raw(bytes([next(trickle)]))
            event = alice.next_event(min(every, left), log_timeout=False)
            if isinstance(event, TimedOut):
                continue
            if isinstance(event, Line) and re.fullmatch(pattern, event.text):
                return event
            raise alice.fail(what, event, ids=("KEEP-5",))
        raise alice.fail(what, TimedOut(within), ids=("KEEP-5",))

    trickle_until(r"PING [\x21-\x7e]{1,64}", interval + ctx.timeout + 1,
                  f"PING within {interval} s: a byte every {every:g} s with no LF is no sign of life")
    trickle_until(r"ERR PING_TIMEOUT .+", answer_within + ctx.timeout + 1,
                  f"'ERR PING_TIMEOUT ...' {answer_within} s after the unanswered PING, bytes or not")
    alice.expect_closed(ids=("KEEP-5",))


@python_case("ping-timeout-zero", covers=["KEEP-6"], quote=[
    "With `ping-interval` > 0 and `ping-timeout` = 0, the server MUST send the PING of [KEEP-2] and "
    "MUST NOT close a connection for not answering it",
])
def ping_timeout_zero(ctx: CaseContext) -> None:
    """On a server of its own with ping-interval=1 and ping-timeout=0, a silent
    client is PINGed after a second, and, never answering, is still connected
    three seconds later. (Needs a server the kit starts.)"""
    server = ctx.start_private_server(ping_interval=1, ping_timeout=0, register_timeout=0)
    alice = _silent_client(ctx, "alice", address=server.address)
    alice.expect_match(r"PING [\x21-\x7e]{1,64}", timeout=1 + ctx.timeout + 1, ids=("KEEP-6",))
    until = time.monotonic() + 3
    while (left := until - time.monotonic()) > 0:
        event = alice.next_event(left, log_timeout=False)
        if isinstance(event, TimedOut) or (isinstance(event, Line) and event.text.startswith("PING ")):
            continue
        raise alice.fail("nothing, or another PING: ping-timeout=0 never closes", event, ids=("KEEP-6",))
    _finish_alive(alice, "KEEP-6")

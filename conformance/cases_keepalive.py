"""Keepalive cases for what SPEC.md section 9 had left to guess: which input
counts as a sign of life, and what `ping-timeout=0` means.

- empty lines count ([FRAME-12]: "no effect" is no reply, not "not received"),
  bytes of an unfinished line do not ([KEEP-5]): one case, signs-of-life;
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


@python_case("signs-of-life", background=True, covers=["FRAME-12", "KEEP-5"], needs=["ping-interval"], quote=[
    "An empty line is still a line received: it MUST count towards [LIMIT-4] (as [LIMIT-5] says) and "
    "MUST count as a sign of life for [KEEP-1].",
    "bytes of a line not yet ended MUST NOT count as a sign of life, for the PING or for the timeout.",
])
def signs_of_life(ctx: CaseContext) -> None:
    """Two registered clients that never answer a PING, side by side (one
    wait for both timers):

    - alice sends nothing but empty lines, a few every ping-interval: after
      ping-interval plus ping-timeout and more she is still connected, the
      empty lines being her sign of life ([FRAME-12]). Whether the server
      PINGs her anyway is its own business; she does not answer.
    - bob sends one byte of an unfinished line as often (never its LF): he is
      PINGed after ping-interval and closed with ERR PING_TIMEOUT after
      ping-timeout more, as if he had sent nothing ([KEEP-5]).
    """
    interval = _timer(ctx, "ping-interval")
    answer_within = _timer(ctx, "ping-timeout")
    every = interval / SIGNS_PER_INTERVAL
    bob = _silent_client(ctx, "bob")
    alice = _silent_client(ctx, "alice")

    def empty_lines() -> None:
        until = time.monotonic() + interval + answer_within + 1
        while (left := until - time.monotonic()) > 0:
            alice.send_raw(b"\n")
            event = alice.next_event(min(every, left), log_timeout=False)
            if isinstance(event, TimedOut) or (isinstance(event, Line) and event.text.startswith("PING ")):
                continue
            if isinstance(event, Line) and event.text.startswith(f"LEAVE {bob.name} "):
                continue  # bob's end, below
            raise alice.fail(f"nothing (an empty line every {every:g} s keeps the client alive)", event,
                             ids=("FRAME-12",))
        _finish_alive(alice, "FRAME-12")

    trickle = iter(b"MSG " + b"t" * (ctx.hello.line_max - 8))

    def trickle_until(pattern: str, within: float, what: str) -> None:
        until = time.monotonic() + within
        while (left := until - time.monotonic()) > 0:
            bob.send_raw(bytes([next(trickle)]))
            event = bob.next_event(min(every, left), log_timeout=False)
            if isinstance(event, TimedOut) or getattr(event, "text", "") == f"JOIN {alice.name}":
                continue
            if isinstance(event, Line) and re.fullmatch(pattern, event.text):
                return
            raise bob.fail(what, event, ids=("KEEP-5",))
        raise bob.fail(what, TimedOut(within), ids=("KEEP-5",))

    def half_a_line() -> None:
        trickle_until(r"PING [\x21-\x7e]{1,64}", interval + ctx.timeout + 1,
                      f"PING within {interval} s: a byte every {every:g} s with no LF is no sign of life")
        trickle_until(r"ERR PING_TIMEOUT .+", answer_within + ctx.timeout + 1,
                      f"'ERR PING_TIMEOUT ...' {answer_within} s after the unanswered PING, bytes or not")
        bob.expect_closed(ids=("KEEP-5",))

    ctx.run_parallel([empty_lines, half_a_line], timeout=interval + answer_within + ctx.timeout * 2 + 5)


@python_case("ping-timeout-zero", background=True, covers=["KEEP-6"], quote=[
    "With `ping-interval` > 0 and `ping-timeout` = 0, the server MUST send the PING of [KEEP-2] and "
    "MUST NOT close a connection for not answering it",
])
def ping_timeout_zero(ctx: CaseContext) -> None:
    """On a server of its own with ping-interval=1 and ping-timeout=0, a silent
    client is PINGed after a second, and, never answering, is still connected
    two seconds later. (Needs a server the kit starts.)"""
    server = ctx.start_private_server(ping_interval=1, ping_timeout=0, register_timeout=0)
    alice = _silent_client(ctx, "alice", address=server.address)
    alice.expect_match(r"PING [\x21-\x7e]{1,64}", timeout=1 + ctx.timeout + 1, ids=("KEEP-6",))
    until = time.monotonic() + 2
    while (left := until - time.monotonic()) > 0:
        event = alice.next_event(left, log_timeout=False)
        if isinstance(event, TimedOut) or (isinstance(event, Line) and event.text.startswith("PING ")):
            continue
        raise alice.fail("nothing, or another PING: ping-timeout=0 never closes", event, ids=("KEEP-6",))
    _finish_alive(alice, "KEEP-6")

"""Run a parsed transcript (session.py) against a server, step by step.

The glue between the pure parser and the Peers: each step becomes one Peer
call, with `{alias}` placeholders replaced by the names of this run. A failed
expectation comes back as CheckFailed, to which this module adds the step as
written and where (file and line), so the report can point at it.
"""

from __future__ import annotations

from conformance.case import CaseContext
from conformance.outcome import CheckFailed
from conformance.peer import Peer
from conformance.session import (
    Close,
    Connect,
    ExpectAny,
    ExpectClosed,
    ExpectLine,
    ExpectNames,
    ExpectRegex,
    Keepalive,
    Quiet,
    Register,
    Send,
    SendRaw,
    Session,
    Step,
    decode_escapes,
    substitute,
)


def replay_session(session: Session, ctx: CaseContext) -> None:
    names = {alias: ctx.name_for(alias) for alias in session.aliases}
    peers: dict[str, Peer] = {}
    manual: set[str] = set()
    for step in session.steps:
        try:
            _run_step(step, ctx, names, peers, manual)
        except CheckFailed as failure:
            failure.step = f"{session.source}:{step.line}: {substitute(step.written, names)}"
            raise


def _run_step(step: Step, ctx: CaseContext, names: dict[str, str], peers: dict[str, Peer],
              manual: set[str]) -> None:
    alias = step.alias
    if isinstance(step, Keepalive):
        if step.mode == "manual":
            manual.add(alias)
        else:
            manual.discard(alias)
        if alias in peers:
            peers[alias].keepalive_manual = alias in manual
        return
    if isinstance(step, (Connect, Register)):
        peer = ctx.peer(alias)
        peer.keepalive_manual = alias in manual
        peers[alias] = peer
        if isinstance(step, Register):
            ctx.register(alias, name=names[alias], peer=peer)
        return

    peer = peers[alias]
    match step:
        case Send(text=text):
            peer.send_line(substitute(text, names))
        case SendRaw(text=text):
            peer.send_raw(decode_escapes(substitute(text, names)))
        case ExpectLine(text=text):
            peer.expect_line(substitute(text, names))
        case ExpectRegex(pattern=pattern):
            peer.expect_match(substitute(pattern, names, regex=True))
        case ExpectAny(options=options):
            peer.expect_any(substitute(option, names) for option in options)
        case ExpectNames(names=listed):
            peer.expect_names(substitute(name, names) for name in listed)
        case ExpectClosed():
            peer.expect_closed()
        case Quiet():
            peer.quiet()
        case Close():
            peer.close()
        case _:  # pragma: no cover - session.py makes no other step
            raise AssertionError(f"unknown step {step!r}")

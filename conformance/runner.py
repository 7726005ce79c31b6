"""Run every case against a server and judge it: `python -m conformance HOST:PORT`.

The run:
1. Collect the cases: the examples of SPEC.md, sessions/*.session and the
   Python cases of cases.py.
2. Probe each target once: read its HELLO. A server that sends no HELLO (one
   that never answers, or echoes what it gets) fails here, in one read
   timeout, and no case is run against it: the run never hangs.
3. Run each case in its own thread with a hard time cap, pick the first
   target that offers what it needs, close every connection it opened, and
   turn the outcome into a verdict: pass, fail, warn (a SHOULD not met), n/a.
4. Print a report for each failure, a summary by SPEC.md section, and exit
   non-zero if any MUST failed (or, with --strict, any SHOULD).

With no HOST:PORT, the kit starts the reference server itself (selfhost.py).
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TextIO

from conformance.case import PYTHON_CASES, Case, CaseContext, Target, session_case
from conformance.grammar import HELLO_PARAMETERS, OPTIONAL_COMMAND_PARAMETERS
from conformance.outcome import CaseCancelled, CheckFailed, NotApplicable
from conformance.peer import DEFAULT_TIMEOUT, Peer, Transcript
from conformance.report import (
    FAIL,
    NOT_APPLICABLE,
    PASS,
    WARN,
    CaseResult,
    Failure,
    format_failure,
    format_matrix,
    format_summary,
    to_json,
    to_junit_xml,
)
from conformance.session import load_session_dir, spec_sessions
from conformance.spec import INFORMATIVE, Spec, load_spec

#: Seconds one case may run in all, whatever it waits for (--case-timeout).
#: The slowest cases (timers, the slow reader) need about ten.
DEFAULT_CASE_CAP = 30.0
#: The reason of every case after a failed preflight probe.
NOT_RUN = "not run: the server did not greet with HELLO"
#: Features --expect-feature accepts: HELLO parameters whose 0 means "off", and TLS.
FEATURES = (tuple(p for p in HELLO_PARAMETERS if p not in ("line-max", "name-max"))
            + OPTIONAL_COMMAND_PARAMETERS + ("tls",))


def all_cases(spec: Spec) -> list[Case]:
    """Every case the kit has: SPEC.md's examples, the transcripts, the Python cases."""
    import conformance.cases  # noqa: F401 - its decorators fill PYTHON_CASES
    import conformance.cases_backlog  # noqa: F401 - LIMIT-8 to LIMIT-11, SEC-3, SEC-4
    import conformance.cases_cluster  # noqa: F401 - CLUSTER-1 to CLUSTER-4, against a cluster

    sessions = spec_sessions(spec.text, source=os.path.basename(spec.path)) + load_session_dir()
    cases = [session_case(session) for session in sessions] + list(PYTHON_CASES)
    seen: dict[str, str] = {}
    for case in cases:
        if case.name in seen:
            raise ValueError(f"case name {case.name!r} is used twice: {seen[case.name]} and {case.source}")
        seen[case.name] = case.source
    return cases


def select_cases(cases: list[Case], substrings: Iterable[str]) -> list[Case]:
    """`-k`: the cases whose name contains any of the substrings (all if none)."""
    substrings = list(substrings)
    if not substrings:
        return cases
    return [case for case in cases if any(s in case.name for s in substrings)]


class Runner:
    def __init__(self, targets: list[Target], spec: Spec, *, timeout: float = DEFAULT_TIMEOUT,
                 case_cap: float = DEFAULT_CASE_CAP, strict: bool = False,
                 expected_features: Iterable[str] = (),
                 private_servers: Callable | None = None, exclusive: bool = False,
                 rerun_args: str = "", cafile: str | None = None) -> None:
        self.targets = targets
        self.spec = spec
        self.timeout = timeout
        self.case_cap = case_cap
        self.strict = strict
        self.expected_features = set(expected_features)
        self.private_servers = private_servers
        self.exclusive = exclusive
        self.rerun_args = rerun_args
        self.cafile = cafile
        #: Set by probe() when a target did not greet: every case fails with it.
        self.preflight_failure: CaseResult | None = None

    # -- probing -----------------------------------------------------------------------------

    def probe(self) -> CaseResult | None:
        """Read each target's HELLO. Returns a failed result if one does not greet."""
        preflight = Case(name="preflight", covers=("HELLO-1",), needs=(), quotes=(),
                         source="conformance/runner.py (Runner.probe)", run=lambda ctx: None,
                         kind="python", doc="Before any case, the kit connects once and reads HELLO.")
        for target in self.targets:
            transcript = Transcript()
            peer = Peer(f"probe-{target.label}", target.address, transcript, timeout=self.timeout,
                        ssl_context=target.ssl_context, server_hostname=target.server_hostname)
            try:
                peer.connect()
                peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))
            except CheckFailed as failure:
                peer.close()
                self.preflight_failure = CaseResult(
                    preflight, FAIL, target,
                    [Failure(("HELLO-1",), failure.expected, failure.actual, failure.who,
                             detail="The server did not greet with HELLO, so no case was run."
                             + (" If this port speaks TLS, try --tls." if target.ssl_context is None
                                and failure.actual.startswith("timeout") else ""))],
                    transcript=transcript, rerun_args=self.rerun_args, cafile=self.cafile)
                return self.preflight_failure
            target.hello = peer.hello
            peer.begin_leave()
            peer.finish_leave(time.monotonic() + self.timeout)
        return None

    # -- choosing where a case runs ---------------------------------------------------------

    def choose_target(self, case: Case) -> tuple[Target | None, str, str | None]:
        """(target, reason it does not apply, missing feature)."""
        reasons: list[tuple[str, str | None]] = []
        for target in self.targets:
            missing = [feature for feature in case.needs if not target.offers(feature)]
            if missing:
                feature = missing[0]
                if feature == "tls":
                    reasons.append(("needs TLS: run the kit with --tls against a TLS port", feature))
                else:
                    reasons.append((f"needs {feature} > 0; the server advertises {feature}="
                                    f"{target.hello.get(feature) if target.hello else '?'}", feature))
                continue
            if case.open_room and target.hello is not None and target.hello.password:
                reasons.append(("speaks to a room without a password (it sends USER or PASS "
                                "itself); the server advertises password=1", None))
                continue
            return target, "", None
        reason, feature = reasons[0] if reasons else ("no server to run on", None)
        return None, reason, feature

    # -- running one case -----------------------------------------------------------------

    def run_case(self, case: Case) -> CaseResult:
        if self.preflight_failure is not None:
            # Only HELLO-1 is known to fail; the case's own requirements are unknown ("incomplete").
            return CaseResult(case, FAIL, None, [Failure(("HELLO-1",), "a server that greets with HELLO",
                                                         "not run: the preflight probe failed")],
                              reason=NOT_RUN)
        target, reason, feature = self.choose_target(case)
        if target is None:
            return self._not_applicable(case, reason, feature)

        transcript = Transcript()
        context = CaseContext(case, target, timeout=self.timeout, transcript=transcript,
                              private_servers=self.private_servers, exclusive=self.exclusive)
        outcome: dict[str, BaseException] = {}

        def body() -> None:
            try:
                case.run(context)
            except BaseException as error:  # noqa: BLE001 - judged below
                outcome["error"] = error

        started = time.monotonic()
        thread = threading.Thread(target=body, name=f"case-{case.name}", daemon=True)
        thread.start()
        thread.join(self.case_cap)
        capped = thread.is_alive()
        if capped:
            context.cancel()
            thread.join(5.0)
        context.cleanup()
        duration = time.monotonic() - started
        result = self._judge(case, target, context, outcome.get("error"), capped)
        result.transcript = transcript
        result.duration = duration
        result.rerun_args = self.rerun_args
        result.cafile = self.cafile
        return result

    def _not_applicable(self, case: Case, reason: str, feature: str | None) -> CaseResult:
        if feature is not None and feature in self.expected_features:
            return CaseResult(case, FAIL, None, [Failure(case.covers, f"the feature {feature} "
                                                         "(--expect-feature)", reason)], reason=reason)
        return CaseResult(case, NOT_APPLICABLE, None, reason=reason)

    def _judge(self, case: Case, target: Target, context: CaseContext, error: BaseException | None,
               capped: bool) -> CaseResult:
        if isinstance(error, NotApplicable):
            result = self._not_applicable(case, error.reason, error.feature)
            result.target = target
            return result
        failures: list[Failure] = []
        if capped:
            failures.append(Failure(case.covers, f"the case to finish within {self.case_cap:g} s",
                                    "still running: stopped by the kit's hard time cap"))
        elif isinstance(error, CheckFailed):
            failures.append(Failure(error.ids or case.covers, error.expected, error.actual, error.who,
                                    error.step, error.detail))
        elif isinstance(error, CaseCancelled):
            failures.append(Failure(case.covers, "the case to finish", "cancelled"))
        elif error is not None:
            failures.append(Failure(case.covers, "the case to run to its end",
                                    f"the kit itself failed: {type(error).__name__}: {error}",
                                    detail="".join(traceback.format_exception(error)).rstrip()))
        for peer in context.peers:
            for violation in peer.violations:
                failures.append(Failure((violation.requirement_id,), "every server line to follow "
                                        f"[{violation.requirement_id}]",
                                        f"{violation.message}: {violation.raw!r}", violation.who))
        if not failures:
            return CaseResult(case, PASS, target)
        levels = {self.spec.requirements[i].level if i in self.spec.requirements else "MUST"
                  for failure in failures for i in failure.ids}
        only_should = levels <= {"SHOULD", "MAY", INFORMATIVE} and not capped
        verdict = WARN if only_should and not self.strict else FAIL
        return CaseResult(case, verdict, target, failures)

    # -- running them all ---------------------------------------------------------------------

    def run(self, cases: list[Case], progress: TextIO | None = None) -> list[CaseResult]:
        results = []
        if self.preflight_failure is None and not any(t.hello for t in self.targets):
            self.probe()
        if self.preflight_failure is not None:
            results.append(self.preflight_failure)
        for case in cases:
            result = self.run_case(case)
            results.append(result)
            if progress is not None and result.reason == NOT_RUN:
                continue
            if progress is not None:
                note = f"  ({result.reason})" if result.verdict == NOT_APPLICABLE else ""
                progress.write(f"{result.verdict:>4}  {case.name}  {result.duration:.2f} s{note}\n")
                progress.flush()
        return results


# -- the command line -----------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, or [IPV6]:PORT."""
    match = re.fullmatch(r"\[(?P<v6>[^\]]+)\]:(?P<port>[0-9]+)|(?P<host>[^:]+):(?P<port2>[0-9]+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    host = match.group("v6") or match.group("host")
    port = int(match.group("port") or match.group("port2"))
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    return host, port


def parse_addresses(text: str) -> list[tuple[str, int]]:
    """HOST:PORT, or a cluster's servers (SPEC.md 11b): HOST:PORT,HOST:PORT,..."""
    return [parse_address(part) for part in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="The chat/1 conformance kit: runs every case of SPEC.md against a server "
                    "and exits non-zero if any MUST fails.",
        epilog="With no HOST:PORT the kit starts the reference server (chat/) on 127.0.0.1, port 0, "
               "with small limits, and stops it at the end.")
    parser.add_argument("address", nargs="?", type=parse_addresses,
                        help="the server to test, HOST:PORT; or the servers of one cluster, "
                             "HOST:PORT,HOST:PORT,... (each case's clients go to them in turn)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"seconds to wait for one line (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--case-timeout", type=float, default=DEFAULT_CASE_CAP, metavar="SECONDS",
                        help=f"hard cap on one case (default {DEFAULT_CASE_CAP:g})")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--cafile", help="CA certificates to verify the server's TLS certificate with "
                                         "(implies --tls)")
    parser.add_argument("--password", default=os.environ.get("CHAT_PASSWORD"),
                        help="the room password, if the server has one (default: $CHAT_PASSWORD)")
    parser.add_argument("--list", action="store_true",
                        help="print the requirement-to-case matrix and exit")
    parser.add_argument("-k", dest="select", action="append", default=[], metavar="SUBSTRING",
                        help="run only the cases whose name contains SUBSTRING (repeatable)")
    parser.add_argument("--strict", action="store_true", help="a SHOULD not met is a failure")
    parser.add_argument("--expect-feature", action="append", default=[], choices=FEATURES, metavar="NAME",
                        help="a feature the server must offer: a case needing it fails instead of "
                             f"not applying ({', '.join(FEATURES)})")
    parser.add_argument("--exclusive", action="store_true",
                        help="nobody else uses this server during the run: check connection limits exactly")
    parser.add_argument("--junit-xml", metavar="FILE", help="write a JUnit XML report")
    parser.add_argument("--json", metavar="FILE", help="write a JSON report keyed by requirement ID")
    parser.add_argument("--spec", metavar="FILE", help="SPEC.md to read (default: the kit's own)")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    args.tls = args.tls or args.cafile is not None  # As in chat-client: a CA file means TLS.
    spec = load_spec(args.spec)
    cases = select_cases(all_cases(spec), args.select)
    if args.list:
        out.write(format_matrix(all_cases(spec) if not args.select else cases, spec) + "\n")
        return 0
    if not cases:
        out.write("no case matches -k " + " ".join(args.select) + "\n")
        return 2

    servers = None
    if args.address is None:
        if args.tls:
            out.write("--tls needs HOST:PORT: the self-hosted reference server listens without TLS\n")
            return 2
        from conformance.selfhost import ReferenceServerMissing, SelfHostedServers

        try:
            servers = SelfHostedServers()
        except ReferenceServerMissing as error:
            out.write(f"{error}\n")
            return 2
        targets = [Target("open room", *servers.open_room.address),
                   Target("password room", *servers.password_room.address,
                          password=servers.password_room.password)]
        rerun = ""
        server_label = "reference server (self-hosted) at {}:{}".format(*servers.open_room.address)
    else:
        (host, port), *others = args.address
        context = ssl.create_default_context(cafile=args.cafile) if args.tls else None
        targets = [Target("server", host, port, ssl_context=context, server_hostname=host,
                          password=args.password, others=tuple(others))]
        addresses = ",".join(f"{host}:{port}" for host, port in args.address)
        rerun = addresses + (" --tls" if args.tls else "") + (f" --cafile {args.cafile}"
                                                                     if args.cafile else "")
        server_label = addresses + (" (TLS)" if args.tls else "")

    try:
        runner = Runner(targets, spec, timeout=args.timeout, case_cap=args.case_timeout,
                        strict=args.strict, expected_features=args.expect_feature,
                        private_servers=servers.private_server if servers else None,
                        exclusive=args.exclusive or servers is not None, rerun_args=rerun,
                        cafile=args.cafile)
        out.write(f"chat/1 conformance: {len(cases)} cases against {server_label}\n")
        runner.probe()
        for target in targets:
            if target.hello is not None:
                out.write(f"  {target.label}: HELLO {target.hello.describe()}\n")
        results = runner.run(cases, progress=out)
    finally:
        if servers is not None:
            servers.shutdown()

    if runner.preflight_failure is not None:
        out.write(f"{len(cases)} cases not run: the server did not greet with HELLO.\n")
    for result in results:
        if result.verdict in (FAIL, WARN) and result.failures and result.reason != NOT_RUN:
            out.write("\n" + "=" * 100 + "\n" + format_failure(result, spec) + "\n")
    out.write("\n" + format_summary(results, spec) + "\n")
    if args.junit_xml:
        with open(args.junit_xml, "w", encoding="utf-8") as file:
            file.write(to_junit_xml(results, spec, server_label))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            file.write(to_json(results, spec, server_label, args.strict))
    return 1 if any(result.verdict == FAIL for result in results) else 0

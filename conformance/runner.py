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
   One case at a time; on servers the kit started, the cases that mostly wait
   (Case.background) then run side by side.
4. Print a report for each failure, a summary by SPEC.md section, and exit
   non-zero if any MUST failed (or, with --strict, any SHOULD).

With no HOST:PORT, the kit starts the reference server itself (selfhost.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

from conformance.case import (
    BACKGROUND_CONNECTIONS,
    PYTHON_CASES,
    Case,
    CaseContext,
    RoundTrips,
    Target,
    session_case,
)
from conformance.controller import ServerStartFailed
from conformance.grammar import HELLO_PARAMETERS, OPTIONAL_COMMAND_PARAMETERS
from conformance.outcome import CaseCancelled, CheckFailed, Inconclusive, NotApplicable
from conformance.peer import DEFAULT_TIMEOUT, Peer, Transcript
from conformance.report import (
    FAIL,
    INCONCLUSIVE,
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
#: PINGs the probe times to measure the round trip to each server.
ROUND_TRIP_SAMPLES = 5
#: After a case failed only by waiting in vain, the kit measures the round trip again
#: with this many PINGs, each allowed this many times --timeout (see _network_or_server).
REPROBE_SAMPLES = 2
REPROBE_WAIT = 2
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
    import conformance.cases_files  # noqa: F401 - the same, for file sharing (SPEC.md 11a)

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
                 rerun_args: str = "", cafile: str | None = None, network_check: bool = True) -> None:
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
        #: Whether a case that failed only by waiting in vain is re-measured (_network_or_server).
        self.network_check = network_check
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
            target.unsettable = tuple(field for field in target.unsettable if _differs(target, field))
            target.network = self._measure_round_trips(peer)
            peer.begin_leave()
            peer.finish_leave(time.monotonic() + self.timeout)
        return None

    def _measure_round_trips(self, peer: Peer, samples: int = 0) -> RoundTrips:
        """PING, wait for PONG, a few times: the network's round trip, for the cases' waits.

        No more PINGs than the flood burst allows at once, so [LIMIT-4] does not
        inflate the figure. A server that does not answer is the cases' business.
        """
        hello = peer.hello
        count = samples or ROUND_TRIP_SAMPLES
        if hello is not None and hello.flood_rate > 0:
            count = max(1, min(count, hello.flood_burst))
        samples = []
        try:
            for index in range(count):
                token = f"rtt{index}"
                sent = time.monotonic()
                peer.send_line(f"PING {token}")
                pong = peer.expect_line(f"PONG {token}")
                samples.append(pong.at - sent)
        except CheckFailed:
            pass
        return RoundTrips(tuple(samples))

    # -- choosing where a case runs ---------------------------------------------------------

    def choose_target(self, case: Case) -> tuple[Target | None, str, str | None]:
        """(the first target the case can run on, else None; why not; the missing feature)."""
        targets, reason, feature = self.candidate_targets(case)
        return (targets[0] if targets else None), reason, feature

    def candidate_targets(self, case: Case) -> tuple[list[Target], str, str | None]:
        """The targets that offer what the case needs, in order; and why the others do not."""
        reasons: list[tuple[str, str | None]] = []
        candidates = []
        for target in self.targets:
            missing = [feature for feature in case.needs if not target.offers(feature)]
            if missing:
                feature = missing[0]
                if feature == "tls" and target.settings is not None:
                    reasons.append(("needs TLS: give the kit --tls-cert (and --server-cmd {tls_cert} "
                                    "{tls_key} {tls_port}) so that the server it starts listens with TLS too",
                                    feature))
                elif feature == "tls":
                    reasons.append(("needs TLS: run the kit with --tls against a TLS port", feature))
                else:
                    reasons.append((f"needs {feature} > 0; the server advertises {feature}="
                                    f"{target.hello.get(feature) if target.hello else '?'}", feature))
                continue
            locked = target.hello is not None and target.hello.password and target.password is None
            if case.open_room and locked:
                reasons.append(("sends USER or PASS itself, and the server advertises password=1: "
                                "give the password with --password and the kit adds it", None))
                continue
            candidates.append(target)
        reason, feature = reasons[0] if reasons else ("no server to run on", None)
        return candidates, reason, feature

    # -- running one case -----------------------------------------------------------------

    def run_case(self, case: Case) -> CaseResult:
        """Run the case on the first target it applies to: a target that offers what the
        case declares it needs, and then, if the case itself finds a value it cannot test
        (a timer too long to wait for), the next such target (the kit's timers room)."""
        if self.preflight_failure is not None:
            # Only HELLO-1 is known to fail; the case's own requirements are unknown ("incomplete").
            return CaseResult(case, FAIL, None, [Failure(("HELLO-1",), "a server that greets with HELLO",
                                                         "not run: the preflight probe failed")],
                              reason=NOT_RUN)
        targets, reason, feature = self.candidate_targets(case)
        if not targets:
            return self._not_applicable(case, reason, feature, self.targets[0] if self.targets else None)
        first = None
        for target in targets:
            result = self._run_on(case, target)
            if result.verdict != NOT_APPLICABLE:
                return result
            first = first or result
        return first

    def _run_on(self, case: Case, target: Target) -> CaseResult:
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
        try:
            context.cleanup()
        except ServerStartFailed as error:  # a private server that would not stop
            outcome.setdefault("error", error)
        duration = time.monotonic() - started
        result = self._judge(case, target, context, outcome.get("error"), capped)
        waited_in_vain = result.verdict == FAIL and not capped and _only_waited_in_vain(result, context)
        if waited_in_vain and self.network_check:
            result = self._network_or_server(result, target)
        result.configuration = "; ".join(
            [target.configuration or target.label]
            + [f"private server: {configuration}" for configuration in context.private_configurations])
        if target.hello is not None and target.hello.password:
            # [PASS-4] is about rooms without a password: not checked in this one.
            result.unchecked = frozenset({"PASS-4"})
        result.transcript = transcript
        result.duration = duration
        result.rerun_args = self.rerun_args
        result.cafile = self.cafile
        return result

    def _network_or_server(self, result: CaseResult, target: Target) -> CaseResult:
        """A case that failed only by waiting in vain for a line: measure the round trip
        again, on a new connection. If it now takes far longer than when the run began,
        and long enough to eat the --timeout the kit adds to every wait, the network may
        be what made the line late: inconclusive. A server that answers at once, or not
        at all, keeps the failure."""
        now = self._round_trips_now(target)
        threshold = max(2 * target.network.worst, self.timeout / 2)
        if not now.samples or now.worst <= threshold:
            return result
        why = (f"a round trip to the server now takes up to {now.worst * 1000:.0f} ms, against "
               f"{target.network.worst * 1000:.1f} ms when the run began ({target.network.describe()}): "
               "the network, not only the server, may have made the line late")
        failures = [dataclasses.replace(failure, detail=f"Why this is not a failure: {why}")
                    for failure in result.failures]
        return CaseResult(result.case, INCONCLUSIVE, target, failures)

    def _round_trips_now(self, target: Target) -> RoundTrips:
        """The round trip measured again, waiting longer than --timeout for it (a bounded few seconds)."""
        wait = REPROBE_WAIT * self.timeout
        peer = Peer(f"re-probe-{target.label}", target.address, Transcript(), timeout=wait,
                    ssl_context=target.ssl_context, server_hostname=target.server_hostname)
        try:
            peer.connect()
            peer.expect_match(r"HELLO chat/1 .*")
        except CheckFailed:
            peer.close()
            return RoundTrips()
        network = self._measure_round_trips(peer, samples=REPROBE_SAMPLES)
        peer.begin_leave()
        peer.finish_leave(time.monotonic() + wait)
        return network

    def _not_applicable(self, case: Case, reason: str, feature: str | None,
                        target: Target | None = None) -> CaseResult:
        for field in target.unsettable if target is not None else ():
            parameter = field.replace("_", "-")
            if parameter in reason or field in reason:
                reason += (f" (the kit started this server, but its --server-cmd template has no "
                           f"{{{field}}}, so it could not set {parameter})")
        if feature is not None and feature in self.expected_features:
            return CaseResult(case, FAIL, None, [Failure(case.covers, f"the feature {feature} "
                                                         "(--expect-feature)", reason)], reason=reason)
        return CaseResult(case, NOT_APPLICABLE, None, reason=reason)

    def _judge(self, case: Case, target: Target, context: CaseContext, error: BaseException | None,
               capped: bool) -> CaseResult:
        if isinstance(error, NotApplicable):
            result = self._not_applicable(case, error.reason, error.feature, target)
            result.target = target
            return result
        if isinstance(error, Inconclusive) and not capped:
            if not any(peer.violations for peer in context.peers):
                return CaseResult(case, INCONCLUSIVE, target, [
                    Failure(error.ids or case.covers, error.expected, error.actual, error.who,
                            detail=f"Why this is not a failure: {error.why}")])
            error = None  # a rule broken on the way fails the case; the rest is not blamed
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
        """Every case, in order; then, on servers the kit started itself, the background
        cases (Case.background) side by side: most of a run is waiting for timers, and
        one wait then serves them all (a self-hosted run: 42 s one by one, 11 s so).
        Against a server others may use they run one by one like the rest: the kit
        does not know how many connections it may open there beside other people's."""
        results: list[CaseResult | None] = [None] * len(cases)
        if self.preflight_failure is None and not any(t.hello for t in self.targets):
            self.probe()
        side_by_side = self.exclusive and self.preflight_failure is None
        waits = [side_by_side and case.background for case in cases]
        now = [index for index, later in enumerate(waits) if not later]
        later = [index for index, later in enumerate(waits) if later]
        shown = threading.Lock()

        def run_one(index: int) -> None:
            result = results[index] = self.run_case(cases[index])
            with shown:
                self._show(result, progress)

        for index in now:
            run_one(index)
        with ThreadPoolExecutor(max_workers=self.background_slots(), thread_name_prefix="background") as pool:
            list(pool.map(run_one, later))
        first = [self.preflight_failure] if self.preflight_failure is not None else []
        return first + results

    def background_slots(self) -> int:
        """How many background cases may run at once: as many as the smallest connection
        limit any target advertises leaves room for (BACKGROUND_CONNECTIONS each)."""
        limits = [limit for target in self.targets if target.hello is not None
                  for limit in (target.hello.max_clients, target.hello.max_per_address) if limit > 0]
        return max(1, min(limits, default=BACKGROUND_CONNECTIONS) // BACKGROUND_CONNECTIONS)

    def _show(self, result: CaseResult, progress: TextIO | None) -> None:
        if progress is None or result.reason == NOT_RUN:
            return
        note = f"  ({result.reason})" if result.verdict == NOT_APPLICABLE else ""
        several = result.target is not None and len(self.targets) > 1
        where = f"  [{result.target.label}]" if several else ""
        progress.write(f"{result.verdict:>4}  {result.case.name}  {result.duration:.2f} s{where}{note}\n")
        progress.flush()


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
        epilog="With no HOST:PORT the kit starts the server itself: the reference server (chat/) in "
               "process, or with --server-cmd any server, once as an open room, once with a password, "
               "and privately for the cases that stop one; all on 127.0.0.1 with small limits.")
    parser.add_argument("address", nargs="?", type=parse_addresses,
                        help="the server to test, HOST:PORT; or the servers of one cluster, "
                             "HOST:PORT,HOST:PORT,... (each case's clients go to them in turn)")
    parser.add_argument("--server-cmd", metavar="TEMPLATE",
                        help="start the server to test with this command: placeholders {port}, "
                             "{max_clients}, {register_timeout}, ... (chat.limits.Limits field names), "
                             "{password} or {password_file}, {tls_cert} {tls_key} {tls_port}; "
                             "see conformance/README.md")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="when the kit starts the server: give it this certificate (PEM) and "
                             "test its TLS port too (with --cafile, or the certificate itself, to verify)")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key for --tls-cert (default: in it)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"seconds to wait for one line beyond what the server's advertised limits "
                             f"and the measured round trip allow (default {DEFAULT_TIMEOUT:g})")
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


def start_servers(args: argparse.Namespace):
    """The servers the kit starts itself (selfhost.KitServers), and the TLS context to reach
    their TLS port, if any. ServerStartFailed (or ValueError for a bad template) if they do not start."""
    from conformance.controller import CommandController, InProcessController
    from conformance.selfhost import KitServers

    client_tls = None
    if args.server_cmd:
        controller = CommandController(args.server_cmd, tls_cert=args.tls_cert, tls_key=args.tls_key)
        if controller.offers_tls:
            client_tls = ssl.create_default_context(cafile=args.cafile or args.tls_cert)
    else:
        server_tls = None
        if args.tls_cert:
            server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_tls.load_cert_chain(args.tls_cert, args.tls_key)
            client_tls = ssl.create_default_context(cafile=args.cafile or args.tls_cert)
        controller = InProcessController(server_tls)
    return KitServers(controller), client_tls


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
    if args.address is not None and (args.server_cmd or args.tls_cert):
        out.write("give either HOST:PORT (a running server) or --server-cmd / --tls-cert (the kit starts "
                  "the server), not both\n")
        return 2

    servers = None
    if args.address is None:
        if args.tls and not args.tls_cert:
            out.write("--tls needs HOST:PORT; to test the TLS port of a server the kit starts, give "
                      "--tls-cert (and {tls_cert} {tls_key} {tls_port} in --server-cmd)\n")
            return 2
        try:
            servers, client_tls = start_servers(args)
        except (ServerStartFailed, ValueError, OSError, ssl.SSLError) as error:
            out.write(f"{error}\n")
            return 2
        targets = servers.targets()
        if client_tls is not None and servers.open_room.tls_address is not None:
            targets.append(Target("open room, TLS", *servers.open_room.tls_address, ssl_context=client_tls,
                                  server_hostname="127.0.0.1", settings=servers.open_room.settings,
                                  configuration=f"open room, TLS port: {servers.open_room.configuration}",
                                  unsettable=targets[0].unsettable))
        if args.server_cmd:
            rerun = "--server-cmd " + shlex.quote(args.server_cmd)
            server_label = f"the server of --server-cmd {args.server_cmd!r}, started by the kit"
        else:
            rerun = ""
            server_label = "reference server (self-hosted) at {}:{}".format(*servers.open_room.address)
        rerun += "".join(f" --{option.replace('_', '-')} {shlex.quote(value)}" for option, value in
                         (("tls_cert", args.tls_cert), ("tls_key", args.tls_key), ("cafile", args.cafile))
                         if value)
    else:
        (host, port), *others = args.address
        addresses = ",".join(f"{host}:{port}" for host, port in args.address)
        context = ssl.create_default_context(cafile=args.cafile) if args.tls else None
        targets = [Target("server", host, port, ssl_context=context, server_hostname=host,
                          password=args.password, others=tuple(others),
                          configuration=addresses + (" (TLS)" if args.tls else "") + ", as it runs")]
        rerun = addresses + (" --tls" if args.tls else "") + (f" --cafile {args.cafile}"
                                                                     if args.cafile else "")
        server_label = addresses + (" (TLS)" if args.tls else "")

    results: list[CaseResult] = []
    problems: list[str] = []
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
                out.write(f"  {target.label}: HELLO {target.hello.describe()}; {target.network.describe()}\n")
                out.write(describe_settings(target))
        results = runner.run(cases, progress=out)
    finally:
        if servers is not None:
            # Bounded: a server that will not stop is reported, and the report is still written.
            problems = servers.shutdown()
    for problem in problems:
        out.write(f"\nThe kit could not stop a server it started: {problem}\n")

    if runner.preflight_failure is not None:
        out.write(f"{len(cases)} cases not run: the server did not greet with HELLO.\n")
    for result in results:
        if result.verdict in (FAIL, WARN, INCONCLUSIVE) and result.failures and result.reason != NOT_RUN:
            out.write("\n" + "=" * 100 + "\n" + format_failure(result, spec) + "\n")
    out.write("\n" + format_summary(results, spec) + "\n")
    if args.junit_xml:
        with open(args.junit_xml, "w", encoding="utf-8") as file:
            file.write(to_junit_xml(results, spec, server_label))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            file.write(to_json(results, spec, server_label, args.strict))
    # Inconclusive verdicts are not failures (the summary says so); n/a and warn neither.
    return 1 if any(result.verdict == FAIL for result in results) else 0


def _only_waited_in_vain(result: CaseResult, context: CaseContext) -> bool:
    """Every failure of the case is a wait that ran out (nothing came, or too late), and the
    server broke no rule on the way: the kind of failure a slow network could cause."""
    waited = [f for f in result.failures if f.actual.startswith(("timeout after ", "nothing for "))]
    return bool(waited) and len(waited) == len(result.failures) and not any(
        peer.violations for peer in context.peers)


def _differs(target: Target, field: str) -> bool:
    """Whether a server the kit started advertises another value for this limit than the
    kit asked for (what the kit could not set matters only then)."""
    if target.settings is None or target.hello is None or field not in target.settings.limits:
        return False
    return target.hello.get(field.replace("_", "-")) != target.settings.limits[field]


def describe_settings(target: Target) -> str:
    """For a server the kit started: what it asked for that the server does not advertise, and why."""
    if target.settings is None or target.hello is None:
        return ""
    lines = []
    for field, wanted in target.settings.limits.items():
        if _differs(target, field):
            parameter = field.replace("_", "-")
            why = (f"the template has no {{{field}}}" if field in target.unsettable
                   else "the server did not take the setting")
            lines.append(f"    asked for {parameter}={wanted}, the server advertises "
                         f"{target.hello.get(parameter)} ({why})\n")
    return "".join(lines)


def exit_process(code: int) -> None:
    """End the kit's process with `code`, even when a server it ran in process left threads
    behind that will never end (one whose threads crashed cannot be shut down, and Python
    waits for every non-daemon thread at exit): the report is written by then, so such
    threads are named on stderr and the process ends without waiting for them."""
    sys.stdout.flush()
    sys.stderr.flush()
    stuck = [thread.name for thread in threading.enumerate()
             if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()]
    if stuck:
        names = ", ".join(stuck[:5]) + (", ..." if len(stuck) > 5 else "")
        sys.stderr.write(f"conformance: {len(stuck)} threads of a server the kit started are still running "
                         f"({names}); exiting without them\n")
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


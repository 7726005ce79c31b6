"""Results, and every way of showing them: the failure report, the summary by
SPEC.md section, the requirement matrix (--list), JUnit XML and JSON.

A failure report is meant to be enough to fix the server without reading the
kit: the case and where it is written, the requirement IDs with their
sentences quoted from SPEC.md, Expected / Actual (h2spec's pair; a timeout or
a closed connection is an Actual like any line), the whole timestamped
transcript of every client, and a reproduction to paste into a shell.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from conformance.case import Case, Target
from conformance.peer import Transcript
from conformance.spec import INFORMATIVE, Spec

PASS, FAIL, WARN, NOT_APPLICABLE = "pass", "fail", "warn", "n/a"
#: What the kit saw may be the network's doing (jitter, buffers SPEC.md does not
#: bound), not the server's: not a failure (the exit code stays 0), but reported.
INCONCLUSIVE = "inconclusive"
#: Every verdict a case can get, in the order summaries list them.
VERDICTS = (PASS, FAIL, WARN, INCONCLUSIVE, NOT_APPLICABLE)
#: Per requirement only: a case citing it failed on another requirement first.
INCOMPLETE = "incomplete"
#: No case of this run checked it (not covered by the kit, deselected with -k,
#: or binding clients).
UNCOVERED = "not checked"


@dataclasses.dataclass
class Failure:
    """One thing that went wrong in a case."""

    ids: tuple[str, ...]
    expected: str
    actual: str
    who: str | None = None
    #: The transcript step, "file:line: alice < JOIN talice123".
    step: str | None = None
    detail: str = ""


@dataclasses.dataclass
class CaseResult:
    case: Case
    verdict: str
    target: Target | None = None
    failures: list[Failure] = dataclasses.field(default_factory=list)
    #: Why a case did not apply, or other notes.
    reason: str = ""
    transcript: Transcript | None = None
    duration: float = 0.0
    #: How the run was started, for the "rerun" line: e.g. "127.0.0.1:5000 --tls".
    rerun_args: str = ""
    cafile: str | None = None
    #: The server configuration the verdict came from ("open room: line-max=1024 ...").
    configuration: str = ""
    #: Requirements the case cites but could not check in this run (e.g. PASS-4,
    #: `password=0`, when the kit ran the case in a room with a password).
    unchecked: frozenset[str] = frozenset()

    def failed_ids(self) -> set[str]:
        return {i for failure in self.failures for i in failure.ids}


# -- one failure ------------------------------------------------------------------------


def format_failure(result: CaseResult, spec: Spec) -> str:
    case = result.case
    lines = [f"{result.verdict.upper()}: {case.name}  ({case.kind} case, {case.source})"]
    if case.doc:
        lines.append(textwrap.indent(case.doc.split("\n\n")[0], "  "))
    if result.configuration:
        lines.append(f"  Server: {result.configuration}")
    if result.verdict == INCONCLUSIVE:
        lines.append("  Not a failure: what the kit saw may come from the network or from buffers")
        lines.append("  SPEC.md does not bound, not from the server (the reason is below).")
    cited = []
    for failure in result.failures:
        for requirement_id in failure.ids:
            if requirement_id not in cited:
                cited.append(requirement_id)
    for requirement_id in cited:
        requirement = spec.requirements.get(requirement_id)
        if requirement is None:
            lines.append(f"  [{requirement_id}] (not defined in SPEC.md)")
            continue
        lines.append(f"  [{requirement_id}] {requirement.level}, section {requirement.section}:")
        lines.append(textwrap.indent(textwrap.fill(requirement.text, 96), "      > "))
    for failure in result.failures:
        lines.append("")
        if failure.step:
            lines.append(f"  Step:     {failure.step}")
        who = f" ({failure.who})" if failure.who else ""
        lines.append(f"  Expected{who}: {failure.expected}")
        lines.append(f"  Actual{who}:   {failure.actual}")
        if failure.detail:
            lines.append(textwrap.indent(failure.detail, "  "))
    if result.transcript is not None:
        lines.append("")
        lines.append("  Transcript (seconds since the case started; > sent, < received, * event):")
        lines.append(result.transcript.format("    "))
        if result.target is not None:
            lines.append("")
            lines.append("  Reproduce:")
            snippet = reproduction(result.transcript, result.target, result.cafile)
            lines.append(textwrap.indent(snippet, "    "))
            select = ("-k", case.name) if case.name != "preflight" else ()
            command = " ".join(part for part in ("python -m conformance", result.rerun_args, *select) if part)
            lines.append(f"  Rerun: {command}")
    return "\n".join(lines)


# -- reproductions --------------------------------------------------------------------------


def _printf_literal(data: bytes) -> str:
    """Bytes as a single-quoted printf(1) format: octal escapes, %% for %."""
    out = []
    for byte in data:
        if byte == 0x25:
            out.append("%%")
        elif byte == 0x5C:
            out.append("\\\\")
        elif byte == 0x27:
            out.append("'\\''")
        elif byte == 0x0A:
            out.append("\\n")
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return "'" + "".join(out) + "'"


_SCRIPT_HEAD = '''\
python3 - <<'EOF'
# Replays what the kit sent; prints what each connection received.
import select, socket, ssl
ADDRESS = {address!r}
TLS = {tls!r}
CAFILE = {cafile!r}
conns = {{}}

def connect():
    sock = socket.create_connection(ADDRESS)
    if TLS:
        sock = ssl.create_default_context(cafile=CAFILE).wrap_socket(sock, server_hostname=ADDRESS[0])
    return sock

def show(wait):
    # Wait up to `wait` seconds for lines; print them as they come.
    while conns:
        ready, _, _ = select.select(list(conns.values()), [], [], wait)
        if not ready:
            return
        for who, sock in list(conns.items()):
            if sock in ready:
                try:
                    data = sock.recv(65536)
                except OSError as error:
                    data = b""
                    print(who, "*", error)
                if data:
                    for line in data.splitlines(keepends=True):
                        print(who, "<", line)
                else:
                    print(who, "* closed by the server")
                    del conns[who]

STEPS = ['''

_SCRIPT_TAIL = ''']
for who, what, data in STEPS:
    if what == "connect":
        conns[who] = connect()
    elif what == "send":
        print(who, ">", data)
        conns[who].sendall(data)
    elif what == "shutdown-write":
        conns[who].shutdown(socket.SHUT_WR)
    elif what in ("close", "reset"):
        if what == "reset":
            conns[who].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\1\\0\\0\\0\\0\\0\\0\\0")
        conns.pop(who).close()
    show(0.3)
show(2.0)
EOF'''


#: Past this many bytes sent, a reproduction is too long to paste.
REPRODUCTION_MAX_BYTES = 64 * 1024


def reproduction(transcript: Transcript, target: Target, cafile: str | None = None) -> str:
    """A shell snippet that sends what the kit sent, in the same order."""
    steps = [(e.who, e.kind, e.data) for e in transcript.entries
             if e.kind in ("connect", "send", "close", "reset", "shutdown-write")]
    sent = sum(len(data) for _, _, data in steps)
    if sent > REPRODUCTION_MAX_BYTES:
        return (f"# The case sent {sent} bytes in {len(steps)} steps: too much to paste here. "
                "Rerun it with the command below.")
    connections = {who for who, kind, _ in steps if kind == "connect"}
    parts = []
    host, port = target.address
    if len(connections) == 1 and target.ssl_context is None:
        data = b"".join(d for _, kind, d in steps if kind == "send")
        parts.append("# One client, everything at once (stop nc with Ctrl-C):")
        parts.append(f"printf {_printf_literal(data)} | nc {host} {port}")
        parts.append("# Step by step, as the kit did it:")
    elif len(connections) == 1:
        data = b"".join(d for _, kind, d in steps if kind == "send")
        parts.append("# One client over TLS, everything at once:")
        parts.append(f"printf {_printf_literal(data)} | openssl s_client -quiet -connect {host}:{port}"
                     + (f" -CAfile {cafile}" if cafile else ""))
        parts.append("# Step by step, as the kit did it:")
    script = _SCRIPT_HEAD.format(address=(host, port), tls=target.ssl_context is not None, cafile=cafile)
    script += "".join(f"\n    ({who!r}, {kind!r}, {data!r})," for who, kind, data in steps)
    script += "\n" + _SCRIPT_TAIL
    parts.append(script)
    return "\n".join(parts)


# -- per requirement ------------------------------------------------------------------------


def requirement_verdicts(results: Iterable[CaseResult], spec: Spec) -> dict[str, dict]:
    """For each requirement ID: its level, text, verdict and the verdict of each citing case."""
    table = {rid: {"level": r.level, "section": r.section, "text": r.text, "cases": {}}
             for rid, r in spec.requirements.items()}
    for result in results:
        failed = result.failed_ids()
        for rid in dict.fromkeys(result.case.covers + tuple(sorted(failed))):
            entry = table.setdefault(rid, {"level": "?", "section": "?", "text": "(not in SPEC.md)",
                                           "cases": {}})
            if rid in result.unchecked and rid not in failed:
                verdict = NOT_APPLICABLE
            elif result.verdict in (FAIL, WARN, INCONCLUSIVE):
                verdict = result.verdict if rid in failed else INCOMPLETE
            else:
                verdict = result.verdict
            entry["cases"][result.case.name] = verdict
    for entry in table.values():
        verdicts = set(entry["cases"].values())
        for candidate in (FAIL, WARN, INCONCLUSIVE, PASS, INCOMPLETE, NOT_APPLICABLE):
            if candidate in verdicts:
                entry["verdict"] = candidate
                break
        else:
            entry["verdict"] = UNCOVERED
    return table


def coverage(cases: Iterable[Case], spec: Spec) -> dict[str, list[str]]:
    """Requirement ID -> names of the cases that cite it (IDs from SPEC.md only)."""
    cited: dict[str, list[str]] = {rid: [] for rid in spec.requirements}
    for case in cases:
        for rid in case.covers:
            cited.setdefault(rid, []).append(case.name)
    return cited


def format_matrix(cases: list[Case], spec: Spec) -> str:
    """The --list output: every requirement, its level, the cases citing it; a summary line."""
    cited = coverage(cases, spec)
    width = max(len(rid) for rid in cited)
    lines = []
    section = None
    for rid, names in cited.items():
        requirement = spec.requirements.get(rid)
        if requirement is not None and requirement.section != section:
            section = requirement.section
            lines.append(f"\n{section}")
        level = requirement.level if requirement else "UNDEFINED"
        client = " (client)" if requirement is not None and requirement.binds_client else ""
        if names:
            shown = ", ".join(names)
        elif client:
            shown = "- (binds clients: SPEC.md section 1 leaves it to the client's tests)"
        else:
            shown = "-"
        lines.append(f"  {rid:<{width}}  {level:<6}{client:<9} {shown}")
    lines.append("")
    lines.append(summary_line(cases, spec))
    return "\n".join(lines).lstrip("\n")


def summary_line(cases: list[Case], spec: Spec) -> str:
    cited = coverage(cases, spec)
    musts = spec.must_ids()
    server_musts = spec.must_ids(server_only=True)
    covered = [rid for rid in server_musts if cited.get(rid)]
    levels = [r.level for r in spec.requirements.values()]
    others = ", ".join(f"{levels.count(level)} {level}" for level in ("SHOULD", "MAY", INFORMATIVE)
                       if levels.count(level))
    sessions = sum(1 for case in cases if case.kind == "session")
    by_client = sum(1 for rid in musts if spec.requirements[rid].binds_client)
    return (f"{len(spec.requirements)} requirements ({len(musts)} MUST, {others}); "
            f"{len(covered)} of {len(server_musts)} server MUSTs covered "
            f"({by_client} MUSTs bind clients, {len(musts) - len(server_musts) - by_client} "
            "are a cluster's failures, checked by the server's tests); "
            f"{len(cases)} cases ({sessions} transcripts, {len(cases) - sessions} Python)")


# -- the end of a run -----------------------------------------------------------------------


def format_summary(results: list[CaseResult], spec: Spec) -> str:
    table = requirement_verdicts(results, spec)
    lines = ["Summary by SPEC.md section:"]
    width = max(len(section) for section in spec.sections())
    for section in spec.sections():
        ids = [rid for rid, r in spec.requirements.items() if r.section == section]
        counts: dict[str, list[str]] = {}
        for rid in ids:
            counts.setdefault(table[rid]["verdict"], []).append(rid)
        parts = []
        for verdict in (PASS, FAIL, WARN, INCONCLUSIVE, INCOMPLETE, NOT_APPLICABLE, UNCOVERED):
            if verdict in counts:
                listed = verdict in (FAIL, WARN, INCONCLUSIVE, NOT_APPLICABLE) or (
                    verdict in (UNCOVERED, INCOMPLETE) and len(counts[verdict]) <= 5)
                named = f" ({' '.join(counts[verdict])})" if listed else ""
                parts.append(f"{len(counts[verdict])} {verdict}{named}")
        lines.append(f"  {section:<{width}}  {', '.join(parts)}")
    verdicts = [r.verdict for r in results]
    must_failed = [rid for rid, entry in table.items()
                   if entry["verdict"] == FAIL and entry["level"] == "MUST"]
    lines.append("")
    lines.append(f"Cases: {len(results)}: {verdicts.count(PASS)} pass, {verdicts.count(FAIL)} fail, "
                 f"{verdicts.count(WARN)} warn, {verdicts.count(INCONCLUSIVE)} inconclusive, "
                 f"{verdicts.count(NOT_APPLICABLE)} n/a. "
                 f"MUST requirements failed: {len(must_failed)}"
                 + (f" ({' '.join(must_failed)})" if must_failed else "") + ".")
    inconclusive = [r.case.name for r in results if r.verdict == INCONCLUSIVE]
    if inconclusive:
        lines.append(f"Inconclusive ({' '.join(inconclusive)}): not failures, and the exit code does not "
                     "count them, but the kit could not tell whether the server or the network (or "
                     "buffers SPEC.md does not bound) caused what it saw; the reports above say what.")
    configurations = sorted({r.configuration for r in results if r.configuration})
    if configurations:
        lines.append("Verdicts came from these server configurations:")
        lines.extend(f"  {configuration}" for configuration in configurations)
    return "\n".join(lines)


def to_json(results: list[CaseResult], spec: Spec, server: str, strict: bool) -> str:
    table = requirement_verdicts(results, spec)
    cases = {}
    for result in results:
        cases[result.case.name] = {
            "verdict": result.verdict,
            "kind": result.case.kind,
            "source": result.case.source,
            "covers": list(result.case.covers),
            "reason": result.reason,
            "configuration": result.configuration,
            "unchecked": sorted(result.unchecked),
            "duration": round(result.duration, 3),
            "failures": [dataclasses.asdict(f) for f in result.failures],
            "transcript": result.transcript.format("") if result.transcript and result.failures else None,
        }
    verdicts = [r.verdict for r in results]
    document = {
        "protocol": "chat/1",
        "server": server,
        "strict": strict,
        "summary": {verdict: verdicts.count(verdict) for verdict in VERDICTS},
        # Inconclusive verdicts do not make the run fail: see INCONCLUSIVE.
        "failed": any(verdict == FAIL for verdict in verdicts),
        "requirements": table,
        "cases": cases,
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def to_junit_xml(results: list[CaseResult], spec: Spec, server: str) -> str:
    suite = ET.Element("testsuite", name="chat/1 conformance", tests=str(len(results)),
                       failures=str(sum(r.verdict == FAIL for r in results)),
                       skipped=str(sum(r.verdict in (NOT_APPLICABLE, INCONCLUSIVE) for r in results)),
                       time=f"{sum(r.duration for r in results):.3f}")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="server", value=server)
    for result in results:
        element = ET.SubElement(suite, "testcase", classname=f"conformance.{result.case.kind}",
                                name=result.case.name, time=f"{result.duration:.3f}")
        properties = ET.SubElement(element, "properties")
        properties.extend(ET.Element("property", name="requirement", value=rid) for rid in result.case.covers)
        if result.configuration:
            ET.SubElement(properties, "property", name="configuration", value=result.configuration)
        if result.verdict == FAIL:
            first = result.failures[0] if result.failures else Failure((), "", "")
            failure = ET.SubElement(element, "failure",
                                    message=f"[{' '.join(first.ids)}] expected {first.expected}; "
                                            f"actual {first.actual}")
            failure.text = format_failure(result, spec)
        elif result.verdict == NOT_APPLICABLE:
            ET.SubElement(element, "skipped", message=result.reason)
        elif result.verdict == INCONCLUSIVE:
            # JUnit knows no such state: a skip (not a failure) that says so, with the report.
            first = result.failures[0] if result.failures else Failure((), "", "")
            ET.SubElement(element, "skipped", type="inconclusive",
                          message=f"inconclusive [{' '.join(first.ids)}]: {first.actual}")
            ET.SubElement(element, "system-out").text = format_failure(result, spec)
        elif result.verdict == WARN:
            ET.SubElement(element, "system-out").text = ("WARN (SHOULD not met)\n"
                                                         + format_failure(result, spec))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)

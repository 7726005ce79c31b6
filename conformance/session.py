"""The `.session` transcript format of SPEC.md Appendix A: parse it, and nothing more.

A session file is data: a header (`case:`, `covers:`, `needs:`, `quote:`) and
one step per line, each step naming the client it concerns:

    case: pm-to-self
    covers: PM-2
    alice register
    alice > PM {alice} note to self
    alice < PM {alice} {alice} note to self
    alice quiet

This module turns such text into frozen `Step` values, checks it as far as it
can without a server (unknown steps, bad escapes, regexes that do not compile,
a step on a client that is not connected), and offers the substitution of
`{alias}` placeholders. Running the steps against a server is replay.py's job;
like h11, this module imports no socket.

Every ```session block of SPEC.md is also a case: `extract_session_blocks`
finds them, so the examples of the specification cannot drift from the
behaviour the kit checks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

#: A client alias: "a lower-case word" (Appendix A). Digits and "_" are allowed
#: after the first letter so that cases can say `c1`, `c2`.
ALIAS = r"[a-z][a-z0-9_]*"
_STEP = re.compile(rf"^(?P<alias>{ALIAS}) (?P<rest>.*)$")
_HEADER = re.compile(r"^(?P<key>[a-z]+):(?:\s(?P<value>.*))?$")
#: `{alias}` or `{alias|modifier}`.
PLACEHOLDER = re.compile(rf"\{{(?P<alias>{ALIAS})(?:\|(?P<modifier>[a-z]+))?\}}")
MODIFIERS = {"upper": str.upper}
_CASE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REQUIREMENT_ID = re.compile(r"^[A-Z]+-[0-9]+$")
_PARAMETER = re.compile(r"^[a-z][a-z-]*$")
#: What a name looks like while a file is only being checked, not run.
_SAMPLE_NAME = "tSampleName0"


class SessionSyntaxError(ValueError):
    """A session file that does not follow Appendix A. Says where."""

    def __init__(self, message: str, source: str = "<session>", line: int = 0) -> None:
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line


# -- steps -------------------------------------------------------------------------
# One frozen dataclass per kind of step, like wsproto's events. `alias` is the
# client, `line` the line number in the source file, `written` the step as the
# file has it (for failure reports).


@dataclasses.dataclass(frozen=True)
class Step:
    alias: str
    line: int
    written: str


@dataclasses.dataclass(frozen=True)
class Connect(Step):
    """`A connect`: open a connection, read nothing."""


@dataclasses.dataclass(frozen=True)
class Register(Step):
    """`A register`: connect, HELLO, PASS if needed, USER {A}, expect JOIN {A}."""


@dataclasses.dataclass(frozen=True)
class Send(Step):
    """`A > line`: send the line (placeholders substituted) and an LF."""

    text: str


@dataclasses.dataclass(frozen=True)
class SendRaw(Step):
    """`A >raw bytes`: send exactly these bytes; `\\n \\r \\xNN \\\\` are escapes."""

    text: str


@dataclasses.dataclass(frozen=True)
class ExpectLine(Step):
    """`A < line`: the next relevant line is exactly this."""

    text: str


@dataclasses.dataclass(frozen=True)
class ExpectRegex(Step):
    """`A <~ regex`: the next relevant line matches this in full."""

    pattern: str


@dataclasses.dataclass(frozen=True)
class ExpectAny(Step):
    """`A <any a || b`: the next relevant line is one of these."""

    options: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ExpectNames(Step):
    """`A <names n1 n2`: NAMES lines then ENDNAMES, listing at least these."""

    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ExpectClosed(Step):
    """`A <closed`: the server closes the connection with no further line."""


@dataclasses.dataclass(frozen=True)
class Quiet(Step):
    """`A quiet`: PING barrier; the next line must be its PONG."""


@dataclasses.dataclass(frozen=True)
class Close(Step):
    """`A close`: close the connection abruptly (no LEAVE)."""


@dataclasses.dataclass(frozen=True)
class Keepalive(Step):
    """`A keepalive manual`: server PINGs are no longer answered and skipped."""

    mode: str  # "manual" or "auto"


@dataclasses.dataclass(frozen=True)
class Session:
    """One parsed transcript."""

    #: The `case:` name.
    name: str
    #: Requirement IDs from `covers:`.
    covers: tuple[str, ...]
    #: HELLO parameters from `needs:` that must be advertised > 0.
    needs: tuple[str, ...]
    #: `quote:` lines, each a sentence quoted from SPEC.md.
    quotes: tuple[str, ...]
    steps: tuple[Step, ...]
    #: Every alias, as steps or placeholders first mention it.
    aliases: tuple[str, ...]
    #: Where it came from: a file path, or "SPEC.md" for an example.
    source: str

    @property
    def sends_user_itself(self) -> bool:
        """Whether a client that said `connect` sends USER or PASS by hand.

        Such a case speaks to an open room: against a server that requires a
        password it would get PASSWORD_REQUIRED where it expects a JOIN, so
        unless it says `needs: password` the runner treats it as applying only
        to servers with `password=0`.
        """
        by_hand: set[str] = set()  # aliases connected with `connect`, not `register`
        for step in self.steps:
            if isinstance(step, Connect):
                by_hand.add(step.alias)
            elif isinstance(step, Register):
                by_hand.discard(step.alias)
            elif (isinstance(step, (Send, SendRaw)) and step.alias in by_hand
                  and re.match(r"(USER|PASS)( |\\r|\\n|$)", step.text)):
                return True
        return False


# -- escapes and placeholders ---------------------------------------------------------


def decode_escapes(text: str) -> bytes:
    """`>raw` text to bytes: `\\n`, `\\r`, `\\xNN`, `\\\\`; other text as UTF-8."""
    out = bytearray()
    position = 0
    while position < len(text):
        backslash = text.find("\\", position)
        if backslash < 0:
            out += text[position:].encode("utf-8")
            break
        out += text[position:backslash].encode("utf-8")
        escape = text[backslash + 1:backslash + 2]
        if escape == "n":
            out += b"\n"
            position = backslash + 2
        elif escape == "r":
            out += b"\r"
            position = backslash + 2
        elif escape == "\\":
            out += b"\\"
            position = backslash + 2
        elif escape == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[backslash + 2:backslash + 4]):
            out.append(int(text[backslash + 2:backslash + 4], 16))
            position = backslash + 4
        else:
            raise ValueError(f"bad escape {text[backslash:backslash + 4]!r}: "
                             r"only \n \r \xNN and \\ are escapes")
    return bytes(out)


def escape_bytes(data: bytes) -> str:
    """The inverse of decode_escapes, for transcripts: printable ASCII as it is."""
    out = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte == 0x0D:
            out.append("\\r")
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """The (alias, modifier) pairs that `text` mentions."""
    return [(m.group("alias"), m.group("modifier")) for m in PLACEHOLDER.finditer(text)]


def substitute(text: str, names: Mapping[str, str], *, regex: bool = False) -> str:
    """Replace `{alias}` and `{alias|upper}` with the alias's name.

    In a regular expression the name is escaped (names may hold "-").
    """

    def replace(match: re.Match) -> str:
        name = names[match.group("alias")]
        modifier = match.group("modifier")
        if modifier:
            name = MODIFIERS[modifier](name)
        return re.escape(name) if regex else name

    return PLACEHOLDER.sub(replace, text)


# -- parsing -----------------------------------------------------------------------------


def _parse_step(alias: str, rest: str, number: int, written: str, source: str) -> Step:
    def fail(message: str) -> SessionSyntaxError:
        return SessionSyntaxError(message, source, number)

    common = {"alias": alias, "line": number, "written": written}
    # Longer keywords first: ">raw" before ">", "<~" "<any" ... before "<".
    if rest == "connect":
        return Connect(**common)
    if rest == "register":
        return Register(**common)
    if rest == "quiet":
        return Quiet(**common)
    if rest == "close":
        return Close(**common)
    if rest == "<closed":
        return ExpectClosed(**common)
    if rest.startswith("keepalive"):
        mode = rest[len("keepalive"):].strip()
        if mode not in ("manual", "auto"):
            raise fail(f"keepalive takes 'manual' or 'auto', not {mode!r}")
        return Keepalive(mode=mode, **common)
    if rest == ">raw" or rest.startswith(">raw "):
        text = rest[5:]
        if not text:
            raise fail(">raw needs bytes to send")
        try:
            decode_escapes(text)
        except ValueError as error:
            raise fail(str(error)) from None
        return SendRaw(text=text, **common)
    if rest == ">":
        return Send(text="", **common)
    if rest.startswith("> "):
        return Send(text=rest[2:], **common)
    if rest.startswith("<~ "):
        pattern = rest[3:]
        try:
            re.compile(substitute(pattern, _SampleNames(), regex=True))
        except re.error as error:
            raise fail(f"bad regular expression {pattern!r}: {error}") from None
        return ExpectRegex(pattern=pattern, **common)
    if rest.startswith("<any "):
        options = tuple(option.strip(" ") for option in rest[5:].split(" || "))
        if not all(options):
            raise fail("<any needs lines separated by ' || '")
        return ExpectAny(options=options, **common)
    if rest == "<names" or rest.startswith("<names "):
        return ExpectNames(names=tuple(rest[6:].split()), **common)
    if rest.startswith("< "):
        return ExpectLine(text=rest[2:], **common)
    raise fail(f"unknown step {rest!r}; steps are connect, register, >, >raw, <, <~, <any, "
               "<names, <closed, quiet, close, keepalive manual")


class _SampleNames(dict):
    """Names for checking a file before it runs: every alias gets a sample."""

    def __missing__(self, alias: str) -> str:
        return _SAMPLE_NAME


def _step_texts(step: Step) -> Iterable[str]:
    for field in ("text", "pattern"):
        if hasattr(step, field):
            yield getattr(step, field)
    yield from getattr(step, "options", ())
    yield from getattr(step, "names", ())


def parse_session(text: str, source: str = "<session>", first_line: int = 1) -> Session:
    """Parse one transcript. `first_line` numbers lines of a block inside a file."""
    header: dict[str, list[str]] = {"case": [], "covers": [], "needs": [], "quote": []}
    steps: list[Step] = []
    aliases: dict[str, None] = {}

    for offset, raw_line in enumerate(text.split("\n")):
        number = first_line + offset
        line = raw_line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        header_match = _HEADER.match(line)
        if header_match:
            key = header_match.group("key")
            if key not in header:
                raise SessionSyntaxError(f"unknown header {key!r}; headers are "
                                         "case, covers, needs, quote", source, number)
            if steps:
                raise SessionSyntaxError(f"header {key!r} after the first step", source, number)
            header[key].append((header_match.group("value") or "").strip())
            continue
        step_match = _STEP.match(line)
        if not step_match:
            raise SessionSyntaxError(f"not a header nor a step: {line!r}", source, number)
        step = _parse_step(step_match.group("alias"), step_match.group("rest"), number, line, source)
        aliases.setdefault(step.alias, None)
        for field in _step_texts(step):
            for alias, modifier in placeholders(field):
                if modifier is not None and modifier not in MODIFIERS:
                    raise SessionSyntaxError(f"unknown modifier {{{alias}|{modifier}}}; "
                                             f"known: {', '.join(MODIFIERS)}", source, number)
                aliases.setdefault(alias, None)
        steps.append(step)

    if len(header["case"]) != 1 or not header["case"][0]:
        raise SessionSyntaxError("a session needs exactly one 'case:' line", source)
    name = header["case"][0]
    if not _CASE_NAME.match(name):
        raise SessionSyntaxError(f"case name {name!r}: use lower-case letters, digits, '.', '_', '-'",
                                 source)
    covers = tuple(word for value in header["covers"] for word in value.split())
    if not covers:
        raise SessionSyntaxError(f"case {name}: 'covers:' lists no requirement", source)
    for requirement_id in covers:
        if not _REQUIREMENT_ID.match(requirement_id):
            raise SessionSyntaxError(f"case {name}: {requirement_id!r} is not a requirement ID", source)
    needs = tuple(word for value in header["needs"] for word in value.split())
    for parameter in needs:
        if not _PARAMETER.match(parameter):
            raise SessionSyntaxError(f"case {name}: {parameter!r} is not a HELLO parameter", source)
    if not steps:
        raise SessionSyntaxError(f"case {name} has no steps", source)
    _check_connections(steps, source)
    return Session(name=name, covers=covers, needs=needs,
                   quotes=tuple(q for q in header["quote"] if q),
                   steps=tuple(steps), aliases=tuple(aliases), source=source)


def _check_connections(steps: list[Step], source: str) -> None:
    """A step on a client that is not connected is a mistake in the file."""
    connected: set[str] = set()
    for step in steps:
        if isinstance(step, (Connect, Register)):
            if step.alias in connected:
                raise SessionSyntaxError(f"{step.alias} is already connected", source, step.line)
            connected.add(step.alias)
        elif isinstance(step, Keepalive):
            continue  # May be said before connecting: it applies to the alias.
        elif step.alias not in connected:
            raise SessionSyntaxError(f"{step.alias} is not connected here (use connect or "
                                     "register first)", source, step.line)
        elif isinstance(step, (Close, ExpectClosed)):
            connected.discard(step.alias)


# -- files and SPEC.md ---------------------------------------------------------------------


def display_path(path: str | Path) -> str:
    """A path as a person would type it: relative to the folder that holds the
    kit (conformance/sessions/x.session), or as it is if outside."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(path)


def load_session_file(path: str | Path) -> Session:
    path = Path(path)
    return parse_session(path.read_text(encoding="utf-8"), source=display_path(path))


#: The transcripts shipped with the kit.
SESSIONS_DIR = Path(__file__).resolve().parent / "sessions"


def load_session_dir(directory: str | Path = SESSIONS_DIR) -> list[Session]:
    return [load_session_file(path) for path in sorted(Path(directory).glob("*.session"))]


@dataclasses.dataclass(frozen=True)
class SessionBlock:
    """A ```session fenced block found in a Markdown file."""

    #: The nearest heading above it, e.g. "13.1 Two users chat".
    heading: str
    text: str
    #: Line number (1-based) of the block's first line inside the fence.
    first_line: int


def extract_session_blocks(markdown: str) -> list[SessionBlock]:
    """Every ```session block of a Markdown document, in order."""
    blocks = []
    heading = ""
    lines = markdown.split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip() == "```session":
            start = index + 1
            end = start
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                raise SessionSyntaxError("```session block is never closed", "markdown", index + 1)
            blocks.append(SessionBlock(heading, "\n".join(lines[start:end]), start + 1))
            index = end
        index += 1
    return blocks


def spec_sessions(spec_text: str, source: str = "SPEC.md") -> list[Session]:
    """The examples of SPEC.md, each parsed as a case."""
    return [parse_session(block.text, source=f"{source} ({block.heading})", first_line=block.first_line)
            for block in extract_session_blocks(spec_text)]

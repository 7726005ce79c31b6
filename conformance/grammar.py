"""What a server line must look like: the `server-line` grammar of SPEC.md section 3.

Every line a Peer receives, in every case, is checked here: its terminator
([FRAME-1], [FRAME-3]), its encoding ([FRAME-1]), its length ([FRAME-6]) and
its grammar ([GRAM-1]). A case therefore fails on a malformed line even when
the line was not the point of the case; the failure cites the rule it broke.

Also here: reading HELLO's parameters ([HELLO-2]). Following [GRAM-3], unknown
parameters are kept but never relied on.

The kit does not import chat/protocol.py: a conformance kit that shared the
reference server's parser would share its bugs.
"""

from __future__ import annotations

import dataclasses
import re

#: The HELLO parameters of [HELLO-2], in the order HELLO must carry them.
HELLO_PARAMETERS = (
    "line-max", "name-max", "max-clients", "max-per-address", "register-timeout",
    "ping-interval", "ping-timeout", "flood-rate", "flood-burst", "outbound-max", "password",
)

#: HELLO parameters of the optional commands (SPEC.md 6.8, [CMD-4]): 1 means offered.
OPTIONAL_COMMAND_PARAMETERS = ("nick", "action")

# -- the grammar, as regular expressions over decoded text ---------------------------

# utf8-nonascii: any code point >= U+00A0 other than U+061C, U+200E, U+200F,
# U+202A-202E, U+2066-2069, U+2028 and U+2029. (Surrogates cannot come out of a
# strict UTF-8 decode.)
_NONASCII = "\u00a0-\u061b\u061d-\u200d\u2010-\u2027\u202f-\u2065\u206a-\U0010ffff"
_VISIBLE = f"[\x21-\x7e{_NONASCII}]"
_CHAR = f"[\x20-\x7e{_NONASCII}]"
#: text = *tspace tvisible *utf8-char: at least one character that is not a space.
TEXT = f" *{_VISIBLE}{_CHAR}*"
#: name = ALPHA *31name-char.
NAME = r"[A-Za-z][A-Za-z0-9_-]{0,31}"
TOKEN = r"[\x21-\x7e]{1,64}"
NUMBER = r"[0-9]{1,10}"
CODE = r"[A-Z_]+"
#: File sharing (SPEC.md section 11a): a transfer's tid and a file's SHA-256.
TID = r"[A-Za-z0-9]{1,16}"
SHA256 = r"[0-9a-f]{64}"

SERVER_LINE = re.compile("|".join(f"(?:{form})" for form in (
    rf"HELLO chat/1(?: [a-z-]+={NUMBER})+",
    rf"JOIN {NAME}",
    rf"LEAVE {NAME} (?:quit|closed|timeout|slow|flood)",  # flood: [LIMIT-8]
    rf"MSG {NAME} {TEXT}",
    rf"PM {NAME} {NAME} {TEXT}",
    rf"NAMES(?: {NAME})+",
    rf"ENDNAMES {NUMBER}",
    rf"PING {TOKEN}",
    rf"PONG {TOKEN}",
    r"OK PASS",
    rf"ERR {CODE} {TEXT}",
    # The optional commands of SPEC.md 6.8 (sent only by servers that advertise them).
    rf"NICK {NAME} {NAME}",
    rf"ACT {NAME} {TEXT}",
    # File sharing (SPEC.md section 11a): the server lines of its ABNF.
    rf"OFFER {NAME} {NAME} {TID} {NUMBER} {SHA256} {TEXT}",
    rf"ACCEPTED {NAME} {TID} {TOKEN}",
    rf"ENDED {NAME} {TID} (?:done|rejected|cancelled|expired|gone|aborted|oversize|corrupt)",
    rf"READY {NAME} {TID} {NUMBER}",
)))

_NAME_RE = re.compile(NAME)


def is_valid_name(name: str) -> bool:
    """[NAME-1]; the kit uses it to make names, never to judge the server's."""
    return _NAME_RE.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class Violation:
    """A rule a server line broke, seen by a Peer whatever the case was checking."""

    requirement_id: str
    message: str
    raw: bytes
    who: str = ""


def check_server_line(raw: bytes, line_max: int | None = None,
                      name_max: int | None = None) -> list[Violation]:
    """Check one line as received, LF included (absent only at end of stream)."""
    problems = []
    if not raw.endswith(b"\n"):
        problems.append(Violation("FRAME-1", "the server ended the stream inside a line "
                                  "(bytes after the last LF)", raw))
        return problems
    if raw.endswith(b"\r\n"):
        problems.append(Violation("FRAME-3", "line ends with CR LF, not a single LF", raw))
    if line_max is not None and name_max is not None and len(raw) > line_max + name_max + 1:
        problems.append(Violation("FRAME-6", f"line is {len(raw)} bytes; at most line-max + name-max + 1"
                                  f" = {line_max + name_max + 1} allowed", raw))
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(Violation("FRAME-1", f"line is not UTF-8 ({error.reason} at byte {error.start})",
                                  raw))
        return problems
    if text.endswith("\r"):
        return problems  # Reported as FRAME-3 already; the grammar has no CR either.
    if not SERVER_LINE.fullmatch(text):
        problems.append(Violation("GRAM-1", "line does not match `server-line`", raw))
    if line_max is not None and text.startswith("NAMES ") and len(raw) > line_max:
        problems.append(Violation("USERS-3", f"NAMES line is {len(raw)} bytes; at most line-max = "
                                  f"{line_max}", raw))
    return problems


# -- HELLO ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HelloParams:
    """The parameters a server advertised in HELLO.

    `values` holds every `key=number` in the order sent, unknown keys too;
    the properties give the known ones, 0 when absent ("not enforced").
    """

    values: dict[str, int]
    order: tuple[str, ...]

    def get(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)

    @property
    def line_max(self) -> int:
        return self.get("line-max", 1024)

    @property
    def name_max(self) -> int:
        return self.get("name-max", 32)

    @property
    def max_clients(self) -> int:
        return self.get("max-clients")

    @property
    def max_per_address(self) -> int:
        return self.get("max-per-address")

    @property
    def register_timeout(self) -> int:
        return self.get("register-timeout")

    @property
    def ping_interval(self) -> int:
        return self.get("ping-interval")

    @property
    def ping_timeout(self) -> int:
        return self.get("ping-timeout")

    @property
    def flood_rate(self) -> int:
        return self.get("flood-rate")

    @property
    def flood_burst(self) -> int:
        return self.get("flood-burst")

    @property
    def outbound_max(self) -> int:
        return self.get("outbound-max")

    @property
    def inbound_max(self) -> int:
        return self.get("inbound-max")  # [LIMIT-8], [LIMIT-11]: after password

    @property
    def password(self) -> bool:
        return self.get("password") > 0

    def describe(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.values.items())


def parse_hello(text: str) -> HelloParams:
    """`HELLO chat/1 key=n ...` to HelloParams; ValueError if it is not one.

    Fields that are not `key=number` are an error of the server ([GRAM-1]) but
    the kit still reads the others, so cases can adapt.
    """
    fields = text.split(" ")
    if len(fields) < 2 or fields[0] != "HELLO" or fields[1] != "chat/1":
        raise ValueError(f"not a chat/1 HELLO: {text!r}")
    values: dict[str, int] = {}
    for field in fields[2:]:
        key, equals, number = field.partition("=")
        if equals and number.isascii() and number.isdigit():
            values.setdefault(key, int(number))
    return HelloParams(values=values, order=tuple(values))


def hello_order_problems(hello: HelloParams) -> list[str]:
    """What is wrong with HELLO against [HELLO-2]: missing or out-of-order keys.

    Unknown keys may appear anywhere ([GRAM-3] lets servers add parameters);
    the known ones must all be there, in the order of HELLO_PARAMETERS.
    """
    problems = [f"missing {key}" for key in HELLO_PARAMETERS if key not in hello.values]
    known = [key for key in hello.order if key in HELLO_PARAMETERS]
    expected = [key for key in HELLO_PARAMETERS if key in hello.values]
    if known != expected:
        problems.append(f"order is {' '.join(known)}; expected {' '.join(expected)}")
    if hello.values.get("password", 0) > 1:
        problems.append("password must be 0 or 1")
    for key in ("line-max", "name-max"):
        if hello.values.get(key, 1) == 0:
            problems.append(f"{key} must not be 0")
    return problems

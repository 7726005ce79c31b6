"""The chat/1 wire format: framing, parsing and formatting, with no I/O.

Bytes go in, commands come out; replies go in as values and come out as bytes.
Nothing here knows about sockets, threads, clocks or other users: that keeps the
protocol testable byte by byte, and lets a client, a server and a test kit share
it. Every rule cites its requirement in SPEC.md.

What must not live here: who receives a line (chat/state.py), and anything that
reads or writes a socket (chat/server.py, chat/client.py).
"""

from __future__ import annotations

import dataclasses
import enum
import re

from chat.limits import DEFAULT_LINE_MAX, DEFAULT_NAME_MAX, OPTIONAL_VERBS, Limits

VERSION = "chat/1"


class ErrorCode(str, enum.Enum):
    """Every ERR code of SPEC.md section 10; the value is the wire token."""

    LINE_TOO_LONG = "LINE_TOO_LONG"
    BAD_ENCODING = "BAD_ENCODING"
    BAD_CHARACTER = "BAD_CHARACTER"
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    BAD_SYNTAX = "BAD_SYNTAX"
    NOT_REGISTERED = "NOT_REGISTERED"
    ALREADY_REGISTERED = "ALREADY_REGISTERED"
    BAD_NAME = "BAD_NAME"
    NAME_TAKEN = "NAME_TAKEN"
    NO_SUCH_USER = "NO_SUCH_USER"
    PASSWORD_REQUIRED = "PASSWORD_REQUIRED"
    BAD_PASSWORD = "BAD_PASSWORD"
    SERVER_FULL = "SERVER_FULL"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    REGISTRATION_TIMEOUT = "REGISTRATION_TIMEOUT"
    PING_TIMEOUT = "PING_TIMEOUT"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    EXCESS_FLOOD = "EXCESS_FLOOD"
    TLS_REQUIRED = "TLS_REQUIRED"
    # File sharing, SPEC.md section 11a.
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    TRANSFER_EXISTS = "TRANSFER_EXISTS"
    TOO_MANY_TRANSFERS = "TOO_MANY_TRANSFERS"
    TRANSFERS_FULL = "TRANSFERS_FULL"
    NO_SUCH_TRANSFER = "NO_SUCH_TRANSFER"
    OFFER_EXPIRED = "OFFER_EXPIRED"
    WRONG_STATE = "WRONG_STATE"
    BAD_TOKEN = "BAD_TOKEN"
    #: SPEC.md 11b, [CLUSTER-6]: a server of a cluster cannot reach the room's log.
    BACKPLANE_DOWN = "BACKPLANE_DOWN"

    @property
    def closes(self) -> bool:
        """Whether the server closes the connection after this ERR ([ERR-2])."""
        return self in _CLOSING_ERRORS


_CLOSING_ERRORS = frozenset({
    ErrorCode.BAD_PASSWORD,
    ErrorCode.SERVER_FULL,
    ErrorCode.TOO_MANY_CONNECTIONS,
    ErrorCode.REGISTRATION_TIMEOUT,
    ErrorCode.PING_TIMEOUT,
    ErrorCode.SLOW_CONSUMER,
    ErrorCode.SHUTTING_DOWN,
    ErrorCode.EXCESS_FLOOD,
    ErrorCode.TLS_REQUIRED,
    ErrorCode.BAD_TOKEN,
})


class ProtocolError(Exception):
    """A client line broke a rule; the error carries the ERR reply it becomes.

    Like h11's RemoteProtocolError: this is the only exception the parser
    raises for bad input. Any other exception from this module is a bug.
    """

    def __init__(self, code: ErrorCode, text: str) -> None:
        super().__init__(f"{code.name}: {text}")
        self.code = code
        self.text = text


# ---------------------------------------------------------------------------
# Framing: bytes to lines ([FRAME-1] to [FRAME-5], [FRAME-9], [FRAME-10])
# ---------------------------------------------------------------------------


class LineBuffer:
    """Cuts a byte stream into lines, however the bytes were split by TCP.

    `feed(data)` returns the complete lines found so far (without terminator)
    and, in their place, a ProtocolError(LINE_TOO_LONG) for a line that grew
    past `line_max`. Bytes of an unfinished line wait for the next feed; what
    is left when the stream ends is simply never returned ([FRAME-10]).
    """

    def __init__(self, line_max: int = DEFAULT_LINE_MAX) -> None:
        self.line_max = line_max
        self._partial = bytearray()
        # After an overlong line, skip everything up to its LF ([FRAME-5]).
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | ProtocolError]:
        items: list[bytes | ProtocolError] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if self._discarding:
                if newline >= 0:
                    self._discarding = False
            else:
                self._partial += data[start:end]
                # line_max counts the LF too, so line_max bytes without an LF
                # can only grow into a line that is too long: refuse it now,
                # without waiting for an LF that may never come.
                if len(self._partial) >= self.line_max:
                    items.append(ProtocolError(
                        ErrorCode.LINE_TOO_LONG,
                        f"lines are at most {self.line_max} bytes including LF",
                    ))
                    self._partial.clear()
                    self._discarding = newline < 0
                elif newline >= 0:
                    line = bytes(self._partial)
                    self._partial.clear()
                    items.append(line[:-1] if line.endswith(b"\r") else line)
            start = end + 1
        return items


def looks_like_tls(data: bytes) -> bool:
    """Whether a connection's first bytes are a TLS handshake record ([SEC-3], [SEC-4]).

    A TLS client opens with a ClientHello: content type 22 (0x16), then the
    record version's major byte, 3 (0x03) for SSL 3.0 to TLS 1.3. No chat/1
    line can start with 0x16, a control character ([FRAME-8]). Given only one
    byte, 0x16 alone decides.
    """
    return data[:1] == b"\x16" and data[1:2] in (b"", b"\x03")


# ---------------------------------------------------------------------------
# Parsing: a line to a command ([FRAME-7], [FRAME-8], [FRAME-11], [GRAM-2], [CMD-2])
# ---------------------------------------------------------------------------

# [FRAME-8]: C0 controls, DEL and C1 controls, the line and paragraph
# separators, and the bidirectional overrides, isolates and marks.
_CONTROL_CHARACTER = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# [NAME-1], the `name` rule of the grammar.
_NAME = re.compile(rf"[A-Za-z][A-Za-z0-9_-]{{0,{DEFAULT_NAME_MAX - 1}}}")
# The `token` rule: 1 to 64 printable ASCII characters, no space.
_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")


@dataclasses.dataclass(frozen=True)
class Pass:
    password: str


@dataclasses.dataclass(frozen=True)
class User:
    #: What follows "USER "; the room checks it against [NAME-1] only after
    #: its state checks, in the order [STATE-1] gives.
    name: str


@dataclasses.dataclass(frozen=True)
class Msg:
    text: str


@dataclasses.dataclass(frozen=True)
class Pm:
    name: str
    text: str


@dataclasses.dataclass(frozen=True)
class Users:
    pass


@dataclasses.dataclass(frozen=True)
class Ping:
    token: str


@dataclasses.dataclass(frozen=True)
class Pong:
    token: str


@dataclasses.dataclass(frozen=True)
class Leave:
    pass


@dataclasses.dataclass(frozen=True)
class Nick:
    """[NICK-1], only where HELLO advertises nick=1. Like User, the name is
    everything after "NICK " and the room checks it ([NICK-3])."""
    name: str


@dataclasses.dataclass(frozen=True)
class Act:
    """[ACT-1], only where HELLO advertises action=1."""
    text: str


Command = Pass | User | Msg | Pm | Users | Ping | Pong | Leave | Nick | Act


# -- file sharing (SPEC.md section 11a): known verbs only where file-max > 0 ([FILE-2])


@dataclasses.dataclass(frozen=True)
class Offer:
    recipient: str
    tid: str
    size: int
    sha256: str
    filename: str


@dataclasses.dataclass(frozen=True)
class Accept:
    sender: str
    tid: str


@dataclasses.dataclass(frozen=True)
class Reject:
    sender: str
    tid: str


@dataclasses.dataclass(frozen=True)
class Cancel:
    sender: str
    tid: str


@dataclasses.dataclass(frozen=True)
class Received:
    sender: str
    tid: str
    #: True for `ok`, False for `corrupt`.
    ok: bool


@dataclasses.dataclass(frozen=True)
class Data:
    token: str


FileCommand = Offer | Accept | Reject | Cancel | Received | Data
FILE_COMMANDS = (Offer, Accept, Reject, Cancel, Received, Data)


def replace_control_characters(text: str, replacement: str = "\N{REPLACEMENT CHARACTER}") -> str:
    """The text with every [FRAME-8] control character replaced.

    For clients: a conforming server never sends them ([SEC-2]), but a broken
    or hostile one must not be able to drive the user's terminal all the same.
    """
    return _CONTROL_CHARACTER.sub(replacement, text)


def is_valid_name(name: str) -> bool:
    """[NAME-1]: an ASCII letter, then up to 31 letters, digits, '_' or '-'."""
    return _NAME.fullmatch(name) is not None


def name_key(name: str) -> str:
    """The form in which two names are compared ([NAME-2]): ASCII lower case."""
    return name.lower()


def _is_text(text: str) -> bool:
    """The `text` rule: at least one character that is not a space."""
    return text.strip(" ") != ""


def _syntax_error(usage: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_SYNTAX, f"usage: {usage}")


def parse_command(line: bytes, optional: frozenset[str] = frozenset(),
                  files: bool = False) -> Command | FileCommand | None:
    """Turn one line (terminator removed) into a command, or None if empty.

    `optional` holds the optional verbs (OPTIONAL_VERBS) this server offers;
    the others are unknown verbs ([CMD-5]). `files`: whether the server relays
    files, so that the verbs of SPEC.md section 11a are known ([FILE-2]).
    Raises ProtocolError for the first problem found, in the order of
    [FRAME-11]: encoding, characters, verb, then the command's fields.
    """
    if not line:
        return None  # [FRAME-9]
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.BAD_ENCODING, "lines must be UTF-8") from None
    if _CONTROL_CHARACTER.search(decoded):
        raise ProtocolError(ErrorCode.BAD_CHARACTER, "control characters are not allowed")
    verb, space, rest = decoded.partition(" ")
    parse = _PARSERS.get(verb) or (_FILE_PARSERS.get(verb) if files else None)
    if parse is None or (verb in OPTIONAL_VERBS and verb not in optional):
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            "commands are PASS USER MSG PM USERS PING PONG LEAVE, in upper case",
        )
    return parse(rest if space else None)


def _parse_pass(rest: str | None) -> Pass:
    if rest is None or not _is_text(rest):
        raise _syntax_error("PASS <password>")
    return Pass(rest)


def _parse_user(rest: str | None) -> User:
    if rest is None:
        raise _syntax_error("USER <name>")
    return User(rest)


def _parse_msg(rest: str | None) -> Msg:
    if rest is None or not _is_text(rest):
        raise _syntax_error("MSG <text>")
    return Msg(rest)


def _parse_pm(rest: str | None) -> Pm:
    name, _, text = (rest or "").partition(" ")
    if not is_valid_name(name) or not _is_text(text):
        raise _syntax_error("PM <name> <text>")
    return Pm(name, text)


def _parse_ping(rest: str | None) -> Ping:
    if rest is None or not _TOKEN.fullmatch(rest):
        raise _syntax_error("PING <token>")
    return Ping(rest)


def _parse_pong(rest: str | None) -> Pong:
    if rest is None or not _TOKEN.fullmatch(rest):
        raise _syntax_error("PONG <token>")
    return Pong(rest)


def _parse_nick(rest: str | None) -> Nick:
    if rest is None:
        raise _syntax_error("NICK <name>")
    return Nick(rest)


def _parse_act(rest: str | None) -> Act:
    if rest is None or not _is_text(rest):
        raise _syntax_error("ACT <text>")
    return Act(rest)


def _no_fields(command: Users | Leave, verb: str):
    def parse(rest: str | None) -> Users | Leave:
        if rest is not None:
            raise _syntax_error(f"{verb} takes no fields")
        return command
    return parse


_PARSERS = {
    "PASS": _parse_pass,
    "USER": _parse_user,
    "MSG": _parse_msg,
    "PM": _parse_pm,
    "USERS": _no_fields(Users(), "USERS"),
    "PING": _parse_ping,
    "PONG": _parse_pong,
    "LEAVE": _no_fields(Leave(), "LEAVE"),
    "NICK": _parse_nick,
    "ACT": _parse_act,
}


# -- file sharing ([FILE-4] to [FILE-18]); the rules of section 11a's ABNF

_TID = re.compile(r"[A-Za-z0-9]{1,16}")
_SIZE = re.compile(r"[0-9]{1,10}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _parse_offer(rest: str | None) -> Offer:
    fields = (rest or "").split(" ", 4)
    if (len(fields) < 5 or not is_valid_name(fields[0]) or not _TID.fullmatch(fields[1])
            or not _SIZE.fullmatch(fields[2]) or not _SHA256.fullmatch(fields[3])
            or not _is_text(fields[4])):
        raise _syntax_error("OFFER <name> <tid> <size> <sha256> <filename>")
    return Offer(fields[0], fields[1], int(fields[2]), fields[3], fields[4])


def _parse_transfer_name(verb: str, rest: str | None) -> tuple[str, str]:
    fields = (rest or "").split(" ")
    if len(fields) != 2 or not is_valid_name(fields[0]) or not _TID.fullmatch(fields[1]):
        raise _syntax_error(f"{verb} <sender> <tid>")
    return fields[0], fields[1]


def _parse_received(rest: str | None) -> Received:
    fields = (rest or "").split(" ")
    if (len(fields) != 3 or not is_valid_name(fields[0]) or not _TID.fullmatch(fields[1])
            or fields[2] not in ("ok", "corrupt")):
        raise _syntax_error("RECEIVED <sender> <tid> ok|corrupt")
    return Received(fields[0], fields[1], fields[2] == "ok")


def _parse_data(rest: str | None) -> Data:
    if rest is None or not _TOKEN.fullmatch(rest):
        raise _syntax_error("DATA <token>")
    return Data(rest)


_FILE_PARSERS = {
    "OFFER": _parse_offer,
    "ACCEPT": lambda rest: Accept(*_parse_transfer_name("ACCEPT", rest)),
    "REJECT": lambda rest: Reject(*_parse_transfer_name("REJECT", rest)),
    "CANCEL": lambda rest: Cancel(*_parse_transfer_name("CANCEL", rest)),
    "RECEIVED": _parse_received,
    "DATA": _parse_data,
}


# ---------------------------------------------------------------------------
# Formatting: server lines ([FRAME-3], [GRAM-1])
# ---------------------------------------------------------------------------


def _line(*fields: str) -> bytes:
    return (" ".join(fields) + "\n").encode("utf-8")


def format_hello(limits: Limits) -> bytes:
    params = [f"{key}={value}" for key, value in limits.hello_params()]
    return _line("HELLO", VERSION, *params)


def format_join(name: str) -> bytes:
    return _line("JOIN", name)


def format_leave(name: str, reason: str) -> bytes:
    return _line("LEAVE", name, reason)


def format_msg(sender: str, text: str) -> bytes:
    return _line("MSG", sender, text)


def format_pm(sender: str, recipient: str, text: str) -> bytes:
    return _line("PM", sender, recipient, text)


def format_names(names: list[str], line_max: int = DEFAULT_LINE_MAX) -> list[bytes]:
    """NAMES lines listing every name once, each at most line_max bytes ([USERS-3]),
    then ENDNAMES with the count ([USERS-1])."""
    lines: list[bytes] = []
    current = "NAMES"
    for name in names:
        # +2: the space before the name and the LF after the line.
        if current != "NAMES" and len(current) + len(name) + 2 > line_max:
            lines.append(_line(current))
            current = "NAMES"
        current += " " + name
    lines.append(_line(current))
    lines.append(_line("ENDNAMES", str(len(names))))
    return lines


def format_nick(old: str, new: str) -> bytes:
    return _line("NICK", old, new)


def format_act(sender: str, text: str) -> bytes:
    return _line("ACT", sender, text)


def format_ping(token: str) -> bytes:
    return _line("PING", token)


def format_pong(token: str) -> bytes:
    return _line("PONG", token)


def format_ok_pass() -> bytes:
    return _line("OK", "PASS")


def format_error(code: ErrorCode, text: str) -> bytes:
    return _line("ERR", code.value, text)


def format_offer(sender: str, recipient: str, tid: str, size: int, sha256: str, filename: str) -> bytes:
    return _line("OFFER", sender, recipient, tid, str(size), sha256, filename)  # [FILE-4]


def format_accepted(sender: str, tid: str, token: str) -> bytes:
    return _line("ACCEPTED", sender, tid, token)  # [FILE-7]


def format_ended(sender: str, tid: str, reason: str) -> bytes:
    return _line("ENDED", sender, tid, reason)  # [FILE-11]


def format_ready(sender: str, tid: str, size: int) -> bytes:
    return _line("READY", sender, tid, str(size))  # [FILE-15]


# ---------------------------------------------------------------------------
# Server lines seen from the client side
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reply:
    """A line from the server, split by the grammar of its verb.

    `fields` holds the fixed fields and, last, the free text where the verb
    has one, so `MSG alice hi there` is Reply("MSG", ("alice", "hi there")).
    """

    verb: str
    fields: tuple[str, ...]


# How many fields each server verb has before its free text (None: no text,
# every space separates fields).
_REPLY_FIXED_FIELDS = {
    "HELLO": None, "JOIN": None, "LEAVE": None, "NAMES": None,
    "ENDNAMES": None, "PING": None, "PONG": None, "OK": None,
    "MSG": 1, "PM": 2, "ERR": 1,
    "ACCEPTED": None, "ENDED": None, "READY": None, "OFFER": 5,
}


def parse_reply(line: str) -> Reply:
    """Split a server line (terminator removed) into verb and fields.

    For clients: an unknown verb is returned as it is, with its fields split
    on spaces, so a newer server's lines do no harm ([GRAM-3] in spirit).
    """
    verb, _, rest = line.partition(" ")
    fixed = _REPLY_FIXED_FIELDS.get(verb)
    if not rest:
        return Reply(verb, ())
    if fixed is None:
        return Reply(verb, tuple(rest.split(" ")))
    return Reply(verb, tuple(rest.split(" ", fixed)))


def hello_params(reply: Reply) -> dict[str, int]:
    """The key=value parameters of a HELLO reply, unknown keys included."""
    params = {}
    for field in reply.fields[1:]:
        key, _, value = field.partition("=")
        if value.isdigit():
            params[key] = int(value)
    return params


# ---------------------------------------------------------------------------
# Server lines, typed: one value per line the server sends (section 3, server-line)
# ---------------------------------------------------------------------------
# For clients (chat/client_core.py). The kit keeps its own grammar on purpose
# (conformance/grammar.py): it must not share the reference's parser.


@dataclasses.dataclass(frozen=True)
class ServerHello:
    version: str
    #: key=value parameters in the order sent, unknown keys included ([GRAM-3]).
    params: tuple[tuple[str, int], ...]

    def param(self, key: str, default: int = 0) -> int:
        return dict(self.params).get(key, default)


@dataclasses.dataclass(frozen=True)
class ServerJoin:
    name: str


@dataclasses.dataclass(frozen=True)
class ServerLeave:
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ServerMsg:
    sender: str
    text: str


@dataclasses.dataclass(frozen=True)
class ServerPm:
    sender: str
    recipient: str
    text: str


@dataclasses.dataclass(frozen=True)
class ServerNames:
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ServerEndNames:
    count: int


@dataclasses.dataclass(frozen=True)
class ServerPing:
    token: str


@dataclasses.dataclass(frozen=True)
class ServerPong:
    token: str


@dataclasses.dataclass(frozen=True)
class ServerOk:
    what: str


@dataclasses.dataclass(frozen=True)
class ServerErr:
    #: The code as sent: a client may meet codes newer than ErrorCode ([ERR-1]).
    code: str
    text: str

    @property
    def closes(self) -> bool:
        """Whether the server closes after it ([ERR-2]); unknown codes do not."""
        try:
            return ErrorCode(self.code).closes
        except ValueError:
            return False


@dataclasses.dataclass(frozen=True)
class ServerNick:
    old: str
    new: str


@dataclasses.dataclass(frozen=True)
class ServerAct:
    sender: str
    text: str


@dataclasses.dataclass(frozen=True)
class ServerFile:
    """OFFER, ACCEPTED or ENDED (SPEC.md 11a): the transfer it names, and the
    line whole, for chat.client_files to read."""

    verb: str
    sender: str
    tid: str
    line: str


@dataclasses.dataclass(frozen=True)
class ServerUnknown:
    """A line no rule of chat/1 matches: a newer server's verb, or a broken
    server's line. Clients show it as it is, and go on."""

    line: str


ServerLine = (ServerHello | ServerJoin | ServerLeave | ServerMsg | ServerPm | ServerNames
              | ServerEndNames | ServerPing | ServerPong | ServerOk | ServerErr | ServerNick
              | ServerAct | ServerFile | ServerUnknown)


def parse_server_line(line: str) -> ServerLine:
    """The typed value of one server line (terminator removed, already decoded).

    Liberal, as a client should be: anything that does not match its verb's
    rule becomes ServerUnknown rather than an exception; an ERR without text
    is taken with an empty text.
    """
    verb, _, rest = line.partition(" ")
    parse = _SERVER_PARSERS.get(verb)
    value = parse(rest) if parse is not None else None
    return ServerUnknown(line) if value is None else value


def _names(*names: str) -> bool:
    return all(is_valid_name(name) for name in names)


def _server_hello(rest: str) -> ServerHello | None:
    version, *fields = rest.split(" ")
    if not version:
        return None
    params = []
    for field in fields:
        key, _, value = field.partition("=")
        if value.isdigit():
            params.append((key, int(value)))
    return ServerHello(version, tuple(params))


def _server_join(rest: str) -> ServerJoin | None:
    return ServerJoin(rest) if _names(rest) else None


def _server_leave(rest: str) -> ServerLeave | None:
    name, _, reason = rest.partition(" ")
    return ServerLeave(name, reason) if _names(name) and reason else None


def _server_msg(rest: str) -> ServerMsg | None:
    sender, _, text = rest.partition(" ")
    return ServerMsg(sender, text) if _names(sender) and text else None


def _server_nick(rest: str) -> ServerNick | None:
    old, _, new = rest.partition(" ")
    return ServerNick(old, new) if _names(old, new) else None


def _server_act(rest: str) -> ServerAct | None:
    sender, _, text = rest.partition(" ")
    return ServerAct(sender, text) if _names(sender) and text else None


def _server_pm(rest: str) -> ServerPm | None:
    sender, _, rest = rest.partition(" ")
    recipient, _, text = rest.partition(" ")
    return ServerPm(sender, recipient, text) if _names(sender, recipient) and text else None


def _server_names(rest: str) -> ServerNames | None:
    names = tuple(rest.split(" "))
    return ServerNames(names) if _names(*names) else None


def _server_endnames(rest: str) -> ServerEndNames | None:
    return ServerEndNames(int(rest)) if rest.isdigit() else None


def _server_token(kind: type[ServerPing] | type[ServerPong]):
    def parse(rest: str) -> ServerPing | ServerPong | None:
        return kind(rest) if _TOKEN.fullmatch(rest) else None
    return parse


def _server_ok(rest: str) -> ServerOk | None:
    return ServerOk(rest) if rest else None


def _server_file(verb: str, fixed: int, tid_at: int):
    """OFFER sender recipient tid ...; ACCEPTED and ENDED sender tid ...: `fixed`
    fields at least, the tid at `tid_at`."""
    def parse(rest: str) -> ServerFile | None:
        fields = rest.split(" ")
        if len(fields) < fixed or not _names(fields[0]) or not _TID.fullmatch(fields[tid_at]):
            return None
        return ServerFile(verb, fields[0], fields[tid_at], f"{verb} {rest}")
    return parse


def _server_err(rest: str) -> ServerErr | None:
    code, _, text = rest.partition(" ")
    return ServerErr(code, text) if code else None


_SERVER_PARSERS = {
    "HELLO": _server_hello,
    "JOIN": _server_join,
    "LEAVE": _server_leave,
    "MSG": _server_msg,
    "PM": _server_pm,
    "NAMES": _server_names,
    "ENDNAMES": _server_endnames,
    "PING": _server_token(ServerPing),
    "PONG": _server_token(ServerPong),
    "OK": _server_ok,
    "ERR": _server_err,
    "NICK": _server_nick,
    "ACT": _server_act,
    "OFFER": _server_file("OFFER", 6, 2),
    "ACCEPTED": _server_file("ACCEPTED", 3, 1),
    "ENDED": _server_file("ENDED", 3, 1),
}

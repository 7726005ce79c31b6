"""The client core: everything a chat/1 client decides, with no I/O and no UI.

Like chat/state.py for the server, this is pure logic: no sockets, threads,
terminal, clock or randomness. A front end (the CLI in chat/client.py, the GUI)
owns the socket, the screen and the clock; it tells the core what happened with
one call per thing, and carries out the effects each call returns, in order.

Calls (every `now` is seconds on a monotonic clock, `jitter` a number in [0, 1)
the front end draws at random):

    start(now)                    the front end is ready; the core asks for a
                                  name (AskName) or asks to connect (Connect)
    name_given(name, now)         the answer to AskName
    password_given(password, now) the answer to AskPassword
    connected(now)                the socket is open (after Connect)
    connect_failed(reason, now, jitter)
                                  the connection could not be opened
    line_received(line, now)      one server line, decoded, LF removed
    connection_lost(now, jitter)  the socket reached EOF or failed (also after
                                  the front end closed it for a Disconnect)
    user_input(text, now, to=CURRENT)
                                  what the user typed or pasted; `text` may hold
                                  several lines (a paste). `to` is the
                                  conversation it was typed in: None for the
                                  room, a name for a private one; by default
                                  the one /query chose (`core.query`)
    paste_answer(send, now)       the answer to ConfirmPaste
    quit(now)                     leave (Ctrl-D, end of piped input, a closed window)
    tick(now)                     call at least every TICK_INTERVAL seconds:
                                  reconnect timers, lag PINGs, stall detection
    complete(text, cursor)        Tab: the input with the name before the cursor
                                  completed, and the new cursor; called again on
                                  its own result, it cycles through the matches

Effects (dataclasses in chat/client_effects.py, re-exported here), of three kinds:

    to do:    Send(line)        write line + LF to the socket
              Connect()         open a connection, then call connected() or
                                connect_failed()
              Disconnect()      close the socket (connection_lost() follows)
              AskName(reason)   ask the user for a name, answer with name_given()
              AskPassword()     ask for the room password, password_given()
              ConfirmPaste(lines, count)  ask whether to send a paste of
                                `count` lines, answer with paste_answer()
              Unsent(text)      the input was not sent (not connected): put it
                                back in the input line
              Clear()           clear the conversation shown
              Quit(status)      the session is over: close everything, exit
                                with `status` (0 left as planned with nothing
                                lost, 1 otherwise)
    to show:  Joined, Left, Message, Acked, Failed, Lost, Private, Action,
              NickChanged, Names, Error, Notice, Lag, Connected, Disconnected,
              Reconnecting, QueryOpened, QueryClosed (see each class)

Own messages: `user_input("hi")` returns Message(own=True, pending=True,
id=n) and Send("MSG hi"); the server's echo is the acknowledgement ([MSG-2]),
and comes back as Acked(id, lag), not as a second Message. A refusal (an ERR,
[CMD-3]: replies come one per command, in order) comes back as Failed(id, code),
and a connection lost before the echo as Lost(id): the text may or may not have
reached the room, so the front end marks it and the user decides.

Reconnecting: when the connection is lost (and `reconnect` is on) the core
waits with exponential backoff and jitter, says so (Reconnecting), asks for a
new connection (Connect from tick()), and registers under the same name; if it
is still taken (by the old connection, until the server notices it is gone),
the core says so and tries again every RECLAIM_RETRY seconds. The draft the
user is typing belongs to the front end and is never touched.

The name: ask for it before connecting (start() does), so that a person
thinking about a name is never dropped by the server's register-timeout
([KEEP-3]). If the server refuses it, AskName comes while connected; should
the server give up meanwhile, the core connects again once the name is given.

Members: `core.members` is who is online (sorted), kept up to date by JOIN,
LEAVE, NICK and the NAMES list the core asks for after each registration.
`core.name` is our name, `core.lag` the latest lag in seconds (None before the
first measurement), `core.features` what the server advertises (HELLO),
`core.query` the private conversation plain text goes to (None: the room),
`core.registered` whether we are in the room now, `core.outstanding` how many
commands await their reply.

Who owns what: the front end owns the socket (and TLS), its threads, the
screen and the clock; it calls the core from one thread only (the core has
no lock). The core owns the conversation's state and every decision.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import re
from collections.abc import Iterable

from chat import protocol
from chat.client_effects import (
    Acked,
    Action,
    AskName,
    AskPassword,
    Clear,
    ConfirmPaste,
    Connect,
    Connected,
    Disconnect,
    Disconnected,
    Effect,
    Error,
    Failed,
    FileCommand,
    FileLine,
    Joined,
    Lag,
    Left,
    Lost,
    Message,
    Names,
    NickChanged,
    Notice,
    Private,
    QueryClosed,
    QueryOpened,
    Quit,
    Reconnecting,
    Send,
    Unsent,
)
from chat.limits import DEFAULT_LINE_MAX
from chat.protocol import (
    VERSION,
    ErrorCode,
    ServerAct,
    ServerEndNames,
    ServerErr,
    ServerFile,
    ServerHello,
    ServerJoin,
    ServerLeave,
    ServerMsg,
    ServerNames,
    ServerNick,
    ServerOk,
    ServerPing,
    ServerPm,
    ServerPong,
    is_valid_name,
    name_key,
)

#: The effects, re-exported: front ends import them from here.
__all__ = [
    "Send",
    "Connect",
    "Disconnect",
    "AskName",
    "AskPassword",
    "ConfirmPaste",
    "Unsent",
    "Clear",
    "Quit",
    "Connected",
    "Joined",
    "Left",
    "Message",
    "Private",
    "Action",
    "Acked",
    "Failed",
    "Lost",
    "NickChanged",
    "Names",
    "Error",
    "Notice",
    "Lag",
    "Disconnected",
    "Reconnecting",
    "QueryOpened",
    "QueryClosed",
    "FileCommand",
    "FileLine",
    "Effect",
    "ClientCore", "CURRENT", "HELP", "COMMANDS", "TICK_INTERVAL",
    "mentions", "printable", "split_text",
]

#: Seconds between two calls of tick() at most: the finest timer below.
TICK_INTERVAL = 0.5
#: A paste of more lines than this is sent only after ConfirmPaste. Five lines
#: are a short quote; thirty are a log file pasted by mistake, which at the
#: default flood-rate (10 lines/s) holds the room's attention for seconds.
PASTE_CONFIRM_LINES = 5
#: Columns between tab stops: a pasted tab becomes spaces ([FRAME-8] forbids
#: the tab itself). 8 is the terminals' default.
TAB_SIZE = 8
#: Seconds between the core's lag PINGs while registered. Also keeps the
#: connection from looking idle to the server's keepalive ([KEEP-2]).
LAG_PING_INTERVAL = 15.0
#: Seconds with a reply owed and nothing at all heard from the server, after
#: which the lag is shown as stalled (and growing). A reply takes milliseconds;
#: a server holding back a flood ([LIMIT-4]) still sends flood-rate lines a second.
STALL_NOTICE = 3.0
#: Seconds of such silence after which the connection counts as dead and is
#: closed (then reconnected). The reference server's own keepalive gives up on
#: a client after ping-interval + ping-timeout = 90 s; a client should not wait longer.
STALL_DISCONNECT = 90.0
#: Reconnect backoff: the first wait, and the longest. Each failure doubles
#: it; jitter spreads it over 50%..150%, so that the clients of a restarted
#: server do not all come back in the same instant.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: Seconds between tries to reclaim our name after a reconnect, while the
#: server still holds it for our previous connection.
RECLAIM_RETRY = 5.0
#: Seconds to wait, after LEAVE, with nothing heard, for the server to close.
LEAVE_TIMEOUT = 5.0

HELP = """\
Type a message and press Enter to send it to the room (or to the open /query).
  @name text          private message to name
  /msg name text      the same
  /me text            an action: * you text
  /nick name          change your name
  /names, /users      who is online
  /query name         talk privately with name; /query alone goes back to the room
  /send name path     offer a file; /accept [id] [path], /reject [id], /cancel [id],
                      /transfers answer and follow offers (ids are sender/number)
  /clear              clear the screen
  /quit, exit         leave (so does Ctrl-D)
  /help               this help
Tab completes names. //text sends /text; a line starting with a space is sent as it is."""

#: The commands, for Tab at the start of the input.
COMMANDS = ("/accept", "/cancel", "/clear", "/help", "/me", "/msg", "/names", "/nick", "/query", "/quit",
            "/reject", "/send", "/transfers", "/users")
#: The file-sharing commands (SPEC.md 11a), carried out by the front end's FileSession.
FILE_COMMANDS = ("/send", "/accept", "/reject", "/cancel", "/transfers")
#: Which of our commands each file-sharing server line answers ([CMD-3]).
_FILE_REPLIES = {"OFFER": ("OFFER",), "ACCEPTED": ("ACCEPT",), "ENDED": ("REJECT", "CANCEL", "RECEIVED")}

#: Closing ERRs after which connecting again cannot help: a wrong password
#: would only be refused again ([PASS-3]).
_FATAL_ERRORS = frozenset({ErrorCode.BAD_PASSWORD.value})


class _Current(enum.Enum):
    CURRENT = "current"


#: user_input(to=CURRENT): the conversation chosen with /query.
CURRENT = _Current.CURRENT


# ---------------------------------------------------------------------------
# Text helpers, public for the front ends
# ---------------------------------------------------------------------------


def printable(text: str) -> str:
    """The text with control characters replaced by U+FFFD ([SEC-2]): a broken
    or hostile server must not drive the user's terminal."""
    return protocol.replace_control_characters(text)


def mentions(text: str, name: str | None) -> bool:
    """Whether `text` names `name` as a word, ignoring case ([NAME-2])."""
    if not name:
        return False
    pattern = rf"(?<![A-Za-z0-9_-]){re.escape(name)}(?![A-Za-z0-9_-])"
    return re.search(pattern, text, re.IGNORECASE) is not None


def split_text(text: str, room: int) -> list[str]:
    """`text` cut into pieces of at most `room` UTF-8 bytes, at a space where
    one is near enough (the space itself is dropped), else between characters.

    Pieces with nothing but spaces are dropped: the grammar's `text` needs a
    visible character. `room` must be at least 4 (the longest UTF-8 character).
    """
    pieces: list[str] = []
    while len(text.encode("utf-8")) > room:
        cut = _fitting_prefix(text, room)
        space = text.rfind(" ", 0, cut + 1)
        # Only a space in the latter half: words are not cut, but neither is
        # a line of long words cut into slivers.
        if space > cut // 2:
            pieces.append(text[:space])
            text = text[space + 1:]
        else:
            pieces.append(text[:cut])
            text = text[cut:]
    pieces.append(text)
    return [piece for piece in pieces if piece.strip(" ")]


def _fitting_prefix(text: str, room: int) -> int:
    """How many characters of `text` fit in `room` bytes."""
    return len(text.encode("utf-8")[:room].decode("utf-8", errors="ignore"))


# ---------------------------------------------------------------------------
# The core
# ---------------------------------------------------------------------------


class _State(enum.Enum):
    IDLE = "idle"                    # not connected, not trying (before start, or asking a name)
    CONNECTING = "connecting"        # Connect requested
    GREETING = "greeting"            # connected, waiting for HELLO
    REGISTERING = "registering"      # PASS/USER sent, or waiting for the user's answer
    REGISTERED = "registered"
    WAITING = "waiting"              # disconnected, a reconnect is scheduled
    DONE = "done"                    # Quit returned


@dataclasses.dataclass
class _Owed:
    """A command sent whose reply has not come yet ([CMD-3])."""
    verb: str
    sent_at: float
    id: int | None = None
    #: A file-sharing command's transfer: (the sender's name key, tid).
    transfer: tuple[str, str] | None = None


class ClientCore:
    """One user's chat session across connections. See the module docstring."""

    def __init__(self, name: str | None = None, password: str | None = None, *,
                 reconnect: bool = True) -> None:
        #: The name we are registered under, or want to be.
        self.name = name
        self.password = password
        #: Whether a lost connection is followed by a new one. Off for piped
        #: use: a script wants its exit status, not a client that waits.
        self.reconnect = reconnect
        #: Our name as the server has it, once our JOIN came back.
        self.registered = False
        #: From HELLO: the longest line the server takes, and its features.
        self.line_max = DEFAULT_LINE_MAX
        self.features: dict[str, int] = {}
        #: Who is online, by name_key ([NAME-2]).
        self._members: dict[str, str] = {}
        self._names_collected: list[str] = []
        #: The private conversation plain text goes to, or None for the room.
        self.query: str | None = None
        self.lag: float | None = None
        self.stalled = False

        self._state = _State.IDLE
        self._owed: collections.deque[_Owed] = collections.deque()
        self._ids = itertools.count(1)
        self._tokens = itertools.count(1)
        self._last_heard = 0.0
        self._last_lag_ping = 0.0
        self._attempt = 0            # reconnect attempts since the last registration
        self._reconnect_at = 0.0
        self._ever_registered = False
        self._reclaim_at: float | None = None
        self._asking_name = False    # AskName is out while connected
        self._quitting = False
        self._left = False           # our own LEAVE quit came back
        self._closing_error: str | None = None
        self._lost_any = False
        self._paste: tuple[str, ...] | None = None
        self._paste_target: str | None = None
        self._completion: _Completion | None = None

    # -- what the front end reads --------------------------------------------

    @property
    def members(self) -> list[str]:
        return sorted(self._members.values(), key=lambda name: (name_key(name), name))

    @property
    def outstanding(self) -> int:
        """Commands sent whose reply has not come yet: a front end feeding a
        script's lines may keep this small, so a flood-delayed server ([LIMIT-4])
        is not handed thousands of lines at once."""
        return len(self._owed)

    @property
    def connected_now(self) -> bool:
        return self._state in (_State.GREETING, _State.REGISTERING, _State.REGISTERED)

    # -- starting and registering ----------------------------------------------

    def start(self, now: float) -> list[Effect]:
        if self.name is None or not is_valid_name(self.name):
            reason = None if self.name is None else _bad_name(self.name)
            self._asking_name = True
            return [AskName(reason)]
        return self._connect()

    def name_given(self, name: str, now: float) -> list[Effect]:
        name = name.strip()
        if not is_valid_name(name):
            return [AskName(_bad_name(name))]
        self.name = name
        self._asking_name = False
        if self._state is _State.REGISTERING:
            return self._send_user(now)
        if self._state is _State.IDLE:
            return self._connect()
        return []  # Connecting or greeting: the name is used once HELLO comes.

    def password_given(self, password: str, now: float) -> list[Effect]:
        self.password = password
        if self._state is not _State.REGISTERING:
            return []
        return [self._send("PASS " + password, now)]

    def _connect(self) -> list[Effect]:
        self._state = _State.CONNECTING
        return [Connect()]

    def connected(self, now: float) -> list[Effect]:
        self._state = _State.GREETING
        self._last_heard = now
        self._closing_error = None
        return [Connected()]

    def connect_failed(self, reason: str, now: float, jitter: float) -> list[Effect]:
        return [Disconnected(f"cannot connect: {reason}")] + self._after_disconnect(now, jitter)

    def _send_user(self, now: float) -> list[Effect]:
        if self._asking_name or self.name is None:
            return []
        return [self._send("USER " + self.name, now)]

    # -- the user's side ----------------------------------------------------------

    def user_input(self, text: str, now: float, to: str | None | _Current = CURRENT) -> list[Effect]:
        target = self.query if to is CURRENT else to
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines = [line for line in lines if line.strip()]
        try:
            if len(lines) > 1:
                # A paste: every line is text, none a command.
                self._check_connected()
                if len(lines) > PASTE_CONFIRM_LINES:
                    self._paste = tuple(lines)
                    self._paste_target = target
                    return [ConfirmPaste(tuple(lines), len(lines))]
                return self._say_lines(lines, target, now)
            if not lines:
                return []  # Enter on nothing, as in [FRAME-9].
            return self._typed(lines[0], target, now)
        except _NotConnected:
            return [Notice("not sent: not connected; the text stays in the input line"),
                    Unsent(text)]

    def paste_answer(self, send: bool, now: float) -> list[Effect]:
        lines, self._paste = self._paste, None
        if lines is None:
            return []
        if not send:
            return [Notice("paste not sent")]
        try:
            return self._say_lines(lines, self._paste_target, now)
        except _NotConnected:
            return [Notice("not sent: not connected; the text stays in the input line"),
                    Unsent("\n".join(lines))]

    def _say_lines(self, lines: Iterable[str], target: str | None, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for line in lines:
            effects += self._say(line, target, now)
        return effects

    def _typed(self, line: str, target: str | None, now: float) -> list[Effect]:
        stripped = line.strip()
        if line.rstrip().lower() == "exit":  # " exit", with its space, is text.
            return self.quit(now)
        if line.startswith("//"):
            return self._say(line[1:], target, now)
        if line.startswith("/"):
            return self._command(stripped, target, now)
        if line.startswith("@"):
            recipient, _, text = line[1:].partition(" ")
            if not is_valid_name(recipient) or not text.strip():
                return [Notice("usage: @name text")]
            return self._say(text, recipient, now)
        return self._say(line, target, now)

    def _command(self, line: str, target: str | None, now: float) -> list[Effect]:
        word, _, rest = line.partition(" ")
        word, rest = word.lower(), rest.strip()
        if word in ("/quit", "/exit"):
            return self.quit(now)
        if word == "/help":
            return [Notice(HELP)]
        if word == "/clear":
            return [Clear()]
        if word in FILE_COMMANDS:
            return [FileCommand(line)]
        if word in ("/names", "/users", "/who"):
            self._check_connected()
            return [self._send("USERS", now)]
        if word == "/msg":
            recipient, _, text = rest.partition(" ")
            if not is_valid_name(recipient) or not text.strip():
                return [Notice("usage: /msg name text")]
            return self._say(text, recipient, now)
        if word == "/query":
            return self._query(rest)
        if word == "/me":
            return self._act(rest, target, now)
        if word == "/nick":
            return self._nick(rest, now)
        return [Notice(f"unknown command {word}; /help lists them")]

    def _query(self, name: str) -> list[Effect]:
        if not name:
            previous, self.query = self.query, None
            return [QueryClosed(previous)] if previous else [Notice("usage: /query name")]
        if not is_valid_name(name):
            return [Notice(_bad_name(name))]
        self.query = self._members.get(name_key(name), name)
        return [QueryOpened(self.query)]

    def _act(self, text: str, target: str | None, now: float) -> list[Effect]:
        if not text:
            return [Notice("usage: /me text")]
        if target is not None:
            return [Notice("/me goes to the room only: chat/1 has no private actions")]
        if self.registered and not self.features.get("action"):
            return [Notice("this server does not support /me (its HELLO has no action=1)")]
        return self._say(text, None, now, verb="ACT")

    def _nick(self, name: str, now: float) -> list[Effect]:
        if not is_valid_name(name):
            return [Notice(_bad_name(name) if name else "usage: /nick name")]
        if not self.registered:
            # Not in the room yet: this is the name to register with.
            self.name = name
            self._asking_name = False
            if self._state is _State.REGISTERING:
                return self._send_user(now)
            return [Notice(f"you will register as {name}")]
        if not self.features.get("nick"):
            return [Notice("this server does not support /nick (its HELLO has no nick=1)")]
        return [self._send("NICK " + name, now)]

    def _say(self, text: str, recipient: str | None, now: float, verb: str | None = None) -> list[Effect]:
        """Text for the room (MSG, or ACT for /me) or for `recipient` (PM),
        split to fit line-max, each piece pending until its echo."""
        text = text.expandtabs(TAB_SIZE)
        if protocol.replace_control_characters(text, "") != text:
            return [Notice("not sent: the text holds control characters")]
        self._check_connected()
        verb = verb or ("MSG" if recipient is None else "PM")
        prefix = f"{verb} " if recipient is None else f"PM {recipient} "
        # The longest text that fits: line-max counts the prefix and the LF ([FRAME-5]).
        room = self.line_max - len(prefix.encode("utf-8")) - 1
        effects: list[Effect] = []
        for piece in split_text(text, room):
            message_id = next(self._ids)
            effects.append(self._send(prefix + piece, now, message_id))
            if verb == "ACT":
                effects.append(Action(self.name, piece, own=True, pending=True, id=message_id))
            elif recipient is None:
                effects.append(Message(self.name, piece, own=True, pending=True, id=message_id))
            else:
                effects.append(Private(self.name, recipient, piece, own=True, pending=True,
                                       id=message_id))
        return effects

    def _can_send(self) -> bool:
        return self.registered and self.connected_now and not self._quitting

    def _check_connected(self) -> None:
        if not self._can_send():
            raise _NotConnected

    def quit(self, now: float) -> list[Effect]:
        if self._state is _State.DONE:
            return []
        self._quitting = True
        if self._state is _State.REGISTERED:
            # The server closes after our LEAVE ([LEAVE-1]); the lines sent
            # before it are handled first ([CMD-1]), so nothing is cut short.
            return [self._send("LEAVE", now)]
        if self.connected_now:
            return [Send("LEAVE"), Disconnect()]  # [LEAVE-2]: no reply to wait for.
        return self._finish()

    # -- the server's side ---------------------------------------------------------

    def line_received(self, line: str, now: float) -> list[Effect]:
        self._last_heard = now
        effects: list[Effect] = []
        if self.stalled:
            self.stalled = False
            # (Stalled means a reply is owed: tick() sets it only then.)
            effects.append(Lag(now - self._owed[0].sent_at))
        value = protocol.parse_server_line(printable(line))
        handler = _HANDLERS.get(type(value))
        if handler is None:
            return effects + [Notice(f"? {value.line}")]
        return effects + handler(self, value, now)

    def _on_hello(self, hello: ServerHello, now: float) -> list[Effect]:
        if hello.version != VERSION:
            self._closing_error = "version"
            self.reconnect = False
            return [Notice(f"the server speaks {hello.version}, this client {VERSION}"),
                    Disconnect()]
        self.features = dict(hello.params)
        self.line_max = hello.param("line-max", DEFAULT_LINE_MAX)
        self._state = _State.REGISTERING
        if self.features.get("password"):
            if self.password is None:
                return [AskPassword()]
            return [self._send("PASS " + self.password, now)]
        return self._send_user(now)

    def _on_ok(self, ok: ServerOk, now: float) -> list[Effect]:
        if self._pop("PASS") is None:
            return []  # Nobody asked.
        return self._send_user(now)

    def _on_join(self, join: ServerJoin, now: float) -> list[Effect]:
        if not self.registered and self._owed and self._owed[0].verb == "USER":
            # [USER-3]: our own JOIN is the reply to USER and comes first.
            self._pop("USER")
            self.registered = True
            self._ever_registered = True
            self._state = _State.REGISTERED
            self._attempt = 0
            self._reclaim_at = None
            self.name = join.name
            self._members = {name_key(join.name): join.name}
            self._last_lag_ping = now
            # SPEC 6.2: who is online, right after JOIN.
            return [Joined(join.name, own=True), self._send("USERS", now)]
        self._members[name_key(join.name)] = join.name
        return [Joined(join.name)]

    def _on_leave(self, leave: ServerLeave, now: float) -> list[Effect]:
        own = self.registered and leave.name == self.name
        if own and leave.reason == "quit":
            self._pop("LEAVE")
            self._left = True
        self._members.pop(name_key(leave.name), None)
        return [Left(leave.name, leave.reason, own=own)]

    def _on_msg(self, msg: ServerMsg, now: float) -> list[Effect]:
        return self._room_text("MSG", Message, msg.sender, msg.text, now)

    def _room_text(self, verb: str, kind: type[Message] | type[Action], sender: str, text: str,
                   now: float) -> list[Effect]:
        """A MSG or ACT: the echo of ours (Acked), or one to show."""
        own = sender == self.name
        acked = self._ack(verb, now) if own else []
        return acked or [kind(sender, text, own=own, mention=not own and mentions(text, self.name))]

    def _on_pm(self, pm: ServerPm, now: float) -> list[Effect]:
        if pm.sender == self.name:
            acked = self._ack("PM", now)
            if acked:
                return acked
            return [Private(pm.sender, pm.recipient, pm.text, own=True)]
        return [Private(pm.sender, pm.recipient, pm.text)]

    def _ack(self, verb: str, now: float) -> list[Effect]:
        """Our message's echo: Acked, if it is the reply owed first."""
        if not self._owed or self._owed[0].verb != verb:
            return []
        owed = self._owed.popleft()
        return [Acked(owed.id, now - owed.sent_at)]

    def _on_act(self, act: ServerAct, now: float) -> list[Effect]:
        return self._room_text("ACT", Action, act.sender, act.text, now)

    def _on_nick(self, nick: ServerNick, now: float) -> list[Effect]:
        own = self.registered and nick.old == self.name
        if own:
            self._pop("NICK")
            self.name = nick.new
        self._members.pop(name_key(nick.old), None)
        self._members[name_key(nick.new)] = nick.new
        # A private conversation follows its peer to the new name ([NICK-2]).
        if self.query is not None and name_key(self.query) == name_key(nick.old):
            self.query = nick.new
        return [NickChanged(nick.old, nick.new, own=own)]

    def _on_names(self, names: ServerNames, now: float) -> list[Effect]:
        self._names_collected += names.names
        return []

    def _on_endnames(self, end: ServerEndNames, now: float) -> list[Effect]:
        self._pop("USERS")
        collected, self._names_collected = self._names_collected, []
        self._members = {name_key(name): name for name in collected}
        if self.registered:
            self._members.setdefault(name_key(self.name), self.name)
        return [Names(tuple(self.members))]

    def _on_ping(self, ping: ServerPing, now: float) -> list[Effect]:
        return [Send("PONG " + ping.token)]  # [PING-4]

    def _on_pong(self, pong: ServerPong, now: float) -> list[Effect]:
        owed = self._pop("PING")
        if owed is None:
            return []
        self.lag = now - owed.sent_at
        return [Lag(self.lag)]

    def _on_err(self, err: ServerErr, now: float) -> list[Effect]:
        if err.closes:
            self._closing_error = err.code
            if err.code == ErrorCode.BAD_PASSWORD.value:
                self._pop("PASS")
                self.password = None
            if err.code == ErrorCode.REGISTRATION_TIMEOUT.value and self._asking_name:
                return []  # We were waiting for the user; we connect again later.
            if err.code == ErrorCode.TLS_REQUIRED.value:
                # [SEC-3]: it came instead of HELLO; say what to do about it.
                return [Error(err.code, "this port speaks TLS, try --tls")]
            return [Error(err.code, err.text)]
        # Every other ERR is the reply to our oldest command ([CMD-3]).
        owed = self._owed.popleft() if self._owed else None
        if owed is None:
            return [Error(err.code, err.text)]
        if owed.id is not None:
            return [Failed(owed.id, err.code, err.text)]
        if owed.verb == "USER":
            return self._user_refused(err, now)
        return [Error(err.code, err.text)]

    def _user_refused(self, err: ServerErr, now: float) -> list[Effect]:
        if err.code == ErrorCode.PASSWORD_REQUIRED.value:
            if self.password is None:
                return [Error(err.code, err.text), AskPassword()]
            return [self._send("PASS " + self.password, now)]
        if err.code == ErrorCode.NAME_TAKEN.value and self._ever_registered:
            # Most likely our previous connection, which the server has not
            # yet seen end ([KEEP-2]): try again until it lets go.
            self._reclaim_at = now + RECLAIM_RETRY
            return [Notice(f"the name {self.name} is still taken (by your previous connection?); "
                           f"trying again every {RECLAIM_RETRY:g} s; /nick name picks another")]
        self._asking_name = True
        return [Error(err.code, err.text), AskName(f"the name {self.name} was refused ({err.code})")]

    def _send(self, line: str, now: float, message_id: int | None = None) -> Send:
        """Send a command that is owed a reply, and remember it."""
        verb = line.partition(" ")[0]
        self._owed.append(_Owed(verb, now, message_id))
        return Send(line)

    def send_file_command(self, line: str, now: float) -> list[Effect]:
        """A line chat.client_files made (OFFER, ACCEPT, REJECT, CANCEL, RECEIVED): sent,
        and owed its reply like any command, so that replies keep matching ([CMD-3])."""
        if not self._can_send():
            return [Notice(f"not sent (not connected): {line}")]
        verb, _, rest = line.partition(" ")
        fields = rest.split(" ")
        sender = self.name if verb == "OFFER" else fields[0]
        tid = fields[1] if len(fields) > 1 else ""
        self._owed.append(_Owed(verb, now, transfer=(name_key(sender or ""), tid)))
        return [Send(line)]

    def _on_file(self, line: ServerFile, now: float) -> list[Effect]:
        """OFFER, ACCEPTED, ENDED: the reply to our oldest command if it names this
        transfer, else news; the front end's FileSession reads the line."""
        owed = self._owed[0] if self._owed else None
        if (owed is not None and owed.verb in _FILE_REPLIES[line.verb]
                and owed.transfer == (name_key(line.sender), line.tid)):
            self._owed.popleft()
        return [FileLine(line.line)]

    def _pop(self, verb: str) -> _Owed | None:
        """Take the oldest owed command if it is a `verb` (a broken server
        may answer what was not asked: then nothing is taken)."""
        if self._owed and self._owed[0].verb == verb:
            return self._owed.popleft()
        return None

    # -- the connection ends -----------------------------------------------------------

    def connection_lost(self, now: float, jitter: float) -> list[Effect]:
        if self._state in (_State.DONE, _State.WAITING, _State.IDLE):
            return []
        was_registered = self.registered
        self.registered = False
        self._members = {}
        self._names_collected = []
        self.stalled = False
        effects: list[Effect] = []
        for owed in self._owed:
            if owed.id is not None:
                self._lost_any = True
                effects.append(Lost(owed.id))
        self._owed.clear()
        if self._quitting and (self._left or not was_registered):
            return effects + self._finish()
        reason = {
            None: "the server closed the connection",
            "SHUTTING_DOWN": "the server is shutting down",
            "version": "the server speaks another protocol",
        }.get(self._closing_error, f"closed by the server ({self._closing_error})")
        if self._closing_error == ErrorCode.REGISTRATION_TIMEOUT.value and self._asking_name:
            self._state = _State.IDLE  # name_given() connects again.
            return effects
        effects.append(Disconnected(reason))
        return effects + self._after_disconnect(now, jitter)

    def _after_disconnect(self, now: float, jitter: float) -> list[Effect]:
        gives_up = (not self.reconnect or self._quitting
                    or self._closing_error in _FATAL_ERRORS or self._closing_error == "version")
        if gives_up:
            return self._finish()
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** self._attempt) * (0.5 + jitter)
        self._attempt += 1
        self._reconnect_at = now + delay
        self._state = _State.WAITING
        return [Reconnecting(self._attempt, delay)]

    def _finish(self) -> list[Effect]:
        self._state = _State.DONE
        planned = self._left or (self._closing_error == ErrorCode.SHUTTING_DOWN.value
                                 and not self.reconnect)
        status = 0 if planned and not self._lost_any else 1
        return [Quit(status)]

    # -- time ------------------------------------------------------------------------

    def tick(self, now: float) -> list[Effect]:
        if self._state is _State.WAITING:
            if now >= self._reconnect_at:
                return self._connect()
            return []
        if not self.connected_now:
            return []
        silence = now - self._last_heard
        if self._owed and silence >= STALL_DISCONNECT:
            return [Notice(f"the server has said nothing for {silence:.0f} s; reconnecting"),
                    Disconnect()]
        if self._quitting and silence >= LEAVE_TIMEOUT:
            return [Notice("the server did not close the connection after LEAVE"), Disconnect()]
        if self._owed and silence >= STALL_NOTICE:
            # Shown each tick while it grows: the status line counts up.
            self.stalled = True
            return [Lag(now - self._owed[0].sent_at, stalled=True)]
        if self._reclaim_at is not None and now >= self._reclaim_at:
            self._reclaim_at = None
            return self._send_user(now)
        if self._state is _State.REGISTERED and now - self._last_lag_ping >= LAG_PING_INTERVAL:
            self._last_lag_ping = now
            return [self._send(f"PING lag-{next(self._tokens)}", now)]
        return []

    # -- completion ---------------------------------------------------------------------

    def complete(self, text: str, cursor: int) -> tuple[str, int]:
        """Tab: complete the word before `cursor` from the names online (or the
        commands, for a first word starting with /). Called again with what it
        returned, it offers the next match. No match: unchanged."""
        state = self._completion
        if state is None or (text, cursor) != state.result:
            start = text.rfind(" ", 0, cursor) + 1
            word = text[start:cursor]
            if start == 0 and word.startswith("/"):
                candidates = [command for command in COMMANDS if command.startswith(word.lower())]
            else:
                prefix = word.removeprefix("@").lower()
                candidates = [name for name in self.members
                              if name_key(name).startswith(prefix) and name != self.name]
                candidates = [word[:len(word) - len(word.removeprefix("@"))] + name
                              for name in candidates]
            if not candidates:
                return text, cursor
            state = _Completion(text[:start], text[cursor:], candidates, -1, (text, cursor))
        state.index = (state.index + 1) % len(state.candidates)
        choice = state.candidates[state.index]
        # irssi's habit: "name: " at the start of a message addresses it.
        if not state.before and not choice.startswith(("/", "@")):
            choice += ":"
        after = state.after if state.after.startswith(" ") else " " + state.after
        new_text = state.before + choice + after
        new_cursor = len(state.before) + len(choice) + 1
        state.result = (new_text, new_cursor)
        self._completion = state
        return new_text, new_cursor


class _NotConnected(Exception):
    """Raised inside user_input() when text cannot go out now."""


@dataclasses.dataclass
class _Completion:
    before: str
    after: str
    candidates: list[str]
    index: int
    result: tuple[str, int]


def _bad_name(name: str) -> str:
    return (f"{name!r} is not a name: a letter, then up to 31 letters, digits, _ or -"
            if name else "a name is needed")


_HANDLERS = {
    ServerFile: ClientCore._on_file,
    ServerHello: ClientCore._on_hello,
    ServerOk: ClientCore._on_ok,
    ServerJoin: ClientCore._on_join,
    ServerLeave: ClientCore._on_leave,
    ServerMsg: ClientCore._on_msg,
    ServerPm: ClientCore._on_pm,
    ServerNames: ClientCore._on_names,
    ServerEndNames: ClientCore._on_endnames,
    ServerPing: ClientCore._on_ping,
    ServerPong: ClientCore._on_pong,
    ServerErr: ClientCore._on_err,
    ServerNick: ClientCore._on_nick,
    ServerAct: ClientCore._on_act,
}

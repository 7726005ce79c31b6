"""The effects the client core returns (chat/client_core.py): small frozen
dataclasses, nouns, as wsproto's events are. Front ends match on their types.

Pure data, no behaviour beyond a property; chat/client_core.py re-exports
every one, so `from chat.client_core import Message` works as well.
"""

from __future__ import annotations

import dataclasses

# ---------------------------------------------------------------------------
# Effects: what the front end does
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Send:
    """Write this line, and an LF, to the socket."""
    line: str


@dataclasses.dataclass(frozen=True)
class Connect:
    """Open a connection; then call connected() or connect_failed()."""


@dataclasses.dataclass(frozen=True)
class Disconnect:
    """Close the socket; connection_lost() follows as usual."""


@dataclasses.dataclass(frozen=True)
class AskName:
    """Ask the user for a name; answer with name_given(). `reason` says why
    the previous one was refused (None the first time)."""
    reason: str | None = None


@dataclasses.dataclass(frozen=True)
class AskPassword:
    """Ask the user for the room's password; answer with password_given()."""


@dataclasses.dataclass(frozen=True)
class ConfirmPaste:
    """A paste of `count` lines waits: answer with paste_answer(True/False)."""
    lines: tuple[str, ...]
    count: int


@dataclasses.dataclass(frozen=True)
class Unsent:
    """The input could not be sent (not connected): put `text` back in the
    input line, so that nothing typed is lost."""
    text: str


@dataclasses.dataclass(frozen=True)
class Clear:
    """Clear the conversation on screen (/clear)."""


@dataclasses.dataclass(frozen=True)
class Quit:
    """The session is over: close the socket and exit with `status`."""
    status: int


# ---------------------------------------------------------------------------
# Effects: what the front end shows
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Connected:
    """The connection is open (the core registers next)."""


@dataclasses.dataclass(frozen=True)
class Joined:
    """`name` joined the room; `own`: it is us (registered, or back after a reconnect)."""
    name: str
    own: bool = False


@dataclasses.dataclass(frozen=True)
class Left:
    """`name` left the room: reason 'quit', 'closed', 'timeout' or 'slow' ([LEAVE-3])."""
    name: str
    reason: str
    own: bool = False


@dataclasses.dataclass(frozen=True)
class Message:
    """A room message. Own ones come at once with pending=True and an `id`;
    their echo then comes as Acked(id) (or Failed, or Lost). `mention`: the
    text names us (highlight, bell)."""
    sender: str
    text: str
    own: bool = False
    pending: bool = False
    mention: bool = False
    id: int | None = None


@dataclasses.dataclass(frozen=True)
class Private:
    """A private message ([PM-1]). `peer` is the other side of the
    conversation (the recipient for our own, the sender otherwise). Own ones
    are pending like Message."""
    sender: str
    recipient: str
    text: str
    own: bool = False
    pending: bool = False
    id: int | None = None

    @property
    def peer(self) -> str:
        return self.recipient if self.own else self.sender


@dataclasses.dataclass(frozen=True)
class Action:
    """`/me` ([ACT-1]): shown as `* sender text`. Own ones are pending like Message."""
    sender: str
    text: str
    own: bool = False
    pending: bool = False
    mention: bool = False
    id: int | None = None


@dataclasses.dataclass(frozen=True)
class Acked:
    """The server took our message `id` (its echo came back) after `lag` seconds."""
    id: int
    lag: float


@dataclasses.dataclass(frozen=True)
class Failed:
    """The server refused our message `id` with ERR `code` ([ERR-1]: `text` is for people)."""
    id: int
    code: str
    text: str


@dataclasses.dataclass(frozen=True)
class Lost:
    """The connection ended before the echo of our message `id`: it may or may
    not have reached the room."""
    id: int


@dataclasses.dataclass(frozen=True)
class NickChanged:
    """`old` is now called `new` ([NICK-1]); `own`: that is us."""
    old: str
    new: str
    own: bool = False


@dataclasses.dataclass(frozen=True)
class Names:
    """Who is online, sorted (after /names, and after each registration)."""
    names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Error:
    """An ERR from the server that is not about one of our messages."""
    code: str
    text: str


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something the client itself says (usage, refusals, help)."""
    text: str


@dataclasses.dataclass(frozen=True)
class Lag:
    """The lag changed: `seconds` from a PING to its PONG, or, `stalled`, how
    long the oldest reply has been owed while the server says nothing."""
    seconds: float
    stalled: bool = False


@dataclasses.dataclass(frozen=True)
class Disconnected:
    """The connection ended; `reason` says how, for people."""
    reason: str


@dataclasses.dataclass(frozen=True)
class Reconnecting:
    """Attempt number `attempt` will start in `delay` seconds."""
    attempt: int
    delay: float


@dataclasses.dataclass(frozen=True)
class QueryOpened:
    """Plain text now goes privately to `name` (/query name)."""
    name: str


@dataclasses.dataclass(frozen=True)
class QueryClosed:
    """Plain text goes to the room again."""
    name: str


Effect = (Send | Connect | Disconnect | AskName | AskPassword | ConfirmPaste | Unsent | Clear | Quit
          | Connected | Joined | Left | Message | Private | Action | Acked | Failed | Lost
          | NickChanged | Names | Error | Notice | Lag | Disconnected | Reconnecting
          | QueryOpened | QueryClosed)

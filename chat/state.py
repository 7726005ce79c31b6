"""The chat room: who is connected, who is registered, who receives which line.

Pure logic, like chat/protocol.py: no sockets, no threads, no clock. Each call
takes what happened (a line arrived, a connection ended, time passed) and
returns a list of actions for the server to carry out, in order:

    Register(s)    s is now a member of the room: broadcasts from here on reach it
    Broadcast(b)   append line b to the output of every registered session
    Send(s, b)     append line b to the output of session s only
    Unregister(s)  s leaves the room: later broadcasts no longer reach it
    Close(s)       deliver what is queued for s, then close its connection
    Relay(s, ...)  s is a data connection now ([FILE-15]): once what is queued
                   for it is sent, the server's relay takes its socket over
    CutRelay(t)    cut the data connections of transfer t, if any ([FILE-10])

The server applies one call's actions under one lock, which is what makes each
command take effect at a single instant ([ORDER-1]). Time is passed in as
`now` (seconds, monotonic) so that timeouts are tested without waiting.
"""

from __future__ import annotations

import collections
import dataclasses
import hmac
import itertools
import math

from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, ProtocolError
from chat.transfers import RECIPIENT, SENDER, Transfer, TransferTable


class TokenBucket:
    """Flood control ([LIMIT-4]): `rate` lines a second, bursts of `burst`.

    `delay(now)` takes one line's worth of allowance and says how long to
    wait before handling that line (0.0: at once). The server waits instead
    of dropping the line, so nothing a client sent is lost.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def delay(self, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= 1.0
        # Negative tokens are a debt: the line may be handled once it is repaid.
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def available(self, now: float) -> int:
        """Lines that could be handled at once, taking nothing."""
        return max(0, math.floor(min(self.burst, self._tokens + (now - self._updated) * self.rate)))


class InputBacklog:
    """One connection's lines received and not yet handled ([LIMIT-4], [LIMIT-8]).

    The server reads a connection even while flood control holds its lines
    back, so that it sees both an excess flood and the client's close or
    reset at once, instead of when the lines before them have dripped
    through. `add(items, now)` queues the LineBuffer's items and says whether
    the bound still holds; `take(now)` gives the next line once flood control
    allows it (None until then); `wait(now)` is how long that is.
    """

    def __init__(self, limits: Limits, now: float) -> None:
        self._flood = TokenBucket(limits.flood_rate, limits.flood_burst, now)
        # Without flood control nothing waits, so there is nothing to bound.
        self.limit = limits.inbound_max if limits.flood_rate else 0
        self._items: collections.deque[bytes | ProtocolError] = collections.deque()
        #: When the first item may be handled, once its allowance is taken.
        self._due: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: list[bytes | ProtocolError], now: float) -> bool:
        """Queue `items`; False if more than `inbound_max` lines now wait
        beyond what the allowance lets through at once: an excess flood."""
        self._items.extend(items)
        if not self.limit:
            return True
        return len(self._items) - self._flood.available(now) <= self.limit

    def take(self, now: float) -> bytes | ProtocolError | None:
        """The next item if flood control lets it be handled now, else None."""
        if not self._items:
            return None
        if self._due is None:
            self._due = now + self._flood.delay(now)
        if now < self._due:
            return None
        self._due = None
        return self._items.popleft()

    def wait(self, now: float) -> float:
        """Seconds until take() may give the next item (0.0: now, or nothing queued)."""
        return 0.0 if self._due is None else max(0.0, self._due - now)

    def discard(self) -> int:
        """Drop every unhandled item ([LIMIT-10]: the client reset); how many there were."""
        count = len(self._items)
        self._items.clear()
        self._due = None
        return count


@dataclasses.dataclass(eq=False)
class Session:
    """One connection as the room sees it. Compared by identity."""

    id: int
    address: str
    connected_at: float
    #: The name as registered ([NAME-3]), None until USER succeeds.
    name: str | None = None
    password_accepted: bool = False
    #: [KEEP-1] when the last complete line arrived.
    last_heard: float = 0.0
    #: [KEEP-2] when the server's unanswered PING went out, if one is out.
    ping_sent_at: float | None = None
    #: Set once a Close action was issued: nothing more is handled.
    closing: bool = False
    #: Whether this session holds a connection slot ([LIMIT-1], [LIMIT-2]).
    counted: bool = False
    #: Why the session ended, for the operator's log: a LEAVE reason
    #: ([LEAVE-1], [LEAVE-3]) or the ERR code that closed it ([ERR-2]).
    ended: str | None = None

    @property
    def registered(self) -> bool:
        return self.name is not None


@dataclasses.dataclass(frozen=True)
class Register:
    session: Session


@dataclasses.dataclass(frozen=True)
class Broadcast:
    line: bytes


@dataclasses.dataclass(frozen=True)
class Send:
    session: Session
    line: bytes


@dataclasses.dataclass(frozen=True)
class Unregister:
    session: Session


@dataclasses.dataclass(frozen=True)
class Close:
    session: Session


@dataclasses.dataclass(frozen=True)
class Relay:
    """[FILE-15]: `session` is the `side` data connection of `transfer`."""

    session: Session
    #: Opaque to the server: it names the transfer back in relay_finished().
    transfer: Transfer
    side: str
    size: int
    #: The READY line the relay sends once both sides are there.
    ready: bytes


@dataclasses.dataclass(frozen=True)
class CutRelay:
    """[FILE-10]: the transfer ended; cut its data connections if open."""

    transfer: Transfer


Action = Register | Broadcast | Send | Unregister | Close | Relay | CutRelay


class ChatRoom:
    """The registry of names and the rules of SPEC.md sections 5 to 11."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        #: Registered sessions by name_key, in the order they joined.
        self._members: dict[str, Session] = {}
        #: Open connections per address, for [LIMIT-2].
        self._per_address: dict[str, int] = {}
        self._open = 0
        #: Open sessions, oldest first (a dict keeps insertion order; the
        #: values are unused). Timeouts and shutdown visit them in this order.
        self._sessions: dict[Session, None] = {}
        self._ids = itertools.count(1)
        self._ping_tokens = itertools.count(1)
        #: The optional verbs this room offers ([CMD-5]).
        self._optional_verbs = limits.optional_verbs()
        #: File transfers (SPEC.md section 11a), if this server relays files.
        self._files = self._new_transfers()

    def _new_transfers(self) -> TransferTable | None:
        limits = self.limits
        return (TransferTable(limits.file_max, limits.file_per_user, limits.file_per_server,
                              limits.file_expiry) if limits.file_max else None)

    # -- connections --------------------------------------------------------

    def connect(self, address: str, now: float) -> tuple[Session, list[Action]]:
        """A connection arrived: greet it, or refuse it if a limit is reached."""
        session = Session(next(self._ids), address, connected_at=now, last_heard=now)
        limits = self.limits
        if limits.max_clients and self._open >= limits.max_clients:
            return session, self._fail(session, ErrorCode.SERVER_FULL,
                                       f"the server holds {limits.max_clients} connections at most")
        if limits.max_per_address and self._per_address.get(address, 0) >= limits.max_per_address:
            return session, self._fail(session, ErrorCode.TOO_MANY_CONNECTIONS,
                                       f"at most {limits.max_per_address} connections per address")
        session.counted = True
        self._open += 1
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._sessions[session] = None
        return session, [Send(session, protocol.format_hello(limits))]

    def release(self, session: Session) -> None:
        """The server is about to close the connection: free its slot ([LIMIT-3])."""
        self._sessions.pop(session, None)
        if not session.counted:
            return
        session.counted = False
        self._open -= 1
        remaining = self._per_address[session.address] - 1
        if remaining:
            self._per_address[session.address] = remaining
        else:
            del self._per_address[session.address]

    def disconnect(self, session: Session, reason: str) -> list[Action]:
        """The connection ended without LEAVE: 'closed', 'timeout' or 'slow' ([LEAVE-3])."""
        if session.closing:
            return []
        actions = self._leave(session, reason, include_leaver=False)
        return actions + [Close(session)]

    # -- lines --------------------------------------------------------------

    def handle(self, session: Session, item: bytes | ProtocolError, now: float) -> list[Action]:
        """One line from the LineBuffer (or its framing error) from `session`."""
        if session.closing:
            return []  # [STATE-2]: a closed session does nothing more.
        session.last_heard = now  # [KEEP-1]
        session.ping_sent_at = None
        try:
            if isinstance(item, ProtocolError):
                raise item
            command = protocol.parse_command(item, self._optional_verbs, files=self._files is not None)
            if command is None:
                return []  # [FRAME-9]
            if isinstance(command, protocol.FILE_COMMANDS):
                return self._file_command(session, command, now)
            return self._dispatch(session, command)
        except ProtocolError as error:
            return self._fail(session, error.code, error.text)

    def _dispatch(self, session: Session, command: protocol.Command) -> list[Action]:
        if isinstance(command, protocol.Ping):
            return [Send(session, protocol.format_pong(command.token))]  # [PING-1]
        if isinstance(command, protocol.Pong):
            return []  # [PING-3]
        if isinstance(command, protocol.Leave):
            return self._leave(session, "quit", include_leaver=True) + [Close(session)]
        if isinstance(command, protocol.Pass):
            return self._pass(session, command)
        if isinstance(command, protocol.User):
            return self._user(session, command)
        if not session.registered:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "choose a name first: USER <name>")
        if isinstance(command, protocol.Msg):
            return [Broadcast(protocol.format_msg(session.name, command.text))]  # [MSG-1]
        if isinstance(command, protocol.Pm):
            return self._pm(session, command)
        if isinstance(command, protocol.Nick):
            return self._nick(session, command)
        if isinstance(command, protocol.Act):
            return [Broadcast(protocol.format_act(session.name, command.text))]  # [ACT-1]
        return self._users(session)

    def _pass(self, session: Session, command: protocol.Pass) -> list[Action]:
        if session.registered:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, "PASS comes before USER")
        expected = self.limits.password
        if expected is not None and not _same_secret(command.password, expected):
            return self._fail(session, ErrorCode.BAD_PASSWORD, "wrong password")  # [PASS-3]
        session.password_accepted = True
        return [Send(session, protocol.format_ok_pass())]  # [PASS-2], [PASS-4]

    def _user(self, session: Session, command: protocol.User) -> list[Action]:
        # The order of these checks is [STATE-1]'s.
        if session.registered:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"you are {session.name} already")
        if self.limits.password is not None and not session.password_accepted:
            raise ProtocolError(ErrorCode.PASSWORD_REQUIRED, "send PASS <password> first")
        name = command.name
        key = self._check_name(name)
        session.name = name
        self._members[key] = session
        # Register first, so that the JOIN reaches the newcomer too ([USER-1]).
        return [Register(session), Broadcast(protocol.format_join(name))]

    def _check_name(self, name: str, holder: Session | None = None) -> str:
        """[NAME-1] and [NAME-2]: the name's key, if `name` may be registered
        (by `holder`, who may change the case of its own name)."""
        if not protocol.is_valid_name(name):
            raise ProtocolError(
                ErrorCode.BAD_NAME,
                f"a name is a letter, then up to {self.limits.name_max - 1} letters, digits, _ or -",
            )
        key = protocol.name_key(name)
        if self._members.get(key, holder) is not holder:
            raise ProtocolError(ErrorCode.NAME_TAKEN, f"{name} is taken")
        return key

    def _nick(self, session: Session, command: protocol.Nick) -> list[Action]:
        # [NICK-3]: BAD_SYNTAX (parser) and NOT_REGISTERED (_dispatch) came first.
        key = self._check_name(command.name, holder=session)
        old = session.name
        # One call, under the server's one lock: the change and its line take
        # effect at one instant, in the room's order ([NICK-2]).
        # The member keeps its place in the join order (a rebuild, O(members),
        # as rare as a person renaming).
        old_key = protocol.name_key(old)
        self._members = {key if member_key == old_key else member_key: member
                         for member_key, member in self._members.items()}
        session.name = command.name
        return [Broadcast(protocol.format_nick(old, command.name))]  # [NICK-1]

    def _pm(self, session: Session, command: protocol.Pm) -> list[Action]:
        recipient = self._members.get(protocol.name_key(command.name))
        if recipient is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"{command.name} is not online")
        line = protocol.format_pm(session.name, recipient.name, command.text)
        if recipient is session:
            return [Send(session, line)]  # [PM-2]: once, not twice.
        return [Send(recipient, line), Send(session, line)]  # [PM-1]

    def _users(self, session: Session) -> list[Action]:
        names = [member.name for member in self._members.values()]
        return [Send(session, line) for line in protocol.format_names(names, self.limits.line_max)]

    # -- leaving and failing -------------------------------------------------

    def _leave(self, session: Session, reason: str, *, include_leaver: bool) -> list[Action]:
        session.closing = True
        session.ended = session.ended or reason
        if not session.registered:
            return []  # [LEAVE-2]
        del self._members[protocol.name_key(session.name)]  # [NAME-4]
        line = protocol.format_leave(session.name, reason)
        gone = self._transfers_gone(session)  # [FILE-13]: before the LEAVE
        if include_leaver:
            # [LEAVE-1]: the leaver sees its own LEAVE, as its reply.
            return gone + [Broadcast(line), Unregister(session)]
        return gone + [Unregister(session), Broadcast(line)]  # [LEAVE-3]

    def _fail(self, session: Session, code: ErrorCode, text: str) -> list[Action]:
        """The ERR reply for `code`, and the close that [ERR-2] demands for some."""
        actions: list[Action] = [Send(session, protocol.format_error(code, text))]
        if code.closes:
            session.ended = session.ended or code.value
            actions += self.disconnect(session, "closed")
        return actions

    # -- time and shutdown ----------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Registration timeouts and keepalive ([KEEP-2], [KEEP-3])."""
        limits = self.limits
        actions: list[Action] = self._expire_transfers(now)
        if not (limits.register_timeout or limits.ping_interval):
            return actions  # No timers: nothing to look at, however many sessions.
        for session in list(self._sessions):
            if session.closing:
                continue
            if (limits.register_timeout and not session.registered
                    and now - session.connected_at >= limits.register_timeout):
                actions += self._fail(session, ErrorCode.REGISTRATION_TIMEOUT,
                                      f"no USER within {limits.register_timeout} s")
            elif limits.ping_interval and session.ping_sent_at is None:
                if now - session.last_heard >= limits.ping_interval:
                    session.ping_sent_at = now
                    token = f"keepalive-{next(self._ping_tokens)}"
                    actions.append(Send(session, protocol.format_ping(token)))
            elif (limits.ping_interval and limits.ping_timeout  # [KEEP-6]: 0, PING but never close
                  and now - session.ping_sent_at >= limits.ping_timeout):
                actions.append(Send(session, protocol.format_error(
                    ErrorCode.PING_TIMEOUT, f"no answer to PING within {limits.ping_timeout} s")))
                actions += self.disconnect(session, "timeout")
        return actions

    def shutdown(self) -> list[Action]:
        """[LIMIT-7]: tell every open connection, then close them all."""
        actions: list[Action] = []
        for session in list(self._sessions):
            if not session.closing:
                session.closing = True
                session.ended = ErrorCode.SHUTTING_DOWN.value
                actions += [Send(session, protocol.format_error(
                    ErrorCode.SHUTTING_DOWN, "the server is shutting down")), Close(session)]
        return actions

    def slow_consumer(self, session: Session) -> list[Action]:
        """[LIMIT-6]: `session` fell `outbound_max` bytes behind; drop it."""
        return self.disconnect(session, "slow")

    def excess_flood(self, session: Session) -> list[Action]:
        """[LIMIT-8]: more than `inbound_max` of its lines wait; drop it."""
        if session.closing:
            return []
        return [Send(session, protocol.format_error(
            ErrorCode.EXCESS_FLOOD, f"more than {self.limits.inbound_max} lines waiting: "
                                    f"send at most {self.limits.flood_rate} lines a second"))
                ] + self.disconnect(session, "flood")


    # -- file sharing (SPEC.md section 11a) -------------------------------------------------

    def _file_command(self, session: Session, command: protocol.FileCommand, now: float) -> list[Action]:
        files = self._files
        if isinstance(command, protocol.Data):
            return self._data(session, command)
        if not session.registered:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "choose a name first: USER <name>")
        if isinstance(command, protocol.Offer):
            return self._offer(session, command, now)
        key = (protocol.name_key(command.sender), command.tid)
        if isinstance(command, protocol.Accept):
            transfer = files.accept(session, key, now)  # [FILE-7]
            sender, tid, tokens = transfer.sender.name, command.tid, transfer.tokens
            return [Send(transfer.sender, protocol.format_accepted(sender, tid, tokens[SENDER])),
                    Send(transfer.recipient, protocol.format_accepted(sender, tid, tokens[RECIPIENT]))]
        if isinstance(command, protocol.Reject):
            return self._transfer_ended(files.reject(session, key), actor=session)  # [FILE-9]
        if isinstance(command, protocol.Cancel):
            return self._transfer_ended(files.cancel(session, key), actor=session)  # [FILE-10]
        return self._transfer_ended(files.received(session, key, command.ok), actor=session)  # [FILE-18]

    def _offer(self, session: Session, command: protocol.Offer, now: float) -> list[Action]:
        recipient = self._members.get(protocol.name_key(command.recipient))
        if recipient is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"{command.recipient} is not online")
        self._files.offer(session, recipient, (protocol.name_key(session.name), command.tid),
                          command.size, command.sha256, command.filename, now)
        line = protocol.format_offer(session.name, recipient.name, command.tid, command.size,
                                     command.sha256, command.filename)
        if recipient is session:
            return [Send(session, line)]
        return [Send(recipient, line), Send(session, line)]  # [FILE-4]: the sender's copy last, its reply

    def _data(self, session: Session, command: protocol.Data) -> list[Action]:
        if session.registered:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, "DATA opens a connection of its own")
        transfer, side = self._files.attach(command.token)  # [FILE-16]: BAD_TOKEN closes
        # [FILE-15]: no more lines on this connection, the bytes are the file's;
        # [FILE-21]: no timers either, as a closing session has none.
        session.closing = True
        ready = protocol.format_ready(transfer.sender.name, transfer.key[1], transfer.size)
        return [Relay(session, transfer, side, transfer.size, ready)]

    def _transfer_ended(self, transfer: Transfer, actor: Session | None = None,
                        skip: Session | None = None) -> list[Action]:
        """[FILE-11]: ENDED to each party still here (the actor's last: its reply), and the cut."""
        line = protocol.format_ended(transfer.sender.name, transfer.key[1], transfer.reason)
        parties = [p for p in transfer.parties() if p is not actor and p is not skip]
        if actor is not None:
            parties.append(actor)
        sessions = [self._reachable(party) for party in parties]
        actions: list[Action] = [Send(session, line) for session in sessions if session is not None]
        return actions + [CutRelay(transfer)]

    def _reachable(self, party: Session) -> Session | None:
        """The session a transfer's party is sent its lines on: here, the party
        itself (a cluster's parties are members, on this server or another)."""
        return party

    def _transfers_gone(self, session: Session) -> list[Action]:
        """[FILE-13]: the party is leaving; its transfers end `gone` for the other party."""
        if self._files is None:
            return []
        return [action for transfer in self._files.party_gone(session)
                for action in self._transfer_ended(transfer, skip=session)]

    def _expire_transfers(self, now: float) -> list[Action]:
        """[FILE-12]."""
        if self._files is None:
            return []
        return [action for transfer in self._files.expire(now) for action in self._transfer_ended(transfer)]

    def relay_finished(self, transfer: Transfer, outcome: str, now: float) -> list[Action]:
        """The server's relay of `transfer` ended: "ok", "aborted" or "oversize" ([FILE-15])."""
        ended = self._files.relay_finished(transfer, outcome, now)
        return [] if ended is None else self._transfer_ended(ended)


def _same_secret(given: str, expected: str) -> bool:
    """[PASS-5]: compare in time that does not leak how much matched."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))

"""One room on many servers: the room's decisions, made in the log's order (SPEC.md 11b).

Pure logic, like chat/state.py: no sockets, no threads, no clock. In a
cluster every server appends what changes or reads the room (USER, MSG, ACT,
PM, USERS, NICK, LEAVE, the end of a registered connection, and the file
commands with DATA) to one ordered log, and every server applies that log,
entry by entry and in its order, to its own copy of the room ([CLUSTER-1]).
Given the same entries, every copy makes the same decisions: the first USER
for a name in the log wins ([CLUSTER-3]), a broadcast takes its place in one
order everywhere ([CLUSTER-2]), USERS is answered at its place in the log
([CLUSTER-4]), and a transfer's offer, consent, tokens and end are the same
on every server ([CLUSTER-11]).

ClusterRoom is a ChatRoom: what concerns one connection only (HELLO, the
connection limits, PASS, syntax, PING, timers, flood control) is decided at
once by the server the client is connected to, as on a single server. Its
calls return the actions of chat/state.py, plus two:

    Append(entry, awaited)   append `entry` to the log; `awaited`: the client's
                             reader waits for it to come back from the log (its
                             reply, and [ORDER-4]), or to be refused
    TransferChanged(t)       the log holds both of t's DATA entries, or its
                             relay's outcome: this server's relays of t go on
                             ([CLUSTER-12])

`apply(stamp_ms, entry)` is the other half: one entry read from the log, with
the log's own time (milliseconds, from the entry's id), and the actions it
causes for this server's clients. The log's time, not a server's clock,
decides when a silent server is gone ([CLUSTER-5]), so every server decides it
at the same entry.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable

from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, ProtocolError
from chat.state import (
    Action,
    Broadcast,
    ChatRoom,
    Close,
    CutRelay,
    Register,
    Relay,
    Send,
    Session,
    Unregister,
)
from chat.transfers import RECIPIENT, RELAYING, SENDER, Transfer, new_token

#: [CLUSTER-5]: seconds a server may stay silent in the log before the others
#: declare it gone and send its users' LEAVEs. Each server writes a heartbeat
#: five times per lease, so a lease survives four lost heartbeats; 10 s is
#: what a GIL-bound server with 10,000 clients can keep under load (one
#: flusher pass over 10,000 sockets took 2.3 to 3 s in the 10,000 step, README).
DEFAULT_LEASE = 10.0
#: Heartbeats per lease (see DEFAULT_LEASE).
HEARTBEATS_PER_LEASE = 5
#: The entries a client may hand to the log one after another without waiting
#: for each to come back: they need no state the ones before them change
#: (chat/backplane.py, Stream).
STREAMED = frozenset({"msg", "act", "pm"})
#: The entries of file sharing ([CLUSTER-11]).
FILE_KINDS = frozenset({"offer", "accept", "reject", "cancel", "received", "data", "relayed"})
#: The entry kinds and how many fields each carries; a text field is the last.
#: The file kinds ([CLUSTER-11]): offer (recipient, tid, size, sha256, filename),
#: accept (sender, tid, the sender's token, the recipient's), reject, cancel
#: (sender, tid), received (sender, tid, verdict), data (token), and relayed
#: (the transfer's id, its outcome), which a server appends for its relay.
ARITY = {"user": 1, "msg": 1, "act": 1, "pm": 2, "nick": 1, "users": 0, "leave": 1, "alive": 1,
         "offer": 5, "accept": 4, "reject": 2, "cancel": 2, "received": 3, "data": 1, "relayed": 2}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of the log: what a server's client did, or a server's heartbeat."""

    #: The server that appended it.
    server: str
    #: That server's session id (0 for the server's own entries).
    session: int
    #: That server's sequence number, so it knows its own entries when they come back.
    seq: int
    kind: str
    args: tuple[str, ...] = ()


def encode(entry: Entry) -> bytes:
    """The entry as one UTF-8 field: its fields separated by SP, a text last."""
    return " ".join([entry.server, str(entry.session), str(entry.seq), entry.kind, *entry.args]).encode()


def decode(data: bytes) -> Entry | None:
    """The entry in `data`, or None if it is not one (another program's entry is skipped)."""
    try:
        head = data.decode("utf-8").split(" ", 4)
        server, session, seq, kind = head[:4]
        arity = ARITY[kind]
        args = tuple(head[4].split(" ", arity - 1)) if arity else ()
        if len(head) != 4 + (arity > 0) or len(args) != arity:
            return None
        return Entry(server, int(session), int(seq), kind, args)
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        return None


def stamp_of(entry_id: str) -> int:
    """The log's time of an entry, in milliseconds: a Redis stream id is `<ms>-<n>`."""
    return int(entry_id.split("-", 1)[0])


@dataclasses.dataclass(frozen=True)
class Append:
    entry: Entry
    awaited: bool


@dataclasses.dataclass(frozen=True)
class TransferChanged:
    """A transfer's data connections are both here (RELAYING), or its relay's
    outcome is in the log: the relays of this server may go on ([CLUSTER-12])."""

    transfer: Transfer


def transfer_id(transfer: Transfer) -> str:
    """The name of a transfer's relay between servers: its sender's token,
    unpredictable, the same on every server, and never reused."""
    return transfer.tokens[SENDER]


@dataclasses.dataclass(eq=False)
class Member:
    """A registered user, on whichever server it is connected to."""

    name: str
    server: str
    session: int

    @property
    def id(self) -> str:
        """For the log's records, as a Session's id is."""
        return f"{self.server}/{self.session}"


@dataclasses.dataclass
class Lease:
    """[CLUSTER-5]: when a server last wrote to the log, and how long it may be silent."""

    seen_ms: int
    lease_ms: int


class ClusterRoom(ChatRoom):
    """This server's copy of a room shared through a log."""

    def __init__(self, limits: Limits, server_id: str | None = None, lease: float = DEFAULT_LEASE,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]) -> None:
        super().__init__(limits)
        self._new_id = new_id
        #: This server's name in the log; a new one if the others declare it gone.
        self.server_id = server_id or new_id()
        #: Every id this server has had: entries of the old ones are its own too.
        self.own_ids = {self.server_id}
        self.lease_ms = int(lease * 1000)
        self._seq = itertools.count(1)
        #: Local sessions by id (those holding a slot), for the log's entries.
        self._local: dict[int, Session] = {}
        #: Local sessions whose USER is in the log and not yet applied: the name asked for.
        self._joining: dict[Session, str] = {}
        #: The entry of each local reader's last line, if it went to the log:
        #: the reader waits for it ([ORDER-4]); the server pops it.
        self.awaiting: dict[Session, Entry] = {}
        # -- the same on every server, after the same entries --
        #: Registered users by name_key, in the order they joined.
        self._roster: dict[str, Member] = {}
        #: (server, session) -> name_key, for the entries of a member.
        self._by_session: dict[tuple[str, int], str] = {}
        self._leases: dict[str, Lease] = {}
        #: Servers declared gone ([CLUSTER-5]), for good.
        self.gone: set[str] = set()
        self._last_ms: int | None = None
        #: [CLUSTER-11]: the room's transfers (ChatRoom's table, whose parties
        #: here are Members), by transfer_id once accepted, for `relayed`.
        self._accepted: dict[str, Transfer] = {}

    # -- this server's clients ---------------------------------------------------

    def connect(self, address: str, now: float) -> tuple[Session, list[Action]]:
        session, actions = super().connect(address, now)
        if session.counted:
            self._local[session.id] = session
        return session, actions

    def release(self, session: Session) -> None:
        super().release(session)
        self._local.pop(session.id, None)

    def heartbeat(self) -> Entry:
        """This server's sign of life for the log ([CLUSTER-5]), with its lease."""
        return Entry(self.server_id, 0, 0, "alive", (str(self.lease_ms),))

    def _append(self, session: Session, kind: str, *args: str, awaited: bool = True) -> Append:
        entry = Entry(self.server_id, session.id, next(self._seq), kind, args)
        if awaited:
            self.awaiting[session] = entry
        return Append(entry, awaited)

    def _dispatch(self, session: Session, command: protocol.Command) -> list[Action]:
        # What changes or reads the room goes through the log; the rest (PASS,
        # USER's own checks, PING, PONG, errors before registering) is the
        # single server's, decided here at once.
        if not session.registered:
            return super()._dispatch(session, command)
        if isinstance(command, protocol.Msg):
            return [self._append(session, "msg", command.text)]
        if isinstance(command, protocol.Act):
            return [self._append(session, "act", command.text)]
        if isinstance(command, protocol.Pm):
            return [self._append(session, "pm", command.name, command.text)]
        if isinstance(command, protocol.Users):
            return [self._append(session, "users")]
        if isinstance(command, protocol.Nick):
            super()._check_name(command.name)  # BAD_NAME here; NAME_TAKEN in the log's order
            return [self._append(session, "nick", command.name)]
        if isinstance(command, protocol.Leave):
            # [STATE-2]: nothing after LEAVE has an effect; its reply comes from the log.
            session.closing = True
            session.ended = "quit"
            return [self._append(session, "leave", "quit")]
        return super()._dispatch(session, command)  # PASS, USER, PING, PONG

    def _user(self, session: Session, command: protocol.User) -> list[Action]:
        # [STATE-1]'s order: ALREADY_REGISTERED, PASSWORD_REQUIRED, BAD_NAME here;
        # NAME_TAKEN when the entry comes back from the log ([CLUSTER-3]).
        if session.registered:
            raise ProtocolError(ErrorCode.ALREADY_REGISTERED, f"you are {session.name} already")
        if self.limits.password is not None and not session.password_accepted:
            raise ProtocolError(ErrorCode.PASSWORD_REQUIRED, "send PASS <password> first")
        super()._check_name(command.name)  # The room's own table stays empty: validity only.
        self._joining[session] = command.name
        return [self._append(session, "user", command.name)]

    def _file_command(self, session: Session, command: protocol.FileCommand, now: float) -> list[Action]:
        # [CLUSTER-11]: every file command goes through the log, as PM does: the
        # transfers are the room's, the same table on every server. DATA too,
        # so that a data connection may reach any server, and a token works
        # once in the whole cluster. ACCEPT's tokens are made here, once, and
        # carried in its entry.
        if isinstance(command, protocol.Data):
            if session.registered:
                raise ProtocolError(ErrorCode.ALREADY_REGISTERED, "DATA opens a connection of its own")
            return [self._append(session, "data", command.token)]
        if not session.registered:
            raise ProtocolError(ErrorCode.NOT_REGISTERED, "choose a name first: USER <name>")
        if isinstance(command, protocol.Offer):
            return [self._append(session, "offer", command.recipient, command.tid, str(command.size),
                                 command.sha256, command.filename)]
        if isinstance(command, protocol.Accept):
            return [self._append(session, "accept", command.sender, command.tid, new_token(), new_token())]
        if isinstance(command, protocol.Reject):
            return [self._append(session, "reject", command.sender, command.tid)]
        if isinstance(command, protocol.Cancel):
            return [self._append(session, "cancel", command.sender, command.tid)]
        verdict = "ok" if command.ok else "corrupt"
        return [self._append(session, "received", command.sender, command.tid, verdict)]

    def relay_finished(self, transfer: Transfer, outcome: str, now: float) -> list[Action]:
        """This server's relay of `transfer` ended: the outcome goes to the log,
        and takes effect where it stands there ([CLUSTER-12])."""
        entry = Entry(self.server_id, 0, next(self._seq), "relayed", (transfer_id(transfer), outcome))
        return [Append(entry, awaited=False)]

    def _expire_transfers(self, now: float) -> list[Action]:
        return []  # [CLUSTER-12]: on the log's clock, in _expire; not on this server's.

    def disconnect(self, session: Session, reason: str) -> list[Action]:
        """The connection ended without LEAVE: the others hear it through the log."""
        if session.closing:
            return []
        session.closing = True
        session.ended = session.ended or reason
        actions: list[Action] = []
        if session.registered:
            actions.append(Unregister(session))  # It receives nothing more ([LEAVE-3]).
        if session.registered or session in self._joining:
            actions.append(self._append(session, "leave", reason, awaited=False))
        return actions + [Close(session)]

    def streamable(self, session: Session, item: bytes | ProtocolError) -> bool:
        """Whether `item`, the next line of `session`, goes to the log as a
        STREAMED entry, with no reply of its own before the entries still on
        their way: then its reader need not wait for them ([ORDER-4])."""
        if isinstance(item, ProtocolError) or not session.registered or session.closing:
            return False
        try:
            command = protocol.parse_command(item, self._optional_verbs)
        except ProtocolError:
            return False
        return isinstance(command, (protocol.Msg, protocol.Act, protocol.Pm))

    def refused_entry(self, entry: Entry) -> list[Action]:
        """The log could not take this entry of one of this server's clients ([CLUSTER-6])."""
        session = self._local.get(entry.session)
        return self.refused(session) if session is not None else []

    def refused(self, session: Session) -> list[Action]:
        """The log could not take the session's command ([CLUSTER-6]): it had no effect."""
        self._joining.pop(session, None)
        if self._local.get(session.id) is not session:
            return []  # Its connection is gone already.
        if not session.closing:
            return [Send(session, protocol.format_error(
                ErrorCode.BACKPLANE_DOWN, "the room's log is unreachable: not sent, try again"))]
        if not session.registered:
            return []
        # Its LEAVE could not reach the log: it is closed now, and the others
        # hear its LEAVE once the log is back (the writer keeps it).
        return [Unregister(session), self._append(session, "leave", session.ended or "quit", awaited=False),
                Close(session)]

    def shutdown(self) -> list[Action]:
        """[LIMIT-7], and the others hear this server's users leave ('closed')."""
        leaves: list[Action] = [self._append(session, "leave", "closed", awaited=False)
                                for session in self._sessions
                                if not session.closing and (session.registered or session in self._joining)]
        return leaves + super().shutdown()

    # -- snapshots ([CLUSTER-9]) ------------------------------------------------------

    def snapshot(self) -> bytes:
        """The room as every server holds it after the same entries (the
        members in join order, the leases, the servers gone, the log's time),
        so that a server can start from it instead of from the log's first
        entry. Nothing of this server's own clients is in it."""
        return json.dumps({
            "members": [[member.name, member.server, member.session] for member in self._roster.values()],
            "leases": {server: [lease.seen_ms, lease.lease_ms] for server, lease in self._leases.items()},
            "gone": sorted(self.gone),
            "last_ms": self._last_ms,
        }, separators=(",", ":")).encode()

    def restore(self, data: bytes, fresh: bool) -> list[Action]:
        """Take the room from a snapshot, and apply the entries after it.

        `fresh`: this server is starting and has no client in the room yet.
        Otherwise the log was trimmed past entries this server had not
        applied: the others had declared it gone ([CLUSTER-5]), so it does
        what [CLUSTER-7] says (its clients are closed, it takes a new id)
        before it takes the room as they hold it.
        """
        actions = [] if fresh else self._server_gone(self.server_id)
        state = json.loads(data)
        self._roster = {protocol.name_key(name): Member(name, server, session)
                        for name, server, session in state["members"]}
        self._by_session = {(member.server, member.session): key for key, member in self._roster.items()}
        self._leases = {server: Lease(seen_ms, lease_ms)
                        for server, (seen_ms, lease_ms) in state["leases"].items()}
        self.gone = set(state["gone"])
        self._last_ms = state["last_ms"]
        # The snapshot holds no transfers: this server forgets those it knew
        # (SPEC.md 11b: a data connection of one of them gets ERR BAD_TOKEN here).
        actions += [CutRelay(transfer) for transfer in self._accepted.values()]
        self._accepted.clear()
        self._files = self._new_transfers()
        return actions

    # -- the log ----------------------------------------------------------------------

    def apply(self, stamp_ms: int, entry: Entry) -> list[Action]:
        """One entry of the log, at the log's time `stamp_ms`: what this server's clients get."""
        actions = self._expire(stamp_ms)
        if entry.server in self.gone:
            return actions  # A server declared gone is gone for good ([CLUSTER-5]).
        lease = self._leases.setdefault(entry.server, Lease(stamp_ms, self.lease_ms))
        lease.seen_ms = stamp_ms
        if entry.kind == "alive":
            lease.lease_ms = int(entry.args[0])
            return actions
        local = self._local.get(entry.session) if entry.server == self.server_id else None
        if local is not None and local.closing and entry.kind != "leave":
            local = None  # [STATE-2]: it receives nothing more.
        if entry.kind in FILE_KINDS:
            return actions + self._apply_file(entry, local, stamp_ms / 1000)
        key = self._by_session.get((entry.server, entry.session))
        if entry.kind == "user":
            return actions + self._apply_user(entry, local, entry.args[0])
        if key is None:
            return actions  # Its member left already: the entry came after its LEAVE.
        member = self._roster[key]
        if entry.kind in ("msg", "act"):
            format_line = protocol.format_msg if entry.kind == "msg" else protocol.format_act
            return actions + [Broadcast(format_line(member.name, entry.args[0]))]
        if entry.kind == "pm":
            return actions + self._apply_pm(member, local, *entry.args)
        if entry.kind == "users":
            names = [other.name for other in self._roster.values()]
            lines = protocol.format_names(names, self.limits.line_max) if local else []
            return actions + [Send(local, line) for line in lines]
        if entry.kind == "nick":
            return actions + self._apply_nick(key, member, local, entry.args[0])
        return actions + self._apply_leave(key, member, local, entry.args[0])

    def _apply_user(self, entry: Entry, local: Session | None, name: str) -> list[Action]:
        if local is not None:
            self._joining.pop(local, None)
        key = protocol.name_key(name)
        if key in self._roster or (entry.server, entry.session) in self._by_session:
            # [NAME-2], [CLUSTER-3]: the first USER in the log has it.
            return [Send(local, protocol.format_error(ErrorCode.NAME_TAKEN, f"{name} is taken"))] \
                if local else []
        self._roster[key] = Member(name, entry.server, entry.session)
        self._by_session[(entry.server, entry.session)] = key
        if local is None:
            # Remote, or a local session that ended meanwhile: its LEAVE follows in the log.
            return [Broadcast(protocol.format_join(name))]
        local.name = name
        return [Register(local), Broadcast(protocol.format_join(name))]

    def _apply_pm(self, sender: Member, local: Session | None, to: str, text: str) -> list[Action]:
        recipient = self._roster.get(protocol.name_key(to))
        if recipient is None:
            return [Send(local, protocol.format_error(ErrorCode.NO_SUCH_USER, f"{to} is not online"))] \
                if local else []
        line = protocol.format_pm(sender.name, recipient.name, text)
        target = self._reachable(recipient)
        actions: list[Action] = []
        if target is not None and target is not local:
            actions.append(Send(target, line))
        if local is not None:
            actions.append(Send(local, line))  # [PM-2]: once, even to oneself.
        return actions

    def _apply_nick(self, key: str, member: Member, local: Session | None, name: str) -> list[Action]:
        new_key = protocol.name_key(name)
        if self._roster.get(new_key, member) is not member:
            return [Send(local, protocol.format_error(ErrorCode.NAME_TAKEN, f"{name} is taken"))] \
                if local else []
        # The member keeps its place in the join order, as on a single server.
        self._roster = {new_key if other_key == key else other_key: other
                        for other_key, other in self._roster.items()}
        self._by_session[(member.server, member.session)] = new_key
        old, member.name = member.name, name
        if local is not None:
            local.name = name
        return [Broadcast(protocol.format_nick(old, name))]

    def _apply_leave(self, key: str, member: Member, local: Session | None, reason: str) -> list[Action]:
        del self._roster[key]
        del self._by_session[(member.server, member.session)]
        gone = self._transfers_gone(member)  # [FILE-13]: before the LEAVE
        line = protocol.format_leave(member.name, reason)
        if local is not None and reason == "quit":
            # [LEAVE-1]: the leaver's own LEAVE is its reply, then the close.
            return gone + [Broadcast(line), Unregister(local), Close(local)]
        return gone + [Broadcast(line)]  # A local leaver was unregistered when it ended.

    def _expire(self, stamp_ms: int) -> list[Action]:
        """[CLUSTER-5]: declare gone every server silent for longer than its lease."""
        actions: list[Action] = []
        if self._last_ms is not None:
            for lease in self._leases.values():
                # The log itself was silent for half a lease: nobody could
                # write (the engine was down), so nobody is blamed for it.
                if stamp_ms - self._last_ms > lease.lease_ms // 2:
                    lease.seen_ms = stamp_ms
        self._last_ms = stamp_ms
        for server, lease in list(self._leases.items()):
            if stamp_ms - lease.seen_ms > lease.lease_ms:
                del self._leases[server]
                self.gone.add(server)
                actions += self._server_gone(server)
        # [FILE-12] on the log's clock ([CLUSTER-12]): every server ends a
        # transfer at the same entry. It can only be late, by up to a heartbeat
        # period when nothing else is appended meanwhile.
        return actions + ChatRoom._expire_transfers(self, stamp_ms / 1000)

    def _server_gone(self, server: str) -> list[Action]:
        leaves = []
        for key, member in list(self._roster.items()):
            if member.server == server:
                del self._roster[key]
                del self._by_session[(server, member.session)]
                leaves += self._transfers_gone(member)
                leaves.append(Broadcast(protocol.format_leave(member.name, "timeout")))
        if server != self.server_id:
            return leaves
        # This server was declared gone (it was paused, or cut off from the log
        # for longer than its lease): its clients have left in everyone else's
        # eyes, so they are closed, and it starts again under a new id. They
        # are unregistered before the LEAVEs: none receives its own ([LEAVE-3]).
        unregister: list[Action] = []
        close: list[Action] = []
        for session in list(self._local.values()):
            if session.closing:
                continue
            session.closing = True
            session.ended = ErrorCode.BACKPLANE_DOWN.value
            if session.registered:
                unregister.append(Unregister(session))
            close += [Send(session, protocol.format_error(
                ErrorCode.BACKPLANE_DOWN, "this server lost the room's log: connect again")), Close(session)]
        self._joining.clear()
        self.server_id = self._new_id()
        self.own_ids.add(self.server_id)
        return unregister + leaves + close

    # -- file sharing ([CLUSTER-11], [CLUSTER-12]) ----------------------------------------

    def _reachable(self, member: Member) -> Session | None:
        """The member's session if it is this server's and still open."""
        session = self._local.get(member.session) if member.server == self.server_id else None
        return session if session is not None and not session.closing else None

    def _apply_file(self, entry: Entry, local: Session | None, now: float) -> list[Action]:
        """A file entry at the log's time `now` (seconds): the table's rules
        (chat/transfers.py), with the lines for this server's parties."""
        files = self._files
        if files is None:
            return []  # Entries of servers with other limits (README: give all the same).
        try:
            if entry.kind == "data":
                return self._apply_data(local, entry.args[0])
            if entry.kind == "relayed":
                return self._apply_relayed(now, *entry.args)
            key = self._by_session.get((entry.server, entry.session))
            if key is None:
                return []  # Its member left already: the entry came after its LEAVE.
            member = self._roster[key]
            if entry.kind == "offer":
                return self._apply_offer(member, local, now, *entry.args)
            transfer_key = (protocol.name_key(entry.args[0]), entry.args[1])
            if entry.kind == "accept":
                return self._apply_accept(member, transfer_key, now, entry.args[2], entry.args[3])
            if entry.kind == "reject":
                ended = files.reject(member, transfer_key)  # [FILE-9]
            elif entry.kind == "cancel":
                ended = files.cancel(member, transfer_key)  # [FILE-10]
            else:
                ended = files.received(member, transfer_key, entry.args[2] == "ok")  # [FILE-18]
            return self._transfer_ended(ended, actor=member)
        except ProtocolError as error:
            return self._fail(local, error.code, error.text) if local is not None else []

    def _apply_offer(self, sender: Member, local: Session | None, now: float, to: str, tid: str,
                     size: str, sha256: str, filename: str) -> list[Action]:
        recipient = self._roster.get(protocol.name_key(to))
        if recipient is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"{to} is not online")
        self._files.offer(sender, recipient, (protocol.name_key(sender.name), tid), int(size), sha256,
                          filename, now)
        line = protocol.format_offer(sender.name, recipient.name, tid, int(size), sha256, filename)
        to_session = self._reachable(recipient)
        actions: list[Action] = []
        if to_session is not None and to_session is not local:
            actions.append(Send(to_session, line))
        if local is not None:
            actions.append(Send(local, line))  # [FILE-4]: the sender's copy last, its reply
        return actions

    def _apply_accept(self, member: Member, key: tuple[str, str], now: float, sender_token: str,
                      recipient_token: str) -> list[Action]:
        tokens = {SENDER: sender_token, RECIPIENT: recipient_token}
        transfer = self._files.accept(member, key, now, tokens=tokens)  # [FILE-7]
        self._accepted[transfer_id(transfer)] = transfer
        actions: list[Action] = []
        for side, party in ((SENDER, transfer.sender), (RECIPIENT, transfer.recipient)):
            session = self._reachable(party)
            if session is not None:
                actions.append(Send(session, protocol.format_accepted(
                    transfer.sender.name, transfer.key[1], transfer.tokens[side])))
        return actions

    def _apply_data(self, local: Session | None, token: str) -> list[Action]:
        """[FILE-15], [FILE-16]: a data connection, on whichever server, presents its token."""
        transfer, side = self._files.attach(token)
        actions: list[Action] = []
        if local is not None:
            # No more lines on it, and no timers ([FILE-21]): it is the relay's.
            local.closing = True
            ready = protocol.format_ready(transfer.sender.name, transfer.key[1], transfer.size)
            actions.append(Relay(local, transfer, side, transfer.size, ready))
        if transfer.state == RELAYING:
            actions.append(TransferChanged(transfer))  # Both are here: READY, on both servers.
        return actions

    def _apply_relayed(self, now: float, relay_id: str, outcome: str) -> list[Action]:
        transfer = self._accepted.get(relay_id)
        if transfer is None:
            return []  # It ended meanwhile (CANCEL, a party gone).
        ended = self._files.relay_finished(transfer, outcome, now)
        return [TransferChanged(transfer)] + (self._transfer_ended(ended) if ended is not None else [])

    def _transfer_ended(self, transfer: Transfer, actor: Member | None = None,
                        skip: Member | None = None) -> list[Action]:
        """[FILE-11] for the parties on this server (_reachable), and the cut of its relays."""
        self._accepted.pop(transfer.tokens.get(SENDER, ""), None)
        return super()._transfer_ended(transfer, actor, skip)

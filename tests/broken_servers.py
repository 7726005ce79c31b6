"""Deliberately broken chat/1 servers: the reference server with ONE rule of SPEC.md broken.

Each is a subclass of chat.server.ChatServer (its room replaced by a ChatRoom
subclass right after construction, before any client can connect, or one
method of the server's I/O overridden), a few lines long, with a docstring
that names the requirement it breaks and how. Next to each, as data, are the
requirement IDs the conformance kit must report as failed against it: the ones
the break violates (`breaks`) and the ones that fail with them
(`consequences`), each with the case that brings it in. tests/test_kit_can_fail.py runs the whole kit against
each one and checks that exactly those IDs fail.

Why the sets are larger than the one rule: a failed transcript step (a line
that did not come, or came wrong) fails every requirement its case `covers:`,
because the kit cannot tell which of them the server meant to break; a Python
case fails the IDs of the check that tripped first. So, for instance, a PM
that never arrives also fails the other requirements of SPEC.md's example
13.1, which is one transcript. The comments say which case brings in which ID.

Two servers are not chat servers at all (one never answers, one echoes); one
breaks nothing (it splits every write at an awkward place) and must pass.

    python -m tests.broken_servers list                  # the servers and their expected failures
    python -m tests.broken_servers serve NAME [--port P] # run one, to point the kit at it
    python -m tests.broken_servers kit NAME [KIT ARGS]   # the self-hosted kit, on the broken server

`kit` is `python -m conformance` with no address (the kit starts the server
itself: an open room, a room with a password, private servers for the
shutdown case, all with selfhost.py's limits, so that every case applies),
except that the server it starts is the broken one.
"""

from __future__ import annotations

import argparse
import copy
import re
import selectors
import signal
import socket
import threading
import time
import unicodedata
from typing import ClassVar

import chat.server
from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, LineBuffer
from chat.server import DEFAULT_LIMITS, ChatServer
from chat.state import Broadcast, ChatRoom, Send, Session

# -- the base ------------------------------------------------------------------------------


class BrokenServer(ChatServer):
    """The reference server, with `room_class` in place of ChatRoom."""

    room_class: ClassVar[type[ChatRoom]] = ChatRoom
    #: The requirements the break itself violates.
    breaks: ClassVar[frozenset[str]] = frozenset()
    #: Requirements that fail as well, through the cases that notice the break (see the comments).
    consequences: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def expected_failures(cls) -> frozenset[str]:
        """The requirement IDs the kit must report as failed: no more, no fewer."""
        return cls.breaks | cls.consequences

    def __init__(self, host: str = "127.0.0.1", port: int | None = 0, limits: Limits = DEFAULT_LIMITS,
                 **kwargs) -> None:
        super().__init__(host, port, limits, **kwargs)
        # Before start(): nobody is connected yet, only the watchdog ticks the empty room.
        with self._lock:
            self._room = self.room_class(limits)


# -- the reference, and the awkward-but-legal one -------------------------------------------


class Reference(BrokenServer):
    """The reference server itself, unchanged: everything passes."""


class SplitWritesServer(BrokenServer):
    """Breaks nothing: every write is split in two at a bad place, with a pause between.

    The cut falls inside a UTF-8 character when the data has one (after its
    lead byte), else in the middle of the first line. [FRAME-4] binds servers,
    but its mirror holds for any reader of a byte stream: TCP may split a line
    anywhere. A kit that took one recv() for one line, or decoded each recv()
    on its own, would fail here; the kit must pass.
    """

    #: Seconds between the two halves: long enough for the reader to see the first alone.
    PAUSE = 0.002
    _LEAD_BYTE = re.compile(rb"[\xc0-\xf7]")

    def _deliver(self, connection, data: bytes) -> bool:
        if len(data) < 2:
            return super()._deliver(connection, data)
        lead = self._LEAD_BYTE.search(data)
        cut = lead.start() + 1 if lead else max(1, data.find(b"\n") // 2)
        super()._deliver(connection, data[:cut])
        self._stopping.wait(self.PAUSE)
        return super()._deliver(connection, data[cut:])


# -- wrong recipients ---------------------------------------------------------------------------


class NoEchoRoom(ChatRoom):
    def _dispatch(self, session, command):
        if isinstance(command, protocol.Msg) and session.registered:
            line = protocol.format_msg(session.name, command.text)
            return [Send(member, line) for member in self._members.values() if member is not session]
        return super()._dispatch(session, command)


class NoEchoServer(BrokenServer):
    """Breaks [MSG-1] and [MSG-2]: a MSG goes to every registered client but its sender,
    who gets no reply at all."""

    room_class = NoEchoRoom
    breaks = frozenset({"MSG-1", "MSG-2"})
    # Half the kit waits for a sender's own MSG somewhere: each of these cases times out on
    # it and fails what it covers (transcripts) or what the check cites (Python cases).
    consequences = frozenset({
        "USER-1", "PM-1", "LEAVE-1",             # spec-example-chat
        "FRAME-1", "FRAME-2", "FRAME-3",         # framing-crlf, server-lines-well-formed
        "FRAME-4", "CMD-1",                      # framing-split-writes
        "ORDER-3", "STATE-2",                    # leave-pipelined, order-join-first-leave-last
        "SEC-2",                                 # msg-text-unchanged
        "ORDER-4", "CMD-3",                      # msg-to-everyone
        "NAME-3",                                # names-case-preserved
        "NAME-2", "ERR-2",                       # names-unique-ignoring-case
        "GRAM-1",                                # server-lines-well-formed
        "STATE-1", "USER-2", "PING-3",           # state-table-registered, user-already-registered
        "GRAM-2", "GRAM-4",                      # syntax-errors
        "USER-3",                                # user-join-to-all
        "FRAME-5", "FRAME-6", "FRAME-10",        # line-max-boundary, server-line-maximum, half-close
        "ORDER-5",                               # concurrent-senders: 60 of 90 MSGs
        "LIMIT-7",                               # shutdown: waits for alice's MSG first
        "CMD-4", "NICK-1", "NICK-2",             # nick-change: MSG as the new name
        "NICK-3", "CMD-5", "ERR-3",              # nick-refused: MSG after the refusals
        "ACT-1", "ACT-2",                        # act-to-everyone: bob's MSG before his ACT
        "STATE-3",                               # close-with-unread-input: bob waits for her MSGs
        "LIMIT-8",                               # paste-arrives-in-full: the sender's echoes
    })


class LeaksToUnregisteredRoom(ChatRoom):
    def _dispatch(self, session, command):
        actions = super()._dispatch(session, command)
        if isinstance(command, protocol.Msg):
            line = actions[0].line
            strangers = sorted((s for s in self._sessions if not s.registered and not s.closing),
                               key=lambda s: s.id)
            actions += [Send(stranger, line) for stranger in strangers]
        return actions


class LeaksToUnregisteredServer(BrokenServer):
    """Breaks [USER-3]: a MSG also goes to every connection that has not registered yet, so
    a newcomer may see room traffic before its own JOIN."""

    room_class = LeaksToUnregisteredRoom
    breaks = frozenset({"USER-3"})
    consequences = frozenset({
        "USER-1",   # user-join-to-all and join-first-in-busy-room cover it beside USER-3
        "LIMIT-7",  # shutdown: the unregistered client gets a MSG where ERR SHUTTING_DOWN is due
        "NICK-3", "CMD-5", "ERR-3",  # nick-refused: carol, unregistered, gets alice's MSG
    })


# -- names ---------------------------------------------------------------------------------------

#: Where the case-sensitive room keeps a second holder of a name (no lower-cased name starts so).
_TWIN = "\0"


class CaseSensitiveNamesRoom(ChatRoom):
    def _user(self, session, command):
        key = protocol.name_key(command.name)
        holder = self._members.get(key)
        if (session.registered or holder is None
                or any(member.name == command.name for member in self._members.values())):
            return super()._user(session, command)
        # The break: `ALICE` is not `alice`, so it counts as free. The holder steps aside
        # for the check, and the newcomer is kept beside it.
        del self._members[key]
        try:
            return super()._user(session, command)
        finally:
            twin = self._members.pop(key, None)
            self._members[key] = holder
            if twin is not None:
                self._members[_TWIN + twin.name] = twin

    def _leave(self, session, reason, *, include_leaver):
        if not session.registered or self._members.get(_TWIN + session.name) is not session:
            return super()._leave(session, reason, include_leaver=include_leaver)
        # A twin leaves: put it where ChatRoom looks for it, then the holder back.
        key = protocol.name_key(session.name)
        holder = self._members.get(key)
        self._members[key] = self._members.pop(_TWIN + session.name)
        actions = super()._leave(session, reason, include_leaver=include_leaver)
        if holder is not None:
            self._members[key] = holder
        return actions


class CaseSensitiveNamesServer(BrokenServer):
    """Breaks [NAME-2]: names are unique only with their case, so `alice` and `ALICE`
    both register (each keeps its own name; PM and USERS still work)."""

    room_class = CaseSensitiveNamesRoom
    breaks = frozenset({"NAME-2"})
    consequences = frozenset({
        "ERR-2",                               # names-unique-ignoring-case, errors-private
        "STATE-1", "NAME-1", "PM-3", "CMD-2",  # spec-example-errors (SPEC.md 13.2): one transcript
        "ERR-3", "CMD-3",                      # errors-private
    })


# -- order -------------------------------------------------------------------------------------


class ReorderingRoom(ChatRoom):
    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._counts: dict = {}
        self._held: dict = {}

    def _dispatch(self, session, command):
        actions = super()._dispatch(session, command)
        if isinstance(command, protocol.Msg):
            count = self._counts[session] = self._counts.get(session, 0) + 1
            if count % 3 == 2:  # hold the 2nd of every three...
                self._held[session] = actions
                return []
            if count % 3 == 0:  # ...and let it out after the 3rd
                return actions + self._held.pop(session)
        return actions


class ReorderingServer(BrokenServer):
    """Breaks [ORDER-5] (and [CMD-1]): every sender's 2nd and 3rd MSG (then 5th and 6th, ...)
    reach everyone swapped. The 2nd is held until the 3rd arrives, so its echo is late."""

    room_class = ReorderingRoom
    breaks = frozenset({"ORDER-5", "CMD-1"})
    # [ORDER-2] holds: everyone gets the same (wrong) order. The held 2nd MSG makes every
    # case that waits for a sender's 2nd echo time out.
    consequences = frozenset({
        "ORDER-4",                  # concurrent-senders, msg-to-everyone, order-join-first-leave-last
        "ORDER-3",                  # join-first-in-busy-room: one, three, two
        "FRAME-4",                  # framing-split-writes
        "MSG-1", "MSG-2", "CMD-3",  # msg-to-everyone
        "SEC-2", "FRAME-1",         # msg-text-unchanged
        "FRAME-5", "FRAME-2",       # line-max-boundary: its 2nd MSG (CR LF, line-max bytes)
        "STATE-3",                  # close-with-unread-input: her MSGs 01 and 02 swapped
        "LIMIT-8",                  # paste-arrives-in-full: line 1 after line 2
        "LIMIT-10", "LEAVE-3",      # reset-discards-backlog: MSG 2 where MSG 1 is due
    })


class DropsPmToNewestRoom(ChatRoom):
    def _pm(self, session, command):
        actions = super()._pm(session, command)
        newest = list(self._members.values())[-1]
        # The break: the copy for the user who joined last is lost (unless it is the sender's own).
        return [a for a in actions if not (isinstance(a, Send) and a.session is newest
                                           and newest is not session)]


class DropsPmToNewestServer(BrokenServer):
    """Breaks [PM-1]: a PM to the user who registered last never reaches them; the sender
    still gets its copy."""

    room_class = DropsPmToNewestRoom
    breaks = frozenset({"PM-1"})
    consequences = frozenset({
        "USER-1", "MSG-1", "MSG-2", "LEAVE-1",  # spec-example-chat (SPEC.md 13.1): one transcript
        "NAME-3",                               # names-case-preserved
        "FRAME-6",                              # server-line-maximum: the longest PM never comes
    })


# -- leaving -------------------------------------------------------------------------------------


class NoLeaveOnCloseRoom(ChatRoom):
    def disconnect(self, session, reason):
        actions = super().disconnect(session, reason)
        if reason == "closed":
            actions = [a for a in actions if not isinstance(a, Broadcast)]
        return actions


class NoLeaveOnCloseServer(BrokenServer):
    """Breaks [LEAVE-3]: when a registered client closes or resets its connection without
    LEAVE, the others are never told (the name is freed all the same)."""

    room_class = NoLeaveOnCloseRoom
    breaks = frozenset({"LEAVE-3"})
    consequences = frozenset({
        "LEAVE-4",                        # leave-closed
        "NAME-4", "LEAVE-1",              # names-free-after-leave
        "GRAM-1", "FRAME-1", "FRAME-3",   # server-lines-well-formed
        "FRAME-10",                       # half-close
        "LIMIT-10",                       # reset-discards-backlog: no LEAVE after the reset
    })


# -- errors and framing ------------------------------------------------------------------------


class WrongErrorCodeRoom(ChatRoom):
    def _fail(self, session, code, text):
        if code is ErrorCode.UNKNOWN_COMMAND:
            code = ErrorCode.BAD_SYNTAX  # the break
        return super()._fail(session, code, text)


class WrongErrorCodeServer(BrokenServer):
    """Breaks [CMD-2] (and [ERR-2]): an unknown verb is answered `ERR BAD_SYNTAX` instead of
    `ERR UNKNOWN_COMMAND`."""

    room_class = WrongErrorCodeRoom
    breaks = frozenset({"CMD-2", "ERR-2"})
    # Unknown verbs are the kit's favourite way to provoke an error, so many transcripts trip.
    consequences = frozenset({
        "STATE-1", "NAME-1", "NAME-2", "PM-3",  # spec-example-errors (SPEC.md 13.2)
        "FRAME-11",                             # check-order
        "ERR-3", "CMD-3",                       # errors-private
        "GRAM-1", "FRAME-1", "FRAME-3",         # server-lines-well-formed
        "PASS-4", "PING-3", "FRAME-9",          # state-table-connected
        "USER-2",                               # state-table-registered
        "CMD-5",                                # optional-commands-not-advertised
    })


class NoLineLimitServer(BrokenServer):
    """Breaks [FRAME-5]: lines of any length are accepted, never `ERR LINE_TOO_LONG`
    (each connection's line buffer gets a limit of 1 GiB)."""

    breaks = frozenset({"FRAME-5"})
    consequences = frozenset({"FRAME-11"})  # length-checked-first: gets BAD_ENCODING instead

    def _admit(self, *args, **kwargs):
        connection = super()._admit(*args, **kwargs)
        if connection is not None:  # the same thread reads next: nothing was read yet
            connection.lines = LineBuffer(1 << 30)
        return connection


class CrlfServer(BrokenServer):
    """Breaks [FRAME-3]: every line the server sends ends with CR LF."""

    breaks = frozenset({"FRAME-3"})
    # The kit keeps the CR in a line's text, so no expected line ever matches: every case
    # fails at its first expectation, citing what it covers (most often USER-1, at the JOIN
    # of `register`). HELLO's last parameter carries the CR, so it is no number; the ones
    # before it are read, `password=` among them, and the password cases apply, and fail
    # at their first line too (PASS-1, PASS-2). (The file-sharing section below adds what
    # HELLO's later parameters bring in.)
    consequences = frozenset({
        "USER-1", "HELLO-2", "HELLO-3", "GRAM-1", "GRAM-2", "FRAME-1", "FRAME-9", "FRAME-11",
        "CMD-2", "CMD-3", "ERR-2", "STATE-1", "NAME-1", "PASS-4", "PING-1", "PING-2", "PING-3",
        "MSG-1", "MSG-2", "PM-1", "LEAVE-1", "LIMIT-1", "LIMIT-2",
        "PASS-1", "PASS-2",                       # password-required, password-accepted
        "CMD-4", "NICK-1", "NICK-2", "CMD-5",     # nick-change, optional-commands-not-advertised
        "LIMIT-11",
        "ERR-3",  # tls-client-on-plain-port: the bystander's PONG ends in CR LF
    })

    def _deliver(self, connection, data: bytes) -> bool:
        return super()._deliver(connection, data.replace(b"\n", b"\r\n"))


class BlockingFlusherServer(BrokenServer):
    """Breaks [ORDER-6] (and [LIMIT-6]): the flusher sends with a blocking sendall() instead
    of MSG_DONTWAIT and keeps no outbound limit, so one client that stops reading stalls
    delivery to everyone until it reads again or goes away."""

    # slow-reader stops at the first stall ([ORDER-6]), before it could see that nobody is
    # dropped ([LIMIT-6] is "incomplete", not failed). No other case has a client stop reading.
    breaks = frozenset({"ORDER-6"})

    def _deliver(self, connection, data: bytes) -> bool:
        try:
            connection.transport.sock.sendall(data)
        except OSError:
            pass
        return False  # nothing ever waits: it was all sent, however long that took


# -- what issue 9 found passing: each needs a check the kit lacked -----------------------------


class NfcMsgRoom(ChatRoom):
    def _dispatch(self, session, command):
        if isinstance(command, protocol.Msg):
            command = protocol.Msg(unicodedata.normalize("NFC", command.text))  # the break
        return super()._dispatch(session, command)


class NfcMsgServer(BrokenServer):
    """Breaks [MSG-1]: MSG text is normalised to Unicode NFC before it is relayed, so a
    decomposed `e` plus U+0301 comes back as one character `\u00e9`."""

    room_class = NfcMsgRoom
    breaks = frozenset({"MSG-1"})
    consequences = frozenset({"SEC-2", "FRAME-1"})  # msg-text-unchanged covers them beside MSG-1


class PongTokenUncheckedRoom(ChatRoom):
    def handle(self, session, item, now):
        if isinstance(item, bytes) and item.startswith(b"PONG ") and not session.closing:
            session.last_heard, session.ping_sent_at = now, None
            return []  # the break: any PONG with a field is a PONG, whatever the field
        return super().handle(session, item, now)


class PongTokenUncheckedServer(BrokenServer):
    """Breaks [GRAM-2] and [GRAM-4]: `PONG` with two tokens, or a token of 65 characters, gets
    no reply instead of `ERR BAD_SYNTAX` (only a bare `PONG` is refused)."""

    room_class = PongTokenUncheckedRoom
    breaks = frozenset({"GRAM-2", "GRAM-4"})
    consequences = frozenset({"ERR-2", "CMD-3"})  # syntax-errors covers them beside GRAM-2


class NamesOneByteOverRoom(ChatRoom):
    def _users(self, session):
        names = [member.name for member in self._members.values()]
        # The break: packs as if the LF did not count, so a full line is line-max + 1 bytes.
        return [Send(session, line) for line in protocol.format_names(names, self.limits.line_max + 1)]


class NamesOneByteOverServer(BrokenServer):
    """Breaks [USERS-3]: NAMES lines are packed up to `line-max + 1` bytes (the LF is
    forgotten), so a full one is one byte too long."""

    room_class = NamesOneByteOverRoom
    breaks = frozenset({"USERS-3"})


class EarlyRegistrationTimerRoom(ChatRoom):
    def tick(self, now):
        actions = []
        for session in list(self._sessions):
            if (self.limits.register_timeout and not session.registered and not session.closing
                    and now + 0.2 - session.connected_at >= self.limits.register_timeout):
                actions += self._fail(session, ErrorCode.REGISTRATION_TIMEOUT, "too slow")  # 0.2 s early
        return actions + super().tick(now)


class EarlyRegistrationTimerServer(BrokenServer):
    """Breaks [KEEP-4]: the registration timer fires 0.2 s before `register-timeout`."""

    room_class = EarlyRegistrationTimerRoom
    breaks = frozenset({"KEEP-4"})


class RegistrationTimerFromLastLineRoom(ChatRoom):
    def tick(self, now):
        unregistered = [s for s in self._sessions if not s.registered]
        saved = {s: s.connected_at for s in unregistered}
        for session in unregistered:
            session.connected_at = session.last_heard  # the break: counted from the last line
        try:
            return super().tick(now)
        finally:
            for session, connected_at in saved.items():
                session.connected_at = connected_at


class RegistrationTimerFromLastLineServer(BrokenServer):
    """Breaks [KEEP-3]: the registration timer counts from the client's last line, not from
    the connect, so a client that keeps sending PING never has to register."""

    room_class = RegistrationTimerFromLastLineRoom
    breaks = frozenset({"KEEP-3"})


class FullPrecedenceSwappedRoom(ChatRoom):
    def connect(self, address, now):
        limits = self.limits
        if (limits.max_clients and self._open >= limits.max_clients and limits.max_per_address
                and self._per_address.get(address, 0) >= limits.max_per_address):
            session = Session(next(self._ids), address, connected_at=now, last_heard=now)
            return session, self._fail(session, ErrorCode.TOO_MANY_CONNECTIONS, "per address")  # the break
        return super().connect(address, now)


class FullPrecedenceSwappedServer(BrokenServer):
    """Breaks [LIMIT-2]: when `max-clients` and `max-per-address` are both reached, the
    refusal is `TOO_MANY_CONNECTIONS` instead of `SERVER_FULL`."""

    room_class = FullPrecedenceSwappedRoom
    breaks = frozenset({"LIMIT-2"})


class CrThenLfLineBuffer(LineBuffer):
    """Strips a CR only when its LF came in the same read."""

    def __init__(self, line_max: int) -> None:
        super().__init__(line_max)
        self.cr_ended_last_read = False

    def feed(self, data: bytes):
        cr_ended_last_read, self.cr_ended_last_read = self.cr_ended_last_read, data.endswith(b"\r")
        # Only a CR that ended a line being kept: after an overlong line's
        # CR, the LF ends the discarded part and items[0] is the next line.
        ends_kept_line = cr_ended_last_read and not self._discarding
        items = super().feed(data)
        if ends_kept_line and data.startswith(b"\n") and items and isinstance(items[0], bytes):
            items[0] += b"\r"  # the break: the CR is kept, a control character ([FRAME-8])
        return items


class CrThenLfServer(BrokenServer):
    """Breaks [FRAME-2] and [FRAME-4]: a CR LF whose CR and LF arrive in two reads is not a
    terminator; the CR stays in the line, which gets `ERR BAD_CHARACTER`."""

    breaks = frozenset({"FRAME-2", "FRAME-4"})

    def _admit(self, *args, **kwargs):
        connection = super()._admit(*args, **kwargs)
        if connection is not None:  # the same thread reads next: nothing was read yet
            connection.lines = CrThenLfLineBuffer(self.limits.line_max)
        return connection


# -- what SPEC.md's clarifications of issue 9 made a MUST ---------------------------------------


class EmptyLinesNotAliveRoom(ChatRoom):
    def handle(self, session, item, now):
        if item == b"" and not session.closing:
            return []  # the break: no reply, rightly, but the client is not heard either
        return super().handle(session, item, now)


class EmptyLinesNotAliveServer(BrokenServer):
    """Breaks [FRAME-12]: an empty line is not a sign of life ([KEEP-1]), so a client that
    keeps its link up with empty lines is PINGed and timed out."""

    room_class = EmptyLinesNotAliveRoom
    breaks = frozenset({"FRAME-12"})


class EveryByteIsAliveLineBuffer(LineBuffer):
    def __init__(self, line_max: int, session: Session) -> None:
        super().__init__(line_max)
        self.session = session

    def feed(self, data: bytes):
        self.session.last_heard, self.session.ping_sent_at = time.monotonic(), None  # the break
        return super().feed(data)


class EveryByteIsAliveServer(BrokenServer):
    """Breaks [KEEP-5]: any bytes count as a sign of life, so a client that trickles an
    unfinished line byte by byte is never PINGed nor timed out."""

    breaks = frozenset({"KEEP-5"})

    def _admit(self, *args, **kwargs):
        connection = super()._admit(*args, **kwargs)
        if connection is not None:  # the same thread reads next: nothing was read yet
            connection.lines = EveryByteIsAliveLineBuffer(self.limits.line_max, connection.session)
        return connection


class PingTimeoutZeroClosesRoom(ChatRoom):
    def tick(self, now):
        actions = []
        if self.limits.ping_interval and not self.limits.ping_timeout:
            for session in list(self._sessions):
                if not session.closing and session.ping_sent_at is not None:  # the break
                    actions += [Send(session, protocol.format_error(ErrorCode.PING_TIMEOUT, "at once"))]
                    actions += self.disconnect(session, "timeout")
        return actions + super().tick(now)


class PingTimeoutZeroClosesServer(BrokenServer):
    """Breaks [KEEP-6]: with `ping-timeout=0` a client that does not answer the PING at once
    is closed with `ERR PING_TIMEOUT` (0 taken as "no time at all", not "not enforced")."""

    room_class = PingTimeoutZeroClosesRoom
    breaks = frozenset({"KEEP-6"})


def _with(limits: Limits, **values) -> Limits:
    """A copy of `limits` with values Limits itself refuses (a broken server's own)."""
    broken = copy.copy(limits)
    for field, value in values.items():
        object.__setattr__(broken, field, value)
    return broken


class FloodBurstZeroServer(BrokenServer):
    """Breaks [LIMIT-12]: `flood-burst=0` with a flood rate, so by [LIMIT-4]'s formula no line
    is allowed at all (in fact each line waits 1 / flood-rate seconds)."""

    breaks = frozenset({"LIMIT-12"})

    def __init__(self, host="127.0.0.1", port=0, limits=DEFAULT_LIMITS, **kwargs) -> None:
        super().__init__(host, port, _with(limits, flood_burst=0) if limits.flood_rate else limits, **kwargs)


class SmallLineMaxServer(BrokenServer):
    """Breaks [FRAME-13]: advertises and enforces `line-max=256`, under the 512 a server
    must allow."""

    breaks = frozenset({"FRAME-13"})

    def __init__(self, host="127.0.0.1", port=0, limits=DEFAULT_LIMITS, **kwargs) -> None:
        super().__init__(host, port, _with(limits, line_max=256), **kwargs)


class BarePongIgnoredRoom(ChatRoom):
    def handle(self, session, item, now):
        if item == b"PONG" and not session.closing:
            session.last_heard, session.ping_sent_at = now, None
            return []  # the break: "PONG gets no reply", even without its token
        return super().handle(session, item, now)


class BarePongIgnoredServer(BrokenServer):
    """Breaks [GRAM-4]: a bare `PONG` gets no reply instead of `ERR BAD_SYNTAX`."""

    room_class = BarePongIgnoredRoom
    breaks = frozenset({"GRAM-4"})
    consequences = frozenset({"GRAM-2", "ERR-2", "CMD-3"})  # syntax-errors covers them beside GRAM-4


class NoDrainServer(BrokenServer):
    """Breaks [STATE-3]: after LEAVE the socket is closed at once, unread input and all, so
    the kernel sends a reset and drops what it still held for the client."""

    breaks = frozenset({"STATE-3"})

    def _drain(self, connection) -> None:
        pass  # the break


class MarksSlowRoom(ChatRoom):
    def slow_consumer(self, session):
        session.dropped_slow = True
        return super().slow_consumer(session)


class GluedSlowConsumerErrorServer(BrokenServer):
    """Breaks [LIMIT-13]: a client dropped as slow gets `ERR SLOW_CONSUMER` glued onto the
    line it was cut in (always inside that line's text: its last five bytes and LF go)."""

    room_class = MarksSlowRoom
    breaks = frozenset({"LIMIT-13"})
    ERROR = b"ERR SLOW_CONSUMER x\n"  # short: the glued line stays within [FRAME-6]

    def _deliver(self, connection, data: bytes) -> bool:
        waiting = super()._deliver(connection, data)
        if getattr(connection.session, "dropped_slow", False) and not getattr(connection, "told", False):
            connection.told = True
            rest = bytes(connection.outbuf)
            end_of_cut_line = rest.find(b"\n")
            connection.outbuf[:] = rest[:max(0, end_of_cut_line - 5)] + self.ERROR  # the break
            with self._lock:
                connection.close_deadline = time.monotonic() + 2.0  # time for the ERR to go
            return True
        return waiting


# -- more sections of SPEC.md: one variant each where none was yet -----------------------------


class HelloOutOfOrderRoom(ChatRoom):
    def connect(self, address, now):
        session, actions = super().connect(address, now)
        if session.counted:  # greeted: swap two parameters of its HELLO
            hello = re.sub(rb"(ping-interval=[0-9]+) (ping-timeout=[0-9]+)", rb"\2 \1", actions[0].line)
            actions = [Send(session, hello)]
        return session, actions


class HelloOutOfOrderServer(BrokenServer):
    """Breaks [HELLO-2]: HELLO lists `ping-timeout` before `ping-interval` (right values)."""

    room_class = HelloOutOfOrderRoom
    breaks = frozenset({"HELLO-2"})


class BadPasswordStaysOpenRoom(ChatRoom):
    def _pass(self, session, command):
        actions = super()._pass(session, command)
        if isinstance(actions[0], Send) and actions[0].line.startswith(b"ERR BAD_PASSWORD "):
            session.closing = False
            return actions[:1]  # the break: the ERR, and no close
        return actions


class BadPasswordStaysOpenServer(BrokenServer):
    """Breaks [PASS-3] (and [ERR-2]): a wrong password gets `ERR BAD_PASSWORD` but the
    connection stays open for the next guess."""

    room_class = BadPasswordStaysOpenRoom
    breaks = frozenset({"PASS-3", "ERR-2"})
    consequences = frozenset({"STATE-2"})  # password-wrong covers it beside PASS-3


class PongTokenTruncatedRoom(ChatRoom):
    def _dispatch(self, session, command):
        if isinstance(command, protocol.Ping):
            return [Send(session, protocol.format_pong(command.token[:32]))]  # the break
        return super()._dispatch(session, command)


class PongTokenTruncatedServer(BrokenServer):
    """Breaks [PING-1]: a PING token longer than 32 characters comes back cut to 32."""

    room_class = PongTokenTruncatedRoom
    breaks = frozenset({"PING-1"})
    consequences = frozenset({"PING-2", "PING-3", "CMD-3"})  # ping-pong covers them beside PING-1


class ShutdownWithoutErrorRoom(ChatRoom):
    def shutdown(self):
        return [action for action in super().shutdown() if not isinstance(action, Send)]  # the break


class ShutdownWithoutErrorServer(BrokenServer):
    """Breaks [LIMIT-7]: on shutdown every connection is closed without `ERR SHUTTING_DOWN`."""

    room_class = ShutdownWithoutErrorRoom
    breaks = frozenset({"LIMIT-7"})


class BadUtf8AcceptedRoom(ChatRoom):
    def handle(self, session, item, now):
        if isinstance(item, bytes):
            item = item.decode("utf-8", "replace").encode()  # the break: U+FFFD, no ERR
        return super().handle(session, item, now)


class BadUtf8AcceptedServer(BrokenServer):
    """Breaks [FRAME-7]: bytes that are not UTF-8 are replaced with U+FFFD instead of being
    answered `ERR BAD_ENCODING`."""

    room_class = BadUtf8AcceptedRoom
    breaks = frozenset({"FRAME-7"})
    # Bad UTF-8 is the kit's way to provoke BAD_ENCODING in several transcripts.
    consequences = frozenset({
        "ERR-2", "ERR-3", "CMD-3",               # framing-bad-encoding, errors-private
        "FRAME-11", "STATE-1",                   # check-order
        "FRAME-9", "PASS-4", "PING-3", "USER-2",  # state-table-connected, state-table-registered
    })


class UserTwiceNameTakenRoom(ChatRoom):
    def _user(self, session, command):
        if session.registered:
            raise protocol.ProtocolError(ErrorCode.NAME_TAKEN, "you have one")  # the break
        return super()._user(session, command)


class UserTwiceNameTakenServer(BrokenServer):
    """Breaks [USER-2]: USER from a registered client gets `ERR NAME_TAKEN` instead of
    `ERR ALREADY_REGISTERED`."""

    room_class = UserTwiceNameTakenRoom
    breaks = frozenset({"USER-2"})
    consequences = frozenset({
        "STATE-1",                # user-already-registered, state-table-registered
        "PING-3",                 # state-table-registered
        "ERR-2", "ERR-3", "CMD-3",  # errors-private
    })


class PmToSelfTwiceRoom(ChatRoom):
    def _pm(self, session, command):
        actions = super()._pm(session, command)
        return actions * 2 if len(actions) == 1 else actions  # the break: a PM to oneself, twice


class PmToSelfTwiceServer(BrokenServer):
    """Breaks [PM-2]: a PM to oneself is delivered twice."""

    room_class = PmToSelfTwiceRoom
    breaks = frozenset({"PM-2"})
    consequences = frozenset({
        "PM-1", "ERR-3",  # pm-private covers them beside PM-2
        "USERS-1",        # state-table-registered: its `<names` step meets the second copy
    })


class EndnamesOffByOneRoom(ChatRoom):
    def _users(self, session):
        actions = super()._users(session)
        count = int(actions[-1].line.split()[1])
        return actions[:-1] + [Send(session, f"ENDNAMES {count + 1}\n".encode())]  # the break


class EndnamesOffByOneServer(BrokenServer):
    """Breaks [USERS-1]: ENDNAMES counts one name more than the NAMES lines list."""

    room_class = EndnamesOffByOneRoom
    breaks = frozenset({"USERS-1"})


# -- not chat servers at all -------------------------------------------------------------------


class FakeServer:
    """A TCP server on 127.0.0.1 that is not a chat/1 server: it reads what it gets and either
    never says anything (`silent`) or sends it back (`echo`). One thread, one selector;
    `shutdown()` stops it and closes every socket."""

    def __init__(self, behaviour: str, port: int = 0) -> None:
        assert behaviour in ("silent", "echo")
        self.behaviour = behaviour
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.setblocking(False)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-{behaviour}-server")
        self._thread.start()

    def start(self) -> FakeServer:
        return self

    def _serve(self) -> None:
        clients: list[socket.socket] = []
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select():
                    sock = key.fileobj
                    if sock is self._wake_reader:
                        continue
                    if sock is self._listener:
                        try:
                            client, _ = self._listener.accept()
                        except OSError:
                            continue
                        clients.append(client)
                        selector.register(client, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                        if data and self.behaviour == "echo":
                            sock.sendall(data)
                    except OSError:
                        data = b""
                    if not data:
                        selector.unregister(sock)
                        sock.close()
                        clients.remove(sock)
        for client in clients:
            client.close()

    def shutdown(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._wake_writer.send(b"\0")
            self._thread.join()
            self._listener.close()
            self._wake_reader.close()
            self._wake_writer.close()


# -- the optional commands (SPEC.md 6.8 to 6.10) -----------------------------------------------


class NickOnlyToSenderRoom(ChatRoom):
    def _nick(self, session, command):
        # The break: the rename happens, but only the renamer is told.
        return [Send(session, action.line) for action in super()._nick(session, command)]


class NickOnlyToSenderServer(BrokenServer):
    """Breaks [NICK-1]: `NICK <old> <new>` reaches the renamer alone; the others go on
    knowing a name that no longer exists."""

    room_class = NickOnlyToSenderRoom
    breaks = frozenset({"NICK-1"})
    consequences = frozenset({
        "CMD-4", "NICK-2",                       # nick-change: bob never sees the NICK
    })


class ActTrimmedRoom(ChatRoom):
    def _dispatch(self, session, command):
        if isinstance(command, protocol.Act) and session.registered:
            # The break: the text is trimmed, not relayed byte for byte.
            return [Broadcast(protocol.format_act(session.name, command.text.strip()))]
        return super()._dispatch(session, command)


class ActTrimmedServer(BrokenServer):
    """Breaks [ACT-1]: the text of an ACT loses its leading and trailing spaces."""

    room_class = ActTrimmedRoom
    breaks = frozenset({"ACT-1"})
    consequences = frozenset({
        "CMD-4", "ACT-2",                        # act-to-everyone: the one transcript
    })


# -- the catalogue -------------------------------------------------------------------------------

#: Chat servers by name: each the reference server with one rule broken (or none).
SERVERS: dict[str, type[BrokenServer]] = {
    "reference": Reference,
    "split-writes": SplitWritesServer,
    "no-echo-to-sender": NoEchoServer,
    "leaks-to-unregistered": LeaksToUnregisteredServer,
    "case-sensitive-names": CaseSensitiveNamesServer,
    "reorders-msgs": ReorderingServer,
    "drops-pm-to-newest": DropsPmToNewestServer,
    "no-leave-on-close": NoLeaveOnCloseServer,
    "wrong-error-code": WrongErrorCodeServer,
    "no-line-limit": NoLineLimitServer,
    "crlf": CrlfServer,
    "blocking-flusher": BlockingFlusherServer,
    "nfc-msg": NfcMsgServer,
    "pong-token-unchecked": PongTokenUncheckedServer,
    "names-one-byte-over": NamesOneByteOverServer,
    "early-registration-timer": EarlyRegistrationTimerServer,
    "registration-timer-from-last-line": RegistrationTimerFromLastLineServer,
    "full-precedence-swapped": FullPrecedenceSwappedServer,
    "cr-then-lf": CrThenLfServer,
    "empty-lines-not-alive": EmptyLinesNotAliveServer,
    "every-byte-is-alive": EveryByteIsAliveServer,
    "ping-timeout-zero-closes": PingTimeoutZeroClosesServer,
    "flood-burst-zero": FloodBurstZeroServer,
    "small-line-max": SmallLineMaxServer,
    "bare-pong-ignored": BarePongIgnoredServer,
    "no-drain": NoDrainServer,
    "glued-slow-consumer-error": GluedSlowConsumerErrorServer,
    "hello-out-of-order": HelloOutOfOrderServer,
    "bad-password-stays-open": BadPasswordStaysOpenServer,
    "pong-token-truncated": PongTokenTruncatedServer,
    "shutdown-without-error": ShutdownWithoutErrorServer,
    "bad-utf8-accepted": BadUtf8AcceptedServer,
    "user-twice-name-taken": UserTwiceNameTakenServer,
    "pm-to-self-twice": PmToSelfTwiceServer,
    "endnames-off-by-one": EndnamesOffByOneServer,
    "nick-only-to-sender": NickOnlyToSenderServer,
    "act-trimmed": ActTrimmedServer,
}

#: Servers that are not chat servers: the kit's probe fails on HELLO-1 and nothing else runs.
FAKES: dict[str, frozenset[str]] = {
    "silent": frozenset({"HELLO-1"}),
    "echo": frozenset({"HELLO-1"}),
}


def expected_failures(name: str) -> frozenset[str]:
    return FAKES[name] if name in FAKES else SERVERS[name].expected_failures()


# -- command line ---------------------------------------------------------------------------------


def _serve(name: str, port: int) -> int:
    from conformance.selfhost import SELF_HOSTED_LIMITS

    if name in FAKES:
        server = FakeServer(name, port)
    else:
        server = SERVERS[name]("127.0.0.1", port, Limits(**SELF_HOSTED_LIMITS)).start()
    print("{} listening on {}:{}".format(name, *server.address), flush=True)
    stop = threading.Event()
    # Explicitly: a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
    return 0


def _kit(name: str, kit_args: list[str]) -> int:
    from conformance.runner import main as kit_main

    # selfhost.py imports ChatServer from chat.server when it starts a server: every server
    # of this run (open room, password room, the shutdown case's own) is the broken one.
    chat.server.ChatServer = SERVERS[name]
    return kit_main(kit_args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.broken_servers",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the servers and the IDs the kit must fail on each")
    serve = commands.add_parser("serve", help="run one server on 127.0.0.1 until Ctrl-C")
    serve.add_argument("name", choices=[*SERVERS, *FAKES])
    serve.add_argument("--port", type=int, default=0)
    kit = commands.add_parser("kit", help="run the self-hosted kit with the broken server in place")
    kit.add_argument("name", choices=list(SERVERS))
    kit.add_argument("kit_args", nargs=argparse.REMAINDER, help="options for python -m conformance")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in [*SERVERS, *FAKES]:
            doc = (SERVERS[name].__doc__ or "").split("\n\n")[0] if name in SERVERS else "not a chat server"
            print(f"{name}: fails {' '.join(sorted(expected_failures(name))) or 'nothing'}\n    {doc}")
        return 0
    if args.command == "serve":
        return _serve(args.name, args.port)
    return _kit(args.name, args.kit_args)


# -- kitrunner variants ----------------------------------------------------------------------------


class FloodBurstPlusOneServer(BrokenServer):
    """Breaks [LIMIT-4]: each connection's flood bucket holds flood-burst + 1 lines, so one
    line more than `flood-burst + flood-rate × t` is handled at once."""

    breaks = frozenset({"LIMIT-4"})

    def __init__(self, host: str = "127.0.0.1", port: int | None = 0, limits: Limits = DEFAULT_LIMITS,
                 **kwargs) -> None:
        import dataclasses

        # The server enforces one line more; its room, which writes HELLO, advertises the burst asked for.
        enforced = dataclasses.replace(limits, flood_burst=limits.flood_burst + 1)
        super().__init__(host, port, enforced, **kwargs)
        with self._lock:
            self._room = self.room_class(limits)


class _UncappedSocket(socket.socket):
    """A socket on which setting SO_SNDBUF does nothing: the kernel keeps tuning it."""

    def setsockopt(self, level, option, *value):
        if (level, option) != (socket.SOL_SOCKET, socket.SO_SNDBUF):
            super().setsockopt(level, option, *value)


class DefaultSendBufferServer(BrokenServer):
    """Breaks nothing: leaves each client's SO_SNDBUF to the operating system (Linux grows
    it to 4 MiB), which [LIMIT-20] advises against but [LIMIT-6] allows. The slow-reader
    case must still pass (the kit may assume outbound-max + 8 MiB before the LEAVE)."""

    def _admit(self, sock, address, context):
        return super()._admit(_UncappedSocket(fileno=sock.detach()), address, context)


SERVERS["flood-burst-plus-one"] = FloodBurstPlusOneServer
#: Servers that break no MUST in a way the kit may rely on: the kit must pass them.
#: (Not in SERVERS, whose every entry other than the reference and split-writes breaks a rule.)
CONFORMING_VARIANTS: dict[str, type[BrokenServer]] = {"default-send-buffer": DefaultSendBufferServer}


# -- file-sharing variants (SPEC.md section 11a) ---------------------------------------------
# Registered here, after main(), which reads SERVERS only when it runs; the cases that catch
# each break are in conformance/cases_files.py and the sessions named files-*.

import select  # noqa: E402 - this section stands on its own

from chat import server as _server_module  # noqa: E402
from chat.transfers import TransferTable  # noqa: E402


class OfferToEveryoneRoom(ChatRoom):
    def _offer(self, session, command, now):
        actions = super()._offer(session, command, now)
        return [Broadcast(actions[0].line)]  # the break: every member sees the offer


class OfferToEveryoneServer(BrokenServer):
    """Breaks [FILE-4] and [FILE-14]: an OFFER goes to every registered client, not just
    the two parties."""

    room_class = OfferToEveryoneRoom
    breaks = frozenset({"FILE-4", "FILE-14"})
    consequences = frozenset({
        "FILE-5", "FILE-6", "ERR-3",   # files-offer-checks: carol gets the OFFER (one transcript);
                                       # file-limits: a sender gets another's OFFER (FILE-5)
    })


class NeverExpiresRoom(ChatRoom):
    def _expire_transfers(self, now):
        return []  # the break: offers wait for ever


class NeverExpiresServer(BrokenServer):
    """Breaks [FILE-12]: transfers never expire."""

    room_class = NeverExpiresRoom
    breaks = frozenset({"FILE-12"})


class ReusableTokenTable(TransferTable):
    def attach(self, token):
        transfer, side = super().attach(token)
        self._by_token[token] = (transfer, side)  # the break: the token works again
        return transfer, side


class ReusableTokenRoom(ChatRoom):
    def __init__(self, limits):
        super().__init__(limits)
        self._files = ReusableTokenTable(limits.file_max, limits.file_per_user, limits.file_per_server,
                                         limits.file_expiry)


class ReusableTokenServer(BrokenServer):
    """Breaks [FILE-16]: a data connection's token opens a second connection too."""

    room_class = ReusableTokenRoom
    breaks = frozenset({"FILE-16"})


class WholeFileRelay(_server_module.FileRelay):
    def _move(self, source, sink, size, pair):
        whole = bytearray()
        while len(whole) < size:  # the break: the whole file is read before any of it is sent
            try:
                data = source.recv(min(1 << 20, size - len(whole)))
            except BlockingIOError:
                _server_module._wait(source, select.POLLIN, pair)
                continue
            if not data:
                break
            whole += data
        _server_module._send_all(sink, bytes(whole), pair)
        return len(whole)


class WholeFileServer(BrokenServer):
    """Breaks [FILE-20]: the relay reads the whole file into memory before it sends any
    of it to the recipient, so memory grows with the file."""

    breaks = frozenset({"FILE-20"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._files = WholeFileRelay(self._relay_finished, float(self.limits.file_expiry or 1),
                                     lambda: self._lines_sent)


class OversizePassesRelay(_server_module.FileRelay):
    def _relay(self, source, sink, size, pair):
        moved = _server_module._copy(source, sink, size, pair, self._pacer)
        return "ok" if moved == size else "aborted"  # the break: bytes past `size` go unnoticed


class OversizePassesServer(BrokenServer):
    """Breaks [FILE-15]: a sender that sends more than it offered is not caught; the
    recipient's connection ends in order after `size` bytes as if all were well."""

    breaks = frozenset({"FILE-15"})

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._files = OversizePassesRelay(self._relay_finished, float(self.limits.file_expiry or 1),
                                          lambda: self._lines_sent)


class DataConnectionsCountRoom(ChatRoom):
    def __init__(self, limits):
        super().__init__(limits)
        self.data_sessions: set[Session] = set()

    def _data(self, session, command):
        actions = super()._data(session, command)
        self.data_sessions.add(session)
        return actions

    def release(self, session):
        if session in self.data_sessions:
            return  # the break: the slot stays taken while the relay runs
        super().release(session)

    def release_data_connection(self, session):
        self.data_sessions.discard(session)
        super().release(session)


class DataConnectionsCountServer(BrokenServer):
    """Breaks [FILE-21]: a data connection keeps its place under max-clients and
    max-per-address until its relay ends, instead of from its DATA line on."""

    room_class = DataConnectionsCountRoom
    breaks = frozenset({"FILE-21"})

    def _serve_data_connection(self, connection):
        try:
            super()._serve_data_connection(connection)
        finally:
            with self._lock:
                self._room.release_data_connection(connection.session)


# What the file-sharing cases add to the older servers' failures (kept here, so that the
# catalogue above stays as its authors wrote it):
# - no-echo-to-sender: file-window-and-chat waits for alice's own MSG during a transfer.
NoEchoServer.consequences = NoEchoServer.consequences | {"FILE-19"}
# - no-leave-on-close: files-party-gone expects the sender's LEAVE after its ENDED ... gone.
NoLeaveOnCloseServer.consequences = NoLeaveOnCloseServer.consequences | {"FILE-11", "FILE-13"}
# - crlf: every file case fails at its first line, citing what it covers (file-hello at its
#   register: USER-1); and HELLO's last parameter is now file-expiry, so `password=0` and
#   `action=1` parse: the password and ACT cases apply and fail at their first line too,
#   and the one for a server without ACT (CMD-5) no longer applies.
CrlfServer.consequences = (CrlfServer.consequences | {
    "FILE-4", "FILE-5", "FILE-6", "FILE-14", "ERR-3", "PASS-1", "PASS-2", "ACT-1", "ACT-2"}) - {"CMD-5"}

SERVERS.update({
    "files-offer-to-everyone": OfferToEveryoneServer,
    "files-never-expire": NeverExpiresServer,
    "files-reusable-token": ReusableTokenServer,
    "files-whole-file": WholeFileServer,
    "files-oversize-passes": OversizePassesServer,
    "files-data-connections-count": DataConnectionsCountServer,
})


# -- what the cluster cases add (conformance/cases_cluster.py, SPEC.md 11b) -------------------
# They hold against one server too, so a single broken server that breaks what they
# restate across servers fails them as well: cluster-one-order waits for every MSG in one
# order (CLUSTER-2), cluster-name-race for the NAME_TAKEN of a name in another case.
NoEchoServer.consequences |= {"CLUSTER-2"}            # cluster-one-order: no echo of the MSGs
ReorderingServer.consequences |= {"CLUSTER-2"}        # cluster-one-order: MSGs out of order
CaseSensitiveNamesServer.consequences |= {"CLUSTER-3"}  # cluster-name-race: both names taken
CrlfServer.consequences |= {"CLUSTER-3"}              # cluster-name-race: its first JOIN ends in CR


if __name__ == "__main__":
    from conformance.runner import exit_process

    # As `python -m conformance` does: a broken server's stuck threads must not
    # keep the kit's process alive once its report is written.
    exit_process(main())

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
import re
import selectors
import signal
import socket
import sys
import threading
from typing import ClassVar

import chat.server
from chat import protocol
from chat.limits import Limits
from chat.protocol import ErrorCode, LineBuffer
from chat.server import DEFAULT_LIMITS, ChatServer
from chat.state import Broadcast, ChatRoom, Send

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
        "GRAM-2",                                # syntax-errors
        "USER-3",                                # user-join-to-all
        "FRAME-5", "FRAME-6", "FRAME-10",        # line-max-boundary, server-line-maximum, half-close
        "ORDER-5",                               # concurrent-senders: 60 of 90 MSGs
        "LIMIT-7",                               # shutdown: waits for alice's MSG first
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
    # of `register`). HELLO's last parameter, `password=0\r`, is no number (HELLO-2), so
    # the password cases do not apply.
    consequences = frozenset({
        "USER-1", "HELLO-2", "HELLO-3", "GRAM-1", "GRAM-2", "FRAME-1", "FRAME-9", "FRAME-11",
        "CMD-2", "CMD-3", "ERR-2", "STATE-1", "NAME-1", "PASS-4", "PING-1", "PING-2", "PING-3",
        "MSG-1", "MSG-2", "PM-1", "LEAVE-1", "LIMIT-1", "LIMIT-2",
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


if __name__ == "__main__":
    sys.exit(main())

"""What a case is, and what a case gets to work with while it runs.

A Case is data plus a function: its name, the requirement IDs it checks
(`covers`), the HELLO parameters it needs, the sentences it quotes from
SPEC.md, and `run(ctx)`. Transcripts (sessions/*.session, and the examples of
SPEC.md) and Python cases (cases.py) both become Cases, so the runner, the
report and the pytest plugin treat them alike.

The CaseContext is the case's whole world: the target server and its HELLO,
unique random names, Peers that log into one Transcript, and a clean-up that
closes every connection the case opened. A case never opens a socket itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
import secrets
import ssl
import string
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from conformance.grammar import HelloParams, is_valid_name
from conformance.outcome import CaseCancelled, CheckFailed, NotApplicable
from conformance.peer import DEFAULT_TIMEOUT, Peer, Transcript
from conformance.session import Session, display_path

#: Names the kit makes: a letter, then random lower-case letters and digits.
#: 36**8 (about 3e12) names make a clash with anyone else negligible.
NAME_ALPHABET = string.ascii_lowercase + string.digits
NAME_LENGTH = 9


#: SPEC.md 11b: the connection limits are each server's own, not the
#: cluster's, so the cases that check them keep their connections on one server.
PER_SERVER = frozenset({"LIMIT-1", "LIMIT-2"})

#: The most connections a background case (Case.background) opens to its
#: target, data connections included (file-data-no-timers: two users and their
#: two data connections). The runner lets as many background cases run at once
#: as the target's max-per-address and max-clients leave room for.
BACKGROUND_CONNECTIONS = 4


@dataclasses.dataclass(frozen=True)
class RoundTrips:
    """What the kit measured of the network to one server: PING to PONG, a few times.

    Cases derive their waits and margins from it (CaseContext.allowance), so
    that a slow or jittery network makes the kit wait longer, not fail.
    """

    #: Seconds from sending each PING to reading its PONG.
    samples: tuple[float, ...] = ()

    @property
    def worst(self) -> float:
        return max(self.samples, default=0.0)

    @property
    def best(self) -> float:
        return min(self.samples, default=0.0)

    def describe(self) -> str:
        if not self.samples:
            return "round trip not measured"
        return (f"round trip {self.best * 1000:.1f} to {self.worst * 1000:.1f} ms "
                f"over {len(self.samples)} PINGs")


@dataclasses.dataclass
class Target:
    """A server the cases run against."""

    label: str
    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    #: The room password, when the person running the kit knows it.
    password: str | None = None
    #: Its HELLO, read by the runner's probe before any case runs.
    hello: HelloParams | None = None
    #: Round trips measured by the probe.
    network: RoundTrips = dataclasses.field(default_factory=RoundTrips)
    #: What the kit asked of a server it started itself (controller.ServerSettings), else None.
    settings: Any = None
    #: Where the server came from and how it was set up, for reports.
    configuration: str = ""
    #: Settings the kit could not pass on to a server it started (limit field names).
    unsettable: tuple[str, ...] = ()
    #: A cluster (SPEC.md 11b): the other servers of the same room. A case's
    #: connections go to the servers in turn, its first to (host, port).
    others: tuple[tuple[str, int], ...] = ()

    def address_for(self, connection: int, covers: Iterable[str] = ()) -> tuple[str, int]:
        """Where a case's connection number `connection` (0, 1, ...) goes: round robin,
        except for the cases of limits that are each server's own (PER_SERVER)."""
        if PER_SERVER.intersection(covers):
            return self.address
        servers = (self.address, *self.others)
        return servers[connection % len(servers)]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def offers(self, feature: str) -> bool:
        """Whether a `needs:` entry holds: "tls", or a HELLO parameter > 0."""
        if feature == "tls":
            return self.ssl_context is not None
        return self.hello is not None and self.hello.get(feature) > 0


@dataclasses.dataclass(frozen=True)
class Case:
    """One conformance case, from a transcript or from Python."""

    name: str
    covers: tuple[str, ...]
    #: Features that must be on: HELLO parameters advertised > 0, or "tls".
    needs: tuple[str, ...]
    #: Sentences quoted from SPEC.md (checked against it by the kit's tests).
    quotes: tuple[str, ...]
    #: "file:line" of the transcript or function.
    source: str
    run: Callable[[CaseContext], None]
    #: "session" or "python".
    kind: str
    #: True if the case sends USER or PASS itself, as to a room without a password:
    #: in a room with one it runs only when the kit knows the password (it adds it).
    open_room: bool = False
    #: What the case checks, for people (a docstring or the transcript itself).
    doc: str = ""
    session: Session | None = None
    #: True if the case spends its time waiting (for a timer, an expiry, a flood
    #: rate), opens at most BACKGROUND_CONNECTIONS connections to the target and
    #: skips other users' lines: on servers the kit started itself the runner runs
    #: such cases side by side, one wait for them all (Runner.run).
    background: bool = False


# -- Python cases register themselves here --------------------------------------------------

PYTHON_CASES: list[Case] = []


def python_case(name: str, *, covers: Iterable[str], quote: str | Iterable[str],
                needs: Iterable[str] = (), open_room: bool = False, background: bool = False):
    """Declare a Python case: `@python_case("flood-delay", covers=[...], quote=...)`."""

    def declare(function: Callable[[CaseContext], None]) -> Callable[[CaseContext], None]:
        quotes = (quote,) if isinstance(quote, str) else tuple(quote)
        source = f"{display_path(inspect.getsourcefile(function))}:{inspect.getsourcelines(function)[1]}"
        PYTHON_CASES.append(Case(name=name, covers=tuple(covers), needs=tuple(needs), quotes=quotes,
                                 source=source, run=function, kind="python", open_room=open_room,
                                 doc=inspect.getdoc(function) or "", background=background))
        return function

    return declare


def session_case(session: Session) -> Case:
    from conformance.replay import replay_session  # replay imports this module

    return Case(name=session.name, covers=session.covers, needs=session.needs, quotes=session.quotes,
                source=session.source, run=lambda ctx: replay_session(session, ctx), kind="session",
                open_room=session.sends_user_itself and "password" not in session.needs,
                doc="", session=session)


# -- the context ---------------------------------------------------------------------------


class PrivateServer:
    """What `CaseContext.start_private_server` returns: a server only this case uses."""

    address: tuple[str, int]
    #: How it was started, for the report (controller.StartedServer sets it).
    configuration: str = "a private server"

    def shutdown(self) -> None:  # pragma: no cover - an interface
        raise NotImplementedError


class CaseContext:
    """Everything one running case may use. Made by the runner, one per case run."""

    def __init__(self, case: Case, target: Target, *, timeout: float = DEFAULT_TIMEOUT,
                 transcript: Transcript | None = None,
                 private_servers: Callable[..., PrivateServer] | None = None,
                 exclusive: bool = False) -> None:
        self.case = case
        self.target = target
        self.hello: HelloParams = target.hello or HelloParams({}, ())
        self.timeout = timeout
        #: The round trips the runner measured to the target.
        self.network: RoundTrips = target.network
        self.transcript = transcript or Transcript()
        #: Set by the runner when the case ran out of time: every Peer stops.
        self.cancelled = threading.Event()
        #: True when nobody else uses the server (the kit started it), so
        #: connection counts can be checked exactly.
        self.exclusive = exclusive
        self._private_servers = private_servers
        self._started_servers: list[PrivateServer] = []
        #: Descriptions of the private servers this case started, for the report.
        self.private_configurations: list[str] = []
        self.peers: list[Peer] = []
        self._names: dict[str, str] = {}
        self._case_names: set[str] = set()
        self._connections_per_alias: dict[str, int] = {}
        self._lock = threading.RLock()

    # -- names ----------------------------------------------------------------------------

    def new_name(self, length: int = NAME_LENGTH) -> str:
        """A fresh random valid name of `length` characters, known to the case."""
        name = "t" + "".join(secrets.choice(NAME_ALPHABET) for _ in range(length - 1))
        assert is_valid_name(name) or length > 32
        with self._lock:
            self._case_names.add(name.lower())
        return name

    def name_for(self, alias: str) -> str:
        """The name `{alias}` stands for in this run (made on first use; thread-safe)."""
        with self._lock:
            if alias not in self._names:
                self._names[alias] = self.new_name()
            return self._names[alias]

    def is_outsider(self, text: str) -> bool:
        """A line about other people: a JOIN, LEAVE, MSG, NICK, ACT, ENDED or ACCEPTED
        of a name this case did not make, or a PM or OFFER whose sender and
        recipient are both such names.

        The case cannot know whether another user meant it (a PM from somebody
        on a live server) or the server sent it wrongly; the cases that check
        where such lines go ([PM-1], [FILE-14]) have bystanders of their own,
        whose names the case made. Only a well-formed name can be somebody
        else's: `JOIN alice<CR>` (a CR LF server) is a malformed line about
        nobody, and the case must see it rather than skip it and report a timeout.
        """
        fields = text.split(" ", 3)
        if fields[0] in ("JOIN", "LEAVE", "MSG", "NICK", "ACT", "ENDED", "ACCEPTED"):
            return len(fields) > 1 and self._is_other(fields[1])
        if fields[0] in ("PM", "OFFER"):
            return len(fields) > 2 and self._is_other(fields[1]) and self._is_other(fields[2])
        return False

    def _is_other(self, name: str) -> bool:
        return is_valid_name(name) and name.lower() not in self._case_names

    # -- connections ------------------------------------------------------------------------

    def peer(self, alias: str, *, connect: bool = True, address: tuple[str, int] | None = None,
             source_address: str | None = None, receive_buffer: int | None = None) -> Peer:
        """A new connection for `alias`: "alice", then "alice#2" if it reconnects."""
        with self._lock:
            count = self._connections_per_alias.get(alias, 0) + 1
            self._connections_per_alias[alias] = count
            spread = self.target.address_for(len(self.peers), self.case.covers)  # SPEC.md 11b: over a cluster
        label = alias if count == 1 else f"{alias}#{count}"
        # Every wait for a line allows for the network as measured, on top of --timeout.
        peer = Peer(label, address or spread, self.transcript, timeout=self.allowance(),
                    ssl_context=self.target.ssl_context if address is None else None,
                    server_hostname=self.target.server_hostname, is_outsider=self.is_outsider,
                    source_address=source_address, receive_buffer=receive_buffer,
                    hello_hint=self.target.hello, cancelled=self.cancelled)
        if self.case.open_room and address is None:
            # The case sends USER (or PASS) itself: in a room with a password the
            # kit adds it (Peer._add_password), so the case runs there too.
            peer.room_password = self.target.password
        with self._lock:
            self.peers.append(peer)
        if connect:
            peer.connect()
        return peer

    def register(self, alias: str, *, name: str | None = None, peer: Peer | None = None) -> Peer:
        """The `register` step: connect, HELLO, PASS if needed, USER, own JOIN."""
        peer = peer or self.peer(alias)
        name = name or self.name_for(alias)
        peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))
        if peer.hello is not None and peer.hello.password:
            if self.target.password is None:
                raise NotApplicable("the server requires a password (password=1); give it with --password")
            peer.send_line(f"PASS {self.target.password}")
            peer.expect_line("OK PASS", ids=("PASS-2",))
        peer.send_line(f"USER {name}")
        peer.expect_line(f"JOIN {name}", ids=("USER-1",))
        peer.name = name
        return peer

    def start_private_server(self, **limits: Any) -> PrivateServer:
        """A fresh server for this case alone (e.g. to shut it down), with the run's
        limits and these (chat.limits.Limits field names, `password=` too).

        Only when the kit starts the servers itself (in process, or
        --server-cmd); against a running server the case does not apply, nor
        when the command cannot set a limit asked for.
        """
        if self._private_servers is None:
            raise NotApplicable("needs a server the kit may start and stop: give the kit the command "
                                "that starts yours (--server-cmd) instead of HOST:PORT")
        server = self._private_servers(**limits)
        self._started_servers.append(server)
        self.private_configurations.append(getattr(server, "configuration", "a private server"))
        return server

    # -- waiting -------------------------------------------------------------------------------

    def allowance(self, server_seconds: float = 0.0) -> float:
        """Seconds to wait for a line that the advertised limits let the server take
        `server_seconds` to send: that, plus twice the worst round trip measured
        (the request's way there and the line's way back, each up to a round
        trip on a jittery network), plus the read timeout (--timeout)."""
        return server_seconds + 2 * self.network.worst + self.timeout

    # -- verdict helpers -----------------------------------------------------------------------

    def require(self, condition: bool, reason: str, feature: str | None = None) -> None:
        if not condition:
            raise NotApplicable(reason, feature)

    @staticmethod
    def fail(expected: str, actual: str, *, ids: Iterable[str] = (), who: str | None = None,
             detail: str = "") -> CheckFailed:
        """Build a failure to raise: `raise ctx.fail(...)`."""
        return CheckFailed(expected, actual, ids=tuple(ids), who=who, detail=detail)

    # -- threads -----------------------------------------------------------------------------

    def run_parallel(self, functions: Iterable[Callable[[], Any]], timeout: float) -> list[Any]:
        """Run functions in threads (one per client), wait for all, re-raise the first failure.

        Each function must use its own Peers. A thread still running after
        `timeout` seconds is stopped by cancelling the case's Peers.
        """
        functions = list(functions)
        results: list[Any] = [None] * len(functions)
        errors: list[tuple[float, BaseException]] = []

        def run(index: int, function: Callable[[], Any]) -> None:
            try:
                results[index] = function()
            except BaseException as error:  # noqa: BLE001 - handed to the caller below
                errors.append((time.monotonic(), error))

        threads = [threading.Thread(target=run, args=(i, f), name=f"{self.case.name}-{i}", daemon=True)
                   for i, f in enumerate(functions)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            self.cancel()
            for thread in threads:
                thread.join(5.0)
            raise CheckFailed(f"the case's clients to finish within {timeout:g} s",
                              "still running; stopped by the kit")
        failures = [error for _, error in sorted(errors, key=lambda item: item[0])
                    if not isinstance(error, CaseCancelled)]
        if failures:
            raise failures[0]
        if errors:
            raise errors[0][1]
        return results

    # -- the end ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop every Peer of the case now (the hard time cap ran out)."""
        self.cancelled.set()
        for peer in list(self.peers):
            peer.abort()

    def cleanup(self, wait: float | None = None) -> None:
        """Close every connection the case opened, politely if possible, and stop
        private servers. Bounded: at most `wait` seconds (default: the read timeout)."""
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        peers = list(self.peers)
        if self.cancelled.is_set():
            for peer in peers:
                peer.close()
        else:
            for peer in peers:
                try:
                    peer.begin_leave()
                except (CheckFailed, CaseCancelled):
                    pass
            for peer in peers:
                peer.finish_leave(deadline)
        for server in self._started_servers:
            server.shutdown()
        self._started_servers.clear()

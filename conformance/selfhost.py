"""The servers the kit starts itself: an open room, a room with a password, private servers.

`python -m conformance` with no HOST:PORT starts the reference server in this
process; `python -m conformance --server-cmd TEMPLATE` starts any server as a
command (controller.py has both controllers). Either way the kit starts them
with the limits below, chosen so that every case applies: connection limits
small enough to reach, a flood rate that is measurable but does not slow the
other cases down. A second server with a password serves the cases that need
`password=1`, a third with timers of a few seconds the cases that wait for
them; a case may also ask for a private server of its own, with limits of its
choosing
(`CaseContext.start_private_server(**limits)`; the shutdown case stops one).

Only the in-process controller imports chat/, and only when asked: against any
other server the kit needs nothing but the standard library.
"""

from __future__ import annotations

import secrets
from typing import Any

from conformance.case import Target
from conformance.controller import (
    CommandController,
    InProcessController,
    InProcessServer,
    ReferenceServerMissing,
    ServerSettings,
    ServerStartFailed,
    StartedServer,
)
from conformance.outcome import NotApplicable

__all__ = ["SELF_HOSTED_LIMITS", "TIMERS_ROOM_LIMITS", "KitServers", "ReferenceServerMissing",
           "RunningServer",
           "SelfHostedServers", "ServerStartFailed"]

#: Limits for the servers the kit starts, field by field (chat.limits.Limits).
SELF_HOSTED_LIMITS: dict[str, Any] = {
    # Wire format: the defaults.
    "line_max": 1024,
    "name_max": 32,
    # Connection limits: reachable in a blink on loopback, and large enough
    # for the biggest case (the long USERS list: 31 long names + 1 reader).
    "max_clients": 48,
    "max_per_address": 40,
    # The timers of a public server (chat.limits' defaults): no case but the
    # timer cases waits that long, so a slow network (a client's connections
    # opened one by one through a 30 ms proxy take seconds) never trips them.
    # The timer cases run in the timers room (TIMERS_ROOM_LIMITS).
    "register_timeout": 30,
    "ping_interval": 60,
    "ping_timeout": 30,
    # 100 lines/s with bursts of 20: the flood case measures a delay of half
    # a second, and no other case sends fast enough to notice the limit.
    "flood_rate": 100,
    "flood_burst": 20,
    # Small, so the slow-reader case overflows it within a second or two.
    "outbound_max": 32 * 1024,
    # The default: well above what any case holds back at flood_rate 100.
    "inbound_max": 200,
    # The optional commands (SPEC.md 6.8) offered, so that their cases apply.
    "nick": 1,
    "action": 1,
}


#: The timers room: SELF_HOSTED_LIMITS with timers of a few seconds, for the
#: KEEP cases, which wait for them (a case finding a timer too long to wait for
#: in the open room runs here instead).
TIMERS_ROOM_LIMITS: dict[str, Any] = {
    "register_timeout": 3,
    "ping_interval": 2,
    "ping_timeout": 2,
}


class KitServers:
    """The servers of one run, started by one controller: `open_room`, `password_room`
    (None when the controller cannot set a password), `timers_room`, `private_server(**limits)`."""

    def __init__(self, controller: InProcessController | CommandController,
                 limits: dict[str, Any] | None = None) -> None:
        self.controller = controller
        self.limits = dict(SELF_HOSTED_LIMITS if limits is None else limits)
        self._started: list[StartedServer] = []
        self.open_room = self._start(ServerSettings(self.limits))
        self.password_room: StartedServer | None = None
        try:
            settings = ServerSettings(self.limits, password="kit-" + secrets.token_hex(8))
            if "password" not in controller.unsettable(settings):
                self.password_room = self._start(settings)
            self.timers_room = self._start(ServerSettings({**self.limits, **TIMERS_ROOM_LIMITS}))
        except BaseException:
            self.shutdown()
            raise

    def _start(self, settings: ServerSettings) -> StartedServer:
        server = self.controller.start(settings)
        server.settings = settings
        self._started.append(server)
        return server

    def targets(self) -> list[Target]:
        """The open room and the password room as the runner's targets."""
        rooms = [("open room", self.open_room), ("password room", self.password_room),
                 ("timers room", self.timers_room)]
        return [Target(label, *server.address, password=server.password, settings=server.settings,
                       configuration=f"{label}: {server.configuration}",
                       unsettable=tuple(self.controller.unsettable(server.settings)))
                for label, server in rooms if server is not None]

    def private_server(self, **overrides: Any) -> StartedServer:
        """A server for one case alone (it may stop it): the run's limits with `overrides`.

        NotApplicable when the controller cannot set what the case asks for
        (a --server-cmd template without that placeholder; a field the kit does
        not list in controller.LIMIT_FIELDS is one no template can set). In
        process, chat.limits.Limits says which names it knows.
        """
        password = overrides.pop("password", None)
        settings = ServerSettings({**self.limits, **overrides}, password)
        missing = [name for name in self.controller.unsettable(settings)
                   if name in overrides or name == "password"]
        if missing:
            raise NotApplicable("needs a server started with " + ", ".join(
                f"{name}={overrides.get(name, '(a password)')}" for name in missing)
                + f"; {self.controller.name} has no " + " ".join(f"{{{name}}}" for name in missing))
        server = self.controller.start(settings)
        server.settings = settings
        return server

    def shutdown(self) -> list[str]:
        """Stop every server this object started; each stop is bounded. Returns what went wrong."""
        problems = []
        for server in self._started:
            try:
                server.shutdown()
            except ServerStartFailed as error:
                problems.append(str(error))
        self._started.clear()
        return problems

    def __enter__(self) -> KitServers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


class SelfHostedServers(KitServers):
    """The self-hosted run: the reference server, in process."""

    def __init__(self, limits: dict[str, Any] | None = None) -> None:
        super().__init__(InProcessController(), limits)

    def __enter__(self) -> SelfHostedServers:
        return self


class RunningServer(InProcessServer):
    """One reference server in process with the self-hosted limits and `overrides`
    (a `password=` among them): `.address`, `.password`, `.shutdown()`."""

    def __init__(self, **overrides: Any) -> None:
        password = overrides.pop("password", None)
        super().__init__(ServerSettings({**SELF_HOSTED_LIMITS, **overrides}, password))

"""Start the reference server (chat/) for a run that names no server.

`python -m conformance` with no HOST:PORT, and the pytest plugin with no
--server, test the reference server on 127.0.0.1, port 0. The limits below are
chosen so that every case applies: timers short enough to wait for, connection
limits small enough to reach, a flood rate that is measurable but does not
slow the other cases down. A second server with a password serves the cases
that need `password=1`; a case may also ask for a private server of its own
(the shutdown case stops it).

This is the only module of the kit that imports chat/, and only when asked:
against any other server the kit needs nothing but the standard library.
"""

from __future__ import annotations

import secrets
from typing import Any

#: Limits for the self-hosted reference server, field by field (chat.limits.Limits).
SELF_HOSTED_LIMITS: dict[str, Any] = {
    # Wire format: the defaults.
    "line_max": 1024,
    "name_max": 32,
    # Connection limits: reachable in a blink on loopback, and large enough
    # for the biggest case (the long USERS list: 31 long names + 1 reader).
    "max_clients": 48,
    "max_per_address": 40,
    # Timers of a few seconds: the KEEP cases wait for them, and every other
    # case must keep its clients alive meanwhile (the Peers answer PINGs).
    "register_timeout": 3,
    "ping_interval": 2,
    "ping_timeout": 2,
    # 100 lines/s with bursts of 20: the flood case measures a delay of half
    # a second, and no other case sends fast enough to notice the limit.
    "flood_rate": 100,
    "flood_burst": 20,
    # Small, so the slow-reader case overflows it within a second or two.
    "outbound_max": 32 * 1024,
    # File sharing (SPEC.md section 11a): 64 MiB, so the fixed-window case can
    # offer more than the kernels between two clients could ever buffer; three
    # transfers per user and eight in all, reachable in a few offers; offers
    # expire after 6 s, longer than register-timeout + ping-interval +
    # ping-timeout, so the data-connection timer case can wait out all three.
    "file_max": 64 * 1024 * 1024,
    "file_per_user": 3,
    "file_per_server": 8,
    "file_expiry": 6,
}


class ReferenceServerMissing(RuntimeError):
    """chat/ cannot be imported: name a server instead."""


class RunningServer:
    """A started reference server: `.address`, `.password`, `.shutdown()`."""

    def __init__(self, **overrides: Any) -> None:
        try:
            from chat.limits import Limits
            from chat.server import ChatServer
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise ReferenceServerMissing(
                f"the reference server (chat.server) cannot be imported ({error}); "
                "give the address of a server to test: python -m conformance HOST:PORT") from None
        limits = {**SELF_HOSTED_LIMITS, **overrides}
        self.password: str | None = limits.get("password")
        self._server = ChatServer("127.0.0.1", 0, Limits(**limits))
        self._server.start()
        self.address: tuple[str, int] = self._server.address
        self._stopped = False

    def shutdown(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.shutdown()


class SelfHostedServers:
    """The servers of a self-hosted run: an open room and a room with a password."""

    def __init__(self) -> None:
        self.open_room = RunningServer()
        try:
            self.password_room = RunningServer(password="kit-" + secrets.token_hex(8))
        except BaseException:
            self.open_room.shutdown()
            raise

    def private_server(self, **overrides: Any) -> RunningServer:
        """A server for one case alone (it may stop it)."""
        return RunningServer(**overrides)

    def shutdown(self) -> None:
        self.open_room.shutdown()
        self.password_room.shutdown()

    def __enter__(self) -> SelfHostedServers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

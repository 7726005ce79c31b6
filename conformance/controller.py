"""Start and stop the server under test, whatever its language: the kit's controllers.

After irctest's controllers: the kit, not the person running it, starts the
server with the settings each group of cases needs (small timers, a password,
small limits, a private server a case may stop), waits until it listens, and
stops it at the end ([LIMIT-7] is checked by stopping one). Two controllers
share one interface:

- InProcessController: the reference server (chat.server.ChatServer) in this
  process. The self-hosted run (`python -m conformance` with no address) uses
  it; it is the only code of the kit that imports chat/, and only when asked.
- CommandController: any server, started as a command from a template
  (`--server-cmd`), stopped with SIGTERM.

The template language (documented in conformance/README.md) is Python's
`str.format` fields inside a shell-like command line: the template is split
into words as a POSIX shell would (`shlex.split`, so quote a word that holds
spaces), then `{name}` in each word is replaced by a value, which never splits
a word. The names:

- `{port}`: a free TCP port on 127.0.0.1 the kit chose; the server must listen
  on it (and on 127.0.0.1);
- `{host}`: 127.0.0.1;
- the fields of chat.limits.Limits, i.e. the HELLO parameters with `_` for `-`
  (LIMIT_FIELDS below): `{max_clients}`, `{register_timeout}`, ...;
- `{password}`: the room password, or `{password_file}`: a file whose first
  line is it; both empty for an open room (so write `--password={password}`,
  `--password-file={password_file}`: see below);
- `{tls_cert}`, `{tls_key}`, `{tls_port}`: only when the kit is given a
  certificate (--tls-cert); the server then also listens with TLS on tls_port.

A word whose every placeholder stands for nothing (the password fields for an
open room, the TLS fields without a certificate) is left out, so optional
settings are written as one word: `--password-file={password_file}`,
`--tls-port={tls_port}`.
A limit whose field the template lacks cannot be set: the server runs with its
own default, advertises it in HELLO, and the cases that need a small value of
it become n/a, with the missing field named in the reason (`unsettable`).
`{{` and `}}` stand for literal braces.

What must not live here: knowledge of any case.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import string
import subprocess
import tempfile
import threading
import time
from typing import Any

from conformance.case import PrivateServer

#: The settable limits, as chat.limits.Limits names its fields (HELLO's order).
#: tests/test_conformance_controller.py checks this against chat.limits.
LIMIT_FIELDS = ("line_max", "name_max", "max_clients", "max_per_address", "register_timeout",
                "ping_interval", "ping_timeout", "flood_rate", "flood_burst", "outbound_max",
                "inbound_max", "nick", "action")
#: Every placeholder a --server-cmd template may use.
PLACEHOLDERS = ("host", "port", *LIMIT_FIELDS, "password", "password_file", "tls_cert", "tls_key",
                "tls_port")
#: Seconds a started server has to accept a connection on its port. A Python
#: server starts in about 0.1 s here; a JVM, or a compiled server built on
#: first run (`go run`), takes seconds.
START_DEADLINE = 20.0
#: Seconds to wait for a started server's first bytes once it accepts a connection;
#: one that sends none by then is the preflight probe's to judge.
GREETING_WAIT = 5.0
#: Seconds between two connection attempts while a server starts (it is a wait
#: on the server process itself, which ends at once if the process exits).
START_POLL = 0.05
#: Seconds a server has to exit after SIGTERM (or, in process, to shut down):
#: [LIMIT-7] gives it one second to deliver; the rest is for exiting.
STOP_DEADLINE = 5.0
#: Lines of a failed server's output shown in the error.
OUTPUT_TAIL_LINES = 20


class ServerStartFailed(RuntimeError):
    """The server did not start, or did not listen in time; the message says why."""


class ReferenceServerMissing(ServerStartFailed):
    """chat/ cannot be imported: name a server instead."""


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What one started server is asked to enforce: Limits field names -> values, and a password."""

    limits: dict[str, int]
    password: str | None = None

    def describe(self) -> str:
        """`register-timeout=3 ping-interval=2 ... password=1`, in HELLO's order."""
        ordered = [name for name in LIMIT_FIELDS if name in self.limits]
        ordered += [name for name in self.limits if name not in LIMIT_FIELDS]
        shown = [f"{name.replace('_', '-')}={self.limits[name]}" for name in ordered]
        shown.append(f"password={1 if self.password else 0}")
        return " ".join(shown)


class StartedServer(PrivateServer):
    """A server a controller started: `address`, `password`, `configuration`, `shutdown()`."""

    address: tuple[str, int]
    password: str | None
    #: Where it came from and what it was asked, for reports.
    configuration: str
    #: Where it listens with TLS, when it does.
    tls_address: tuple[str, int] | None = None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def template_fields(template: str) -> list[str]:
    """The placeholder names a template uses; ValueError for one the kit does not know."""
    names = []
    for word in shlex.split(template):
        for _, field, spec, conversion in string.Formatter().parse(word):
            if field is None:
                continue
            if field not in PLACEHOLDERS or spec or conversion:
                raise ValueError(f"unknown placeholder {{{field}}} in --server-cmd; the kit knows "
                                 + " ".join(f"{{{name}}}" for name in PLACEHOLDERS))
            names.append(field)
    if not names:
        raise ValueError("--server-cmd has no placeholder: it needs at least {port}")
    if "port" not in names:
        raise ValueError("--server-cmd has no {port}: the kit chooses the port the server listens on")
    return names


# -- the reference server, in this process ------------------------------------------------------


class InProcessServer(StartedServer):
    """chat.server.ChatServer started in this process."""

    def __init__(self, settings: ServerSettings, tls_context: Any = None) -> None:
        try:
            from chat.limits import Limits
            from chat.server import ChatServer
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise ReferenceServerMissing(
                f"the reference server (chat.server) cannot be imported ({error}); give the address "
                "of a server to test (python -m conformance HOST:PORT) or --server-cmd") from None
        self.password = settings.password
        self._server = ChatServer("127.0.0.1", 0, Limits(**settings.limits, password=settings.password),
                                  tls_context=tls_context, tls_port=0 if tls_context else None)
        self._server.start()
        self.address = self._server.address
        self.tls_address = self._server.tls_address
        self.configuration = f"reference server in process ({settings.describe()})"
        self._stopped = False

    def shutdown(self) -> None:
        """ChatServer.shutdown(), bounded: a server whose threads crashed may never
        finish it, and the kit must still write its report and exit."""
        if self._stopped:
            return
        self._stopped = True
        stopper = threading.Thread(target=self._server.shutdown, name="stop-reference-server", daemon=True)
        stopper.start()
        stopper.join(STOP_DEADLINE)
        if stopper.is_alive():
            raise ServerStartFailed(f"the reference server did not shut down within {STOP_DEADLINE:g} s "
                                    "(its threads may have crashed)")


class InProcessController:
    """Starts the reference server in this process (the self-hosted run)."""

    name = "the reference server, in process"

    def __init__(self, tls_context: Any = None) -> None:
        self.tls_context = tls_context

    def unsettable(self, settings: ServerSettings) -> list[str]:
        return []

    def start(self, settings: ServerSettings) -> InProcessServer:
        return InProcessServer(settings, self.tls_context)


# -- any server, as a command -------------------------------------------------------------------


class CommandServer(StartedServer):
    """A server process started from a --server-cmd template; stopped with SIGTERM."""

    def __init__(self, argv: list[str], address: tuple[str, int], settings: ServerSettings,
                 tls_address: tuple[str, int] | None, cleanup: list[str]) -> None:
        self.argv = argv
        self.address = address
        self.tls_address = tls_address
        self.password = settings.password
        self.configuration = f"--server-cmd {shlex.join(argv)}"
        self._cleanup = cleanup
        self._output = tempfile.TemporaryFile()
        self._stopped = False
        # Its own session and process group: SIGTERM goes to the server and whatever it
        # started (`go run`, `npm start` and `sh -c` run the server as a child), and
        # not to the kit's terminal.
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            self._remove_files()
            self._output.close()
            raise ServerStartFailed(f"--server-cmd could not run {argv[0]!r}: {error}") from None
        try:
            self._wait_until_listening()
        except BaseException:
            self._kill()
            raise

    def _wait_until_listening(self) -> None:
        """Connect until it works, then wait for the server's first bytes (its HELLO):
        a server may listen before it is ready (the reference server installs its
        SIGTERM handler in between). The pause between attempts is a wait on the
        process, which returns at once if the server exits (then its output says why)."""
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                connect_within = max(0.1, deadline - time.monotonic())
                with socket.create_connection(self.address, timeout=connect_within) as probe:
                    probe.settimeout(GREETING_WAIT)
                    try:
                        probe.recv(1)  # the greeting, the close, or (silent server) the preflight's business
                    except OSError:
                        pass
                    return
            except OSError as error:
                last_error = error
            try:
                code = self.process.wait(timeout=START_POLL)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise ServerStartFailed(
                        f"--server-cmd: nothing listened on {self.address[0]}:{self.address[1]} within "
                        f"{START_DEADLINE:g} s ({last_error}); the command was {shlex.join(self.argv)}\n"
                        + self.output_tail()) from None
                continue
            raise ServerStartFailed(f"--server-cmd: the server exited with code {code} before it listened; "
                                    f"the command was {shlex.join(self.argv)}\n" + self.output_tail())

    def output_tail(self) -> str:
        """The last lines the server printed, for an error message."""
        try:
            self._output.seek(0)
            lines = self._output.read().decode("utf-8", errors="replace").splitlines()
        except (OSError, ValueError):
            return ""
        shown = lines[-OUTPUT_TAIL_LINES:]
        if not shown:
            return "it printed nothing"
        return "its output ended with:\n" + "\n".join("  | " + line for line in shown)

    def shutdown(self) -> None:
        """SIGTERM, then wait up to STOP_DEADLINE; a server that has not exited by then is killed."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self._kill()
                raise ServerStartFailed(f"--server-cmd: the server did not exit within {STOP_DEADLINE:g} s "
                                        "of SIGTERM, and was killed") from None
        finally:
            self._remove_files()
            self._output.close()

    def _signal(self, number: int) -> None:
        """Signal the server's process group (see __init__), if it is still there."""
        try:
            os.killpg(self.process.pid, number)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self) -> None:
        self._stopped = True
        self._signal(signal.SIGKILL)
        self.process.wait()
        self._remove_files()
        self._output.close()

    def _remove_files(self) -> None:
        for path in self._cleanup:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._cleanup = []


class CommandController:
    """Starts a server from a --server-cmd template (see the module docstring)."""

    def __init__(self, template: str, *, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        self.template = template
        self.fields = set(template_fields(template))
        self.tls_cert = tls_cert
        self.tls_key = tls_key or tls_cert
        self.name = f"--server-cmd {template!r}"

    @property
    def offers_tls(self) -> bool:
        return bool(self.tls_cert) and "tls_port" in self.fields

    def can_set_password(self) -> bool:
        return bool(self.fields & {"password", "password_file"})

    def unsettable(self, settings: ServerSettings) -> list[str]:
        """The settings the template cannot pass on (the server then uses its own defaults)."""
        missing = [name for name in settings.limits if name not in self.fields]
        if settings.password and not self.can_set_password():
            missing.append("password")
        return missing

    def start(self, settings: ServerSettings) -> CommandServer:
        port = free_port()
        tls_port = free_port() if self.offers_tls else None
        cleanup: list[str] = []
        values: dict[str, Any] = {"host": "127.0.0.1", "port": port, **settings.limits,
                                  "password": settings.password or "", "password_file": "",
                                  "tls_cert": self.tls_cert or "",
                                  "tls_key": self.tls_key or "", "tls_port": tls_port or ""}
        if "password_file" in self.fields and settings.password:
            descriptor, path = tempfile.mkstemp(prefix="chat-kit-password-")
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write((settings.password or "") + "\n")
            cleanup.append(path)
            values["password_file"] = path
        argv = [word.format(**values) for word in shlex.split(self.template)
                if not _all_empty(word, values)]
        tls_address = ("127.0.0.1", tls_port) if tls_port else None
        return CommandServer(argv, ("127.0.0.1", port), settings, tls_address, cleanup)


def _all_empty(word: str, values: dict[str, Any]) -> bool:
    """Whether every placeholder of `word` stands for nothing (an open room's {password},
    TLS settings without a certificate): such a word is left out of the command."""
    fields = [field for _, field, _, _ in string.Formatter().parse(word) if field is not None]
    return bool(fields) and all(values[field] in ("", None) for field in fields)

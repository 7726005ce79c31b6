"""What the server tells its operator: log events, their two formats, and flood protection.

Part of the server's edge, beside chat/server.py (which decides when to log);
nothing here reads a socket. Every record goes through `logging`, under the
logger names below, so an operator can route or silence each kind:

    chat.server          start, stop, warnings about the set-up, bugs
    chat.server.conn     one line per connection event (connect, register,
                         leave or close with its reason, refusals, drops,
                         TLS failures)
    chat.server.stats    the periodic summary (SUMMARY_PERIOD)

An event is a name and fields (`address`, `name`, `reason`, ...). Never the
text of a message nor a password: the server logs who and why, never what was
said (privacy by default). The text format writes `event key=value ...`; the
JSON format one object per line, for log collectors.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from collections.abc import Callable

SERVER = logging.getLogger("chat.server")
CONNECTIONS = logging.getLogger("chat.server.conn")
STATS = logging.getLogger("chat.server.stats")
# A library stays quiet until its program configures logging (configure()
# does, for chat-server): without this, Python's last-resort handler would
# print every warning of a ChatServer embedded in tests or the kit.
logging.getLogger("chat").addHandler(logging.NullHandler())

#: Records of one kind (one event and level) allowed per SUPPRESS_WINDOW
#: before the rest are counted instead of written. A port scan or a flood of
#: refused connections makes thousands of identical warnings a second; 10
#: show that it is happening, and the count says how much.
SUPPRESS_AFTER = 10
#: Seconds over which SUPPRESS_AFTER is counted.
SUPPRESS_WINDOW = 10.0

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def event(logger: logging.Logger, level: int, name: str, /, **fields: object) -> None:
    """Log event `name` with its fields, in whichever format the handler has."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None)
    logger.log(level, "%s %s" if text else "%s", name, *([text] if text else []),
               extra={"event": name, "fields": fields})


def _text_value(value: object) -> str:
    text = str(value)
    return text if text and " " not in text and '"' not in text else json.dumps(text)


class RateLimiter:
    """At most `allowed` records per kind in each `window` seconds ([LOG] flood protection).

    `admit(kind)` returns (write it?, how many of this kind were suppressed
    since the last one written). Thread-safe; the clock is passed in for tests.
    """

    def __init__(self, allowed: int = SUPPRESS_AFTER, window: float = SUPPRESS_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        #: kind -> [window start, written in this window, suppressed since the last written]
        self._kinds: dict[str, list[float]] = {}

    def admit(self, kind: str) -> tuple[bool, int]:
        now = self._clock()
        with self._lock:
            state = self._kinds.setdefault(kind, [now, 0, 0])
            if now - state[0] >= self.window:
                state[0], state[1] = now, 0
            if state[1] >= self.allowed:
                state[2] += 1
                return False, 0
            state[1] += 1
            suppressed, state[2] = int(state[2]), 0
            return True, suppressed


class LimitedEvents:
    """`event()` for events a client can cause at will (refusals, bad passwords,
    TLS failures): past SUPPRESS_AFTER of one kind in a window, the rest are
    counted, and the next one written says "N similar messages suppressed"."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.limiter = limiter or RateLimiter()

    def __call__(self, logger: logging.Logger, level: int, name: str, /, **fields: object) -> None:
        if not logger.isEnabledFor(level):
            return
        written, suppressed = self.limiter.admit(f"{logger.name} {level} {name}")
        if not written:
            return
        if suppressed:
            logger.log(level, "%d similar messages suppressed (%s)", suppressed, name,
                       extra={"event": "suppressed", "fields": {"count": suppressed, "of": name}})
        event(logger, level, name, **fields)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, event, fields, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        name = getattr(record, "event", None)
        if name is not None:
            entry["event"] = name
            entry.update({key: value for key, value in getattr(record, "fields", {}).items()
                          if value is not None})
        entry["message"] = record.getMessage()
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "info", form: str = "text", stream: object = None) -> logging.Handler:
    """Send the server's records to stderr (or `stream`) at `level`, in `form`."""
    handler = logging.StreamHandler(stream)
    if form == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("chat")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    return handler

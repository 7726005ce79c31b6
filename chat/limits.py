"""Every limit of a chat/1 server, in one place, with its reason.

A server advertises these in its HELLO line (SPEC.md section 4, [HELLO-2]) so
that clients and the conformance kit adapt to them instead of guessing. The
defaults suit a small public server; `python -m chat.server --help` lists the
command-line options that change them. 0 switches a limit off, except for
`line_max` and `name_max`, which are part of the wire format.

Nothing here does I/O; the protocol, the room and the server all read their
limits from a `Limits` value.
"""

from __future__ import annotations

import dataclasses

# Longest client line in bytes, terminator included (SPEC.md 2, [FRAME-5]).
# Precedents: IRC 512, SMTP 1000, h11's header block 16 KiB. 1024 holds a long
# paragraph of chat while keeping one line's worst-case cost small.
DEFAULT_LINE_MAX = 1024

# Longest name in characters (SPEC.md 5, [NAME-1]). IRC networks use 30 to 32.
DEFAULT_NAME_MAX = 32

# The optional verbs (SPEC.md 6.8, [CMD-4]) and the HELLO parameter, also the
# Limits field, that offers each.
OPTIONAL_VERBS = {"NICK": "nick", "ACT": "action"}

# The largest value HELLO can carry: `number = 1*10DIGIT` (SPEC.md 3).
NUMBER_MAX = 9_999_999_999


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits one server enforces. Field order is HELLO's order."""

    #: [FRAME-5] bytes per client line, including LF (and CR).
    line_max: int = DEFAULT_LINE_MAX
    #: [NAME-1] characters per name; fixed by the grammar, advertised for clients.
    name_max: int = DEFAULT_NAME_MAX
    #: [LIMIT-1] open connections in all. A thread per connection costs about
    #: 20 KB of memory here (see README, Performance); 1,000 is a busy room.
    max_clients: int = 1000
    #: [LIMIT-2] open connections from one IP address: enough for a family
    #: behind one NAT, too few for one host to take every slot.
    max_per_address: int = 10
    #: [KEEP-3] seconds from connecting to a successful USER. A person typing
    #: a name into nc needs a few seconds; a port scanner holds a slot until then.
    register_timeout: int = 30
    #: [KEEP-2] seconds of silence before the server sends PING. Home routers
    #: drop idle TCP mappings after a few minutes; 60 s stays well inside that.
    ping_interval: int = 60
    #: [KEEP-2] seconds to answer that PING before the client counts as gone.
    ping_timeout: int = 30
    #: [LIMIT-4] lines per second one connection may sustain. A fast typist
    #: manages 2; a pasted paragraph arrives at up to 10 lines a second.
    flood_rate: int = 10
    #: [LIMIT-4] lines one connection may send in a burst before the rate applies.
    flood_burst: int = 20
    #: [LIMIT-6] bytes queued for one client before it is dropped as a slow
    #: consumer. 256 KiB is about 3,000 full MSG lines: seconds of a busy room,
    #: far more than a reader that is merely slow falls behind. Redis uses
    #: 32 MB for pub/sub, ngircd 32 KB.
    outbound_max: int = 256 * 1024
    #: [PASS-1] the room's password, or None for an open room. Not advertised
    #: itself, only whether there is one.
    password: str | None = None
    #: [LIMIT-8] lines of one connection received but held back by flood
    #: control ([LIMIT-4]) before it is dropped for an excess flood. It bounds
    #: three things: a paste of up to flood_burst + inbound_max lines (220, a
    #: long screenful) still arrives in full, at flood_rate; a connection that
    #: has closed holds its slot for at most inbound_max / flood_rate seconds
    #: (20) while its last lines are handled ([LIMIT-9]); and the memory one
    #: connection's unhandled input costs, at most inbound_max * line_max
    #: (200 KiB, less than outbound_max). IRC servers bound the same queue
    #: ("RecvQ", "Excess Flood") in bytes, at 2 to 8 KiB: they kill pastes,
    #: which chat/1 promises to deliver, so the bound here is in lines.
    inbound_max: int = 200
    #: [CMD-4] optional commands offered (1) or not (0), SPEC.md 6.8:
    #: NICK ([NICK-1]) and ACT ([ACT-1]). On by default; 0 makes a server
    #: that answers them with UNKNOWN_COMMAND ([CMD-5]), as an older one would.
    nick: int = 1
    action: int = 1
    # -- file sharing (SPEC.md section 11a), advertised after every other parameter --
    #: [FILE-1] the largest file relayed, in bytes; 0: the server relays no files.
    #: 1 GiB: a video or a disk image fits, and a transfer costs the server a
    #: fixed window whatever its size ([FILE-20]), so the bound is for people
    #: (how long a slot stays taken), not for memory.
    file_max: int = 1024 * 1024 * 1024
    #: [FILE-5] transfers one user may have offered and not yet ended: enough
    #: to send a few files at once, too few to flood a room with offers.
    file_per_user: int = 4
    #: [FILE-5] transfers open at once in all. Each holds two connections, two
    #: threads and a window (a 1 MiB pipe in the kernel, 64 KiB inside TLS)
    #: while it relays (SPEC.md [FILE-20]).
    file_per_server: int = 32
    #: [FILE-12] seconds an offer waits for ACCEPT (and the data connections
    #: for each other, and the receiver's verdict): long enough for a person
    #: to notice the offer and choose where to save it.
    file_expiry: int = 120

    def __post_init__(self) -> None:
        # HELLO carries whole numbers, and a server must not time out before
        # what it advertised ([KEEP-4]): so the limits are whole numbers too,
        # of at most 10 digits (the grammar's `number`).
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "password" and (not isinstance(value, int) or not 0 <= value <= NUMBER_MAX):
                raise ValueError(f"{field.name} must be a whole number from 0 to {NUMBER_MAX}, "
                                 f"not {value!r}")
        # [LIMIT-12]: by [LIMIT-4]'s formula a burst of 0 would allow no line at all.
        if self.flood_rate and not self.flood_burst:
            raise ValueError("flood_burst must be at least 1 when flood_rate > 0 (SPEC.md [LIMIT-12])")
        if self.file_max and not (self.file_per_user and self.file_per_server and self.file_expiry):
            # [FILE-1]: a server that relays files bounds them all.
            raise ValueError("with file_max > 0, file_per_user, file_per_server and file_expiry must be > 0")

    def hello_params(self) -> list[tuple[str, int]]:
        """The HELLO parameters in the order [HELLO-2] fixes, then [LIMIT-11]'s."""
        return [
            ("line-max", self.line_max),
            ("name-max", self.name_max),
            ("max-clients", self.max_clients),
            ("max-per-address", self.max_per_address),
            ("register-timeout", self.register_timeout),
            ("ping-interval", self.ping_interval),
            ("ping-timeout", self.ping_timeout),
            ("flood-rate", self.flood_rate),
            ("flood-burst", self.flood_burst),
            ("outbound-max", self.outbound_max),
            ("password", 1 if self.password else 0),
            # Parameters added after chat/1's first eleven ([GRAM-3]).
            ("inbound-max", self.inbound_max),  # [LIMIT-11]
            # Optional commands come after every other parameter ([CMD-4]).
            ("nick", self.nick),
            ("action", self.action),
            # [FILE-1]: after every other parameter, the four of file sharing.
            ("file-max", self.file_max),
            ("file-per-user", self.file_per_user),
            ("file-per-server", self.file_per_server),
            ("file-expiry", self.file_expiry),
        ]

    def optional_verbs(self) -> frozenset[str]:
        """The optional verbs this server offers ([CMD-5])."""
        return frozenset(verb for verb, field in OPTIONAL_VERBS.items() if getattr(self, field))


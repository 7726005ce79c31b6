"""The cases a transcript cannot express: boundaries computed from HELLO,
many clients at once, timers, limits and a server that shuts down.

Each case is a function decorated with @python_case, which gives its name, the
requirement IDs it checks and the sentence it quotes from SPEC.md (the kit's
tests check that every quote is really in SPEC.md). Its docstring says what it
does and why, for the person reading a failure.

Rules every case here keeps, so the kit is safe on a shared live server:
- names come from ctx.new_name / ctx.name_for (random), nothing assumes who
  else is online, and ctx.cleanup closes every connection afterwards;
- nothing sleeps waiting for the server: a case waits for the line it
  expects, with a deadline; the only waits are the pacing of a client's own
  sending, kept below the advertised flood rate so that [LIMIT-4] never
  changes what a case measures;
- a limit is tested only when the server advertises one small enough to
  reach quickly (e.g. max-clients <= 50, timers <= 5 s), else the case does
  not apply;
- timing checks give lower bounds where the spec promises a delay and
  generous upper bounds where it promises an action, never a speed limit.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import threading
import time
from collections.abc import Callable

from conformance.case import CaseContext, python_case
from conformance.grammar import (
    HELLO_PARAMETERS,
    OPTIONAL_COMMAND_PARAMETERS,
    hello_order_problems,
    parse_hello,
)
from conformance.outcome import CaseCancelled, CheckFailed
from conformance.peer import Closed, Event, Line, Peer, TimedOut, describe

#: Seconds of slack a timer may fire early (clock reading and scheduling).
EARLY_SLACK = 0.25
#: The longest timer (register-timeout, ping-interval, ping-timeout) worth waiting for.
LONGEST_TIMER = 5
#: The most connections a limit case opens at once.
MOST_CONNECTIONS = 50
#: The most clients sending at once in the slow-reader case.
MOST_SENDERS = 8
#: Bytes the kernels may hold between a server and a client that does not
#: read (the server's send buffer, the client's small receive buffer), beyond
#: the server's own outbound-max: a planning figure for the slow-reader case.
KERNEL_BUFFERING = 512 * 1024
#: Connections every case leaves free under each connection limit: an earlier
#: case's connection whose close the server has not finished ([LIMIT-3] frees
#: the slot only then), or somebody else's on a shared server, must not make a
#: case fail at a limit it is not testing.
CONNECTION_SPARE = 2


# -- helpers -----------------------------------------------------------------------------


def connection_budget(ctx: CaseContext, wanted: int) -> int:
    """How many connections a case may hold at once without tripping a limit,
    CONNECTION_SPARE below each."""
    budget = wanted
    for limit in (ctx.hello.max_per_address, ctx.hello.max_clients):
        if limit > 0:
            budget = min(budget, limit - CONNECTION_SPARE)
    return max(0, budget)


class Pacer:
    """Spaces one connection's lines to stay under the advertised flood limit.

    [LIMIT-4] delays lines beyond `flood-burst + flood-rate * t`; a case that
    sent faster would measure the flood limit instead of what it checks. The
    pacer keeps to 80% of the rate after a burst of half the allowance.
    """

    def __init__(self, ctx: CaseContext) -> None:
        rate, burst = ctx.hello.flood_rate, ctx.hello.flood_burst
        self.interval = 1.0 / (rate * 0.8) if rate > 0 else 0.0
        self.credit = max(1, burst // 2) if rate > 0 else 0
        self.next_at = time.monotonic()
        self._cancelled = ctx.cancelled

    def time_to_next(self) -> float:
        return max(0.0, self.next_at - time.monotonic())

    def take(self) -> None:
        """Note that one line is sent now."""
        now = time.monotonic()
        if self.credit > 0:
            self.credit -= 1
            self.next_at = now
        else:
            self.next_at = max(now, self.next_at) + self.interval

    def wait(self) -> None:
        """Block until the next line may go (a client's own pacing, not a wait for the server)."""
        if self._cancelled.wait(self.time_to_next()):
            raise CaseCancelled()
        self.take()


def expect_hello(peer: Peer) -> Line:
    return peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1",))


def quote_line(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- 4. Connection and greeting ---------------------------------------------------------------


@python_case("hello-parameters", covers=["HELLO-1", "HELLO-2", "FRAME-13", "LIMIT-12"], quote=[
    "HELLO MUST carry these parameters, in this order, each a decimal number",
    "A server MUST advertise a `line-max` of at least 512.",
    "With `flood-rate` > 0, a server MUST advertise a `flood-burst` of at least 1",
])
def hello_parameters(ctx: CaseContext) -> None:
    """HELLO carries the eleven parameters of [HELLO-2] in order, each a number;
    line-max is at least 512 and a flood rate comes with a burst of at least 1.

    Unknown parameters are allowed anywhere ([GRAM-3] lets servers add some);
    the kit, as a client, ignores them: it reads the same known values from
    the HELLO with an unknown parameter added.
    """
    peer = ctx.peer("alice")
    line = expect_hello(peer)
    hello = parse_hello(line.text)
    problems = hello_order_problems(hello)
    problems += [f"{field!r} is not key=number" for field in line.text.split(" ")[2:]
                 if not re.fullmatch(r"[a-z-]+=[0-9]{1,10}", field)]
    if problems:
        raise ctx.fail("HELLO chat/1 " + " ".join(f"{key}=N" for key in HELLO_PARAMETERS),
                       f"{quote_line(line.text, 200)}: {'; '.join(problems)}", ids=["HELLO-2"], who="alice")
    # The values themselves: the smallest line-max ([FRAME-13]), no flood limit
    # that allows no line at all ([LIMIT-12]).
    if hello.line_max < 512:
        raise ctx.fail("line-max=512 or more", f"line-max={hello.line_max}", ids=["FRAME-13"], who="alice")
    if hello.flood_rate > 0 and hello.flood_burst < 1:
        raise ctx.fail(f"flood-burst=1 or more with flood-rate={hello.flood_rate}",
                       f"flood-burst={hello.flood_burst}", ids=["LIMIT-12"], who="alice")
    extended = parse_hello(line.text + " x-from-the-future=7")
    if any(extended.get(key) != hello.get(key) for key in HELLO_PARAMETERS):
        raise AssertionError("the kit's HELLO parser is broken: an unknown parameter changed the others")
    peer.quiet(ids=("HELLO-1",))  # exactly one HELLO: nothing else was pending


@python_case("hello-then-silence", covers=["HELLO-3"], quote=[
    "Before the client's first line the server MUST NOT send anything but HELLO, a keepalive PING "
    "([KEEP-2]) and an ERR after which it closes ([KEEP-3]).",
])
def hello_then_silence(ctx: CaseContext) -> None:
    """After HELLO, a client that says nothing receives nothing but, maybe, a
    keepalive PING, or an ERR followed by the close.

    The kit listens for half a second, or less if a timer of the server
    (register-timeout, ping-interval) would make it speak sooner anyway.
    """
    timers = [t for t in (ctx.hello.register_timeout, ctx.hello.ping_interval) if t > 0]
    listen = min([0.5] + [t / 2 for t in timers])
    peer = ctx.peer("alice")
    expect_hello(peer)
    until = time.monotonic() + listen
    while (left := until - time.monotonic()) > 0:
        event = peer.next_event(left, skip_outsiders=False, answer_pings=False, log_timeout=False)
        if isinstance(event, TimedOut):
            break
        if isinstance(event, Line) and re.fullmatch(r"PING [\x21-\x7e]{1,64}", event.text):
            continue
        if isinstance(event, Line) and event.text.startswith("ERR "):
            peer.expect_closed(ids=("HELLO-3",))
            return
        raise ctx.fail(f"nothing but a PING, or an ERR and the close, during {listen:g} s after HELLO "
                       "(the client has said nothing)", describe(event), ids=["HELLO-3"], who="alice")
    peer.quiet()


# -- 2. Framing -----------------------------------------------------------------------------------


@python_case("line-max-boundary", covers=["FRAME-5", "FRAME-2", "ERR-3"], quote=[
    "A client line, counted in bytes up to and including its LF (and its CR, if any), MUST be at most "
    "`line-max` bytes",
    "it MUST send `ERR LINE_TOO_LONG` without waiting for the LF, discard every byte up to and including "
    "the next LF, and then continue with the line after it.",
])
def line_max_boundary(ctx: CaseContext) -> None:
    """Lines of exactly line-max bytes are accepted (LF or CR LF); one byte more is refused.

    Also: the refusal comes as soon as line-max bytes have arrived without an
    LF (before the LF is sent); the rest of the line, however long, is
    discarded with no second reply; and nobody else sees the error.
    """
    limit = ctx.hello.line_max
    alice = ctx.register("alice")
    bob = ctx.register("bob")
    alice.expect_line(f"JOIN {bob.name}")

    text = "x" * (limit - len("MSG \n"))
    alice.send_raw(f"MSG {text}\n".encode())
    alice.expect_line(f"MSG {alice.name} {text}", ids=("FRAME-5",))
    text = "y" * (limit - len("MSG \r\n"))
    alice.send_raw(f"MSG {text}\r\n".encode())
    alice.expect_line(f"MSG {alice.name} {text}", ids=("FRAME-5", "FRAME-2"))
    # Bytes, not characters: line-max bytes of two-byte characters are accepted,
    # one byte more is not (though it has far fewer than line-max characters).
    wide = "é" * ((limit - 5) // 2) + "x" * ((limit - 5) % 2)
    alice.send_raw(f"MSG {wide}\n".encode())
    alice.expect_line(f"MSG {alice.name} {wide}", ids=("FRAME-5",))
    alice.send_raw(f"MSG {wide}x\n".encode())
    alice.expect_error("LINE_TOO_LONG", ids=("FRAME-5",))
    # line-max - 1 bytes, then the LF in a second write: exactly line-max, accepted.
    text = "v" * (limit - len("MSG \n"))
    alice.send_raw(f"MSG {text}".encode())
    alice.send_raw(b"\n")
    alice.expect_line(f"MSG {alice.name} {text}", ids=("FRAME-5",))

    for terminator in (b"\n", b"\r\n"):
        too_long = b"MSG " + b"z" * (limit + 1 - 4 - len(terminator)) + terminator
        alice.send_raw(too_long)
        alice.expect_error("LINE_TOO_LONG", ids=("FRAME-5",))
        alice.quiet(ids=("FRAME-5",))

    # line-max bytes and no LF yet: the ERR must come without the LF.
    alice.send_raw(b"MSG " + b"w" * (limit - 4))
    alice.expect_error("LINE_TOO_LONG", ids=("FRAME-5",))
    # The rest of that line (three times line-max) is discarded, and the next line is handled.
    alice.send_raw(b"w" * (3 * limit) + b"\nPING after-the-long-line\n")
    alice.expect_line("PONG after-the-long-line", ids=("FRAME-5",))
    # One overlong line in one write: one reply, however long.
    alice.send_raw(b"MSG " + b"u" * (5 * limit) + b"\n")
    alice.expect_error("LINE_TOO_LONG", ids=("FRAME-5",))
    alice.quiet(ids=("FRAME-5",))
    bob.expect_line(f"MSG {alice.name} {'x' * (limit - 5)}")
    bob.expect_line(f"MSG {alice.name} {'y' * (limit - 6)}")
    bob.expect_line(f"MSG {alice.name} {wide}")
    bob.expect_line(f"MSG {alice.name} {'v' * (limit - 5)}")
    bob.quiet(ids=("ERR-3",))


@python_case("length-checked-first", covers=["FRAME-11"], quote=[
    "The server MUST check a line in this order and answer only the first problem found: length "
    "([FRAME-5]), encoding ([FRAME-7]), characters ([FRAME-8]), verb ([CMD-2]), then the command's "
    "own checks.",
])
def length_checked_first(ctx: CaseContext) -> None:
    """An overlong line that is also bad UTF-8, has control characters and an
    unknown verb gets LINE_TOO_LONG, and only that."""
    limit = ctx.hello.line_max
    alice = ctx.register("alice")
    alice.send_raw(b"NOPE \xff\x01" + b"q" * limit + b"\n")
    alice.expect_error("LINE_TOO_LONG", ids=("FRAME-11",))
    alice.quiet(ids=("FRAME-11",))


@python_case("server-line-maximum", covers=["FRAME-6", "MSG-1", "PM-1"], quote=[
    "A line the server sends MUST be at most `line-max + name-max + 1` bytes.",
])
def server_line_maximum(ctx: CaseContext) -> None:
    """The longest MSG and PM, from a sender with the longest name, arrive whole
    and within line-max + name-max + 1 bytes (exactly that long, in fact)."""
    limit = ctx.hello.line_max
    name_length = min(ctx.hello.name_max, 32)  # the grammar's `name` has at most 32 characters
    bound = limit + ctx.hello.name_max + 1
    alice = ctx.register("alice", name=ctx.new_name(name_length))
    bob = ctx.register("bob")
    alice.expect_line(f"JOIN {bob.name}")

    # Each command's text, of one letter repeated, fills its line to line-max.
    longest = (("MSG ", f"MSG {alice.name} ", "m", "MSG-1"),
               (f"PM {bob.name} ", f"PM {alice.name} {bob.name} ", "p", "PM-1"))
    for command, delivered, letter, requirement in longest:
        text = letter * (limit - len(command + "\n"))
        alice.send_line(command + text)
        for peer in (alice, bob):
            line = peer.expect_line(delivered + text, ids=("FRAME-6", requirement))
            if len(line.raw) > bound:
                raise ctx.fail(f"at most {bound} bytes", f"{len(line.raw)} bytes", ids=["FRAME-6"],
                               who=peer.label)


@python_case("half-close", covers=["FRAME-10", "LEAVE-3"], quote=[
    "Bytes after the last LF when the client closes its sending side are an incomplete line and MUST be "
    "discarded; every complete line before them MUST be handled as if the connection stayed open.",
])
def half_close(ctx: CaseContext) -> None:
    """A client sends a complete line and half a line, then shuts down its
    sending side: the complete line is handled (and echoed to the client,
    which still reads), the half line is dropped, and the others see
    `LEAVE name closed`."""
    # Python's ssl.SSLSocket drops its TLS layer on shutdown(), so the kit
    # cannot half-close a TLS connection and go on reading it.
    ctx.require(ctx.target.ssl_context is None,
                "half-closing a TLS connection while still reading is not possible with Python's "
                "ssl module; run this case without --tls")
    bob = ctx.register("bob")
    alice = ctx.register("alice")
    bob.expect_line(f"JOIN {alice.name}")
    alice.send_raw(b"MSG complete\nMSG incompl")
    alice.shutdown_write()
    alice.expect_line(f"MSG {alice.name} complete", ids=("FRAME-10",))
    bob.expect_line(f"MSG {alice.name} complete", ids=("FRAME-10",))
    bob.expect_line(f"LEAVE {alice.name} closed", ids=("LEAVE-3", "FRAME-10"))
    bob.quiet(ids=("FRAME-10",))
    alice.expect_closed(ids=("LEAVE-3",))


@python_case("reset-is-closed", covers=["LEAVE-3"], quote=[
    "`closed` when the client closed or reset the connection without LEAVE",
])
def reset_is_closed(ctx: CaseContext) -> None:
    """A registered client that resets its connection (TCP RST) leaves with
    reason `closed`, once."""
    bob = ctx.register("bob")
    alice = ctx.register("alice")
    bob.expect_line(f"JOIN {alice.name}")
    alice.reset()
    bob.expect_line(f"LEAVE {alice.name} closed", ids=("LEAVE-3",))
    bob.quiet(ids=("LEAVE-3",))


# -- 5. Names ------------------------------------------------------------------------------------------


@python_case("name-length-boundary", covers=["NAME-1"], open_room=True, quote=[
    "A USER whose name does not match gets `ERR BAD_NAME` (even when the name is merely too long or "
    "empty); the session goes on.",
])
def name_length_boundary(ctx: CaseContext) -> None:
    """A name of name-max characters is accepted; one character more is BAD_NAME."""
    longest = min(ctx.hello.name_max, 32)
    alice = ctx.peer("alice")
    expect_hello(alice)
    too_long = ctx.new_name(longest) + "x"
    alice.send_line(f"USER {too_long}")
    alice.expect_error("BAD_NAME", ids=("NAME-1",))
    exact = ctx.new_name(longest)
    alice.send_line(f"USER {exact}")
    alice.expect_line(f"JOIN {exact}", ids=("NAME-1",))


# -- 6. USERS --------------------------------------------------------------------------------------------


def _names_filling_one_line(line_max: int, name_max: int) -> list[int]:
    """Name lengths whose NAMES line, all on one line, is exactly `line_max + 1`
    bytes: `NAMES` and the names fill line_max bytes before the LF.

    So a server that packs NAMES greedily (in any order) must cut this list
    into two lines, and one whose bound is a byte off (it forgot the LF, or
    compares with <= line_max + 1) sends the one line of line_max + 1 bytes.
    Longest names first, then one or two shorter ones to land on the byte
    (of five characters at least, so that random names do not clash).
    """
    longest = min(name_max, 32)
    room = line_max - len("NAMES")          # bytes of " name" entries the line must hold
    full = (room - 6) // (longest + 1)      # leave at least 6 bytes (" xxxxx") for the rest
    rest = room - full * (longest + 1)      # 6 .. longest + 6 bytes: one or two names
    tail = [rest - 1] if rest <= longest + 1 else [rest // 2 - 1, rest - rest // 2 - 1]
    return [longest] * full + tail


@python_case("users-long-list", covers=["USERS-3", "USERS-1"], quote=[
    "Each NAMES line MUST be at most `line-max` bytes.",
])
def users_long_list(ctx: CaseContext) -> None:
    """So many long names that one NAMES line cannot hold them: the reply is
    several NAMES lines, each within line-max, listing everyone once.

    The names are chosen so that, were they one line, it would be exactly
    line-max + 1 bytes: a server packing greedily must split them, and one
    whose bound is a byte off (it forgot the LF) sends that one line. The
    order and the packing are the server's to choose, and with nobody else
    in the room (the kit's own server) any greedy order lands on the byte.
    """
    limit = ctx.hello.line_max
    lengths = _names_filling_one_line(limit, ctx.hello.name_max)
    needed = len(lengths)
    budget = connection_budget(ctx, MOST_CONNECTIONS)
    ctx.require(needed <= budget, f"needs {needed} clients at once to overflow one NAMES line; the "
                f"server's limits allow {budget}")
    reader = ctx.register("reader", name=ctx.new_name(lengths[0]))
    others = [ctx.register(f"c{i}", name=ctx.new_name(length)) for i, length in enumerate(lengths[1:])]
    for other in others:
        reader.expect_line(f"JOIN {other.name}")
    reader.send_line("USERS")
    names_lines = []
    while True:
        event = reader.next_event()
        if isinstance(event, Line) and event.text.startswith("NAMES "):
            names_lines.append(event)
            continue
        if isinstance(event, Line) and re.fullmatch(r"ENDNAMES [0-9]+", event.text):
            break
        raise reader.fail("NAMES lines, then ENDNAMES <count>", event, ids=("USERS-1",))
    too_long = [line for line in names_lines if len(line.raw) > limit]
    if too_long:
        raise ctx.fail(f"every NAMES line at most {limit} bytes",
                       f"a NAMES line of {len(too_long[0].raw)} bytes", ids=["USERS-3"], who="reader")
    listed = [name for line in names_lines for name in line.text.split(" ")[1:]]
    expected = [reader.name] + [other.name for other in others]
    missing = [name for name in expected if name not in listed]
    doubles = sorted({name for name in listed if listed.count(name) > 1})
    count = int(event.text.split(" ")[1])
    if missing or doubles or count != len(listed):
        raise ctx.fail(f"all {len(expected)} names listed once and ENDNAMES equal to the count",
                       f"{len(listed)} listed, ENDNAMES {count}, missing {len(missing)}, "
                       f"doubled {len(doubles)}", ids=["USERS-1"], who="reader")


@python_case("users-snapshot", covers=["USERS-2", "USERS-1", "LEAVE-4", "ORDER-1"], quote=[
    "The list MUST be a snapshot taken at one instant, consistent with the JOIN and LEAVE lines the "
    "requester receives",
])
def users_snapshot(ctx: CaseContext) -> None:
    """While clients keep joining and leaving, a reader asks USERS again and
    again. Each reply must list exactly the clients of this case that the
    reader's own JOIN/LEAVE lines say are present at that point of its stream;
    and each LEAVE it sees must follow a JOIN it saw ([LEAVE-4])."""
    budget = connection_budget(ctx, 4)
    ctx.require(budget >= 2, "needs 2 clients at once")
    churners = min(3, budget - 1)
    rounds = 5
    reader = ctx.register("reader")
    finished = threading.Event()
    snapshots: list[int] = []

    def churn(index: int) -> None:
        for round_number in range(rounds):
            peer = ctx.register(f"c{index}r{round_number}")
            peer.send_line("LEAVE")
            peer.read_until(lambda line, me=peer.name: line.text == f"LEAVE {me} quit", ids=("LEAVE-1",),
                            expected=f"'LEAVE {peer.name} quit'")
            peer.expect_closed(ids=("LEAVE-1",))

    def read() -> None:
        pacer = Pacer(ctx)
        present: set[str] = set()
        ours = {f"c{i}r{r}" for i in range(churners) for r in range(rounds)}
        our_names = {ctx.name_for(alias) for alias in ours}
        asked = 0
        answered = 0
        listing: list[str] | None = None
        final_asked = False
        while True:
            if listing is None and asked == answered and pacer.time_to_next() == 0:
                if finished.is_set():
                    if final_asked:
                        return
                    final_asked = True
                reader.send_line("USERS")
                pacer.take()
                asked += 1
            event = reader.next_event(0.05 if asked == answered else None, log_timeout=asked != answered)
            if isinstance(event, TimedOut):
                if asked != answered:
                    raise reader.fail("the reply to USERS", event, ids=("USERS-1",))
                continue
            if isinstance(event, Closed):
                raise reader.fail("more lines", event)
            verb, _, rest = event.text.partition(" ")
            if listing is not None and verb not in ("NAMES", "ENDNAMES"):
                raise ctx.fail("NAMES ... ENDNAMES as one block (a snapshot taken at one instant)",
                               f"{quote_line(event.text)} inside the block", ids=["USERS-2", "ORDER-1"],
                               who="reader")
            if verb == "JOIN" and rest in our_names:
                present.add(rest)
            elif verb == "LEAVE" and rest.split(" ")[0] in our_names:
                name = rest.split(" ")[0]
                if name not in present:
                    raise ctx.fail(f"LEAVE {name} only after JOIN {name}", quote_line(event.text),
                                   ids=["LEAVE-4"], who="reader")
                present.discard(name)
            elif verb == "NAMES":
                listing = (listing or []) + rest.split(" ")
            elif verb == "ENDNAMES":
                listing = listing or []
                answered += 1
                listed_ours = {name for name in listing if name in our_names}
                if listed_ours != present or reader.name not in listing:
                    raise ctx.fail("USERS to list exactly the clients whose JOIN (and no LEAVE) came "
                                   f"before it: {' '.join(sorted(present | {reader.name}))}",
                                   f"listed {' '.join(sorted(listed_ours | ({reader.name} & set(listing))))}",
                                   ids=["USERS-2"], who="reader")
                if int(rest) != len(listing) or len(set(listing)) != len(listing):
                    raise ctx.fail(f"ENDNAMES {len(listing)} and every name once",
                                   f"ENDNAMES {rest} for {len(listing)} names", ids=["USERS-1"], who="reader")
                snapshots.append(len(listed_ours))
                listing = None

    def churn_all() -> None:
        try:
            ctx.run_parallel([lambda i=i: churn(i) for i in range(churners)], timeout=20)
        finally:
            finished.set()

    ctx.run_parallel([churn_all, read], timeout=25)
    if len(snapshots) < 2:  # at least one while clients came and went, and the final one
        raise ctx.fail("several USERS replies while clients came and went", f"{len(snapshots)} replies",
                       ids=["USERS-2"])


# -- 6.8 Optional commands ------------------------------------------------------------------------------

#: The optional commands of SPEC.md 6.8: HELLO parameter -> a line using the verb.
OPTIONAL_COMMANDS = dict(zip(OPTIONAL_COMMAND_PARAMETERS, ("NICK somebody", "ACT waves"), strict=True))


@python_case("optional-commands-not-advertised", covers=["CMD-5"], quote=[
    "A server that does not advertise it (no parameter, or the value 0) MUST answer it with "
    "`ERR UNKNOWN_COMMAND`, like any verb not in chat/1.",
])
def optional_commands_not_advertised(ctx: CaseContext) -> None:
    """Each optional command the server does not advertise is an unknown verb,
    before and after USER. A server that advertises them all is checked by
    their own cases; then, when the kit starts the reference server itself,
    it checks one started without them."""
    absent = {parameter: line for parameter, line in OPTIONAL_COMMANDS.items()
              if not ctx.hello.get(parameter)}
    address = None
    if not absent:
        server = ctx.start_private_server(**{parameter: 0 for parameter in OPTIONAL_COMMANDS})
        address, absent = server.address, dict(OPTIONAL_COMMANDS)
    alice = ctx.peer("alice", address=address)
    hello = parse_hello(expect_hello(alice).text)
    for parameter, line in absent.items():
        if hello.get(parameter):
            raise ctx.fail(f"HELLO without {parameter}=1", f"{parameter}={hello.get(parameter)}",
                           ids=("CMD-4",), who="alice")
        alice.send_line(line)
        alice.expect_error("UNKNOWN_COMMAND", ids=("CMD-5",))
    bob = ctx.register("bob", peer=ctx.peer("bob", address=address))
    for line in absent.values():
        bob.send_line(line)
        bob.expect_error("UNKNOWN_COMMAND", ids=("CMD-5",))
    bob.quiet(ids=("CMD-5",))


# -- 6.2 and 8. Ordering ---------------------------------------------------------------------------------


@python_case("concurrent-senders", covers=["ORDER-2", "ORDER-4", "ORDER-5", "ORDER-1", "CMD-1", "MSG-1"],
             quote=[
                 "every registered client MUST receive the broadcast lines (JOIN, LEAVE, MSG) in one and "
                 "the same order",
                 "It MUST NOT lose, duplicate or reorder the lines of a client that keeps reading.",
             ])
def concurrent_senders(ctx: CaseContext) -> None:
    """Several clients send numbered MSGs at the same time while all of them
    read. Every client must receive every MSG exactly once, each sender's in
    the order sent, and all clients the same interleaving (the room's order)."""
    clients = connection_budget(ctx, 5)
    ctx.require(clients >= 2, "needs 2 clients at once")
    sender_count = max(1, min(3, clients - 1))
    per_sender = 30
    if ctx.hello.flood_rate:
        # At 80% of the flood rate, keep each sender to about five seconds.
        per_sender = max(5, min(per_sender, int(ctx.hello.flood_rate * 0.8 * 5)))
    peers = [ctx.register(f"c{i}") for i in range(clients)]
    # Barrier: each client has read the JOIN of everyone registered after it.
    for index, peer in enumerate(peers):
        for later in peers[index + 1:]:
            peer.expect_line(f"JOIN {later.name}")
    senders = {peer.name for peer in peers[:sender_count]}
    total = sender_count * per_sender

    def participant(peer: Peer, sends: bool) -> list[tuple[str, str]]:
        pacer = Pacer(ctx)
        sent = 0
        received: list[tuple[str, str]] = []
        last_line = time.monotonic()
        while len(received) < total:
            if sends and sent < per_sender and pacer.time_to_next() == 0:
                peer.send_line(f"MSG n{sent}")
                pacer.take()
                sent += 1
                continue
            wait = pacer.time_to_next() if sends and sent < per_sender else ctx.timeout
            event = peer.next_event(wait, log_timeout=False)
            if isinstance(event, TimedOut):
                if time.monotonic() - last_line >= ctx.timeout:
                    raise CheckFailed(f"{total} MSGs in all", f"{len(received)} received, then "
                                      f"timeout after {ctx.timeout:g} s", ids=("ORDER-5",), who=peer.label)
                continue
            if isinstance(event, Closed):
                raise peer.fail(f"{total} MSGs in all", event, ids=("ORDER-5",))
            last_line = event.at
            fields = event.text.split(" ", 2)
            if fields[0] == "MSG" and fields[1] in senders:
                received.append((fields[1], fields[2]))
            else:
                raise CheckFailed("only the MSGs of this case", quote_line(event.text), ids=("ORDER-5",),
                                  who=peer.label)
        return received

    streams = ctx.run_parallel([lambda p=p, s=(i < sender_count): participant(p, s)
                                for i, p in enumerate(peers)], timeout=per_sender * 0.5 + 15)
    expected = [f"n{i}" for i in range(per_sender)]
    for peer, stream in zip(peers, streams, strict=True):
        for sender in sorted(senders):
            got = [text for name, text in stream if name == sender]
            if got != expected:
                raise ctx.fail(f"from {sender}: {' '.join(expected)} (each once, in order)",
                               f"{' '.join(got)}", ids=["ORDER-5", "ORDER-4", "CMD-1"], who=peer.label)
    for peer, stream in zip(peers[1:], streams[1:], strict=True):
        if stream != streams[0]:
            first = next(i for i, (a, b) in enumerate(zip(stream, streams[0], strict=False)) if a != b)
            raise ctx.fail(f"the same order as {peers[0].label}: MSG {' '.join(streams[0][first])} "
                           f"at position {first}", f"MSG {' '.join(stream[first])}",
                           ids=["ORDER-2", "ORDER-1"], who=peer.label)


@python_case("join-first-in-busy-room", covers=["ORDER-3", "USER-3", "USER-1", "LEAVE-1"], open_room=True,
             quote=[
                 "A user's JOIN MUST reach every recipient before any MSG or PM from that user, and its "
                 "LEAVE after all of them.",
                 "The first line a client receives after a successful USER MUST be its own JOIN",
             ])
def join_first_in_busy_room(ctx: CaseContext) -> None:
    """While another client streams MSGs, bob sends USER, three MSGs and LEAVE
    in one write. Bob's first line is his JOIN (no MSG of the room slips in
    before it); the others see his JOIN before his MSGs and his LEAVE after."""
    ctx.require(connection_budget(ctx, 3) >= 3, "needs 3 clients at once")
    watcher = ctx.register("watcher")
    streamer = ctx.register("streamer")
    watcher.expect_line(f"JOIN {streamer.name}")
    bob = ctx.peer("bob")
    expect_hello(bob)
    bob_name = ctx.name_for("bob")
    streaming = threading.Event()
    mine = [f"MSG {bob_name} one", f"MSG {bob_name} two", f"MSG {bob_name} three"]

    def stream() -> None:
        pacer = Pacer(ctx)
        for index in range(20):
            pacer.wait()
            streamer.send_line(f"MSG s{index}")
            if index == 2:
                streaming.set()
        streamer.read_until(lambda line: line.text == f"LEAVE {bob_name} quit", ids=("LEAVE-1",),
                            expected=f"'LEAVE {bob_name} quit'")

    def join_and_leave() -> None:
        if not streaming.wait(ctx.timeout * 2):
            raise CheckFailed("the streamer to start", "it did not")
        bob.send_raw(f"USER {bob_name}\nMSG one\nMSG two\nMSG three\nLEAVE\n".encode())
        bob.expect_line(f"JOIN {bob_name}", ids=("USER-3", "USER-1"))
        lines = bob.read_until(lambda line: line.text == f"LEAVE {bob_name} quit", ids=("LEAVE-1",),
                               expected=f"'LEAVE {bob_name} quit'")
        own = [line.text for line in lines if line.text.startswith(f"MSG {bob_name} ")]
        if own != mine:
            raise CheckFailed(" then ".join(map(repr, mine)), " then ".join(map(repr, own)),
                              ids=("ORDER-3",), who="bob")
        bob.expect_closed(ids=("LEAVE-1",))

    def watch() -> None:
        lines = watcher.read_until(lambda line: line.text == f"LEAVE {bob_name} quit", ids=("ORDER-3",),
                                   expected=f"'LEAVE {bob_name} quit'")
        about_bob = [line.text for line in lines if line.text.split(" ")[1:2] == [bob_name]]
        expected = [f"JOIN {bob_name}"] + mine + [f"LEAVE {bob_name} quit"]
        if about_bob != expected:
            raise CheckFailed(" then ".join(map(repr, expected)), " then ".join(map(repr, about_bob)),
                              ids=("ORDER-3",), who="watcher")

    ctx.run_parallel([stream, join_and_leave, watch], timeout=20)


# -- 9. Keepalive and timeouts --------------------------------------------------------------------------


def _timer(ctx: CaseContext, parameter: str) -> int:
    value = ctx.hello.get(parameter)
    ctx.require(value > 0, f"needs {parameter} > 0; the server advertises {parameter}={value}", parameter)
    ctx.require(value <= LONGEST_TIMER, f"{parameter}={value} s is longer than the kit waits "
                f"({LONGEST_TIMER} s)")
    return value


@python_case("register-timeout", background=True,
             covers=["KEEP-3", "KEEP-4", "ERR-2", "STATE-2"], needs=["register-timeout"],
             quote=[
    "a client that has not registered within `register-timeout` seconds of connecting MUST be sent "
    "`ERR REGISTRATION_TIMEOUT` and closed.",
    "The server MUST NOT act on a timer of [KEEP-2] or [KEEP-3] before the advertised number of seconds "
    "has passed.",
])
def register_timeout(ctx: CaseContext) -> None:
    """A client that connects and never sends USER gets REGISTRATION_TIMEOUT
    (not before register-timeout, and not much after) and is closed; a client
    that registered at the same moment stays.

    The unregistered client is not silent: it sends a PING every quarter of
    register-timeout (and answers the server's PINGs), because the timer runs
    from the connect ([KEEP-3]), not from the client's last line: a server
    that restarted it on every line would never time this client out.

    No slack on the early side ([KEEP-4]): the kit takes the time before it
    connects, so the server accepts later and its ERR arrives later still;
    whatever the kit measures is more than the time the server counted.
    """
    timeout = _timer(ctx, "register-timeout")
    bob = ctx.register("bob")
    started = time.monotonic()
    alice = ctx.peer("alice")
    expect_hello(alice)
    done = threading.Event()

    def wait_for_timeout() -> None:
        try:
            every = timeout / 4
            next_ping, sent, answered = time.monotonic(), 0, 0
            until = started + timeout + ctx.timeout + 1
            while True:
                if time.monotonic() >= next_ping:
                    alice.send_line(f"PING alive{sent}")
                    sent += 1
                    next_ping += every
                event = alice.next_event(max(0.01, min(next_ping, until) - time.monotonic()),
                                         log_timeout=False)
                if isinstance(event, TimedOut):
                    if time.monotonic() >= until:
                        raise alice.fail(f"'ERR REGISTRATION_TIMEOUT ...' within {timeout} s of connecting, "
                                         f"although the client sent a PING every {every:g} s", event,
                                         ids=("KEEP-3",))
                    continue
                if isinstance(event, Line) and event.text == f"PONG alive{answered}":
                    answered += 1
                    continue
                if isinstance(event, Line) and re.fullmatch(r"ERR REGISTRATION_TIMEOUT .+", event.text):
                    break
                raise alice.fail(f"'PONG alive{answered}' or 'ERR REGISTRATION_TIMEOUT ...'", event,
                                 ids=("KEEP-3",))
            if event.at - started < timeout:
                raise CheckFailed(f"ERR REGISTRATION_TIMEOUT no sooner than {timeout} s after connecting",
                                  f"after {event.at - started:.2f} s", ids=("KEEP-4",), who="alice")
            alice.expect_closed(ids=("KEEP-3", "ERR-2"))
        finally:
            done.set()

    def stay() -> None:
        while not done.is_set():
            event = bob.next_event(0.1, log_timeout=False)  # answers the server's PINGs meanwhile
            if not isinstance(event, TimedOut):
                raise bob.fail("nothing (a registered client is not timed out)", event, ids=("KEEP-3",))
        bob.quiet(ids=("KEEP-3",))

    ctx.run_parallel([wait_for_timeout, stay], timeout=timeout + ctx.timeout + 10)


@python_case("ping-timeout", background=True,
             covers=["KEEP-2", "KEEP-4", "LEAVE-3", "ERR-2"], needs=["ping-interval"], quote=[
    "when nothing has been received from a client for `ping-interval` seconds the server MUST send it "
    "`PING <token>`; if nothing is then received for `ping-timeout` more seconds, the server MUST send "
    "`ERR PING_TIMEOUT`, close the connection, and (if it was registered) send `LEAVE <name> timeout` to "
    "the others.",
])
def ping_timeout(ctx: CaseContext) -> None:
    """A registered client that goes silent is sent PING after ping-interval,
    and, not answering, ERR PING_TIMEOUT after ping-timeout more; it is closed
    and the others see `LEAVE name timeout`."""
    interval = _timer(ctx, "ping-interval")
    answer_within = _timer(ctx, "ping-timeout")
    bob = ctx.register("bob")
    alice = ctx.peer("alice")
    alice.keepalive_manual = True
    ctx.register("alice", peer=alice)
    silent_since = time.monotonic()  # alice's USER was her last line
    bob.expect_line(f"JOIN {alice.name}")

    def go_silent() -> None:
        ping = alice.expect_match(r"PING [\x21-\x7e]{1,64}", timeout=interval + ctx.timeout + 1,
                                  ids=("KEEP-2",))
        if ping.at - silent_since < interval - EARLY_SLACK:
            raise CheckFailed(f"PING after {interval} s of silence", f"after {ping.at - silent_since:.2f} s",
                              ids=("KEEP-4",), who="alice")
        error = alice.expect_error("PING_TIMEOUT", timeout=answer_within + ctx.timeout + 1, ids=("KEEP-2",))
        # The PING left the server at least ping-interval after her last line,
        # and the ERR at least ping-timeout after the PING.
        if error.at - silent_since < interval + answer_within - EARLY_SLACK:
            raise CheckFailed(f"ERR PING_TIMEOUT no sooner than {interval + answer_within} s after "
                              "her last line",
                              f"after {error.at - silent_since:.2f} s", ids=("KEEP-4",), who="alice")
        alice.expect_closed(ids=("KEEP-2", "ERR-2"))

    def watch() -> None:
        bob.expect_line(f"LEAVE {alice.name} timeout", timeout=interval + answer_within + ctx.timeout + 2,
                        ids=("KEEP-2", "LEAVE-3"))
        bob.quiet()

    ctx.run_parallel([go_silent, watch], timeout=interval + answer_within + ctx.timeout + 10)


@python_case("keepalive-answered", background=True,
             covers=["PING-3", "PING-1", "KEEP-1"], needs=["ping-interval"], quote=[
    "A `PONG <token>` from a client MUST get no reply; it only shows the client is alive ([KEEP-1]).",
    "The server MUST take any complete line received from a client (a PONG included) as a sign that "
    "the client is alive.",
])
def keepalive_answered(ctx: CaseContext) -> None:
    """The kit, as a client, answers the server's PING with PONG ([PING-4]) and
    stays connected; the PONG gets no reply. The next PING it answers with a
    PING of its own instead: any line shows the client is alive ([KEEP-1])."""
    interval = _timer(ctx, "ping-interval")
    answer_within = _timer(ctx, "ping-timeout")
    carol = ctx.peer("carol")
    carol.keepalive_manual = True
    ctx.register("carol", peer=carol)
    wait = interval + ctx.timeout + 1
    first = carol.expect_match(r"PING [\x21-\x7e]{1,64}", timeout=wait, ids=("KEEP-2",))
    carol.send_line("PONG " + first.text[5:])
    second = carol.expect_match(r"PING [\x21-\x7e]{1,64}", timeout=wait, ids=("PING-3", "KEEP-2"))
    del second  # answered with another line: KEEP-1 says any line will do
    carol.send_line("PING carols-own")
    carol.expect_line("PONG carols-own", ids=("PING-1",))
    # Past the time the server would have given up on her, she is still there.
    event = carol.next_event(answer_within + 0.5, log_timeout=False)
    if isinstance(event, Line) and event.text.startswith("PING "):
        carol.send_line("PONG " + event.text[5:])
    elif not isinstance(event, TimedOut):
        raise carol.fail("nothing, or another PING (the client answered in time)", event, ids=("PING-3",))
    carol.quiet(ids=("PING-3",))


# -- 11. Limits ------------------------------------------------------------------------------------------


def _open_until_refused(ctx: CaseContext, limit: int, error_code: str, sources: list[str | None],
                        per_source: int, requirement: str) -> list[Peer]:
    """Open connections until one is refused; check the refusal; return the accepted ones."""
    accepted: list[Peer] = []
    for index in range(limit + 1):
        source = sources[min(index // per_source, len(sources) - 1)]
        peer = ctx.peer(f"n{index + 1}", source_address=source)
        event = peer.next_event()
        if isinstance(event, Line) and event.text.startswith("HELLO "):
            accepted.append(peer)
            continue
        if isinstance(event, Line) and re.fullmatch(rf"ERR {error_code} .+", event.text):
            peer.expect_closed(ids=(requirement, "ERR-2"))
            if ctx.exclusive and len(accepted) < limit:
                raise ctx.fail(f"{limit} connections accepted before the refusal",
                               f"refused after {len(accepted)}", ids=[requirement], who=peer.label)
            return accepted
        raise peer.fail(f"HELLO, or ERR {error_code} once {limit} connections are open", event,
                        ids=(requirement, "HELLO-1"))
    raise ctx.fail(f"ERR {error_code} instead of HELLO for connection {limit + 1}",
                   f"HELLO (all {limit + 1} connections accepted)", ids=[requirement])


def _check_slot_freed(ctx: CaseContext, accepted: list[Peer], requirement: str, source: str | None) -> None:
    """[LIMIT-3]: once a client has seen its connection close, it can connect again at once.
    And the connections already open were not affected."""
    survivor = accepted[-1]
    survivor.quiet(ids=(requirement,))
    leaver = accepted[0]
    leaver.send_line("LEAVE")
    leaver.expect_closed(ids=("LEAVE-2",))
    again = ctx.peer("again", source_address=source)
    event = again.next_event()
    if not (isinstance(event, Line) and event.text.startswith("HELLO ")):
        raise again.fail("HELLO: the closed connection no longer counts", event, ids=("LIMIT-3",))


@python_case("max-per-address", covers=["LIMIT-2", "LIMIT-3", "HELLO-1", "ERR-2"], needs=["max-per-address"],
             quote=[
                 "a connection that would make more than `max-per-address` open connections from one IP "
                 "address MUST be sent `ERR TOO_MANY_CONNECTIONS` instead of HELLO and closed.",
                 "A connection MUST stop counting against both limits before the server closes it",
             ])
def max_per_address(ctx: CaseContext) -> None:
    """Open max-per-address connections from one address, then one more: the
    extra one gets TOO_MANY_CONNECTIONS instead of HELLO and is closed. After
    one of the first leaves, a new connection is accepted at once."""
    limit = ctx.hello.max_per_address
    ctx.require(limit <= MOST_CONNECTIONS, f"max-per-address={limit} is more than the kit opens "
                f"({MOST_CONNECTIONS})")
    clients = ctx.hello.max_clients
    ctx.require(not clients or clients > limit, f"max-clients={clients} would refuse first")
    accepted = _open_until_refused(ctx, limit, "TOO_MANY_CONNECTIONS", [None], limit + 1, "LIMIT-2")
    _check_slot_freed(ctx, accepted, "LIMIT-2", None)


def _loopback_sources(ctx: CaseContext, count: int) -> list[str] | None:
    """`count` distinct IPv4 loopback source addresses, if this host has them
    (Linux routes all of 127/8 to lo) and the server is on IPv4 loopback."""
    try:
        if ipaddress.ip_address(ctx.target.host).version != 4 or not ctx.target.is_loopback:
            return None
    except ValueError:
        return None
    sources = [f"127.0.0.{i}" for i in range(1, count + 1)]
    for source in sources:
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((source, 0))
        except OSError:
            return None
        finally:
            probe.close()
    return sources


@python_case("max-clients", covers=["LIMIT-1", "LIMIT-3", "HELLO-1", "ERR-2"], needs=["max-clients"], quote=[
    "a connection that would make more than `max-clients` open connections MUST be sent `ERR SERVER_FULL` "
    "instead of HELLO and closed. Connections that were already open are unaffected.",
])
def max_clients(ctx: CaseContext) -> None:
    """Open max-clients connections, then one more: it gets SERVER_FULL and is
    closed; the open ones still work; after one leaves, a new one is accepted.
    When max-per-address is smaller, the connections come from several
    loopback addresses (127.0.0.1, 127.0.0.2, ...)."""
    limit = ctx.hello.max_clients
    ctx.require(limit <= MOST_CONNECTIONS, f"max-clients={limit} is more than the kit opens "
                f"({MOST_CONNECTIONS})")
    per_address = ctx.hello.max_per_address
    if per_address and per_address <= limit:
        per_source = max(1, per_address - 1)
        sources = _loopback_sources(ctx, math.ceil((limit + 1) / per_source))
        ctx.require(sources is not None, f"max-per-address={per_address} <= max-clients={limit}: needs "
                    "several source addresses, which only an IPv4 loopback server on Linux offers")
    else:
        per_source, sources = limit + 1, [None]
    accepted = _open_until_refused(ctx, limit, "SERVER_FULL", sources, per_source, "LIMIT-1")
    _check_slot_freed(ctx, accepted, "LIMIT-1", sources[0])


#: Fresh connections the flood case tries. A bucket one line too big shows only
#: when the round trip is shorter than one line's refill (1 / flood-rate); a
#: trial whose first PONG came later than half of that could not resolve it
#: (the machine was busy), so the case tries again, up to this many times.
FLOOD_TRIALS = 5
#: Seconds by which a PONG may seem to beat [LIMIT-4]'s bound: the clock's
#: resolution and the order of two monotonic readings, nothing more. A server
#: that follows [LIMIT-4] cannot go below the bound whatever the network does
#: (a slow network only makes PONGs later), so the margin need not grow with it.
FLOOD_CLOCK_SLACK = 0.002


def _register_counting(ctx: CaseContext, alias: str) -> tuple[Peer, float, int]:
    """Connect and register `alias`; returns the peer, the time just before its first
    line, and how many lines it has sent (PASS, USER): [LIMIT-4] counts them too."""
    peer = ctx.peer(alias)
    expect_hello(peer)
    first_line_at = time.monotonic()
    lines = 0
    if peer.hello is not None and peer.hello.password:
        ctx.require(ctx.target.password is not None,
                    "the server requires a password (password=1); give it with --password")
        peer.send_line(f"PASS {ctx.target.password}")
        lines += 1
        peer.expect_line("OK PASS", ids=("PASS-2",))
    name = ctx.name_for(alias)
    peer.send_line(f"USER {name}")
    lines += 1
    peer.expect_line(f"JOIN {name}", ids=("USER-1",))
    peer.name = name
    return peer, first_line_at, lines


@python_case("flood-delay", covers=["LIMIT-4", "LIMIT-5"], needs=["flood-rate"], quote=[
    "the server MUST NOT handle more than `flood-burst + flood-rate × t` lines of one connection in any "
    "interval of t seconds. Lines beyond that are delayed, not dropped",
    "Empty lines MUST count towards [LIMIT-4] like any other line.",
])
def flood_delay(ctx: CaseContext) -> None:
    """A fresh client registers, then sends flood-burst + m PINGs in one write:
    all are answered, in order (delayed, not dropped). Counting every line it
    sent from its first (PASS, USER, the PINGs), the n-th cannot be handled
    sooner than (n - burst) / rate seconds after that first line was sent, and
    its PONG comes after it is handled: so each PONG is timed from the first
    line and checked against that bound, which no network delay can make a
    conforming server miss. A bucket of burst + 1 lines answers one line
    1 / rate too early: visible when the round trip is shorter than that, so
    the case repeats on fresh connections until one trial's round trip was
    short enough (or FLOOD_TRIALS). Then the same with burst + m empty lines
    and one PING: empty lines count ([LIMIT-5]).

    Waits are derived from the advertised limits: every line may take up to
    (lines sent) / rate (a server may start a connection with an empty
    allowance), plus the round trips the kit measured and --timeout."""
    rate, burst = ctx.hello.flood_rate, ctx.hello.flood_burst
    extra = max(3, min(50, math.ceil(rate * 0.2)))
    # A server may bound the lines waiting for the allowance (`inbound-max`, a HELLO
    # parameter after password): stay within it, counting PASS, USER and the last PING.
    waiting_max = ctx.hello.get("inbound-max")
    if waiting_max > 0:
        ctx.require(waiting_max >= 4, f"inbound-max={waiting_max}: too few lines may wait to see a delay")
        extra = min(extra, waiting_max - 3)
    one_line = 1.0 / rate
    slack = FLOOD_CLOCK_SLACK
    for trial in range(1, FLOOD_TRIALS + 1):
        peer, first_line_at, lines_before = _register_counting(ctx, f"flood{trial}")
        tokens = [f"f{trial}-{i}" for i in range(burst + extra)]
        deadline = first_line_at + ctx.allowance((lines_before + len(tokens)) / rate)
        written_at = time.monotonic()
        peer.send_raw("".join(f"PING {token}\n" for token in tokens).encode())
        first_pong = None
        for index, token in enumerate(tokens):
            pong = peer.expect_line(f"PONG {token}", timeout=max(0.0, deadline - time.monotonic()),
                                    ids=("LIMIT-4",))
            first_pong = first_pong or pong
            counted = lines_before + index + 1
            bound = (counted - burst) / rate
            if pong.at - first_line_at < bound - slack:
                raise ctx.fail(
                    f"PONG {token} no sooner than {bound:.3f} s after the client's first line "
                    f"({counted} lines in all, flood-burst={burst}, flood-rate={rate}: at most "
                    f"{burst} + {rate} × t lines in t seconds)",
                    f"after {pong.at - first_line_at:.3f} s, {bound - (pong.at - first_line_at):.3f} s "
                    f"early (trial {trial})", ids=["LIMIT-4"], who=peer.label,
                    detail=f"Network: {ctx.network.describe()}; this PONG cannot come early because of "
                           "the network, only late.")
        peer.begin_leave()
        peer.finish_leave(time.monotonic() + ctx.allowance(one_line))
        if first_pong.at - written_at < one_line / 2:
            break  # this trial could have seen one line too many

    alice, first_line_at, lines_before = _register_counting(ctx, "alice")
    counted = lines_before + burst + extra + 1
    bound = (counted - burst) / rate
    deadline = first_line_at + ctx.allowance(counted / rate)
    alice.send_raw(b"\n" * (burst + extra) + b"PING after-empties\n")
    last = alice.expect_line("PONG after-empties", timeout=max(0.0, deadline - time.monotonic()),
                             ids=("LIMIT-5",))
    if last.at - first_line_at < bound - slack:
        raise ctx.fail(f"PONG no sooner than {bound:.3f} s after the client's first line ({counted} lines "
                       f"counting {burst + extra} empty ones)",
                       f"after {last.at - first_line_at:.3f} s", ids=["LIMIT-5", "LIMIT-4"], who="alice")
    alice.quiet()


#: What the kit may assume the operating systems (the server's send buffer, its
#: own small receive buffer, anything on the path) hold between a server and a
#: client that stopped reading, beyond outbound-max: SPEC.md [LIMIT-20]. Linux
#: grows a send buffer it is left to tune up to 4 MiB (tcp_wmem); twice that
#: leaves room for the path. Sent this much more than outbound-max with no
#: LEAVE, the server has not dropped the client as [LIMIT-6] says.
KERNEL_ALLOWANCE = 8 * 1024 * 1024
#: The stopped reader's SO_RCVBUF, set before it connects (the kernel rounds it
#: up to its minimum): the kit's own side holds next to nothing.
STOPPED_RECEIVE_BUFFER = 4096
#: Seconds the slow-reader case spends sending at most; if the flood rate keeps
#: it from sending outbound-max + KERNEL_ALLOWANCE by then and no LEAVE came,
#: the verdict is inconclusive, not a failure.
SLOW_READER_SEND_TIME = 18.0
#: The most MSG lines of the case on their way to any one reader of the kit
#: (see slow_reader); fewer when half of outbound-max holds fewer.
MOST_LINES_IN_FLIGHT = 64


@python_case("slow-reader", covers=["LIMIT-6", "ORDER-6", "LEAVE-3", "ORDER-5"], needs=["outbound-max"],
             quote=[
    "A client that stops reading MUST NOT delay delivery to any other client",
    "the server MUST stop queuing for that client, close its connection (it MAY first try to send "
    "`ERR SLOW_CONSUMER` without waiting), and send `LEAVE <name> slow` to the others.",
])
def slow_reader(ctx: CaseContext) -> None:
    """One client stops reading while others send long MSGs. The others keep
    receiving everything, in order, with no pause longer than the measured
    round trip and --timeout allow; the reader that stopped is dropped with
    `LEAVE name slow`; what it finally reads ends with the connection closed
    (an ERR before that, if any, is SLOW_CONSUMER).

    Fair to the server, whatever its buffers and the network:
    - the stopped reader shrinks its own receive buffer before connecting, and
      sends a PONG now and then so that keepalive ([KEEP-1]) does not drop it;
    - the kit's own readers never fall behind: a sender waits while a few
      lines (at most half of outbound-max) are on their way to any reader, so
      the server has no reason to drop one of them ([LIMIT-6] would be right to);
    - the senders go on until the LEAVE, or until they have sent
      outbound-max + KERNEL_ALLOWANCE bytes to the stopped reader (what SPEC.md
      [LIMIT-20] lets the kit assume the kernels hold): no LEAVE by then fails
      [LIMIT-6]. If the flood rate keeps them from sending that much within
      SLOW_READER_SEND_TIME, the verdict is inconclusive."""
    from conformance.outcome import Inconclusive

    budget = connection_budget(ctx, 2 + MOST_SENDERS)
    ctx.require(budget >= 3, f"needs 3 clients at once, {CONNECTION_SPARE} below each connection limit")
    sender_count = budget - 2
    hello = ctx.hello
    outbound_max = hello.outbound_max
    rate = hello.flood_rate * 0.8 if hello.flood_rate else 0.0
    if rate:
        planned = (outbound_max + KERNEL_BUFFERING) / (sender_count * rate * hello.line_max)
        ctx.require(planned <= SLOW_READER_SEND_TIME,
                    f"at flood-rate={hello.flood_rate} lines/s, {sender_count} senders would need about "
                    f"{planned:.0f} s to overflow outbound-max={outbound_max} and the kernels' usual buffers")
    slow = ctx.peer("slow", receive_buffer=STOPPED_RECEIVE_BUFFER)
    ctx.register("slow", peer=slow)
    slow.tolerate_cut = True  # the server may cut a line short when it drops it
    watcher = ctx.register("watcher")
    senders = [ctx.register(f"s{i}") for i in range(sender_count)]
    readers = [watcher] + senders
    for index, peer in enumerate(readers):
        for later in readers[index + 1:]:
            peer.expect_line(f"JOIN {later.name}")
    slow_name = slow.name
    text = "z" * max(1, min(hello.line_max - len("MSG 000000 \n"), outbound_max // 8))
    line_bytes = len(f"MSG {senders[0].name} 000000 {text}\n")  # as the server sends it
    window = max(1, min(MOST_LINES_IN_FLIGHT, outbound_max // (2 * line_bytes)))
    must_drop_after = outbound_max + KERNEL_ALLOWANCE
    gap_allowed = ctx.allowance(1.0 / rate if rate else 0.0)

    state = threading.Lock()
    # The MSGs of this case each reader has read, its own echoes left out: a sender's own
    # echo is [MSG-2]'s business, and a server without it must not stall this case.
    received = {peer.label: 0 for peer in readers}
    sent_by = {peer.label: 0 for peer in readers}  # the watcher sends none
    sent = {"lines": 0, "bytes": 0, "stopped_at": math.inf}

    def owed(reader: Peer) -> int:
        """MSGs sent by the others that `reader` has not read yet (call under `state`)."""
        return sent["lines"] - sent_by[reader.label] - received[reader.label]
    gone = threading.Event()  # LEAVE slow seen
    send_until = time.monotonic() + SLOW_READER_SEND_TIME

    failed = threading.Event()  # one of the clients has failed: the others stop too

    def done_waiting() -> bool:
        """LEAVE seen; or sending stopped (budget or time) and everything sent had time to arrive."""
        return gone.is_set() or failed.is_set() or time.monotonic() > sent["stopped_at"] + gap_allowed

    def stopping_all_on_failure(function: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                function()
            except BaseException:
                failed.set()
                raise
        return run

    def take_turn(sender: Peer) -> int | None:
        """The number of `sender`'s next MSG, if the window and the budget allow one now."""
        with state:
            now = time.monotonic()
            if sent["stopped_at"] < math.inf or gone.is_set():
                return None
            if now > send_until or sent["bytes"] >= must_drop_after:
                sent["stopped_at"] = now
                return None
            if max(owed(reader) for reader in readers) >= window:
                return None
            sent["lines"] += 1
            sent["bytes"] += line_bytes
            sent_by[sender.label] += 1
            return sent_by[sender.label] - 1

    def follow(reader: Peer, event: Event, last_line: float) -> float:
        """After one short read: count the case's MSGs, see the LEAVEs, and fail [ORDER-6]
        on a pause longer than allowed while lines are owed to this reader. Returns when
        the reader last got a line (or now, if nothing is owed)."""
        if isinstance(event, Closed):
            raise reader.fail("to keep receiving while one client does not read", event, ids=("ORDER-6",))
        if isinstance(event, Line):
            fields = event.text.split(" ", 2)
            if fields[0] == "MSG" and fields[1] != reader.name:
                with state:
                    received[reader.label] += 1
            elif fields[0] == "LEAVE" and fields[1] == slow_name:
                gone.set()
            elif fields[0] == "LEAVE" and fields[1] == reader.name:
                raise CheckFailed(f"{reader.label} to stay: it kept reading, with at most {window} lines of "
                                  f"the case on their way to it (under half of outbound-max={outbound_max})",
                                  quote_line(event.text), ids=("LIMIT-6",), who=reader.label)
            return event.at
        with state:
            missing = owed(reader)
        if missing and time.monotonic() - last_line > gap_allowed:
            raise CheckFailed("lines to keep coming while one client does not read",
                              f"nothing for {gap_allowed:.1f} s while {missing} lines were owed to it",
                              ids=("ORDER-6",), who=reader.label)
        return last_line if missing else time.monotonic()

    def send_and_read(index: int) -> None:
        peer, pacer = senders[index], Pacer(ctx)
        last_line = time.monotonic()
        while not done_waiting():
            wait = 0.05  # for a line, unless the pacer says the next MSG may go sooner
            if pacer.time_to_next() == 0:
                number = take_turn(peer)
                if number is not None:
                    peer.send_line(f"MSG {number:06d} {text}")
                    pacer.take()
                    wait = min(wait, pacer.time_to_next())
            else:
                wait = min(wait, pacer.time_to_next())
            last_line = follow(peer, peer.next_event(wait, log_timeout=False), last_line)
        if gone.is_set():
            peer.barrier(ids=("ORDER-6",))

    def watch() -> None:
        expected_next = {sender.name: 0 for sender in senders}
        last_line = time.monotonic()
        while not done_waiting():
            event = watcher.next_event(0.05, log_timeout=False)
            if isinstance(event, Line):
                fields = event.text.split(" ", 3)
                if fields[0] == "MSG" and fields[1] in expected_next:
                    if int(fields[2]) != expected_next[fields[1]]:
                        raise CheckFailed(f"MSG {fields[1]} {expected_next[fields[1]]:06d} next",
                                          quote_line(event.text), ids=("ORDER-5",), who="watcher")
                    expected_next[fields[1]] += 1
                elif fields[0] == "LEAVE" and fields[1] == slow_name:
                    if event.text != f"LEAVE {slow_name} slow":
                        raise CheckFailed(f"'LEAVE {slow_name} slow'", quote_line(event.text),
                                          ids=("LIMIT-6", "LEAVE-3"), who="watcher")
                else:
                    raise CheckFailed("MSGs of this case", quote_line(event.text), who="watcher")
            last_line = follow(watcher, event, last_line)

    def stay_silent_but_alive() -> None:
        # PONGs need no reply, so a client that never reads can still show it is alive.
        every = max(0.2, hello.ping_interval / 3) if hello.ping_interval else 1.0
        next_pong = time.monotonic() + every
        while not done_waiting():
            gone.wait(0.1)  # the kit's own pacing; the loop ends as soon as the others are done
            if time.monotonic() >= next_pong:
                slow.send_line("PONG still-here")
                next_pong += every

    senders_work = [lambda i=i: send_and_read(i) for i in range(sender_count)]
    ctx.run_parallel([stopping_all_on_failure(f) for f in (watch, stay_silent_but_alive, *senders_work)],
                     timeout=SLOW_READER_SEND_TIME + 3 * gap_allowed + 5)
    if not gone.is_set():
        expected = (f"LEAVE {slow_name} slow once more than outbound-max={outbound_max} bytes wait for it, "
                    f"plus at most {KERNEL_ALLOWANCE // (1024 * 1024)} MiB in the kernels' buffers "
                    "(SPEC.md [LIMIT-20])")
        actual = f"no LEAVE after {sent['bytes']} bytes sent to it"
        if sent["bytes"] >= must_drop_after:
            raise ctx.fail(expected, actual, ids=["LIMIT-6"], who="watcher")
        raise Inconclusive(expected, f"{actual} in {SLOW_READER_SEND_TIME:g} s",
                           f"at flood-rate={hello.flood_rate} the kit could send only {sent['bytes']} of the "
                           f"{must_drop_after} bytes it may assume the server and the kernels hold before "
                           "the LEAVE", ids=["LIMIT-6"], who="watcher")
    # What the stopped reader finally reads: lines, maybe ERR SLOW_CONSUMER, then the close.
    # The kernels may hold much for it: wait as long as lines keep coming.
    while True:
        event = slow.next_event(ctx.allowance(), skip_outsiders=False, answer_pings=False, log_timeout=False)
        if isinstance(event, Closed):
            return
        if isinstance(event, TimedOut):
            raise ctx.fail("the stopped reader's connection to be closed", "still open", ids=["LIMIT-6"],
                           who="slow")
        if event.text.startswith("ERR ") and not event.text.startswith("ERR SLOW_CONSUMER "):
            raise slow.fail("'ERR SLOW_CONSUMER ...' or no ERR before the close", event, ids=("LIMIT-6",))


@python_case("shutdown", covers=["LIMIT-7", "STATE-2"], quote=[
    "On shutdown the server MUST send `ERR SHUTTING_DOWN` to every open connection, deliver what it can of "
    "their queued lines within one second, and close them all.",
])
def shutdown(ctx: CaseContext) -> None:
    """The kit starts a server of its own, connects a registered and an
    unregistered client, and stops the server: both get ERR SHUTTING_DOWN and
    are closed within about a second. (Applies only when the kit starts the
    reference server itself: it will not stop someone else's server.)"""
    server = ctx.start_private_server()
    alice = ctx.peer("alice", address=server.address)
    ctx.register("alice", peer=alice)
    bob = ctx.peer("bob", address=server.address)
    expect_hello(bob)
    alice.send_line("MSG before the end")
    alice.expect_line(f"MSG {alice.name} before the end")
    stopper = threading.Thread(target=server.shutdown, name="shutdown-private-server", daemon=True)
    stopper.start()

    def told_and_closed(peer: Peer) -> Callable[[], None]:
        def check() -> None:
            error = peer.expect_error("SHUTTING_DOWN", ids=("LIMIT-7",))
            closed = peer.expect_closed(timeout=1.0 + ctx.timeout, ids=("LIMIT-7", "STATE-2"))
            del error, closed
        return check

    try:
        ctx.run_parallel([told_and_closed(alice), told_and_closed(bob)], timeout=ctx.timeout * 2 + 5)
    finally:
        stopper.join(15)


# -- 12. Security ----------------------------------------------------------------------------------------


@python_case("tls-session", covers=["SEC-1"], needs=["tls"], quote=[
    "A server MAY offer TLS (version 1.2 or later; 1.3, RFC 8446, RECOMMENDED) on a separate port; "
    "chat/1 runs unchanged inside it.",
])
def tls_session(ctx: CaseContext) -> None:
    """Over TLS 1.3, the protocol runs unchanged: HELLO, USER, MSG, USERS, LEAVE."""
    alice = ctx.register("alice")
    version = alice.tls_version()
    if version != "TLSv1.3":
        raise ctx.fail("TLS 1.3 (RFC 8446)", str(version), ids=["SEC-1"], who="alice")
    alice.send_line("MSG over TLS")
    alice.expect_line(f"MSG {alice.name} over TLS", ids=("SEC-1",))
    alice.send_line("USERS")
    alice.expect_names([alice.name], ids=("SEC-1",))
    alice.send_line("LEAVE")
    alice.expect_line(f"LEAVE {alice.name} quit", ids=("SEC-1",))
    alice.expect_closed(ids=("SEC-1",))


# The cases of SPEC.md's clarifications (issue 9) live beside this module, one
# module per theme; importing them here registers them with everything above.
from conformance import cases_closing, cases_keepalive  # noqa: E402,F401

"""The file-sharing cases (SPEC.md section 11a) a transcript cannot express.

Data connections carry a token from an ACCEPTED line and then raw bytes,
which the transcript format has no step for; limits and expiry need numbers
from HELLO and a clock. The rules of conformance/cases.py hold here too:
random names, no sleeping for the server (a wait is for a line, with a
deadline), a limit tested only when small enough, lower bounds where the
spec promises a delay and generous upper bounds where it promises an action.

Every case needs `file-max` > 0, except `file-verbs`, which also checks that
a server without file sharing answers the verbs as unknown ([FILE-2]).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import time

from conformance.case import CaseContext, python_case
from conformance.outcome import CheckFailed
from conformance.peer import Line, Peer, TimedOut

#: The HELLO parameters of [FILE-1], in the order they must come, last of all.
FILE_PARAMETERS = ("file-max", "file-per-user", "file-per-server", "file-expiry")
#: The longest file-expiry worth waiting for (a timer case).
LONGEST_EXPIRY = 10
#: The most offers or users a limit case makes.
MOST_OFFERS = 50
#: The fixed-window case offers a file at least this large: more than the
#: kernels between two loopback clients and a server hold (a few MB each
#: side), so a server that buffers the whole file cannot pass for one that
#: keeps a window.
WINDOW_CASE_SIZE = 32 * 1024 * 1024
#: Seconds with no progress after which a sender that the server stopped
#: reading counts as held back (the fixed-window case).
STALL = 1.0
#: The most a relay of the small files here may take (an action, generously).
RELAY_BOUND = 20.0


# -- helpers -----------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DataLink:
    """One data connection ([FILE-15]): HELLO, `DATA <token>`, READY, then raw bytes.

    It borrows a Peer for the connection (TLS when the chat is in TLS, the
    transcript, the clean-up) and reads the socket itself: after READY the
    bytes are the file's, not lines, and must not be judged as server lines.
    """

    def __init__(self, ctx: CaseContext, alias: str, address: tuple[str, int] | None = None) -> None:
        self.ctx = ctx
        self.peer: Peer = ctx.peer(alias, address=address)
        self.peer.expect_match(r"HELLO chat/1 .*", ids=("HELLO-1", "FILE-15"))
        self.sock = self.peer._sock
        if isinstance(self.sock, ssl.SSLSocket):
            # Inside TLS an orderly end is close_notify ([FILE-15]); an end without it (a
            # cut, a reset) must not read as one.
            self.sock.suppress_ragged_eofs = False
        self.label = self.peer.label
        self.buffer = bytearray()

    def note(self, text: str) -> None:
        self.ctx.transcript.record(self.label, "note", note=text)

    def present(self, token: str) -> None:
        self.peer.send_line(f"DATA {token}")
        self.peer.carries_bytes = True  # from here on, file data: no LEAVE at the clean-up

    def _recv(self, deadline: float) -> bytes | None:
        """Some bytes, b"" at EOF, None at the deadline; ConnectionResetError passes."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            return None

    def expect_ready(self, sender: str, tid: str, size: int, ids: tuple[str, ...]) -> None:
        """The READY line, and nothing before it (HELLO was read already)."""
        expected = f"READY {sender} {tid} {size}"
        deadline = time.monotonic() + self.ctx.timeout
        while b"\n" not in self.buffer:
            try:
                data = self._recv(deadline)
            except OSError as error:
                raise CheckFailed(repr(expected), f"connection closed ({error})", ids=ids,
                                  who=self.label) from None
            if data is None:
                raise CheckFailed(repr(expected), f"timeout after {self.ctx.timeout:g} s", ids=ids,
                                  who=self.label)
            if not data:
                raise CheckFailed(repr(expected), "connection closed", ids=ids, who=self.label)
            self.buffer += data
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        self.ctx.transcript.record(self.label, "recv", line + b"\n")
        if line.decode("utf-8", "replace") != expected:
            raise CheckFailed(repr(expected), repr(line.decode("utf-8", "replace")), ids=ids, who=self.label)

    def read_to_end(self, timeout: float) -> tuple[bytes, str]:
        """Every byte until the server ends the connection: (bytes, "EOF" | "reset" | "timeout")."""
        deadline = time.monotonic() + timeout
        data = bytearray(self.buffer)
        self.buffer.clear()
        how = "timeout"
        while True:
            try:
                chunk = self._recv(deadline)
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                how = "reset"
                break
            except (OSError, ssl.SSLError) as error:
                how = f"reset ({error})"
                break
            if chunk is None:
                break
            if not chunk:
                how = "EOF"
                break
            data += chunk
        self.note(f"{len(data)} bytes of file data, then {how}")
        return bytes(data), how

    def send(self, data: bytes) -> None:
        self.note(f"sends {len(data)} bytes of file data")
        self.sock.settimeout(self.ctx.timeout * 5)
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError) as error:
            self.note(f"send failed: {error}")  # the server may cut a sender that sends too much

    def end(self) -> None:
        """The sender's end of stream after the file ([FILE-15])."""
        self.note("closes its sending side")
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.peer.close()


def two_users(ctx: CaseContext) -> tuple[Peer, Peer]:
    alice = ctx.register("alice")
    bob = ctx.register("bob")
    alice.expect_line(f"JOIN {bob.name}")
    return alice, bob


def offer(alice: Peer, bob: Peer, tid: str, data: bytes, filename: str = "file.bin") -> None:
    """alice offers bob `data` ([FILE-4]); both see the OFFER."""
    line = f"OFFER {alice.name} {bob.name} {tid} {len(data)} {sha256(data)} {filename}"
    alice.send_line(f"OFFER {bob.name} {tid} {len(data)} {sha256(data)} {filename}")
    bob.expect_line(line, ids=("FILE-4",))
    alice.expect_line(line, ids=("FILE-4",))


def accept(alice: Peer, bob: Peer, tid: str) -> tuple[str, str]:
    """bob accepts ([FILE-7]); returns (alice's token, bob's token)."""
    bob.send_line(f"ACCEPT {alice.name} {tid}")
    pattern = rf"ACCEPTED {re.escape(alice.name)} {tid} ([\x21-\x7e]{{1,64}})"
    sender_token = re.fullmatch(pattern, alice.expect_match(pattern, ids=("FILE-7",)).text).group(1)
    recipient_token = re.fullmatch(pattern, bob.expect_match(pattern, ids=("FILE-7",)).text).group(1)
    if sender_token == recipient_token:
        raise CheckFailed("a token of its own for each party", f"both got {sender_token}", ids=("FILE-7",))
    return sender_token, recipient_token


def open_links(ctx: CaseContext, alice: Peer, bob: Peer, tid: str, size: int,
               tokens: tuple[str, str], address: tuple[str, int] | None = None) -> tuple[DataLink, DataLink]:
    """Both data connections (to `address`, a private server's, if given), the sender's
    first; both get READY ([FILE-15])."""
    sending = DataLink(ctx, "alice-data", address)
    sending.present(tokens[0])
    receiving = DataLink(ctx, "bob-data", address)
    receiving.present(tokens[1])
    receiving.expect_ready(alice.name, tid, size, ids=("FILE-15",))
    sending.expect_ready(alice.name, tid, size, ids=("FILE-15",))
    return sending, receiving


def send_through(sending: DataLink, receiving: DataLink, data: bytes) -> tuple[bytes, str]:
    """The sender sends `data` and ends; what the recipient gets, and how it ends. Closes both."""
    try:
        sending.send(data)
        sending.end()
        return receiving.read_to_end(RELAY_BOUND)
    finally:
        sending.close()
        receiving.close()


def expect_ended(alice: Peer, bob: Peer, tid: str, reason: str, ids: tuple[str, ...],
                 timeout: float | None = None) -> None:
    """Both parties get `ENDED <alice> <tid> <reason>` next. While waiting, each
    reads in turn, so both answer the server's keepalive PINGs ([PING-4])."""
    line = f"ENDED {alice.name} {tid} {reason}"
    deadline = time.monotonic() + (alice.timeout if timeout is None else timeout)
    waiting = [alice, bob]
    while waiting:
        for peer in list(waiting):
            last = time.monotonic() >= deadline
            event = peer.next_event(timeout=alice.timeout if last else 0.1, log_timeout=last)
            if isinstance(event, TimedOut) and not last:
                continue
            if not (isinstance(event, Line) and event.text == line):
                raise peer.fail(repr(line), event, ids)
            waiting.remove(peer)


# -- advertising ----------------------------------------------------------------------------


@python_case("file-hello", covers=["FILE-1"], needs=["file-max"], quote=[
    "A server that relays files MUST advertise, after every other parameter of HELLO ([GRAM-3]) and in "
    "this order: `file-max`",
])
def file_hello(ctx: CaseContext) -> None:
    """The four file parameters come last in HELLO, in order, each > 0, on the HELLO
    of a client that then registers (the same on every connection)."""
    alice = ctx.register("alice")
    hello = alice.hello or ctx.hello
    order = hello.order
    tail = tuple(order[-len(FILE_PARAMETERS):])
    if tail != FILE_PARAMETERS:
        raise ctx.fail("HELLO ending with " + " ".join(f"{p}=<n>" for p in FILE_PARAMETERS),
                       "HELLO parameters in the order " + " ".join(order), ids=["FILE-1"])
    zero = [p for p in FILE_PARAMETERS if hello.get(p) <= 0]
    if zero:
        raise ctx.fail("each file parameter > 0", hello.describe(), ids=["FILE-1"])
    alice.quiet()


@python_case("file-verbs", covers=["FILE-2"], quote=[
    "A server that advertises `file-max` > 0 MUST treat OFFER, ACCEPT, REJECT, CANCEL, RECEIVED and DATA "
    "as known verbs",
])
def file_verbs(ctx: CaseContext) -> None:
    """With file-max > 0 the verbs are known (a bare one is BAD_SYNTAX); without, UNKNOWN_COMMAND."""
    alice = ctx.register("alice")
    files = ctx.hello.get("file-max") > 0
    for verb in ("OFFER", "ACCEPT", "REJECT", "CANCEL", "RECEIVED", "DATA"):
        alice.send_line(verb)
        alice.expect_error("BAD_SYNTAX" if files else "UNKNOWN_COMMAND", ids=("FILE-2",))
    alice.quiet()


# -- a whole transfer ---------------------------------------------------------------------------


def relay(ctx: CaseContext, data: bytes, tid: str) -> tuple[Peer, Peer, Peer]:
    """alice -> bob through the server, carol watching; returns (alice, bob, carol) once
    bob has every byte and the orderly end, before his verdict."""
    alice, bob = two_users(ctx)
    carol = ctx.register("carol")
    alice.expect_line(f"JOIN {carol.name}")
    bob.expect_line(f"JOIN {carol.name}")
    offer(alice, bob, tid, data)
    bob.quiet(ids=("FILE-8",))  # nothing but the offer before he accepts
    tokens = accept(alice, bob, tid)
    sending, receiving = open_links(ctx, alice, bob, tid, len(data), tokens)
    got, how = send_through(sending, receiving, data)
    if how != "EOF" or got != data:
        actual = f"{len(got)} bytes ({'the same' if got == data else 'different'}), then {how}"
        raise ctx.fail(f"the {len(data)} bytes sent, unchanged, then an orderly end", actual,
                       ids=["FILE-15"], who=receiving.label)
    return alice, bob, carol


@python_case("file-relay", covers=["FILE-15", "FILE-18", "FILE-11", "FILE-14", "FILE-8"],
             needs=["file-max"], quote=[
    "The server MUST NOT answer it until the other party's data connection has presented its token too, "
    "and MUST then send `READY <sender> <tid> <size>` on both.",
    "MUST end the transfer with reason `done` (verdict `ok`) or `corrupt`.",
])
def file_relay(ctx: CaseContext) -> None:
    """A file goes from alice to bob byte for byte; bob's verdict ends it `done` for
    both; carol, online all along, sees nothing of it."""
    data = os.urandom(min(256 * 1024, ctx.hello.get("file-max")))
    alice, bob, carol = relay(ctx, data, "r1")
    bob.send_line(f"RECEIVED {alice.name} r1 ok")
    line = f"ENDED {alice.name} r1 done"
    alice.expect_line(line, ids=("FILE-18", "FILE-11"))
    bob.expect_line(line, ids=("FILE-18", "FILE-11"))
    carol.quiet(ids=("FILE-14",))
    alice.quiet()
    bob.quiet()


@python_case("file-verdict-corrupt", covers=["FILE-18", "FILE-11"], needs=["file-max"], quote=[
    "MUST end the transfer with reason `done` (verdict `ok`) or `corrupt`.",
])
def file_verdict_corrupt(ctx: CaseContext) -> None:
    """The recipient's `corrupt` verdict ends the transfer `corrupt` for both."""
    data = os.urandom(min(4096, ctx.hello.get("file-max")))
    alice, bob, _ = relay(ctx, data, "v1")
    bob.send_line(f"RECEIVED {alice.name} v1 corrupt")
    expect_ended(alice, bob, "v1", "corrupt", ids=("FILE-18",))
    alice.quiet()
    bob.quiet()


def failed_relay(ctx: CaseContext, tid: str, size: int, sent: bytes, reason: str) -> None:
    alice, bob = two_users(ctx)
    data = bytes(size)
    offer(alice, bob, tid, data)
    tokens = accept(alice, bob, tid)
    sending, receiving = open_links(ctx, alice, bob, tid, size, tokens)
    got, how = send_through(sending, receiving, sent)
    if (how == "EOF" and len(got) == size) or len(got) > size:
        raise ctx.fail(f"a cut: a reset, or an end before {size} bytes (the relay failed)",
                       f"{len(got)} bytes, then {how}", ids=["FILE-15"], who=receiving.label)
    expect_ended(alice, bob, tid, reason, ids=("FILE-15",), timeout=RELAY_BOUND)
    alice.quiet()
    bob.quiet()


@python_case("file-sender-short", covers=["FILE-15"], needs=["file-max"], quote=[
    "otherwise it MUST cut it (a reset, or an end before `size` bytes) and end the transfer `aborted`",
])
def file_sender_short(ctx: CaseContext) -> None:
    """The sender ends its stream 10 bytes early: the recipient's data connection is
    cut, not ended in order, and both are told `aborted`."""
    size = min(64 * 1024, ctx.hello.get("file-max"))
    ctx.require(size > 10, "file-max is too small for this case")
    failed_relay(ctx, "s1", size, bytes(size - 10), "aborted")


@python_case("file-sender-oversize", covers=["FILE-15"], needs=["file-max"], quote=[
    "otherwise it MUST cut it (a reset, or an end before `size` bytes) and end the transfer `aborted`",
])
def file_sender_oversize(ctx: CaseContext) -> None:
    """The sender sends 100 bytes more than it offered: the recipient gets no more
    than the size, its data connection is cut, and both are told `oversize`."""
    size = min(64 * 1024, ctx.hello.get("file-max"))
    failed_relay(ctx, "o1", size, bytes(size + 100), "oversize")


@python_case("file-not-flood-controlled", covers=["FILE-19"], needs=["file-max", "flood-rate"], quote=[
    "Flood control ([LIMIT-4]) MUST NOT apply to the bytes after READY",
])
def file_not_flood_controlled(ctx: CaseContext) -> None:
    """A file of nothing but LF bytes: as lines, flood control would take minutes
    over it; as a file it is relayed at once."""
    lines = max(ctx.hello.flood_rate * 60, 1024)  # a minute of lines at the flood rate
    size = min(lines, ctx.hello.get("file-max"))
    ctx.require(size > ctx.hello.flood_burst + ctx.hello.flood_rate * RELAY_BOUND,
                "file-max is too small to tell a relay from a flood-controlled one")
    data = b"\n" * size
    alice, bob, carol = relay(ctx, data, "n1")
    bob.send_line(f"CANCEL {alice.name} n1")
    expect_ended(alice, bob, "n1", "cancelled", ids=("FILE-10",))
    carol.quiet(ids=("FILE-14",))


@python_case("file-token-once", covers=["FILE-16"], needs=["file-max"], quote=[
    "`DATA <token>` whose token is not valid (unknown, used already, of a transfer that ended) MUST be "
    "answered with `ERR BAD_TOKEN`, after which the server closes the connection.",
])
def file_token_once(ctx: CaseContext) -> None:
    """A token works once: of two data connections that present it, one is refused and
    closed (whichever the server reads second: the two race); after the transfer ends,
    the unused token of the other side is refused too."""
    alice, bob = two_users(ctx)
    offer(alice, bob, "k1", b"hello")
    sender_token, recipient_token = accept(alice, bob, "k1")
    links = [ctx.peer("bob-data"), ctx.peer("bob-data-again")]
    for link in links:
        link.expect_match(r"HELLO chat/1 .*")
        link.send_line(f"DATA {recipient_token}")
    deadline = time.monotonic() + ctx.timeout
    refused = None
    while refused is None:
        for link in links:
            last = time.monotonic() >= deadline
            event = link.next_event(timeout=ctx.timeout if last else 0.1, log_timeout=last)
            if isinstance(event, TimedOut) and not last:
                continue
            if not (isinstance(event, Line) and re.fullmatch(r"ERR BAD_TOKEN .+", event.text)):
                raise link.fail("'ERR BAD_TOKEN ...' on one of the two connections", event, ("FILE-16",))
            refused = link
            break
    refused.expect_closed(ids=("FILE-16",))
    bob.send_line(f"CANCEL {alice.name} k1")
    expect_ended(alice, bob, "k1", "cancelled", ids=("FILE-10",))
    for link in links:
        link.close()
    late = ctx.peer("alice-data")
    late.expect_match(r"HELLO chat/1 .*")
    late.send_line(f"DATA {sender_token}")
    late.expect_error("BAD_TOKEN", ids=("FILE-16",))
    late.expect_closed(ids=("FILE-16",))


# -- limits -------------------------------------------------------------------------------------


@python_case("file-limits", covers=["FILE-5"], needs=["file-max", "file-per-user", "file-per-server"], quote=[
    "The server MUST check an OFFER in this order and answer the first problem only, the session going on",
])
def file_limits(ctx: CaseContext) -> None:
    """FILE_TOO_LARGE past file-max; TOO_MANY_TRANSFERS past file-per-user; with
    several senders, TRANSFERS_FULL past file-per-server. Every refused offer
    leaves the session going."""
    per_user, per_server = ctx.hello.get("file-per-user"), ctx.hello.get("file-per-server")
    ctx.require(per_user <= MOST_OFFERS and per_server <= MOST_OFFERS,
                f"file-per-user={per_user}, file-per-server={per_server}: more offers than this case makes")
    senders_needed = per_server // per_user + 1
    budget = ctx.hello.max_per_address or ctx.hello.max_clients or MOST_OFFERS
    ctx.require(senders_needed + 1 <= min(budget, MOST_OFFERS),
                "the connection limits leave too few clients to fill file-per-server")
    ctx.require(per_user <= per_server, "file-per-user > file-per-server: TOO_MANY_TRANSFERS is unreachable")
    digest = sha256(b"")
    bob = ctx.register("bob")
    alice = ctx.register("alice")
    alice.send_line(f"OFFER {bob.name} big {ctx.hello.get('file-max') + 1} {digest} big.bin")
    alice.expect_error("FILE_TOO_LARGE", ids=("FILE-5",))
    senders = [alice] + [ctx.register(f"sender{i}") for i in range(1, senders_needed)]
    for sender in senders:
        sender.barrier()  # the JOINs of those after it
    offered = 0
    for sender in senders:
        for number in range(per_user):
            if offered == per_server:
                break
            sender.send_line(f"OFFER {bob.name} m{number} 0 {digest} empty.txt")
            sender.expect_match(rf"OFFER {sender.name} {bob.name} m{number} 0 .*", ids=("FILE-5", "FILE-4"))
            offered += 1
    alice.send_line(f"OFFER {bob.name} one 0 {digest} empty.txt")
    alice.expect_error("TOO_MANY_TRANSFERS", ids=("FILE-5",))
    last = senders[-1]
    last.send_line(f"OFFER {bob.name} full 0 {digest} empty.txt")
    last.expect_error("TRANSFERS_FULL", ids=("FILE-5",))
    alice.quiet()
    last.quiet()


@python_case("file-expiry", background=True,
             covers=["FILE-12", "FILE-11"], needs=["file-max", "file-expiry"], quote=[
    "A transfer MUST end with reason `expired` when, `file-expiry` seconds after its OFFER, it is not "
    "accepted;",
    "It MUST NOT expire earlier ([KEEP-4] applies).",
    "ACCEPT, REJECT, CANCEL or RECEIVED from one of its parties naming it MUST be answered with "
    "`ERR OFFER_EXPIRED` rather than `ERR NO_SUCH_TRANSFER`.",
])
def file_expiry(ctx: CaseContext) -> None:
    """An offer nobody answers ends `expired` for both, not before file-expiry
    seconds; answering it afterwards gets OFFER_EXPIRED."""
    expiry = ctx.hello.get("file-expiry")
    ctx.require(expiry <= LONGEST_EXPIRY, f"file-expiry={expiry} s: too long to wait for")
    alice, bob = two_users(ctx)
    offered_at = time.monotonic()
    offer(alice, bob, "e1", b"hello")
    expect_ended(alice, bob, "e1", "expired", ids=("FILE-12",), timeout=expiry + 3)
    waited = time.monotonic() - offered_at
    if waited < expiry - 0.25:
        raise ctx.fail(f"ENDED ... expired no sooner than {expiry} s after the OFFER",
                       f"after {waited:.2f} s", ids=["FILE-12"])
    bob.send_line(f"ACCEPT {alice.name} e1")
    bob.expect_error("OFFER_EXPIRED", ids=("FILE-12",))
    alice.send_line(f"CANCEL {alice.name} e1")
    alice.expect_error("OFFER_EXPIRED", ids=("FILE-12",))


@python_case("file-data-no-timers", background=True,
             covers=["FILE-21"], needs=["file-max", "file-expiry", "register-timeout"],
             quote=[
    "Once its DATA line is accepted, a data connection MUST NOT be sent a keepalive PING nor be timed out "
    "by [KEEP-2] or [KEEP-3]",
])
def file_data_no_timers(ctx: CaseContext) -> None:
    """The sender's data connection waits for its partner longer than the register
    timeout and a keepalive round; READY is still the first thing it gets."""
    hello = ctx.hello
    timers = [hello.register_timeout] if hello.register_timeout else []
    if hello.ping_interval:
        timers.append(hello.ping_interval + hello.ping_timeout)
    ctx.require(bool(timers), "no register-timeout or ping-interval to outlast")
    wait = max(timers) + 1
    ctx.require(wait <= LONGEST_EXPIRY and wait < hello.get("file-expiry"),
                f"waiting {wait} s needs a file-expiry longer than that and timers of at most "
                f"{LONGEST_EXPIRY} s")
    alice, bob = two_users(ctx)
    offer(alice, bob, "d1", b"hello")
    tokens = accept(alice, bob, "d1")
    sending = DataLink(ctx, "alice-data")
    sending.present(tokens[0])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:  # the clients stay alive meanwhile: barriers answer PINGs
        alice.quiet()
        bob.quiet()
        ctx.cancelled.wait(min(0.5, max(0.0, deadline - time.monotonic())))
    receiving = DataLink(ctx, "bob-data")
    receiving.present(tokens[1])
    receiving.expect_ready(alice.name, "d1", 5, ids=("FILE-15",))
    sending.expect_ready(alice.name, "d1", 5, ids=("FILE-21",))
    got, how = send_through(sending, receiving, b"hello")
    if got != b"hello" or how != "EOF":
        raise ctx.fail("b'hello', then an orderly end", f"{got[:20]!r}, then {how}", ids=["FILE-15"])
    bob.send_line(f"RECEIVED {alice.name} d1 ok")
    expect_ended(alice, bob, "d1", "done", ids=("FILE-18",))


@python_case("file-data-not-counted", covers=["FILE-21"], needs=["file-max"], quote=[
    "stops counting against `max-clients` and `max-per-address` ([LIMIT-1], [LIMIT-2]); `file-per-server` "
    "bounds the data connections instead.",
])
def file_data_not_counted(ctx: CaseContext) -> None:
    """On a server of its own with max-clients = max-per-address = 4, alice and
    bob register and open the data connections of a transfer: four connections,
    all let in. Once both have READY (so the server has taken both DATA lines),
    only the two chat connections count: carol's connection is the third, and
    is greeted with HELLO, not SERVER_FULL or TOO_MANY_CONNECTIONS. Then the
    transfer completes. (Needs a server the kit starts: on a shared server the
    limits cannot be reached on purpose.)"""
    limit = 4
    server = ctx.start_private_server(max_clients=limit, max_per_address=limit)
    alice = ctx.register("alice", peer=ctx.peer("alice", address=server.address))
    bob = ctx.register("bob", peer=ctx.peer("bob", address=server.address))
    alice.expect_line(f"JOIN {bob.name}")
    data = b"four connections, two counted"
    offer(alice, bob, "c1", data)
    tokens = accept(alice, bob, "c1")
    sending, receiving = open_links(ctx, alice, bob, "c1", len(data), tokens, address=server.address)
    carol = ctx.peer("carol", address=server.address)
    event = carol.next_event()
    if not (isinstance(event, Line) and event.text.startswith("HELLO ")):
        raise carol.fail(f"HELLO: two chat connections count against max-clients={limit} and "
                         f"max-per-address={limit}, the two data connections no longer do", event,
                         ids=("FILE-21",))
    got, how = send_through(sending, receiving, data)
    if got != data or how != "EOF":
        raise ctx.fail(f"{data!r}, then an orderly end", f"{got[:40]!r}, then {how}", ids=["FILE-15"])
    bob.send_line(f"RECEIVED {alice.name} c1 ok")
    expect_ended(alice, bob, "c1", "done", ids=("FILE-18",))


# -- the chat goes on; the window is fixed ---------------------------------------------------------


@python_case("file-window-and-chat", covers=["FILE-20", "FILE-19", "FILE-10"], needs=["file-max"], quote=[
    "The server MUST hold a fixed window of a transfer's bytes at most, however large the file",
    "The server MUST NOT make any chat line, to anyone (the two parties included), wait behind file data:",
    "`CANCEL <sender> <tid>` from either party MUST end the transfer with reason `cancelled`, whatever its "
    "state, and cut its data connections if they are open ([FILE-15]).",
])
def file_window_and_chat(ctx: CaseContext) -> None:
    """The recipient accepts a large file but reads none of it. The server must stop
    reading the sender once its window (and the kernels' buffers) are full, long
    before the whole file; meanwhile both parties chat as usual. Then the sender
    cancels, and the stalled connections are cut."""
    size = min(ctx.hello.get("file-max"), 2 * WINDOW_CASE_SIZE)
    ctx.require(size >= WINDOW_CASE_SIZE,
                f"file-max={ctx.hello.get('file-max')}: too small to tell a window from the whole file")
    alice, bob = two_users(ctx)
    offer(alice, bob, "big", bytes(size), "big.bin")
    tokens = accept(alice, bob, "big")
    sending, receiving = open_links(ctx, alice, bob, "big", size, tokens)
    try:
        chunk = bytes(256 * 1024)
        written = 0
        sending.sock.setblocking(False)
        last_progress = time.monotonic()
        while written < size and time.monotonic() - last_progress < STALL:
            try:
                count = sending.sock.send(chunk[:size - written])
            except (BlockingIOError, ssl.SSLWantWriteError):
                ctx.cancelled.wait(0.01)
                continue
            except OSError as error:  # the server cut the sender: the checks below say what it did
                sending.note(f"send failed: {error}")
                break
            written += count
            last_progress = time.monotonic()
        sending.note(f"wrote {written} of {size} bytes before the server stopped reading")
        if written >= size:
            raise ctx.fail(f"the server to stop reading the sender well before {size} bytes, while "
                           "the recipient reads nothing", f"it took all {size} bytes", ids=["FILE-20"])
        # The chat is not held up by the stalled transfer, for either party.
        alice.send_line("MSG still here")
        alice.expect_line(f"MSG {alice.name} still here", ids=("FILE-19",))
        bob.expect_line(f"MSG {alice.name} still here", ids=("FILE-19",))
        bob.send_line(f"PM {alice.name} me too")
        alice.expect_line(f"PM {bob.name} {alice.name} me too", ids=("FILE-19",))
        bob.expect_line(f"PM {bob.name} {alice.name} me too", ids=("FILE-19",))
        alice.send_line(f"CANCEL {alice.name} big")
        bob.expect_line(f"ENDED {alice.name} big cancelled", ids=("FILE-10",))
        alice.expect_line(f"ENDED {alice.name} big cancelled", ids=("FILE-10",))
        sending.sock.setblocking(True)
        _, how = receiving.read_to_end(RELAY_BOUND)
        if how == "timeout":
            raise ctx.fail("the recipient's data connection cut after CANCEL", "still open",
                           ids=["FILE-10"], who=receiving.label)
    finally:
        sending.close()
        receiving.close()

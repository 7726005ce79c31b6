"""The benchmark scenarios. Each function does ONE run of its scenario.

A run returns a list of (case name, metrics) pairs; bench/__main__.py repeats
runs and takes medians. Every run starts its own server (unless --server was
given), so one run cannot inherit another's memory or backlog, and stops it
before returning, whatever happened.

Shared vocabulary:
- clients: connections registered in the room; every one receives every MSG.
- senders: the first few clients; they also send.
- lost: MSG lines a client that kept reading should have received and did not,
  summed over clients. It must be 0. It is checked after a PING barrier, so
  "not yet arrived" cannot be mistaken for "lost".
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gc
import random
import string
import time
import zlib
from collections.abc import Callable

from bench.floor import scenario_send_floor
from bench.net import Barrier, BenchTimeout, Client, EventLoop, open_clients
from bench.serverproc import (
    CpuMeter,
    ExternalServer,
    ReferenceServer,
    Server,
    read_thread_count,
)
from bench.stats import (
    NS_PER_S,
    FixedRateSchedule,
    latency_summary,
    message_text,
    parse_msg_line,
)

Case = tuple[str, dict]

#: Limits switched off on a reference server started by the benchmark (see
#: start_server); --max-clients is set per run to the clients it needs.
REFERENCE_SERVER_FLAGS = [
    "--max-per-address", "0",
    "--flood-rate", "0",
    "--ping-interval", "0",
    "--register-timeout", "0",
]


class ScenarioError(RuntimeError):
    """A run could not produce its figures (server refused clients, ...)."""


@dataclasses.dataclass
class Settings:
    """Everything the command line decides (see bench/__main__.py)."""

    server: tuple[str, int] | None = None  # None: start the reference server
    server_pid: int | None = None
    server_cpus: set[int] | None = None  # CPUs for a reference server (None: any)
    # fan-out
    fanout_clients: tuple[int, ...] = (100, 1000)
    fanout_senders: int = 10
    fanout_seconds: float = 5.0
    window: int | None = None  # None: derived from the advertised outbound-max
    # latency: (clients, total messages per second)
    latency_cases: tuple[tuple[int, float], ...] = ((100, 600.0), (1000, 60.0))
    latency_senders: int = 10
    latency_seconds: float = 5.0
    # connections
    connection_steps: tuple[int, ...] = (1000, 2000, 5000, 10000)
    # cluster-connections (bench/cluster.py): idle clients over two servers
    cluster_clients: int = 20000
    # Connections in flight at once. With a JOIN for everyone on each arrival,
    # one registration waits for a flusher pass over the whole room, so a
    # shallow pipeline measures that wait rather than how many connections
    # per second the server takes; a burst of 1,000 measures the latter.
    connect_concurrency: int = 1000
    step_timeout_s: float = 180.0
    # slow consumer
    slow_clients: int = 100
    slow_rate: float = 600.0
    slow_seconds: float = 5.0
    slow_max_extra_s: float = 30.0  # keep going this long for the stalled client to be dropped
    stalled_receive_buffer: int = 4096
    slow_outbound_max: int | None = None  # None: the server's default
    # file (bench/files.py): one file's size, the latency room beside the
    # transfers, and how many transfers run at once meanwhile
    file_size: int = 200 * 1000 * 1000
    file_latency_case: tuple[int, float] = (100, 600.0)
    file_transfers: int = 2
    # paces (bytes a second per transfer) measured besides "as fast as they go":
    # 100 MB/s is what a 1 Gbit/s link carries
    file_paces: tuple[float, ...] = (100e6,)
    # send floor: timed passes per case (60 a second)
    floor_passes: int = 120
    # deadlines for the non-measured phases
    setup_timeout_s: float = 120.0
    drain_timeout_s: float = 60.0
    # keep raw latencies of the last run per case, for --plot
    keep_latencies: dict = dataclasses.field(default_factory=dict)


# ------------------------------------------------------------------ helpers


def start_server(settings: Settings, max_clients: int, extra: list[str] | None = None) -> Server:
    """The server for one run: the external one, or a fresh reference server.

    A reference server gets the limits that would otherwise be the
    benchmark's bottleneck switched off: per-address limit (all clients come
    from 127.0.0.1), flood control (senders go at full speed), keepalive and
    registration timeouts (a counting client does not look for PINGs).
    outbound-max stays at the server's default: it is what protects the
    server from a slow consumer, which one scenario measures.
    """
    if settings.server is not None:
        return ExternalServer(settings.server[0], settings.server[1], settings.server_pid)
    args = ["--max-clients", str(max_clients)] + REFERENCE_SERVER_FLAGS
    return ReferenceServer(args + (extra or []), cpus=settings.server_cpus)


def name_prefix() -> str:
    """A random prefix so that names never collide with an earlier run's."""
    return "b" + "".join(random.choices(string.ascii_lowercase, k=4))


class Room:
    """N registered clients on one event loop, with a barrier helper."""

    #: Whether a PONG proves that every line sent before it has arrived. On
    #: one server it does ([PING-2]); in a cluster lines from the other
    #: servers may still be on their way (SPEC.md 11b), so a run waits for
    #: the lines it expects as well (settle).
    barrier_is_quiet = True

    def __init__(self, settings: Settings, server: Server, count: int, special: int = 0) -> None:
        """Connect `count` clients; the last `special` ones get a small receive buffer."""
        self.settings = settings
        self.server = server
        self.loop = EventLoop()
        self.clients: list[Client] = []
        prefix = name_prefix()
        deadline = time.monotonic() + settings.setup_timeout_s
        normal = count - special
        groups = [([f"{prefix}{i}" for i in range(normal)], None)]
        if special:
            names = [f"{prefix}{i}" for i in range(normal, count)]
            groups.append((names, settings.stalled_receive_buffer))
        for names, receive_buffer in groups:
            report = open_clients(
                self.loop, server.address, names, deadline,
                concurrency=settings.connect_concurrency, receive_buffer=receive_buffer,
            )
            if report.failed or report.socket_errors:
                registered = len(self.clients) + len(report.registered)
                for client in report.registered:
                    client.close()
                self.close()
                server_said = "\n".join(list(getattr(server, "output_tail", []))[-5:])
                raise ScenarioError(
                    f"only {registered} of {count} clients registered in {report.seconds:.1f} s "
                    f"({server.host}:{server.port}): {report.failure_summary()}; "
                    f"server output ends: {server_said!r}"
                )
            # Keep name order (registration order varies): client i is name i.
            order = {name: index for index, name in enumerate(names)}
            self.clients += sorted(report.registered, key=lambda c: order[c.name])
        self.hello = self.clients[0].hello or {}
        # A quiet room before measuring: every JOIN has reached everyone.
        self.barrier(self.clients, "setup", settings.setup_timeout_s)
        for client in self.clients:
            client.reset_counts()

    def settle(self, arrived: Callable[[Client], bool], clients: list[Client], timeout_s: float) -> None:
        """After a drain's barrier: in a cluster, wait until `arrived(client)`
        for every open client, within `timeout_s`; what has not arrived by then
        is reported as lost, not as a failed run."""
        if self.barrier_is_quiet:
            return
        with contextlib.suppress(BenchTimeout):
            self.loop.run_until(lambda: all(client.closed or arrived(client) for client in clients),
                                time.monotonic() + timeout_s, "every line from every server")

    def barrier(self, clients: list[Client], token: str, timeout_s: float, on_tick=None) -> None:
        barrier = Barrier(f"{token}-{random.randrange(10**9)}")
        barrier.start(clients)
        self.loop.run_until(barrier.done, time.monotonic() + timeout_s, f"barrier {token}", on_tick)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.loop.close()


@contextlib.contextmanager
def no_garbage_collection():
    """Python's cyclic garbage collector off while measuring.

    A full collection walks every object (thousands of clients and their
    buffers) and can pause the generator for tens of milliseconds, which
    would show up as latency. Nothing measured here builds reference cycles
    that need collecting within a run.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_with_server(settings: Settings, max_clients: int, body: Callable[[Server], list[Case]],
                    extra_args: list[str] | None = None) -> list[Case]:
    """Start the server, run `body`, and always stop the server afterwards."""
    server = start_server(settings, max_clients, extra_args)
    try:
        return body(server)
    finally:
        server.stop()


def close_room_after(server: Server, room: Room | None) -> None:
    """Stop a server we started *before* closing the clients.

    Closing thousands of registered clients first would make the server
    broadcast a LEAVE for each to all the others (N^2/2 lines) just to be
    killed afterwards.
    """
    server.stop()
    if room is not None:
        room.close()


# ------------------------------------------------------------------ fan-out


class SampledReceiver:
    """Full check of every line one receiver gets (a few receivers only).

    - per sender, sequence numbers arrive 0, 1, 2, ... with none missing,
      doubled or reordered ([ORDER-5]);
    - the CRC of all MSG lines in arrival order is the same on every sampled
      receiver: they all saw the room in the same order ([ORDER-2]).
    """

    __slots__ = ("msgs", "crc", "next_sequence", "order_errors", "sender")

    def __init__(self) -> None:
        self.msgs = 0
        self.crc = 0
        self.next_sequence: dict[bytes, int] = {}
        self.order_errors = 0
        self.sender: Sender | None = None


class Sender:
    """A sender with a bounded window of messages not yet echoed back.

    The server echoes every MSG to its sender at the same instant it queues
    it for everybody else ([MSG-2], [ORDER-1]), so the echo is the sender's
    acknowledgement. At most `window` messages per sender are unacknowledged,
    so at most senders x window lines are in flight towards any receiver
    beyond what the generator reads every loop iteration; the window is
    chosen so that this stays well under the server's advertised
    outbound-max. Without the window the senders would only be limited by
    TCP, and a receiver's queue could overflow and be dropped: the
    benchmark, not the server, would cause the loss.
    """

    __slots__ = ("client", "window", "sent", "unacked", "sending")

    def __init__(self, client: Client, window: int) -> None:
        self.client = client
        self.window = window
        self.sent = 0
        self.unacked = 0
        self.sending = True

    def refill(self) -> None:
        """Top the window up, with one write for all the new messages."""
        room = self.window - self.unacked
        if not self.sending or room <= 0 or self.client.closed:
            return
        now = time.perf_counter_ns()
        first = self.sent
        self.client.send(b"".join(
            b"MSG " + message_text(sequence, now) + b"\n" for sequence in range(first, first + room)
        ))
        self.sent += room
        self.unacked += room


def fanout_on_msg(client: Client, line: bytes, now_ns: int) -> None:
    """MSG handler of sampled receivers (senders included)."""
    check: SampledReceiver = client.user_data
    check.msgs += 1
    check.crc = zlib.crc32(line, check.crc)
    try:
        name, sequence, _intended = parse_msg_line(line)
    except ValueError:
        check.order_errors += 1  # not one of ours: should not happen in a private room
        return
    if sequence != check.next_sequence.get(name, 0):
        check.order_errors += 1
    check.next_sequence[name] = sequence + 1
    if check.sender is not None and name == client.name_bytes:
        check.sender.unacked -= 1


def choose_window(settings: Settings, hello: dict[str, int], senders: int, line_bytes: int) -> int:
    """Messages in flight per sender: all senders' together fill a quarter of outbound-max.

    The factor 4 is a safety margin: a receiver can be a loop pass or two
    behind its sender. A bigger window gives the server bigger batches, so
    the throughput figure depends on it; it is reported with the result.
    """
    if settings.window is not None:
        return settings.window
    outbound_max = hello.get("outbound-max", 0)
    if outbound_max <= 0:
        return 256  # unbounded server queues: only TCP limits us
    return max(1, outbound_max // (4 * senders * line_bytes))


def fanout_one(settings: Settings, clients_count: int) -> list[Case]:
    def body(server: Server) -> list[Case]:
        room = None
        try:
            room = Room(settings, server, clients_count)
            return [(f"{clients_count} clients", fanout_run(settings, server, room))]
        finally:
            close_room_after(server, room)

    return run_with_server(settings, clients_count + 16, body)


def fanout_run(settings: Settings, server: Server, room: Room) -> dict:
    """One fan-out run in `room` (its server: `server`, whose CPU is measured)."""
    clients_count = len(room.clients)
    senders_count = min(settings.fanout_senders, clients_count)
    samples_extra = 3  # non-sending receivers fully checked as well
    loop, clients = room.loop, room.clients
    line_bytes = len(b"MSG  \n") + len(clients[0].name_bytes) + 64
    window = choose_window(settings, room.hello, senders_count, line_bytes)
    senders = [Sender(c, window) for c in clients[:senders_count]]
    sampled = clients[:senders_count] + clients[-samples_extra:]
    sampled = list({id(c): c for c in sampled}.values())  # no duplicates
    for client in clients:
        client.counting = True
    for client in sampled:
        client.counting = False
        client.splitter.pending = b""
        client.user_data = SampledReceiver()
        client.on_msg = fanout_on_msg
    for sender in senders:
        sender.client.user_data.sender = sender
        # Refill as soon as echoes are read, not after the loop has
        # been round all 1,000 sockets: the server gets new work
        # while the generator is still reading, so the two overlap.
        sender.client.on_read_done = lambda client: client.user_data.sender.refill()

    def refill_all() -> None:
        for sender in senders:
            sender.refill()

    meter = CpuMeter(server.pid)
    started = time.monotonic()
    stop_at = started + settings.fanout_seconds
    with no_garbage_collection():
        refill_all()
        loop.run_until(lambda: time.monotonic() >= stop_at, stop_at + 1, "fan-out", refill_all)
        for sender in senders:
            sender.sending = False
        # Every message echoed to its sender = queued for everybody.
        loop.run_until(
            lambda: all(s.unacked <= 0 or s.client.closed for s in senders),
            time.monotonic() + settings.drain_timeout_s, "fan-out: waiting for echoes",
        )
        room.barrier(clients, "drain", settings.drain_timeout_s)
        sent_so_far = sum(s.sent for s in senders)
        # A counting client's lines: the MSG lines and the barrier's PONG.
        room.settle(lambda client: (client.lines - 1 if client.counting else client.user_data.msgs)
                    >= sent_so_far, clients, settings.drain_timeout_s)
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    server.check_alive()

    sent = sum(s.sent for s in senders)
    delivered = lost = extra = disconnected = 0
    for client in clients:
        if client.counting:
            # Everything counted except the barrier's PONG (if it came).
            got = client.lines - (0 if client.closed else 1)
        else:
            got = client.user_data.msgs
            extra += max(0, client.lines - got - 1)  # JOIN/LEAVE/ERR in a quiet room
        delivered += min(got, sent)
        lost += max(0, sent - got)
        extra += max(0, got - sent)
        disconnected += client.closed
    checks = [c.user_data for c in sampled]
    crcs = {c.crc for c in checks if c.msgs == sent}
    order_errors = sum(c.order_errors for c in checks) + max(0, len(crcs) - 1)
    return {
        "clients": clients_count,
        "senders": senders_count,
        "window": window,
        "seconds": elapsed,
        "sent": sent,
        "delivered_lines": delivered,
        "lines_per_s": delivered / elapsed,
        "msgs_per_s": sent / elapsed,
        "lost": lost,
        "extra": extra,
        "disconnected": disconnected,
        "order_errors": order_errors,
        "sampled_receivers": len(sampled),
        **cpu,
    }


def scenario_fanout(settings: Settings) -> list[Case]:
    cases = []
    for clients_count in settings.fanout_clients:
        cases += fanout_one(settings, clients_count)
    return cases


# ---------------------------------------------------- fixed-rate runs (latency)


@dataclasses.dataclass
class RateRun:
    """Figures of one fixed-rate run, for the latency and slow-consumer scenarios."""

    sent: int
    seconds: float
    latencies_ns: array.array
    send_lag_ns: array.array
    read_delay_ns: array.array
    others_lost: int
    others_extra: int
    others_delivered: int
    disconnected: int
    cpu: dict
    rss_max_kb: int | None
    rss_start_kb: int | None
    stalled: dict | None


def fixed_rate_run(settings: Settings, server: Server, room: Room, rate: float, senders_count: int,
                   seconds: float, stall: Client | None = None) -> RateRun:
    """Send at a fixed total rate and record every delivered line's latency.

    Message k goes out at its intended time start + k / rate (round robin
    over the senders), carrying that time in its text. Each receiver's
    latency for it is: when the kernel received it (SO_TIMESTAMPNS) minus
    the intended time. That includes any lateness of the generator's sends
    (reported as send lag, so that it can be told apart) but not the time
    the generator takes to get round to reading a socket (reported as read
    delay).

    With `stall`, that client is not read at all from the start; the run then
    goes on after `seconds` (up to settings.slow_max_extra_s more) until the
    others are told it left, so the server's treatment of it is observed.
    """
    loop, clients = room.loop, room.clients
    senders = clients[:senders_count]
    others = [c for c in clients if c is not stall]
    latencies = array.array("q")
    send_lags = array.array("q")
    record = latencies.append
    stall_name = stall.name_bytes if stall is not None else None
    # Who was told that the stalled client left, why, and when.
    stall_seen: dict = {"by": 0, "reason": None, "after_s": None, "other_leaves": 0}

    def on_msg(client: Client, line: bytes, now_ns: int) -> None:
        # b"MSG <name> <sequence> <intended_ns> ....": the 4th field.
        record(now_ns - int(line.split(b" ", 4)[3]))
        client.user_data += 1

    def on_leave(client: Client, line: bytes) -> None:
        _verb, name, reason = line.split(b" ", 2)
        if name == stall_name:
            stall_seen["by"] += 1
            if stall_seen["reason"] is None:
                stall_seen["reason"] = reason.decode(errors="replace")
                stall_seen["after_s"] = (time.perf_counter_ns() - schedule.start_ns) / NS_PER_S
        else:
            stall_seen["other_leaves"] += 1  # nobody else should leave: reported as extra

    for client in clients:
        client.counting = False
        client.splitter.pending = b""
        client.user_data = 0  # MSG lines received
        client.on_msg = on_msg
        client.on_leave = on_leave
        client.use_kernel_timestamps()
    if stall is not None:
        stall.stop_reading()
    read_delays = array.array("q")
    loop.read_delays = read_delays

    rss_start = server.rss_kb()
    rss_max = [rss_start]
    next_rss_at = [0.0]

    def sample_rss() -> None:
        now = time.monotonic()
        if server.pid and now >= next_rss_at[0]:
            next_rss_at[0] = now + 0.1
            rss = server.rss_kb()
            if rss is not None and (rss_max[0] is None or rss > rss_max[0]):
                rss_max[0] = rss

    meter = CpuMeter(server.pid)
    started = time.monotonic()
    schedule = FixedRateSchedule(time.perf_counter_ns() + 5_000_000, rate)  # first send in 5 ms
    end_ns = schedule.start_ns + int(seconds * NS_PER_S)
    # A server that advertises no outbound bound never drops anybody: no
    # point waiting for it.
    expect_drop = stall is not None and room.hello.get("outbound-max", 0) > 0
    give_up_ns = end_ns + int(settings.slow_max_extra_s * NS_PER_S)
    sending = [True]

    def send_due() -> None:
        if not sending[0]:
            return
        now = time.perf_counter_ns()
        past_end = now >= end_ns
        waiting_for_drop = expect_drop and stall_seen["reason"] is None and now < give_up_ns
        if past_end and not waiting_for_drop:
            sending[0] = False
            return
        due = schedule.due(now)
        if not due:
            return
        batches: dict[int, list[bytes]] = {}
        for k in due:
            intended = schedule.intended_ns(k)
            send_lags.append(now - intended)
            batches.setdefault(k % senders_count, []).append(
                b"MSG " + message_text(k // senders_count, intended) + b"\n"
            )
        for index, lines in batches.items():
            senders[index].send(b"".join(lines))
        sample_rss()

    # The sending loop: send what is due, then sleep (handling arrivals)
    # exactly until the next message is due, 50 ms at most. It ends through
    # send_due(); the extra bound only guards against a mistake in it.
    hard_stop = started + seconds + settings.slow_max_extra_s + 60
    loop.interleave = send_due
    try:
        with no_garbage_collection():
            while sending[0]:
                send_due()
                if not sending[0]:
                    break
                if time.monotonic() > hard_stop:
                    raise BenchTimeout("fixed-rate sending did not end")
                loop.poll(min(schedule.seconds_until_next(time.perf_counter_ns()), 0.05))
            loop.interleave = None
            sent = schedule.next_index
            room.barrier(others, "drain", settings.drain_timeout_s, on_tick=sample_rss)
            room.settle(lambda client: client.user_data >= sent, others, settings.drain_timeout_s)
    finally:
        loop.interleave = None
        loop.read_delays = None
    elapsed = time.monotonic() - started
    cpu = meter.stop()
    server.check_alive()

    lost = delivered = disconnected = 0
    extra = stall_seen["other_leaves"]
    for client in others:
        got = client.user_data
        delivered += min(got, sent)
        lost += max(0, sent - got)
        extra += max(0, got - sent)
        disconnected += client.closed

    stalled = None
    if stall is not None:
        stalled = inspect_stalled(room, stall, sent, stall_seen)
    return RateRun(
        sent=sent, seconds=elapsed, latencies_ns=latencies, send_lag_ns=send_lags,
        read_delay_ns=read_delays,
        others_lost=lost, others_extra=extra, others_delivered=delivered,
        disconnected=disconnected, cpu=cpu, rss_max_kb=rss_max[0], rss_start_kb=rss_start,
        stalled=stalled,
    )


def inspect_stalled(room: Room, stall: Client, sent: int, stall_seen: dict) -> dict:
    """What became of the client that stopped reading.

    It is read again now: if the server dropped it, what is left in the
    kernel's buffers arrives and then the connection ends (EOF or reset);
    if it was never dropped, its backlog just drains. Bounded by a deadline.
    """
    stall.stalled = False
    stall.counting = True
    stall.reset_counts()
    if not stall.closed:
        room.loop.add(stall)
        deadline = time.monotonic() + 5
        try:
            room.loop.run_until(lambda: stall.closed, deadline, "reading the stalled client")
        except BenchTimeout:
            pass
    return {
        "dropped": stall_seen["reason"] is not None,
        "leave_reason": stall_seen["reason"] or "",
        "dropped_after_s": stall_seen["after_s"] if stall_seen["after_s"] is not None else float("nan"),
        "leave_seen_by": stall_seen["by"],
        "connection_closed": stall.closed,
        "got_slow_consumer_err": b"ERR SLOW_CONSUMER" in stall.tail.tail,
        "lines_buffered": stall.lines,
        "sent": sent,
    }


def latency_one(settings: Settings, clients_count: int, rate: float) -> list[Case]:
    senders_count = min(settings.latency_senders, clients_count)

    def body(server: Server) -> list[Case]:
        room = None
        try:
            room = Room(settings, server, clients_count)
            run = fixed_rate_run(settings, server, room, rate, senders_count, settings.latency_seconds)
            name = f"{clients_count} clients @ {rate:g}/s"
            settings.keep_latencies[name] = run.latencies_ns
            lag = latency_summary(run.send_lag_ns)
            read_delay = latency_summary(run.read_delay_ns)
            return [(name, {
                "clients": clients_count,
                "rate_per_s": rate,
                "sent": run.sent,
                "delivered": run.others_delivered,
                "lost": run.others_lost,
                "extra": run.others_extra,
                "disconnected": run.disconnected,
                **latency_summary(run.latencies_ns),
                "send_lag_p99_ms": lag["p99_ms"],
                "send_lag_max_ms": lag["max_ms"],
                "read_delay_p99_ms": read_delay["p99_ms"],
                **run.cpu,
            })]
        finally:
            close_room_after(server, room)

    return run_with_server(settings, clients_count + 16, body)


def scenario_latency(settings: Settings) -> list[Case]:
    cases = []
    for clients_count, rate in settings.latency_cases:
        cases += latency_one(settings, clients_count, rate)
    return cases


# -------------------------------------------------------------- slow consumer


def scenario_slow_consumer(settings: Settings) -> list[Case]:
    """The same fixed-rate room twice: everybody reading, then one client not.

    The stalled client is the last one; it is given a small receive buffer
    (settings.stalled_receive_buffer) in both runs. With Linux's defaults a
    loopback socket can buffer megabytes in the kernel before the server
    notices anything, which at a chat rate would take minutes; a slow reader
    across a real network has a small window too.
    """
    count = settings.slow_clients
    senders_count = min(settings.latency_senders, count - 1)  # the stalled client never sends
    extra = []
    if settings.slow_outbound_max is not None and settings.server is None:
        extra = ["--outbound-max", str(settings.slow_outbound_max)]
    results = {}
    for label in ("base", "stall"):
        def body(server: Server, label=label) -> list[Case]:
            room = None
            try:
                room = Room(settings, server, count, special=1)
                stall = room.clients[-1] if label == "stall" else None
                run = fixed_rate_run(settings, server, room, settings.slow_rate, senders_count,
                                     settings.slow_seconds, stall=stall)
                results[label] = (run, room.hello.get("outbound-max", 0))
                return []
            finally:
                close_room_after(server, room)

        run_with_server(settings, count + 16, body, extra)

    base, outbound_max = results["base"]
    stall, _ = results["stall"]
    base_lat = latency_summary(base.latencies_ns)
    stall_lat = latency_summary(stall.latencies_ns)
    assert stall.stalled is not None
    settings.keep_latencies["slow consumer: no stall"] = base.latencies_ns
    settings.keep_latencies["slow consumer: stalled reader"] = stall.latencies_ns
    return [(f"{count} clients @ {settings.slow_rate:g}/s", {
        "clients": count,
        "rate_per_s": settings.slow_rate,
        "outbound_max": outbound_max,
        "base_lines_per_s": base.others_delivered / base.seconds,
        "stall_lines_per_s": stall.others_delivered / stall.seconds,
        "base_p99_ms": base_lat["p99_ms"],
        "stall_p99_ms": stall_lat["p99_ms"],
        "p99_ratio": stall_lat["p99_ms"] / base_lat["p99_ms"] if base_lat["count"] else float("nan"),
        "stall_max_ms": stall_lat["max_ms"],
        "others_lost": base.others_lost + stall.others_lost,
        "lost": base.others_lost + stall.others_lost,
        "extra": base.others_extra + stall.others_extra,
        "disconnected": base.disconnected + stall.disconnected,
        "stalled_dropped": int(stall.stalled["dropped"]),
        "stalled_leave_reason": stall.stalled["leave_reason"],
        "stalled_dropped_after_s": stall.stalled["dropped_after_s"],
        "leave_seen_by": stall.stalled["leave_seen_by"],
        "stalled_closed": int(stall.stalled["connection_closed"]),
        "stalled_err_slow_consumer": int(stall.stalled["got_slow_consumer_err"]),
        "stall_sent": stall.sent,
        "base_rss_max_kb": base.rss_max_kb if base.rss_max_kb is not None else float("nan"),
        "stall_rss_max_kb": stall.rss_max_kb if stall.rss_max_kb is not None else float("nan"),
        "base_gen_cpu_pct": base.cpu["gen_cpu_pct"],
        "stall_gen_cpu_pct": stall.cpu["gen_cpu_pct"],
        "gen_cpu_pct": stall.cpu["gen_cpu_pct"],
        **{key: stall.cpu[key] for key in ("server_cpu_pct", "other_cpu_pct") if key in stall.cpu},
        **({"base_other_cpu_pct": base.cpu["other_cpu_pct"]} if "other_cpu_pct" in base.cpu else {}),
    })]


# ---------------------------------------------------------------- connections


def scenario_connections(settings: Settings) -> list[Case]:
    """Idle registered clients, opened in steps; held count, rate and RSS each step.

    Every registration makes the server send a JOIN to every registered
    client, so step n costs about (n^2 - previous^2) / 2 JOIN lines: the
    connect rate measured here includes that fan-out, as it would for real.
    The JOIN lines delivered are reported next to the rate.
    """
    steps = sorted(settings.connection_steps)

    def body(server: Server) -> list[Case]:
        loop = EventLoop()
        clients: list[Client] = []
        prefix = name_prefix()
        cases: list[Case] = []
        rss_base = server.rss_kb()
        try:
            for step in steps:
                alive = [c for c in clients if not c.closed]
                names = [f"{prefix}{i}" for i in range(len(clients), len(clients) + step - len(alive))]
                for client in alive:
                    client.reset_counts()
                meter = CpuMeter(server.pid)
                step_started = time.monotonic()
                report = open_clients(
                    loop, server.address, names, step_started + settings.step_timeout_s,
                    concurrency=settings.connect_concurrency,
                )
                clients += report.registered
                for client in report.failed:
                    client.close()
                # Drain the JOIN storm and prove every held client still answers.
                alive = [c for c in clients if not c.closed]
                barrier = Barrier(f"held-{step}")
                barrier.start(alive)
                loop.run_until(barrier.done, time.monotonic() + settings.step_timeout_s,
                               f"barrier after {step} clients")
                step_seconds = time.monotonic() - step_started
                cpu = meter.stop()
                server.check_alive()
                held = sum(not c.closed for c in clients)
                rss = server.rss_kb()
                row = {
                    "target": step,
                    "held": held,
                    "failed": len(report.failed) + len(report.socket_errors),
                    "connect_per_s": len(report.registered) / report.seconds if report.seconds else 0.0,
                    "connect_s": report.seconds,
                    "step_s": step_seconds,
                    "join_lines": sum(c.lines for c in clients),
                    **cpu,
                }
                if rss is not None and rss_base is not None:
                    row["rss_kb"] = rss
                    row["rss_base_kb"] = rss_base
                    row["rss_per_conn_kb"] = (rss - rss_base) / held if held else float("nan")
                    threads = read_thread_count(server.pid) if server.pid else None
                    if threads is not None:
                        row["server_threads"] = threads
                if report.failed or report.socket_errors:
                    row["failures"] = report.failure_summary()
                cases.append((f"{step} clients", row))
                if held < step:
                    break  # the server (or this machine) holds no more: stop here
        finally:
            server.stop()
            for client in clients:
                client.close()
            loop.close()
        return cases

    return run_with_server(settings, max(steps) + 16, body)


def scenario_file(settings: Settings) -> list[Case]:
    from bench.files import scenario_file as run  # bench/files.py imports this module

    return run(settings)


SCENARIOS: dict[str, Callable[[Settings], list[Case]]] = {
    "fan-out": scenario_fanout,
    "latency": scenario_latency,
    "connections": scenario_connections,
    "slow-consumer": scenario_slow_consumer,
    "send-floor": scenario_send_floor,  # no server: the machine's own limit (bench/floor.py)
    "file": scenario_file,  # file sharing (bench/files.py)
}

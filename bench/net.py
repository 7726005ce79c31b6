"""Many chat/1 clients in one thread: non-blocking sockets and one epoll.

The load generator is a single process on a 2-core machine that it shares with
the server, so every microsecond it spends per line is taken from the server.
The design follows from that:

- One `EventLoop` (Linux epoll, via the standard `select` module) watches all
  sockets; each readable socket is read with one large recv().
- A `Client` is in one of two reading modes:
  * counting: the read is only counted (`bytes.count(b"\\n")`, in C) and its
    last bytes kept to notice a barrier's PONG. This is how most receivers
    keep up with millions of lines a second.
  * parsing: the read is split into lines and each one handled (HELLO, JOIN,
    MSG, PONG, ...). Used while connecting, and by the few receivers whose
    every line is checked, and wherever per-line latency is measured.
- Every wait has a deadline (`EventLoop.run_until`), so no loop can hang.
"""

from __future__ import annotations

import array
import errno
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable

from bench.stats import LineSplitter, TailWatcher, parse_hello

#: Bytes asked for per read. Large, so that a client with a backlog of
#: thousands of lines costs one system call, not thousands.
RECV_BYTES = 256 * 1024

#: Most events handled per epoll call (Python's default is about 1,000).
MAX_EVENTS = 4096

READ = select.EPOLLIN
WRITE = select.EPOLLOUT

#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h; Python does not export it).
#: With it, each read also returns when the kernel received the data, as a
#: struct timespec on the CLOCK_REALTIME clock, in ancillary data whose type
#: (SCM_TIMESTAMPNS) has the same number. For a read that spans several
#: packets it is the last packet's time: never earlier than any line's arrival.
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("@qq")
ANCILLARY_BYTES = socket.CMSG_SPACE(TIMESPEC.size)

#: Events handled between two calls of the loop's `interleave` hook.
INTERLEAVE_EVERY = 32


class BenchTimeout(RuntimeError):
    """A phase of a scenario did not finish before its deadline."""


# --------------------------------------------------------------- event loop


class EventLoop:
    """All sockets of the generator in one epoll set.

    Timers: epoll_wait only sleeps in whole milliseconds, which would make
    fixed-rate sends up to 1 ms late (and add that to every latency). The
    epoll object is itself a file descriptor that becomes readable when any of
    its sockets is, so short waits use select() on it, which sleeps with
    microsecond resolution, and then collect the events with a zero timeout.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        # One receive buffer for every client: reads happen one at a time,
        # and recv_into() an existing buffer avoids allocating a fresh
        # 256 KiB object per read, which profiling showed cost more than
        # the system call itself.
        self.receive_buffer = bytearray(RECV_BYTES)
        self.receive_view = memoryview(self.receive_buffer)
        # Called every INTERLEAVE_EVERY events while a large batch is handled,
        # so that a fixed-rate sender is not held up for the milliseconds it
        # takes to read a thousand sockets.
        self.interleave: Callable[[], None] | None = None
        # CLOCK_REALTIME minus the perf_counter clock, to convert kernel
        # receive timestamps; refreshed every poll (the wall clock can be
        # slewed by NTP, perf_counter cannot).
        self.realtime_offset_ns = realtime_offset_ns()
        # When set, each timestamped read adds (read time - kernel arrival):
        # the delay the generator itself added before looking at the data.
        self.read_delays: array.array | None = None
        # select() only handles descriptors below 1024; the epoll object is
        # made first, so it always gets a small number.
        self.precise_waits = self.epoll.fileno() < 1024

    def add(self, client: Client) -> None:
        self.clients[client.fd] = client
        self.epoll.register(client.fd, READ | (WRITE if client.outbuf else 0))

    def set_events(self, client: Client, events: int) -> None:
        self.epoll.modify(client.fd, events)

    def remove(self, client: Client) -> None:
        """Stop watching a client (closed, or deliberately no longer read)."""
        if self.clients.pop(client.fd, None) is not None:
            try:
                self.epoll.unregister(client.fd)
            except (OSError, ValueError):
                pass  # already closed: the kernel dropped it from the set

    def poll(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for events and handle them; returns how many."""
        if timeout_s > 0 and self.precise_waits:
            ready, _, _ = select.select([self.epoll], [], [], timeout_s)
            if not ready:
                return 0
            timeout_s = 0
        events = self.epoll.poll(timeout_s, MAX_EVENTS)
        self.realtime_offset_ns = realtime_offset_ns()
        if self.interleave is None or len(events) <= INTERLEAVE_EVERY:
            self.handle(events)
        else:
            for start in range(0, len(events), INTERLEAVE_EVERY):
                self.handle(events[start : start + INTERLEAVE_EVERY])
                self.interleave()
        return len(events)

    def handle(self, events: list[tuple[int, int]]) -> None:
        clients = self.clients
        for fd, mask in events:
            client = clients.get(fd)
            if client is None:
                continue  # removed by an earlier event of this batch
            if mask & WRITE:
                client.on_writable()
            if mask & ~WRITE:  # readable, or an error/hang-up: recv() says which
                client.on_readable()

    def run_until(
        self,
        done: Callable[[], bool],
        deadline: float,
        what: str,
        on_tick: Callable[[], None] | None = None,
        max_wait_s: float = 0.05,
    ) -> None:
        """Handle events until `done()` is true; BenchTimeout at `deadline`.

        `deadline` is on the time.monotonic() clock. `on_tick` runs after each
        poll (the scenarios send from there). `max_wait_s` bounds each sleep,
        so `done` and the deadline are checked at least that often.
        """
        while not done():
            now = time.monotonic()
            if now >= deadline:
                raise BenchTimeout(f"timed out: {what}")
            self.poll(min(max_wait_s, deadline - now))
            if on_tick is not None:
                on_tick()

    def close(self) -> None:
        self.epoll.close()


def realtime_offset_ns() -> int:
    """CLOCK_REALTIME minus perf_counter (CLOCK_MONOTONIC), in nanoseconds.

    The wall clock is read between two monotonic readings and compared with
    their midpoint, so the error is a fraction of a microsecond.
    """
    before = time.perf_counter_ns()
    wall = time.time_ns()
    after = time.perf_counter_ns()
    return wall - (before + after) // 2


# ------------------------------------------------------------------ barrier


class Barrier:
    """`PING token` sent by many clients; done when each has seen its PONG.

    Because a server handles each connection's lines in order and appends
    every line a command causes before the next command's ([CMD-1],
    [ORDER-4], [PING-2]), the PONG is the proof that everything caused before
    the PING has reached that client. The benchmark uses this instead of
    sleeping: to start counting from a quiet room, and to drain at the end.
    """

    def __init__(self, token: str) -> None:
        self.token = token.encode()
        self.pong_line = b"PONG " + self.token + b"\n"
        self.waiting = 0

    def start(self, clients: Iterable[Client]) -> None:
        for client in clients:
            if client.closed:
                continue
            client.barrier = self
            self.waiting += 1
            client.send(b"PING " + self.token + b"\n")

    def reached(self, client: Client) -> None:
        client.barrier = None
        self.waiting -= 1

    def done(self) -> bool:
        return self.waiting <= 0


# ------------------------------------------------------------------- client


class Client:
    """One connection to the server, driven by the EventLoop.

    Hooks (plain attributes, set by a scenario) receive what concerns it:
    `on_msg(client, line, now_ns)` for each MSG line in parsing mode,
    `on_leave(client, line)` for each LEAVE line, `on_registered(client)` and
    `on_failed(client)` while connecting, and `on_read_done(client)` after
    the lines of one read were handled (parsing mode).
    """

    __slots__ = (
        "loop", "sock", "fd", "name", "name_bytes", "counting", "lines", "bytes",
        "splitter", "tail", "outbuf", "closed", "close_reason", "registered",
        "hello", "errors", "barrier", "on_msg", "on_leave", "on_registered",
        "on_failed", "on_read_done", "stalled", "user_data", "kernel_timestamps",
    )

    def __init__(self, loop: EventLoop, sock: socket.socket, name: str) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.name = name
        self.name_bytes = name.encode()
        self.counting = False  # False: parse every line; True: count only
        self.lines = 0  # lines received since the last reset_counts()
        self.bytes = 0
        self.splitter = LineSplitter()
        self.tail = TailWatcher()
        self.outbuf = bytearray()  # what the socket has not accepted yet
        self.closed = False
        self.close_reason = ""
        self.registered = False
        self.hello: dict[str, int] | None = None
        self.errors: list[bytes] = []  # ERR lines received (kept, few)
        self.barrier: Barrier | None = None
        self.on_msg: Callable[[Client, bytes, int], None] | None = None
        self.on_leave: Callable[[Client, bytes], None] | None = None
        self.on_registered: Callable[[Client], None] | None = None
        self.on_failed: Callable[[Client], None] | None = None
        self.on_read_done: Callable[[Client], None] | None = None
        self.stalled = False  # True: deliberately not read (slow consumer)
        self.kernel_timestamps = False  # see use_kernel_timestamps()
        self.user_data: object = None  # per-scenario state

    # ---- reading

    def use_kernel_timestamps(self) -> None:
        """Take each read's time from the kernel (arrival), not from the generator.

        A single-threaded generator reads a thousand sockets one after the
        other, so the last one is read milliseconds after its data arrived;
        timing lines when they are read would charge that to the server.
        """
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.kernel_timestamps = True

    def on_readable(self) -> None:
        if self.kernel_timestamps and not self.counting:
            self.read_timestamped()
            return
        loop = self.loop
        try:
            size = self.sock.recv_into(loop.receive_buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # reset, refused (connect failed), ...
            self.mark_closed(f"{type(error).__name__}: {error.strerror or error}")
            return
        if not size:
            self.mark_closed("eof")
            return
        self.bytes += size
        if self.counting:
            # The hot path of the fan-out scenario: no Python work per line,
            # and no copy of the data but its last few bytes.
            self.lines += loop.receive_buffer.count(b"\n", 0, size)
            barrier = self.barrier
            if barrier is None:
                self.tail.feed(loop.receive_view[max(0, size - self.tail.size) : size].tobytes())
            elif self.tail.feed(loop.receive_view[:size].tobytes(), watch=barrier.pong_line):
                barrier.reached(self)
            return
        now_ns = time.perf_counter_ns()  # one receive time for the whole read
        data = loop.receive_view[:size].tobytes()
        for line in self.splitter.feed(data):
            self.lines += 1
            self.handle_line(line, now_ns)
        if self.on_read_done is not None:
            self.on_read_done(self)

    def read_timestamped(self) -> None:
        """on_readable() with the kernel's arrival time as the lines' receive time."""
        loop = self.loop
        try:
            size, ancillary, _flags, _address = self.sock.recvmsg_into(
                [loop.receive_buffer], ANCILLARY_BYTES
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.mark_closed(f"{type(error).__name__}: {error.strerror or error}")
            return
        if not size:
            self.mark_closed("eof")
            return
        read_ns = time.perf_counter_ns()
        arrival_ns = read_ns
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack_from(payload)
                arrival_ns = seconds * 1_000_000_000 + nanoseconds - loop.realtime_offset_ns
        if loop.read_delays is not None:
            loop.read_delays.append(read_ns - arrival_ns)
        self.bytes += size
        for line in self.splitter.feed(loop.receive_view[:size].tobytes()):
            self.lines += 1
            self.handle_line(line, arrival_ns)
        if self.on_read_done is not None:
            self.on_read_done(self)

    def handle_line(self, line: bytes, now_ns: int) -> None:
        if line.startswith(b"MSG "):  # by far the most frequent: test it first
            if self.on_msg is not None:
                self.on_msg(self, line, now_ns)
            return
        verb, _, rest = line.partition(b" ")
        if verb == b"PONG":
            barrier = self.barrier
            if barrier is not None and rest == barrier.token:
                barrier.reached(self)
        elif verb == b"JOIN":
            if not self.registered and rest == self.name_bytes:
                # Our own JOIN is the reply to USER ([USER-1]).
                self.registered = True
                if self.on_registered is not None:
                    self.on_registered(self)
        elif verb == b"LEAVE":
            if self.on_leave is not None:
                self.on_leave(self, line)
        elif verb == b"PING":
            self.send(b"PONG " + rest + b"\n")  # [PING-4]: keepalive
        elif verb == b"HELLO":
            self.hello = parse_hello(line)
            self.send(b"USER " + self.name_bytes + b"\n")
        elif verb == b"ERR":
            if len(self.errors) < 10:
                self.errors.append(line)
            if not self.registered and self.on_failed is not None:
                # SERVER_FULL, NAME_TAKEN, ...: this client will not register.
                self.on_failed(self)
                self.on_failed = None

    def reset_counts(self) -> None:
        self.lines = 0
        self.bytes = 0

    # ---- writing

    def send(self, data: bytes) -> None:
        """Queue data and write as much as the socket takes now.

        Writes are non-blocking; what does not fit waits in `outbuf` and the
        loop watches the socket for writability until it is flushed.
        """
        if self.closed:
            return
        if self.outbuf:
            self.outbuf += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self.mark_closed(f"send: {error.strerror or error}")
            return
        if sent < len(data):
            self.outbuf += data[sent:]
            if self.fd in self.loop.clients:
                self.loop.set_events(self, READ | WRITE)

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.mark_closed(f"send: {error.strerror or error}")
            return
        del self.outbuf[:sent]
        if not self.outbuf and self.fd in self.loop.clients:
            self.loop.set_events(self, READ)

    # ---- stalling (slow-consumer scenario)

    def stop_reading(self) -> None:
        """Stop reading this socket: the server's queue for it will fill up."""
        self.stalled = True
        self.loop.remove(self)

    # ---- closing

    def mark_closed(self, reason: str) -> None:
        """The connection ended (or failed to open); stop watching it."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.loop.remove(self)
        barrier = self.barrier
        if barrier is not None:
            barrier.reached(self)  # it will never answer: do not wait for it
        if not self.registered and self.on_failed is not None:
            self.on_failed(self)
            self.on_failed = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = self.close_reason or "closed by generator"
            self.loop.remove(self)
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------- connecting many clients


class ConnectReport:
    """What happened while opening a batch of clients."""

    def __init__(self) -> None:
        self.registered: list[Client] = []
        self.failed: list[Client] = []
        self.socket_errors: list[str] = []  # could not even create/connect a socket
        self.seconds = 0.0

    def failure_summary(self) -> str:
        reasons: dict[str, int] = {}
        for client in self.failed:
            reason = client.errors[0].decode(errors="replace")[:60] if client.errors else client.close_reason
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason in self.socket_errors:
            reasons[reason] = reasons.get(reason, 0) + 1
        return ", ".join(f"{count} x {reason}" for reason, count in sorted(reasons.items()))


def open_clients(
    loop: EventLoop,
    address: tuple[str, int],
    names: list[str],
    deadline: float,
    concurrency: int = 64,
    receive_buffer: int | None = None,
    count_after_register: bool = True,
) -> ConnectReport:
    """Connect and register one client per name, `concurrency` at a time.

    Each client: non-blocking connect, wait for HELLO, send USER, wait for its
    own JOIN. At most `concurrency` are between connect() and their JOIN at any
    time: the server's listen backlog is finite, and a SYN it drops is only
    retried after a second, which would wreck the connect rate.

    Once registered, a client switches to counting mode (unless told not to):
    every later registration broadcasts a JOIN to everybody, which is N^2/2
    lines for N clients, and parsing those would measure the generator.
    The deadline ends the whole batch; clients still in flight then count as
    failed.
    """
    report = ConnectReport()
    waiting = deque(names)
    in_flight: set[Client] = set()
    started = time.monotonic()

    def registered(client: Client) -> None:
        in_flight.discard(client)
        report.registered.append(client)
        client.on_failed = None
        if count_after_register:
            client.counting = True

    def failed(client: Client) -> None:
        in_flight.discard(client)
        report.failed.append(client)
        client.close()

    def start_more() -> None:
        while waiting and len(in_flight) < concurrency:
            name = waiting.popleft()
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as error:  # EMFILE: out of file descriptors
                report.socket_errors.append(f"socket(): {error.strerror}")
                waiting.clear()
                return
            sock.setblocking(False)
            # Nagle's algorithm would hold back small writes (a MSG, a PING)
            # waiting for an ACK; the benchmark wants them on the wire now.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if receive_buffer is not None:
                # Must be set before connect() to limit the advertised window.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            code = sock.connect_ex(address)
            if code not in (0, errno.EINPROGRESS):
                report.socket_errors.append(f"connect(): {errno.errorcode.get(code, code)}")
                sock.close()
                continue
            client = Client(loop, sock, name)
            client.on_registered = registered
            client.on_failed = failed
            in_flight.add(client)
            # No need to wait for writability: the HELLO arriving (readable)
            # proves the connection is up; a failed connect shows up as an
            # error from recv().
            loop.add(client)

    start_more()
    try:
        loop.run_until(
            lambda: not waiting and not in_flight,
            deadline,
            f"connecting {len(names)} clients",
            on_tick=start_more,
        )
    except BenchTimeout:
        for client in list(in_flight):
            stage = "HELLO received, no JOIN" if client.hello is not None else "no HELLO"
            client.close_reason = f"still connecting at the deadline ({stage})"
            failed(client)
        report.socket_errors.extend(["not started before the deadline"] * len(waiting))
        waiting.clear()
    report.seconds = time.monotonic() - started
    return report

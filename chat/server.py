"""The reference chat/1 server: sockets, threads and locks, and nothing else.

A line's way through the server:

    reader thread:   recv -> LineBuffer -> ChatRoom.handle -> actions
                     (applied under one lock: a broadcast is one append to
                      each outbox's batch; a reply is one append to that
                      connection)
    flusher threads: one per core, each with an Outbox (its share of the
                     connections): takes the batch, gives each connection its
                     bytes, and sends them without blocking; what a socket
                     will not take waits in that connection's buffer until it
                     is writable
    watchdog:        calls ChatRoom.tick once in a while (timeouts, keepalive)
    acceptors:       accept connections and start their reader threads

Why this shape (README, "Design", has the figures):
- A thread per connection reads, so the code for one client reads top to
  bottom, as in the simplest socket tutorial.
- No thread ever blocks on another client's socket. Only the flushers write,
  and they write with MSG_DONTWAIT: a client that stops reading costs the others
  nothing ([ORDER-6]), and is dropped once `outbound_max` bytes wait for it
  ([LIMIT-6]).
- A broadcast costs one append per flusher however many people are in the
  room; a flusher then hands each recipient everything that accumulated since
  its last pass in one send(). Under load, lines batch up by themselves. A
  pass is mostly send() calls, which release the GIL, so one flusher per core
  lets them overlap (a modest gain: see FLUSHERS).
- One lock guards the room and the queues. A command's actions are applied
  under it in one go, so each command takes effect at a single instant
  ([ORDER-1]) and everyone sees the room in the same order ([ORDER-2]).

The rules themselves (who may do what, who receives which line) live in
chat/state.py; the wire format in chat/protocol.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import ipaddress
import logging
import os
import select
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable

from chat import backplane as backplanes
from chat import cluster, logs, options
from chat.limits import OPTIONAL_VERBS, Limits
from chat.protocol import ErrorCode, LineBuffer, format_error, looks_like_tls
from chat.state import (
    Action,
    Broadcast,
    ChatRoom,
    Close,
    CutRelay,
    InputBacklog,
    Register,
    Relay,
    Send,
    Session,
    Unregister,
)
from chat.transfers import ACCEPTED, RECIPIENT, RELAYING, SENDER, Grant, RelayPacing, Transfer
from chat.transport import NotTLS, PlainTransport, TLSTransport

log = logs.SERVER

#: Limits is frozen, so one default value serves every server.
DEFAULT_LIMITS = Limits()
#: listen() backlog. The original project used 5, and connecting clients timed
#: out under a burst; the kernel caps this at net.core.somaxconn anyway.
LISTEN_BACKLOG = 4096
#: The kernel's share of one client's backlog (SO_SNDBUF). Left alone, Linux
#: grows it to 4 MiB, so a stalled reader could hold megabytes before
#: `outbound_max` even starts counting; 64 KiB is still many batches of lines.
SEND_BUFFER = 64 * 1024
#: Seconds an orderly close waits for a client to take its last lines
#: ([STATE-2]) before the connection is cut regardless.
CLOSE_GRACE = 2.0
#: Bytes a draining reader asks of recv() at a time ([STATE-3]): what it
#: reads is thrown away, so a larger read just ends the drain sooner.
DRAIN_SIZE = 64 * 1024
#: Seconds [LIMIT-7] allows for delivering queued lines at shutdown.
SHUTDOWN_GRACE = 1.0
#: Seconds a client has to complete the TLS handshake. It holds a thread but
#: no slot until then, so this is kept short.
HANDSHAKE_TIMEOUT = 10.0
#: Flusher threads, one per core (at most 4). A pass over the room is mostly
#: send() calls, which release the GIL, so flushers on two cores can overlap
#: their sends. The gain measured is modest, since each send() still takes
#: the GIL back: a pass over 1,000 sockets takes 8.4 ms from one thread and
#: 7.0 ms from two (`python -m bench --scenario send-floor`; README, Design).
FLUSHERS = max(1, min(4, os.cpu_count() or 1))
#: Threads accepting connections. Thread.start() returns only once the new
#: thread has run, and with hundreds of threads wanting the GIL that took
#: 1.5 ms: one acceptor admitted 236 to 711 clients a second, four 1,239 to
#: 1,803 (README, Design). Eight did no better than four.
ACCEPTORS = 4
#: sys.setswitchinterval() for the server process, in seconds (Python's
#: default is 0.005). A thread waiting for the GIL wakes up every interval to
#: claim it, so when thousands of clients send at the same moment (10,000
#: answering a PING), thousands of threads wake 200 times a second each: one
#: flusher pass over 5,000 clients took 14 to 38 s, and the benchmark's 10,000
#: step 16 to 160 s. At 0.2 s that step took 2.3 to 3 s. No thread here holds
#: the GIL for long (every send and recv lets go of it), so a forced switch
#: is never what hands it on, and latency did not change (README, Design).
GIL_SWITCH_INTERVAL = 0.2
#: [FILE-20] Bytes of one plain-TCP transfer in the server at most: the pipe
#: os.splice moves them through, kernel memory, never the process's. Also
#: the recipient's SO_SNDBUF. Each splice() is a system call and a GIL
#: round trip, so the window sets the pace: one 200 MB file went at 37-46%
#: of a direct loopback copy with 64 KiB (Linux's default pipe), 55% with
#: 256 KiB, 60-73% with 1 MiB (`python -m bench --scenario file`, README,
#: Sharing files), the most an unprivileged process may ask for
#: (/proc/sys/fs/pipe-max-size); a refused size leaves the pipe at 64 KiB.
RELAY_WINDOW = 1024 * 1024
#: [FILE-20] Bytes of one TLS transfer in the server's own memory at most: the
#: plaintext decrypted at a time (plus TLS_UNSENT_MAX of ciphertext), so two
#: transfers stay well within the 4 MB of RSS the issue allows.
COPY_WINDOW = 64 * 1024
#: Niceness of a thread while it relays a file: bulk bytes give way to chat
#: lines when both want the CPU ([FILE-19]). Linux sets it per thread. The
#: effect measured is within the noise of this shared machine (README,
#: Sharing files); it is kept because it costs nothing and says the intent.
RELAY_NICE = 10
#: Pacing the relays while chat is busy (chat.transfers.RelayPacing; SPEC.md 11a.3,
#: rationale; README, Sharing files). Lowering the relays' priority (RELAY_NICE) was not
#: enough: two relays flat out on the server's core (1.4 GB/s together) put the chat's
#: p99 at 2.19x, because most of their cost is the kernel's loopback work, which no
#: niceness reaches; two transfers whose senders kept to 100 MB/s each left it at 0.80x
#: (`python -m bench --scenario file --runs 3`, medians of 3). So while chat is busy,
#: all relays together move at most RELAY_BUSY_RATE bytes a second: the rate of those
#: two paced transfers, and more than a 1 Gbit/s link carries (125 MB/s), so only a
#: transfer between two processes of one machine or a fast LAN ever meets it.
RELAY_BUSY_RATE = 200 * 1000 * 1000
#: Bytes a relay moves at a time while chat is busy, and the depth of their shared
#: budget: a quarter of RELAY_WINDOW, so the relays take the processor in slices of
#: about a tenth of a millisecond, between which the chat's threads get it.
RELAY_BUSY_CHUNK = 256 * 1024
#: Chat is busy once CHAT_BUSY_LINES lines were sent within CHAT_BUSY_WINDOW seconds
#: (1,000 lines a second: a room of 100 where ten people a second speak; the
#: benchmark's room sends 60,000), and stays busy CHAT_BUSY_HOLD seconds after. A
#: transfer's own lines (OFFER, ACCEPTED, ENDED: a few to each party) stay well below,
#: so one transfer alone goes flat out.
CHAT_BUSY_LINES = 100
CHAT_BUSY_WINDOW = 0.1
CHAT_BUSY_HOLD = 1.0
#: fcntl's F_SETPIPE_SZ (Linux), which Python 3.10 does not name.
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: How often the watchdog looks at the clock. Timeouts are whole seconds in
#: HELLO, so a tenth of a second is precise enough and costs nothing.
WATCHDOG_PERIOD = 0.1
#: Seconds between two summary lines in the log (chat.server.stats, info):
#: clients, lines in and out per second, bytes queued, drops. A minute is
#: what a metrics scraper uses, and 1,440 lines a day is not noise.
SUMMARY_PERIOD = 60.0
#: Why a session ended (Session.ended) -> the log level an operator wants.
#: What a client can cause at will is a warning, written through the rate
#: limiter (logs.LimitedEvents); an ordinary goodbye is info.
END_LEVELS = {
    "quit": logging.INFO, "closed": logging.INFO, "timeout": logging.INFO,
    ErrorCode.REGISTRATION_TIMEOUT.value: logging.INFO, ErrorCode.PING_TIMEOUT.value: logging.INFO,
    "slow": logging.WARNING, "flood": logging.WARNING,
    ErrorCode.BAD_PASSWORD.value: logging.WARNING, ErrorCode.SERVER_FULL.value: logging.WARNING,
    ErrorCode.TOO_MANY_CONNECTIONS.value: logging.WARNING,
}


class Outbox:
    """One flusher thread's share of the room: its connections and their lines.

    Every connection belongs to one outbox. A broadcast is appended to every
    outbox's batch, a reply to its own connection's: all under the server's
    lock, in the order the room decided, so each connection's stream keeps
    that order whichever thread sends it.
    """

    def __init__(self, number: int) -> None:
        self.number = number
        # -- guarded by ChatServer._lock --
        self.batch = bytearray()                 # broadcast lines since the last pass
        self.members: set[Connection] = set()    # its connections receiving broadcasts
        self.dirty: set[Connection] = set()      # its connections with something special
        self.wake_pending = False
        # The flusher sleeps in select(); a byte on this pair wakes it. The
        # flag keeps it to one byte per pass, however many lines arrive.
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)
        self.thread: threading.Thread | None = None

    def wake(self) -> None:
        """Tell the flusher there is work. Under the server's lock."""
        if not self.wake_pending:
            self.wake_pending = True
            try:
                self.wake_writer.send(b"\0")
            except BlockingIOError:
                pass  # The flusher has a wake-up byte waiting already.

    def drain_wake_ups(self) -> None:
        try:
            while self.wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.wake_reader.close()
        self.wake_writer.close()


class Connection:
    """One client's transport, its line buffer, and what waits to be sent to it.

    The fields below the lock comment belong to the server's lock; `outbuf`
    belongs to its outbox's flusher thread alone.
    """

    def __init__(self, transport: PlainTransport, address: str, session: Session,
                 limits: Limits, outbox: Outbox) -> None:
        self.transport = transport
        self.outbox = outbox
        self.address = address
        self.session = session
        self.lines = LineBuffer(limits.line_max)
        #: Lines read and not yet handled ([LIMIT-4], [LIMIT-8]). Reader thread.
        self.inbound = InputBacklog(limits, time.monotonic())
        #: Set by the flusher when a send failed: the client reset the
        #: connection. The kernel reports a reset once, to whichever thread
        #: touches the socket first; after that recv() sees a plain end.
        self.reset = False
        #: Released by the flusher once it will touch this socket no more; only
        #: then may the reader close it (closing earlier could let a new
        #: connection reuse the file descriptor while the flusher still writes
        #: to it). A lock used as a one-shot signal: a threading.Event would
        #: do the same with a Condition inside, 1.5 KB per idle connection.
        self.flushed = threading.Lock()
        self.flushed.acquire()

        # -- guarded by ChatServer._lock --
        #: Offset in the room's current batch from which broadcasts reach this
        #: connection (0 for a member since before the batch), or None.
        self.room_from: int | None = None
        #: Offset at which it stopped receiving broadcasts, if it left.
        self.room_to: int | None = None
        #: Lines for this connection only, with the batch offset they follow.
        self.personal: list[tuple[int, bytes]] = []
        #: When to cut the connection even if lines are still unsent.
        self.close_deadline: float | None = None
        #: [FILE-15] Set when this is a data connection: its Relay action, and
        #: the pair it belongs to in the FileRelay.
        self.relay: Relay | None = None
        self.relay_pair: RelayPair | None = None
        #: Set by the flusher when it gave the socket over to the relay.
        self.handed_over = False

        # -- the flusher's alone --
        #: Plaintext not yet taken by the transport.
        self.outbuf = bytearray()

    def backlog(self) -> int:
        """Bytes queued for this client that its socket has not accepted. Flusher."""
        return len(self.outbuf) + self.transport.unsent()

    def take(self, batch: bytes) -> bytes:
        """This connection's share of the batch, personal lines in place. Locked."""
        if self.room_from == 0 and self.room_to is None and not self.personal:
            return batch  # The common case: a member with nothing of its own.
        parts = []
        position = self.room_from
        end = len(batch) if self.room_to is None else self.room_to
        for offset, line in self.personal:
            if position is not None and offset > position:
                parts.append(batch[position:min(offset, end)])
                position = max(position, min(offset, end))
            parts.append(line)
        if position is not None and end > position:
            parts.append(batch[position:end])
        self.personal = []
        self.room_from = 0 if self.room_from is not None and self.room_to is None else None
        self.room_to = None
        return b"".join(parts)


class RelayCut(Exception):
    """The transfer ended elsewhere (CANCEL, a party gone, expiry, shutdown): stop relaying."""


class RelayStalled(OSError):
    """A relay between servers ([CLUSTER-12]) moved nothing for `file-expiry` seconds:
    the other side's server is gone, or its client stopped. The transfer ends
    `aborted`, as when a data connection breaks."""


class RelayPair:
    """The two data connections of one transfer, as they arrive. Guarded by FileRelay's lock,
    except the wake-up pipe, which any thread may write to."""

    def __init__(self) -> None:
        self.transports: dict[str, PlainTransport] = {}
        #: The recipient has been sent READY: the sender may be sent it and relayed.
        self.recipient_ready = False
        #: The sender's thread is done with both sockets.
        self.finished = False
        #: "ok", "aborted" or "oversize", once finished.
        self.outcome: str | None = None
        #: The transfer ended elsewhere: stop.
        self.cut = False
        #: Threads in serve() with this pair; the last one out closes the pipe.
        self.active = 0
        self.closed = False
        #: A byte here wakes the sender's thread from its poll() when the pair is cut:
        #: the relay never blocks in a socket call, so nothing needs shutting down (a
        #: shutdown would send the recipient a FIN, which could pass for a complete file).
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)

    def wake(self) -> None:
        """Under FileRelay's lock, which close() is called under too."""
        if not self.closed:
            try:
                os.write(self.wake_write, b"!")
            except BlockingIOError:
                pass  # a byte is waiting already

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.wake_read)
            os.close(self.wake_write)


class RelayPacer:
    """The relays' shared budget while chat is busy (RelayPacing, with the clock and the
    server's count of lines sent), behind a lock of its own: never the server's, which
    chat lines need ([FILE-19])."""

    def __init__(self, lines_sent: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._lines_sent = lines_sent
        self._pacing = RelayPacing(RELAY_BUSY_RATE, RELAY_BUSY_CHUNK, CHAT_BUSY_LINES, CHAT_BUSY_WINDOW,
                                   CHAT_BUSY_HOLD, time.monotonic(), lines_sent())

    def allow(self, wanted: int, pair: RelayPair) -> Grant:
        """What the relay may move now (1 to `wanted` bytes), after waiting while the budget
        is spent; RelayCut if the pair is cut meanwhile. Report the move with moved()."""
        while True:
            with self._lock:
                grant = self._pacing.allowance(time.monotonic(), self._lines_sent(), wanted)
            if grant.count:
                return grant
            _pause(pair, grant.wait)

    def moved(self, grant: Grant, count: int) -> None:
        with self._lock:
            self._pacing.moved(grant, count)


class FileRelay:
    """[FILE-15] to [FILE-20]: pairs each transfer's data connections and relays its bytes.

    It has no thread of its own: each data connection's reader thread calls
    serve() once the flusher has handed the socket over, and returns when the
    connection is closed. The sender's thread moves the bytes; the recipient's
    sends READY first and then waits for the end, to close its connection in
    order (FIN, close_notify) after a complete relay or cut it (a reset)
    after a failed one. The bytes never pass the server's lock, the room or
    the flushers, so chat lines never wait behind them ([FILE-19]); at most
    a window of a transfer's bytes is in the server at once ([FILE-20]):
    it reads the sender only as fast as the recipient's socket takes them.
    Plain TCP on both sides goes through os.splice, kernel to kernel; TLS on
    either side is decrypted and encrypted here. The sockets are non-blocking
    once relaying, and every wait is a poll() that a cut wakes, the pacer's too:
    while chat is busy, the relays together keep to RELAY_BUSY_RATE (RelayPacer).
    """

    def __init__(self, on_finished: Callable[[Transfer, str], None], end_timeout: float,
                 lines_sent: Callable[[], int]) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: By transfer (compared by identity: a tid may be reused once it ended).
        self._pairs: dict[Transfer, RelayPair] = {}
        self._on_finished = on_finished
        #: Seconds to wait for the sender's end of stream after `size` bytes.
        self._end_timeout = end_timeout
        self._stopping = False
        self._pacer = RelayPacer(lines_sent)

    def expect(self, transfer: Transfer) -> RelayPair:
        """A data connection of `transfer` was accepted (under the server's lock): its pair."""
        with self._lock:
            pair = self._pairs.get(transfer)
            if pair is None:
                pair = self._pairs[transfer] = RelayPair()
                pair.cut = self._stopping
            return pair

    def cut(self, transfer: Transfer) -> None:
        """The transfer ended: stop its relay, if any ([FILE-10])."""
        with self._lock:
            pair = self._pairs.get(transfer)
            if pair is not None:
                self._cut(pair)
                self._release(transfer, pair)

    def _cut(self, pair: RelayPair) -> None:
        pair.cut = True
        pair.wake()
        self._changed.notify_all()

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            for transfer, pair in list(self._pairs.items()):
                self._cut(pair)
                self._release(transfer, pair)

    def _release(self, transfer: Transfer, pair: RelayPair) -> None:
        """Under the lock: once no thread uses the pair and it is over, forget it."""
        if pair.active == 0 and (pair.cut or pair.finished):
            if self._pairs.get(transfer) is pair:
                del self._pairs[transfer]
            pair.close()

    def serve(self, relay: Relay, pair: RelayPair, transport: PlainTransport) -> None:
        """Run one data connection to its end, and close it. Its reader thread."""
        try:
            # The thread ends with this connection, so its lowered priority dies with it.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RELAY_NICE)
        except (AttributeError, OSError):
            pass  # not Linux: every thread keeps the process's priority
        try:
            transport.sock.setblocking(False)
            # SEND_BUFFER suits chat lines; the relay's writes want its window.
            transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RELAY_WINDOW)
        except OSError:
            pass  # gone already: the first poll or send says so
        with self._lock:
            joined = not pair.cut and relay.side not in pair.transports
            if joined:
                pair.transports[relay.side] = transport
                pair.active += 1
                self._changed.notify_all()
        if not joined:
            _reset(transport)
            return
        try:
            if relay.side == RECIPIENT:
                self._serve_recipient(relay, pair, transport)
            else:
                self._serve_sender(relay, pair, transport)
        finally:
            with self._lock:
                pair.active -= 1
                self._release(relay.transfer, pair)

    def _serve_recipient(self, relay: Relay, pair: RelayPair, transport: PlainTransport) -> None:
        with self._lock:
            while not pair.cut and SENDER not in pair.transports:
                self._changed.wait()
            go = not pair.cut
        try:
            if go:
                _send_all(transport, relay.ready, pair)  # [FILE-15]: READY only once both are here
        except (OSError, RelayCut):
            go = False
        with self._lock:
            if go:
                pair.recipient_ready = True
            else:
                self._cut(pair)
            self._changed.notify_all()
            # The sender's thread may still be writing to this socket: wait for it.
            while not pair.finished and not (pair.cut and SENDER not in pair.transports):
                self._changed.wait()
            orderly = pair.outcome == "ok"
        if orderly:
            _close_in_order(transport)
        else:
            _reset(transport)

    def _serve_sender(self, relay: Relay, pair: RelayPair, transport: PlainTransport) -> None:
        outcome = "aborted"
        try:
            with self._lock:
                while not pair.cut and not pair.recipient_ready:
                    self._changed.wait()
                sink = None if pair.cut else pair.transports[RECIPIENT]
            if sink is not None:
                _send_all(transport, relay.ready, pair)
                outcome = self._relay(transport, sink, relay.size, pair)
        except (OSError, RelayCut):
            outcome = "aborted"
        finally:
            # The room first: the recipient may send RECEIVED as soon as its
            # connection ends in order, and the transfer must be RELAYED by then.
            self._on_finished(relay.transfer, outcome)
            with self._lock:
                pair.outcome = outcome
                pair.finished = True
                self._changed.notify_all()
            if outcome == "ok":
                transport.close_notify()  # the sender has ended its side already
                transport.close()
            else:
                _reset(transport)

    def _relay(self, source: PlainTransport, sink: PlainTransport, size: int, pair: RelayPair) -> str:
        """Move `size` bytes, then expect the sender's end: "ok", "aborted" or "oversize"."""
        if self._move(source, sink, size, pair) < size:
            return "aborted"
        return self._end_of_stream(source, pair)

    def _end_of_stream(self, source: PlainTransport, pair: RelayPair) -> str:
        """After `size` bytes: "ok" if the sender's end of stream comes next, in time."""
        deadline = time.monotonic() + self._end_timeout
        while True:
            try:
                return "oversize" if source.recv(1) else "ok"
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "aborted"  # no end of stream in time
                _wait(source, select.POLLIN, pair, remaining)

    def _move(self, source: PlainTransport, sink: PlainTransport, size: int, pair: RelayPair) -> int:
        """Up to `size` bytes from source to sink; how many moved before the source ended."""
        if type(source) is PlainTransport and type(sink) is PlainTransport and hasattr(os, "splice"):
            return _splice(source, sink, size, pair, self._pacer)
        return _copy(source, sink, size, pair, self._pacer)


class ClusterFileRelay(FileRelay):
    """[CLUSTER-12]: the relay of a server in a cluster. A transfer's two data
    connections may reach two servers, so each server serves only its own
    side, and the bytes go between them through the engine
    (chat.backplane.FileChannel), even when both sides are here: one way, one
    set of tests. Each side waits until the room has both data connections
    (the transfer RELAYING, from the log), sends READY, then:

    - the sender's side reads the file from its client, a chunk at a time
      within the channel's window ([FILE-20]) and the pacer's budget, then
      the sender's end of stream, and writes how it ended into the channel;
      a failure ("aborted", "oversize") also goes to the log, which ends the
      transfer and cuts both sides;
    - the recipient's side hands the chunks on to its client and gives a
      credit back for each. After an "ok" end, every byte is with its
      client: it puts "ok" in the log, waits until the log has applied it
      (so the recipient's RECEIVED always follows it there), and ends its
      connection in order; after any other end it cuts it. If its own
      client breaks, it puts "aborted" in the log. As on one server, the
      relay is done once the recipient's socket has taken every byte.

    A side that moves nothing for `file-expiry` seconds (the other side's
    server died, say: nothing else would end the transfer, since both
    parties may still be in the room) ends it `aborted` ([FILE-21]: the
    transfer's expiry bounds its data connections).
    """

    def __init__(self, on_finished: Callable[[Transfer, str], None], end_timeout: float,
                 lines_sent: Callable[[], int], channel: Callable[[str], backplanes.FileChannel]) -> None:
        super().__init__(on_finished, end_timeout, lines_sent)
        self._channel = channel

    def changed(self, transfer: Transfer) -> None:
        """The room changed the transfer's state (cluster.TransferChanged). Under the server's lock."""
        with self._lock:
            self._changed.notify_all()

    def _until(self, pair: RelayPair, done: Callable[[], bool]) -> None:
        with self._lock:
            while not pair.cut and not done():
                self._changed.wait()
            if pair.cut:
                raise RelayCut()

    def _serve_recipient(self, relay: Relay, pair: RelayPair, transport: PlainTransport) -> None:
        outcome, channel = "aborted", None
        try:
            self._until(pair, lambda: relay.transfer.state != ACCEPTED)
            channel = self._channel(cluster.transfer_id(relay.transfer))
            _send_all(transport, relay.ready, pair)  # [FILE-15]: both are here
            outcome = self._hand_on(channel, transport, pair)
            if outcome == "ok":
                self._on_finished(relay.transfer, outcome)
                self._until(pair, lambda: relay.transfer.state != RELAYING)  # [FILE-18]
        except OSError:
            outcome = "aborted"
            self._on_finished(relay.transfer, outcome)  # Its client broke: the sender's side stops.
        except RelayCut:
            outcome = "aborted"  # It ended elsewhere, and the sender's side is cut there.
        finally:
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.delete()
                channel.close()
        if outcome == "ok":
            _close_in_order(transport)
        else:
            _reset(transport)

    def _hand_on(self, channel: backplanes.FileChannel, transport: PlainTransport, pair: RelayPair) -> str:
        """The chunks to the recipient until the sender's side's end: its outcome."""
        stalled_at = time.monotonic() + self._end_timeout
        while True:
            if pair.cut:
                raise RelayCut()
            chunks = channel.pull()
            if not chunks and time.monotonic() > stalled_at:
                raise RelayStalled()
            for kind, data in chunks:
                if kind == b"end":
                    return data.decode()
                _send_all(transport, data, pair)
            if chunks:
                channel.handed_on()
                stalled_at = time.monotonic() + self._end_timeout

    def _serve_sender(self, relay: Relay, pair: RelayPair, transport: PlainTransport) -> None:
        outcome, channel = "aborted", None
        try:
            self._until(pair, lambda: relay.transfer.state != ACCEPTED)
            channel = self._channel(cluster.transfer_id(relay.transfer))
            _send_all(transport, relay.ready, pair)
            outcome = self._send_on(channel, transport, relay.size, pair)
            channel.end(outcome)
            if outcome != "ok":
                self._on_finished(relay.transfer, outcome)  # The recipient's side reports "ok".
        except (OSError, RelayCut):
            outcome = "aborted"
            if not pair.cut:
                self._on_finished(relay.transfer, outcome)
        finally:
            if channel is not None:
                if pair.cut:
                    # Each side removes the keys after its own last write: the
                    # other side may have removed them before a last chunk.
                    with contextlib.suppress(OSError):
                        channel.delete()
                channel.close()
        if outcome == "ok":
            transport.close_notify()  # the sender has ended its side already
            transport.close()
        else:
            _reset(transport)

    def _send_on(self, channel: backplanes.FileChannel, source: PlainTransport, size: int,
                 pair: RelayPair) -> str:
        """`size` bytes from the sender into the channel, then its end: the outcome."""
        moved = 0
        while moved < size:
            stalled_at = time.monotonic() + self._end_timeout
            while not channel.room():
                if pair.cut:
                    raise RelayCut()
                if time.monotonic() > stalled_at:
                    raise RelayStalled()
            grant = self._pacer.allow(min(backplanes.FILE_CHUNK, size - moved), pair)
            try:
                data = source.recv(grant.count)
            except BlockingIOError:
                self._pacer.moved(grant, 0)
                _wait(source, select.POLLIN, pair)
                continue
            self._pacer.moved(grant, len(data))
            if not data:
                return "aborted"  # the sender's end of stream, early
            channel.push(data)
            moved += len(data)
        return self._end_of_stream(source, pair)


def _wait(transport: PlainTransport, events: int, pair: RelayPair, timeout: float | None = None) -> None:
    """Until the socket is ready for `events`; RelayCut if the pair is cut meanwhile."""
    poller = select.poll()  # not select(): descriptors past 1024 are common here
    poller.register(transport.sock, events)
    poller.register(pair.wake_read, select.POLLIN)
    ready = poller.poll(None if timeout is None else timeout * 1000)
    if pair.cut or any(fd == pair.wake_read for fd, _ in ready):
        raise RelayCut()


def _pause(pair: RelayPair, seconds: float) -> None:
    """Wait `seconds` for the pacer, or raise RelayCut as soon as the pair is cut: a poll()
    on its wake-up pipe, never a sleep that a CANCEL or a shutdown would have to wait out."""
    poller = select.poll()
    poller.register(pair.wake_read, select.POLLIN)
    poller.poll(seconds * 1000)
    if pair.cut:
        raise RelayCut()


def _splice(source: PlainTransport, sink: PlainTransport, size: int, pair: RelayPair,
            pacer: RelayPacer) -> int:
    """Linux: move the bytes socket -> pipe -> socket in the kernel, RELAY_WINDOW at a time."""
    pipe_out, pipe_in = os.pipe()
    try:
        try:
            fcntl.fcntl(pipe_in, F_SETPIPE_SZ, RELAY_WINDOW)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the pipe keeps its 64 KiB
        moved = 0
        while moved < size:
            grant = pacer.allow(min(RELAY_WINDOW, size - moved), pair)
            try:
                count = os.splice(source.sock.fileno(), pipe_in, grant.count)
            except BlockingIOError:
                pacer.moved(grant, 0)
                _wait(source, select.POLLIN, pair)
                continue
            pacer.moved(grant, count)
            if not count:
                break  # the sender's end of stream, early
            moved += count
            while count:
                try:
                    count -= os.splice(pipe_out, sink.sock.fileno(), count)
                except BlockingIOError:
                    _wait(sink, select.POLLOUT, pair)
        return moved
    finally:
        os.close(pipe_out)
        os.close(pipe_in)


def _copy(source: PlainTransport, sink: PlainTransport, size: int, pair: RelayPair,
          pacer: RelayPacer) -> int:
    """Through user space (TLS on either side): COPY_WINDOW of plaintext at a time."""
    moved = 0
    while moved < size:
        grant = pacer.allow(min(COPY_WINDOW, size - moved), pair)
        try:
            data = source.recv(grant.count)
        except BlockingIOError:
            pacer.moved(grant, 0)
            _wait(source, select.POLLIN, pair)
            continue
        pacer.moved(grant, len(data))
        if not data:
            break
        _send_all(sink, data, pair)
        moved += len(data)
    return moved


def _send_all(transport: PlainTransport, data: bytes, pair: RelayPair) -> None:
    """Send everything, waiting for the socket as needed; OSError if it breaks."""
    view = memoryview(data)
    while True:
        view = view[transport.send_nowait(view):]
        if not view and not transport.unsent():
            return
        _wait(transport, select.POLLOUT, pair)


def _close_in_order(transport: PlainTransport) -> None:
    """FIN (and close_notify) after the last byte, then wait briefly for the client's close."""
    transport.close_notify()
    transport.shutdown(socket.SHUT_WR)
    try:
        transport.sock.setblocking(True)
        transport.sock.settimeout(CLOSE_GRACE)
        while transport.sock.recv(COPY_WINDOW):
            pass
    except OSError:
        pass
    transport.close()


def _reset(transport: PlainTransport) -> None:
    """[FILE-15]: a failed relay cuts the connection with a reset, never an orderly end."""
    try:
        transport.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    transport.close()


class ChatServer:
    """A chat/1 server, bound and listening as soon as it is constructed.

    It listens in the clear on (host, port), and with TLS on (host, tls_port)
    when given an ssl.SSLContext; port=None leaves out the plain listener.
    `serve_forever()` accepts connections in the calling thread and
    ACCEPTORS - 1 more until `request_stop()`; `start()` accepts in ACCEPTORS
    background threads instead and returns.
    `shutdown()` stops everything and joins every thread; it may be called from
    any thread but the one running serve_forever (signal handlers call
    `request_stop()` instead). Also a context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = 5000,
                 limits: Limits = DEFAULT_LIMITS, *, tls_context: ssl.SSLContext | None = None,
                 tls_port: int = 0, backplane: str | None = None,
                 lease: float | None = None) -> None:
        self.limits = limits
        #: (listening socket, TLS context or None) for each listener.
        self._listeners: list[tuple[socket.socket, ssl.SSLContext | None]] = []
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        try:
            if port is not None:
                self.address = self._listen(host, port, None)
            if tls_context is not None:
                self.tls_address = self._listen(host, tls_port, tls_context)
        except OSError:
            self._close_listeners()
            raise
        for address, tls in ((self.address, False), (self.tls_address, True)):
            if address:
                logs.event(log, logging.INFO, "listening", address="{}:{}".format(*address),
                           tls="yes" if tls else "no")

        self._lock = threading.Lock()
        self._room = ChatRoom(limits)
        #: SPEC.md 11b: with a backplane URL, one of a cluster (chat/backplane.py).
        self._backplane = None
        if backplane is not None:
            self._room = cluster.ClusterRoom(limits, lease=lease or cluster.DEFAULT_LEASE)
            self._backplane = backplanes.Backplane(backplane, self, self._room)
        self._connections: dict[Session, Connection] = {}
        self._outboxes = [Outbox(number) for number in range(FLUSHERS)]
        #: Every connection thread, and the transports still in their TLS
        #: handshake (not yet in _connections), so shutdown can reach them.
        self._threads: set[threading.Thread] = set()
        self._handshaking: set[PlainTransport] = set()
        #: Counters for the summary line, guarded by the lock (see summarize).
        self._stats = collections.Counter()
        self._limited_event = logs.LimitedEvents()

        self._stopping = threading.Event()
        self._stopped = threading.Event()
        #: Chat lines sent since the server started (a broadcast counts once per
        #: recipient), guarded by the lock; the relays read it, unlocked, to tell
        #: whether chat is busy (RelayPacer).
        self._lines_sent = 0
        if self._backplane is None:
            self._files = FileRelay(self._relay_finished, float(limits.file_expiry or 1),
                                    lambda: self._lines_sent)
        else:  # SPEC.md 11b: a transfer's two sides may be on two servers.
            self._files = ClusterFileRelay(self._relay_finished, float(limits.file_expiry or 1),
                                           lambda: self._lines_sent, self._backplane.file_channel)
        for outbox in self._outboxes:
            outbox.thread = threading.Thread(target=self._flush_forever, args=(outbox,),
                                             name=f"flusher-{outbox.number}")
            outbox.thread.start()
        self._watchdog = threading.Thread(target=self._watch_forever, name="watchdog")
        self._acceptors: list[threading.Thread] = []
        self._watchdog.start()
        if self._backplane:
            self._backplane.start()

    def _listen(self, host: str, port: int, context: ssl.SSLContext | None) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listeners.append((listener, context))
        return listener.getsockname()[:2]

    def _close_listeners(self) -> None:
        for listener, _ in self._listeners:
            listener.close()

    # -- accepting ------------------------------------------------------------

    def serve_forever(self) -> None:
        self._start_acceptors(ACCEPTORS - 1)
        try:
            self._accept_forever()
        finally:
            self._stopping.set()  # Should this loop fail, the others stop too.
            for thread in self._acceptors:
                thread.join()

    def _start_acceptors(self, count: int) -> None:
        # ACCEPTORS threads run the same loop on the same listeners: whichever
        # wakes first takes the waiting connections, the others find none.
        for _ in range(count):
            thread = threading.Thread(target=self._accept_forever,
                                      name=f"acceptor-{len(self._acceptors) + 1}")
            self._acceptors.append(thread)
            thread.start()

    def _accept_forever(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener, context in self._listeners:
                selector.register(listener, selectors.EVENT_READ, context)
            while not self._stopping.is_set():
                # A timeout rather than a wake-up byte keeps this loop simple;
                # request_stop() is noticed within WATCHDOG_PERIOD.
                for key, _ in selector.select(WATCHDOG_PERIOD):
                    self._accept_all(key.fileobj, key.data)

    def _accept_all(self, listener: socket.socket, context: ssl.SSLContext | None) -> None:
        # Take every waiting connection, not one per select: a burst of
        # connects is served at the rate accept() allows.
        while True:
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("accept failed: %s", error)  # e.g. out of file descriptors
                return
            thread = threading.Thread(target=self._serve_connection, args=(sock, peer[0], context),
                                      name=f"client-{peer[0]}:{peer[1]}", daemon=True)
            with self._lock:
                self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError as error:
                # "can't start new thread": memory or a system limit. Refuse
                # this client; the acceptor itself must go on.
                log.warning("refused %s: %s", peer[0], error)
                with self._lock:
                    self._threads.discard(thread)
                sock.close()

    # -- reading: one thread per connection -----------------------------------

    def _serve_connection(self, sock: socket.socket, address: str,
                          context: ssl.SSLContext | None) -> None:
        try:
            connection = self._admit(sock, address, context)
            if connection is not None:
                self._read_lines(connection)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _admit(self, sock: socket.socket, address: str,
               context: ssl.SSLContext | None) -> Connection | None:
        """Set the socket up, agree on TLS, and greet the client (or refuse it)."""
        try:
            sock.setblocking(True)
            # Without TCP_NODELAY, Nagle's algorithm holds small lines back for
            # up to 40 ms waiting for more: it put 20 ms on other servers' p99.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            sock.close()  # Reset before it was even greeted: nothing to do.
            return None
        transport = PlainTransport(sock) if context is None else TLSTransport(sock, context)
        with self._lock:
            self._handshaking.add(transport)
        try:
            transport.handshake(HANDSHAKE_TIMEOUT)
            agreed = True
        except NotTLS as error:
            self._limited_event(logs.CONNECTIONS, logging.WARNING, "plain-client-on-tls-port",
                                address=address, detail=str(error))
            self._refuse_plain_client(transport)
            agreed = False
        except OSError as error:
            self._limited_event(logs.CONNECTIONS, logging.WARNING, "tls-handshake-failed",
                                address=address, detail=str(error))
            agreed = False
        with self._lock:
            self._handshaking.discard(transport)
            # Once shutdown has begun, a newcomer would never be told: refuse it.
            admitted = agreed and not self._stopping.is_set()
            if admitted:
                session, actions = self._room.connect(address, time.monotonic())
                outbox = self._outboxes[session.id % len(self._outboxes)]
                connection = Connection(transport, address, session, self.limits, outbox)
                self._connections[session] = connection
                self._apply(actions)
                self._stats["connects"] += 1
        if not admitted:
            transport.close()
            return None
        if session.counted:
            logs.event(logs.CONNECTIONS, logging.INFO, "connect", id=session.id, address=address,
                       tls="yes" if context else None)
        return connection

    def _refuse_plain_client(self, transport: PlainTransport) -> None:
        """[SEC-3]: tell a plain client on the TLS port, in its own terms, and close."""
        try:
            transport.sock.settimeout(CLOSE_GRACE)
            transport.sock.sendall(format_error(
                ErrorCode.TLS_REQUIRED, "this port speaks TLS: connect with TLS (chat-client --tls)"))
            transport.sock.shutdown(socket.SHUT_WR)
            # Read what it sent, so that closing does not reset the line away.
            while transport.sock.recv(4096):
                pass
        except OSError:
            pass  # Gone, or took too long: nothing more is owed.

    def _read_lines(self, connection: Connection) -> None:
        """Read, and handle each line when flood control allows.

        The reader goes on reading while [LIMIT-4] holds lines back, so it
        sees an excess flood ([LIMIT-8]) and a reset ([LIMIT-10]) at once;
        after the client's close it handles what it has ([FRAME-10], [LIMIT-9]).
        """
        session = connection.session
        inbound = connection.inbound
        transport = connection.transport
        #: SPEC.md 11b: this connection's commands on their way through the log.
        stream = self._backplane.stream(session) if self._backplane else None
        at_eof = False
        first = True
        try:
            while not session.closing:
                item = inbound.take(time.monotonic())
                if item is not None:
                    if stream:
                        stream.before(item)
                    registered = session.registered
                    with self._lock:
                        self._stats["lines_in"] += 1
                        self._apply(self._room.handle(session, item, time.monotonic()))
                    if stream:
                        stream.after()
                    if session.registered and not registered:
                        logs.event(logs.CONNECTIONS, logging.INFO, "register", id=session.id,
                                   address=connection.address, name=session.name)
                    continue
                if at_eof:
                    if connection.reset or transport.was_reset():
                        raise ConnectionResetError("seen by the flusher")
                    # Closed: what is left is handled at the flood rate
                    # ([FRAME-10]); the slot waits for it ([LIMIT-9]).
                    if not len(inbound) or self._stopping.wait(inbound.wait(time.monotonic())):
                        break
                    continue
                if len(inbound) and not transport.wait_readable(inbound.wait(time.monotonic())):
                    continue  # Time for the next line.
                data = transport.recv()
                if not data:
                    at_eof = True
                    continue  # (A reset the flusher saw first ends here too: see above.)
                if first:
                    first = False
                    if not isinstance(transport, TLSTransport) and looks_like_tls(data):
                        self._tls_on_plain_port(connection)
                        break
                if not inbound.add(connection.lines.feed(data), time.monotonic()):
                    with self._lock:
                        self._stats["drops_flood"] += 1
                        self._apply(self._room.excess_flood(session))
                    break
        except OSError:
            # Reset or shut down: that peer is gone. A reset aborts, so what it
            # sent and was not handled yet goes with it ([LIMIT-10]).
            at_eof = True
            inbound.discard()
        except Exception:
            # A bug, never the client's fault: log it, drop this client only.
            log.exception("connection %s from %s failed", session.id, connection.address)
        if connection.relay is not None:
            self._serve_data_connection(connection)
            return
        if stream:
            stream.finish()  # Its last lines came before its end ([FRAME-10]).
        with self._lock:
            self._apply(self._room.disconnect(session, "closed"))
        # Wait until the flusher is done with it: its last lines are sent and
        # its slot is free ([LIMIT-3]), so the log line says what is true.
        connection.flushed.acquire()
        self._log_end(connection)
        if not at_eof:
            self._drain(connection)
        connection.transport.close()

    def _tls_on_plain_port(self, connection: Connection) -> None:
        """[SEC-4]: a TLS ClientHello on the plain port. The client cannot read a
        chat/1 line (it choked on HELLO already): close without a reply."""
        self._limited_event(logs.CONNECTIONS, logging.WARNING, "tls-client-on-plain-port",
                            id=connection.session.id, address=connection.address)
        connection.session.ended = "tls-on-plain-port"
        with self._lock:
            self._apply(self._room.disconnect(connection.session, "closed"))

    def _log_end(self, connection: Connection) -> None:
        """One line for the end of a connection: who, and why ([LEAVE-3] reasons, ERR codes)."""
        session = connection.session
        reason = session.ended or "closed"
        level = END_LEVELS.get(reason, logging.INFO)
        # Only a refusal at the door ends with these codes ([LIMIT-1], [LIMIT-2]).
        name = "refused" if reason in (ErrorCode.SERVER_FULL.value,
                                       ErrorCode.TOO_MANY_CONNECTIONS.value) else "disconnect"
        fields = {"id": session.id, "address": connection.address, "name": session.name, "reason": reason}
        if level >= logging.WARNING:
            self._limited_event(logs.CONNECTIONS, level, name, **fields)
        else:
            logs.event(logs.CONNECTIONS, level, name, **fields)

    def _serve_data_connection(self, connection: Connection) -> None:
        """[FILE-15]: once the flusher has sent what was queued (HELLO) and let go
        of the socket, the relay runs this data connection to its end."""
        connection.flushed.acquire()
        relay = connection.relay
        connection.session.ended = "relayed"  # its `disconnect` line says what it was
        if connection.handed_over:
            self._files.serve(relay, connection.relay_pair, connection.transport)
            self._log_end(connection)
            return
        connection.transport.close()  # Cut before the handover (shutdown, a stuck HELLO).
        self._log_end(connection)
        self._files.cut(relay.transfer)
        self._relay_finished(relay.transfer, "aborted")

    def _relay_finished(self, transfer: Transfer, outcome: str) -> None:
        # Who and how it ended, never what: no file name, no bytes.
        logs.event(logs.CONNECTIONS, logging.INFO, "relay", sender=transfer.sender.id,
                   recipient=transfer.recipient.id, outcome=outcome)
        with self._lock:
            self._apply(self._room.relay_finished(transfer, outcome, time.monotonic()))

    def _drain(self, connection: Connection) -> None:
        """Read and discard until the client closes.

        Closing a socket with unread bytes in it makes the kernel send a reset,
        which can destroy the last lines still on their way to the client (its
        own LEAVE, say). So the reader keeps reading until the client closes,
        or until the flusher cuts the connection after CLOSE_GRACE.

        The bytes are read from the socket as they are, ciphertext over TLS:
        they are thrown away, so there is nothing to decrypt, and a TLS layer
        that has sent its close_notify may refuse to read more, which would
        end the drain early and bring the reset back.
        """
        try:
            while connection.transport.sock.recv(DRAIN_SIZE):
                pass
        except OSError:
            pass

    # -- applying the room's actions (always under self._lock) ---------------

    def _apply(self, actions: list[Action]) -> None:
        stats = self._stats
        for action in actions:
            if self._backplane and isinstance(action, cluster.Append):
                self._backplane.submit(action)  # cluster.Append: to the room's log.
                continue
            if isinstance(action, cluster.TransferChanged):
                self._files.changed(action.transfer)
                continue
            if isinstance(action, Broadcast):
                for outbox in self._outboxes:
                    outbox.batch += action.line
                    outbox.wake()
                    stats["lines_out"] += len(outbox.members)
                    self._lines_sent += len(outbox.members)
                continue
            if isinstance(action, CutRelay):
                self._files.cut(action.transfer)
                continue
            connection = self._connections[action.session]
            outbox = connection.outbox
            if isinstance(action, Send):
                connection.personal.append((len(outbox.batch), action.line))
                stats["lines_out"] += 1
                self._lines_sent += 1
            elif isinstance(action, Register):
                connection.room_from = len(outbox.batch)
                outbox.members.add(connection)
            elif isinstance(action, Unregister):
                connection.room_to = len(outbox.batch)
                outbox.members.discard(connection)
            elif isinstance(action, Close) and connection.close_deadline is None:
                grace = SHUTDOWN_GRACE if self._stopping.is_set() else CLOSE_GRACE
                connection.close_deadline = time.monotonic() + grace
            elif isinstance(action, Relay):
                # [FILE-15]: the flusher hands the socket over once HELLO is out.
                connection.relay = action
                connection.relay_pair = self._files.expect(action.transfer)
                connection.close_deadline = time.monotonic() + CLOSE_GRACE
            outbox.dirty.add(connection)
            outbox.wake()

    # -- writing: the flusher threads, one per outbox ---------------------------

    def _flush_forever(self, outbox: Outbox) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(outbox.wake_reader, selectors.EVENT_READ)
            waiting: set[Connection] = set()   # registered for EVENT_WRITE
            closing: set[Connection] = set()   # to finish once sent, or at their deadline
            lingering: collections.deque[tuple[float, Connection]] = collections.deque()
            while not (self._stopped.is_set() and not self._connections):
                timeout = WATCHDOG_PERIOD if closing or lingering else None
                writable = []
                for key, _ in selector.select(timeout):
                    if key.fileobj is outbox.wake_reader:
                        outbox.drain_wake_ups()
                    else:
                        writable.append(key.data)
                with self._lock:
                    outbox.wake_pending = False
                    batch = bytes(outbox.batch)
                    outbox.batch.clear()
                    # Connections something happened to (a reply, joining,
                    # leaving, closing) get their own share of the batch.
                    # Whether to close is decided here, under the lock, with the
                    # lines taken: a LEAVE applied just after this pass must not
                    # close the connection before its LEAVE line goes out.
                    special = [(c, c.take(batch), c.close_deadline is not None) for c in outbox.dirty]
                    # Every other member gets the batch itself, as it is.
                    ordinary = outbox.members - outbox.dirty if batch else ()
                    outbox.dirty.clear()
                backlogged = []
                # Replies and newcomers first: someone is waiting on them.
                for connection, data, close_requested in special:
                    if close_requested:
                        closing.add(connection)
                    if self._deliver(connection, data):
                        backlogged.append(connection)
                for connection in ordinary:
                    if self._deliver(connection, batch):
                        backlogged.append(connection)
                for connection in backlogged:
                    if connection not in waiting:
                        selector.register(connection.transport.sock, selectors.EVENT_WRITE, connection)
                        waiting.add(connection)
                for connection in writable:
                    if connection in waiting and not self._deliver(connection, b""):
                        selector.unregister(connection.transport.sock)
                        waiting.discard(connection)
                now = time.monotonic()
                for connection in list(closing):
                    if not connection.backlog() or now >= connection.close_deadline:
                        if connection in waiting:
                            selector.unregister(connection.transport.sock)
                            waiting.discard(connection)
                        closing.discard(connection)
                        if self._finish(connection, cut=connection.backlog() > 0):
                            lingering.append((now + CLOSE_GRACE, connection))
                while lingering and (lingering[0][0] <= now or self._stopping.is_set()):
                    lingering.popleft()[1].transport.shutdown(socket.SHUT_RDWR)

    def _deliver(self, connection: Connection, data: bytes) -> bool:
        """Send what the socket takes and keep the rest; drop the client if too
        much waits ([LIMIT-6]). Returns whether bytes are left waiting for the
        socket to become writable. The connection's flusher thread only; this
        is the hot path, run once per recipient per pass."""
        transport = connection.transport
        outbuf = connection.outbuf
        try:
            if outbuf:
                outbuf += data
                del outbuf[:transport.send_nowait(outbuf)]
            elif data:
                sent = transport.send_nowait(data)
                if sent < len(data):
                    outbuf += memoryview(data)[sent:]
            elif transport.unsent():
                transport.send_nowait(b"")
        except OSError:
            outbuf.clear()  # Gone: its reader sees that and cleans up.
            connection.reset = True
            return False
        if not outbuf and not transport.unsent():
            return False
        limit = self.limits.outbound_max
        if limit and connection.backlog() > limit and connection.close_deadline is None:
            with self._lock:
                self._stats["drops_slow"] += 1
                self._apply(self._room.slow_consumer(connection.session))
                connection.close_deadline = time.monotonic()  # Cut it now.
        return True

    def _finish(self, connection: Connection, cut: bool) -> bool:
        """Free the slot, then end the connection ([LIMIT-3], [STATE-2]).

        Returns whether the connection lingers: half-closed, waiting for the
        client to close its side (see _drain) until CLOSE_GRACE runs out.
        """
        with self._lock:
            self._room.release(connection.session)
            self._connections.pop(connection.session, None)
            connection.outbox.members.discard(connection)
            connection.outbox.dirty.discard(connection)
        connection.outbuf.clear()
        if connection.relay is not None and not cut and not self._stopping.is_set():
            connection.handed_over = True  # [FILE-15]: the relay takes the socket over.
            connection.flushed.release()
            return False
        # SHUT_WR sends FIN after the lines already sent. A cut (lines left
        # unsent, or the server stopping) shuts reading too, which wakes the
        # reader thread at once.
        if not cut:
            connection.transport.close_notify()
        cut = cut or self._stopping.is_set()
        connection.transport.shutdown(socket.SHUT_RDWR if cut else socket.SHUT_WR)
        connection.flushed.release()
        return not cut

    # -- time ---------------------------------------------------------------------

    def _watch_forever(self) -> None:
        summary_due = time.monotonic() + SUMMARY_PERIOD
        while not self._stopped.wait(WATCHDOG_PERIOD):
            now = time.monotonic()
            with self._lock:
                self._apply(self._room.tick(now))
            if now >= summary_due:
                self.summarize(now - summary_due + SUMMARY_PERIOD)
                summary_due = now + SUMMARY_PERIOD

    def summarize(self, seconds: float) -> None:
        """Log one summary line for the last `seconds`, and start counting afresh."""
        with self._lock:
            counts = self._stats
            self._stats = collections.Counter()
            clients = len(self._connections)
            registered = sum(len(outbox.members) for outbox in self._outboxes)
            connections = list(self._connections.values())
        # Read outside the lock: a flusher may be changing a buffer as this
        # reads its length, and a figure off by one send is good enough here.
        queued = sum(connection.backlog() for connection in connections)
        seconds = max(seconds, 1e-9)
        logs.event(logs.STATS, logging.INFO, "summary", clients=clients, registered=registered,
                   connects=counts["connects"],
                   lines_in_per_s=round(counts["lines_in"] / seconds, 1),
                   lines_out_per_s=round(counts["lines_out"] / seconds, 1),
                   bytes_queued=queued, drops_slow=counts["drops_slow"],
                   drops_flood=counts["drops_flood"])

    # -- starting and stopping -------------------------------------------------------

    def start(self) -> ChatServer:
        """Accept in ACCEPTORS background threads, all started when this returns."""
        self._start_acceptors(ACCEPTORS)
        return self

    def request_stop(self) -> None:
        """Make serve_forever return soon. Safe from a signal handler."""
        self._stopping.set()

    def shutdown(self) -> None:
        """[LIMIT-7]: tell everyone, deliver what can be delivered, join all threads.

        Calling it again does nothing."""
        if self._stopped.is_set():
            return
        self.request_stop()
        for thread in self._acceptors:
            thread.join()
        self._close_listeners()
        with self._lock:
            self._apply(self._room.shutdown())
            for transport in self._handshaking:
                transport.shutdown(socket.SHUT_RDWR)
        self._files.shutdown()
        # Connection threads end once the flusher has closed their sockets,
        # within SHUTDOWN_GRACE; a set that changes is copied under the lock.
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                break
            for thread in threads:
                thread.join()
        if self._backplane:
            self._backplane.stop()
        self._stopped.set()
        for outbox in self._outboxes:
            outbox.wake_writer.send(b"\0")
            outbox.thread.join()
            outbox.close()
        self._watchdog.join()
        logs.event(log, logging.INFO, "stopped")

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


# -- command line -----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = Limits()
    parser = options.OneLineParser(
        prog="chat-server",
        description="The reference chat/1 server (see SPEC.md). Stop it with Ctrl-C or SIGTERM.",
        epilog="Every limit can be set to 0 to switch it off. The room password is read "
               "from the CHAT_PASSWORD environment variable or --password-file, so that "
               "it does not show in ps.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; "
                             "0.0.0.0 or :: exposes the server to the network)")
    parser.add_argument("--port", type=options.port, default=5000,
                        help="TCP port (default 5000; 0 picks a free one)")
    limit_options = [
        ("--max-clients", "max_clients", "open connections in all"),
        ("--max-per-address", "max_per_address", "open connections per IP address"),
        ("--register-timeout", "register_timeout", "seconds to send USER"),
        ("--ping-interval", "ping_interval", "seconds of silence before the server PINGs"),
        ("--ping-timeout", "ping_timeout", "seconds to answer the server's PING"),
        ("--flood-rate", "flood_rate", "lines per second per connection"),
        ("--flood-burst", "flood_burst", "lines per connection in a burst"),
        ("--outbound-max", "outbound_max", "bytes queued for a client before it is dropped"),
        ("--inbound-max", "inbound_max", "lines of a client held back by --flood-rate before "
                                         "it is dropped"),
        ("--file-max", "file_max", "largest file relayed, in bytes (0: no file sharing)"),
        ("--file-per-user", "file_per_user", "transfers one user may have open"),
        ("--file-per-server", "file_per_server", "transfers open at once in all"),
        ("--file-expiry", "file_expiry", "seconds an offer waits for an answer"),
    ]
    for option, field, text in limit_options:
        default = getattr(defaults, field)
        parser.add_argument(option, dest=field, type=options.whole_number, default=default,
                            help=f"{text} (default {default})")
    for verb, field in OPTIONAL_VERBS.items():
        parser.add_argument(f"--{field}", type=int, choices=(0, 1), default=getattr(defaults, field),
                            help=f"offer the optional command {verb} (1) or not (0) (SPEC.md 6.8; "
                                 f"default {getattr(defaults, field)})")
    parser.add_argument("--password-file", type=options.readable_file,
                        help="file whose first line is the room password")
    parser.add_argument("--password", help="the room password (visible in ps: prefer CHAT_PASSWORD "
                                           "or --password-file)")
    tls = parser.add_argument_group("TLS", "Serve chat/1 inside TLS on a second port, beside "
                                    "the plain one (SPEC.md [SEC-1]).")
    tls.add_argument("--tls-cert", type=options.readable_file, help="certificate chain file (PEM)")
    tls.add_argument("--tls-key", type=options.readable_file,
                     help="private key file (PEM); default: in --tls-cert")
    tls.add_argument("--tls-port", type=options.port, default=5001,
                     help="TLS port (default 5001; 0 picks one)")
    tls.add_argument("--tls-only", action="store_true", help="no plain listener, TLS only")
    logging_options = parser.add_argument_group("Logging", "Records go to stderr (README, "
                                                "\"Operating the server\").")
    logging_options.add_argument("--log-level", choices=logs.LOG_LEVELS, default="info",
                                 help="the least important records written (default info)")
    logging_options.add_argument("--log-format", choices=logs.LOG_FORMATS, default="text",
                                 help="text, or json: one JSON object per line (default text)")
    logging_options.add_argument("--quiet", action="store_true",
                                 help="warnings and errors only (the same as --log-level warning)")
    cluster_options = parser.add_argument_group("Cluster", "One room on several servers through "
                                                "Redis (SPEC.md 11b; README, \"Running a cluster\").")
    cluster_options.add_argument("--backplane", metavar="URL", type=backplane_url,
                                 help="the room's log: redis://HOST[:PORT][/DB] (default: no cluster)")
    cluster_options.add_argument("--backplane-lease", metavar="SECONDS", type=options.whole_number,
                                 default=int(cluster.DEFAULT_LEASE),
                                 help="seconds this server may be silent in the log before the others "
                                      f"send its users' LEAVEs (default {int(cluster.DEFAULT_LEASE)})")
    parser.add_argument("--without", action="append", default=[], choices=sorted(OPTIONAL_VERBS.values()),
                        help="do not offer this optional command (SPEC.md 6.8; repeatable), "
                             "as a server older than it would")
    return parser


def backplane_url(text: str) -> str:
    """--backplane: a redis:// URL (argparse's type)."""
    try:
        backplanes.parse_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def limits_from_args(args: argparse.Namespace) -> Limits:
    password = args.password or os.environ.get("CHAT_PASSWORD") or None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as file:
                password = file.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            options.fail("chat-server", f"argument --password-file: cannot read {args.password_file}: "
                                        f"{getattr(error, 'strerror', None) or error}")
        if not password:
            # An empty file would silently open the room to everyone.
            options.fail("chat-server", f"argument --password-file: the first line of "
                                        f"{args.password_file} is empty")
    fields = {name: getattr(args, name) for name in (
        "max_clients", "max_per_address", "register_timeout", "ping_interval",
        "ping_timeout", "flood_rate", "flood_burst", "outbound_max", "inbound_max",
        "file_max", "file_per_user", "file_per_server", "file_expiry",
        *OPTIONAL_VERBS.values())}
    # Optional commands left out (SPEC.md 6.8, [CMD-5]).
    fields.update({field: 0 for field in args.without})
    if fields["flood_rate"] and not fields["flood_burst"]:
        options.fail("chat-server", "argument --flood-burst: 0 lets no line through while --flood-rate "
                                    "is above 0 (SPEC.md [LIMIT-12]); give 1 or more")
    return Limits(password=password, **fields)


def tls_context_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context, or one line naming the option that is wrong."""
    if not args.tls_cert:
        if args.tls_only:
            options.fail("chat-server", "argument --tls-only: needs --tls-cert")
        if args.tls_key:
            options.fail("chat-server", "argument --tls-key: needs --tls-cert")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            problem = f"the key in {args.tls_key or args.tls_cert} does not match the certificate"
        elif args.tls_key:
            problem = (f"cannot load a PEM certificate from {args.tls_cert} and its key from "
                       f"{args.tls_key} ({error.reason or error})")
        else:
            problem = (f"no PEM certificate and private key in {args.tls_cert}; give the key "
                       f"with --tls-key ({error.reason or error})")
        options.fail("chat-server", f"argument --tls-cert: {problem}")
    except OSError as error:
        options.fail("chat-server", f"argument --tls-cert: {error.strerror or error}")
    return context


def exposure_warnings(host: str, bound: str, limits: Limits, plain: bool) -> list[str]:
    """What an operator should hear at start-up about who can reach the room."""
    try:
        loopback = ipaddress.ip_address(bound.split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return []
    where = f"{host} (every interface)" if bound in ("0.0.0.0", "::") else host
    warnings = []
    if limits.password is None:
        warnings.append(f"listening on {where} with no password: anyone who can reach the port "
                        "can join (set CHAT_PASSWORD or --password-file)")
    if plain:
        warnings.append(f"listening on {where} in the clear: names, messages and the password "
                        "cross the network unencrypted (--tls-cert with --tls-only, or a firewall)")
    return warnings


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.backplane_lease:
        options.fail("chat-server", "argument --backplane-lease: 0 would declare a server gone as soon as "
                                    "it is silent (SPEC.md [CLUSTER-5]); give 1 or more")
    logs.configure("warning" if args.quiet else args.log_level, args.log_format)
    limits = limits_from_args(args)
    tls_context = tls_context_from_args(args)
    # Reader threads need little stack; 256 KiB instead of 8 MiB keeps ten
    # thousand of them within the address space and their memory small.
    threading.stack_size(256 * 1024)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        socket.getaddrinfo(args.host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        options.fail("chat-server", f"argument --host: {args.host}: {getattr(error, 'strerror', error)}")
    try:
        server = ChatServer(args.host, None if args.tls_only else args.port, limits,
                            tls_context=tls_context, tls_port=args.tls_port,
                            backplane=args.backplane, lease=args.backplane_lease)
    except OSError as error:
        # The port is taken, or the address is not this machine's: the
        # options are fine, the machine is not ready for them (status 1).
        ports = f"--tls-port {args.tls_port}" if args.tls_only else (
            f"--port {args.port}" + (f" or --tls-port {args.tls_port}" if tls_context else ""))
        reason = str(error.strerror or error).split(" (while attempting", 1)[0]
        print(f"chat-server: cannot listen on {args.host} ({ports}): {reason}", file=sys.stderr)
        return 1
    bound = (server.address or server.tls_address)[0]
    for warning in exposure_warnings(args.host, bound, limits, plain=server.address is not None):
        logs.event(log, logging.WARNING, "exposed", detail=warning)
    if server.address:
        print("chat server listening on {}:{}".format(*server.address), flush=True)
    if server.tls_address:
        print("chat server listening with TLS on {}:{}".format(*server.tls_address), flush=True)

    def stop(signum: int, frame: object) -> None:
        server.request_stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    server.shutdown()
    print("chat server stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

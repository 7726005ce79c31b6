"""The backplane: the room's log in a Redis stream, and the threads that use it (SPEC.md 11b).

`python -m chat.server --backplane redis://HOST:PORT/DB` makes the server one
of a cluster: chat/cluster.py decides, this module carries entries to and from
Redis. Standard library only: RESP2, the few commands used here, over a socket.

    writer thread:    appends this server's entries (XADD), in the order the
                      room made them, and a heartbeat every lease / 5
                      ([CLUSTER-5]); while Redis cannot be reached it refuses
                      the clients' commands at once ([CLUSTER-6]) and keeps
                      the LEAVEs until it can append them
    consumer thread:  reads the stream in order (XREAD BLOCK) from the latest
                      snapshot of the room (or the stream's first entry),
                      applies each entry to the room under the server's lock,
                      and wakes the reader waiting for its own entry; every
                      heartbeat period it records how far it has applied,
                      writes a snapshot of the room (every lease if only
                      heartbeats came) and trims the stream ([CLUSTER-9],
                      [CLUSTER-10])
    reader threads:   (chat/server.py) hand a client's MSG, ACT and PM to the
                      log one after another (Stream); any other line waits
                      until the ones before it are back ([ORDER-4])
    relay threads:    (chat/server.py, ClusterFileRelay) move a transfer's
                      bytes from the sender's server to the recipient's
                      through a stream of their own (FileChannel, [CLUSTER-12])

Why Redis Streams (README, "Running a cluster", with figures from `python -m
bench --scenario engines`): one `redis-server` process, a Debian package with
no configuration, and a stream is exactly the ordered, durable log the design
needs (XADD gives each entry its place and time, XREAD BLOCK follows it).
NATS JetStream would do too: 0.1 ms quicker from append to read, but four
times Redis's CPU for the same entries, and a stream and consumers to set up.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
import time
import urllib.parse

from chat import cluster, logs

log = logging.getLogger("chat.server.backplane")

#: The stream holding the room's log.
STREAM = b"chat1:room"
#: [CLUSTER-9]: a hash, server id -> the id of the last entry that server has applied.
APPLIED = b"chat1:applied"
#: [CLUSTER-9]: a hash: `id`, the entry a snapshot of the room was taken after, and `state`.
SNAPSHOT = b"chat1:snapshot"
#: [CLUSTER-9]: the id the stream was last trimmed to (every entry before it is gone).
TRIMMED = b"chat1:trimmed"
#: Seconds between two attempts to reach Redis after a failure ([CLUSTER-6]).
#: Short: while Redis is unreachable every command is refused.
RECONNECT_PERIOD = 0.5
#: Milliseconds one XREAD waits for new entries; the consumer then looks at
#: whether the server is stopping.
READ_BLOCK_MS = 500
#: Entries taken by one XREAD: a batch is applied under one lock.
READ_COUNT = 1000
#: Seconds to connect to Redis, and to wait for one reply (XREAD's block aside).
REDIS_TIMEOUT = 2.0
#: Entries appended in one pipeline at most: what one failure can leave
#: undecided, and what the writer holds outside its queue.
PIPELINE_MAX = 1000
#: MSG, ACT and PM of one connection on their way through the log at once
#: (Stream): enough to keep a fast sender's pipeline full, few enough that a
#: sender cannot pile up the writer's queue without bound.
STREAM_MAX = 64
#: Seconds the server's shutdown waits for its last LEAVEs to reach the log.
FLUSH_GRACE = 1.0
#: [CLUSTER-12]: a transfer's bytes go from the sender's server to the
#: recipient's through Redis in chunks of FILE_CHUNK bytes, at most
#: FILE_WINDOW chunks on their way at once: the 1 MiB window of a relay on
#: one server ([FILE-20]), so Redis holds at most that much of a transfer.
FILE_CHUNK = 64 * 1024
FILE_WINDOW = 16
#: Milliseconds a relay waits in one blocking Redis call before it looks
#: again whether the transfer was cut (CANCEL, a party gone, shutdown).
FILE_BLOCK_MS = 200
#: Seconds a relay's keys outlive their last write: what an abandoned
#: transfer (its servers gone) leaves in Redis, for this long at most.
FILE_KEY_TTL = 600


# [CLUSTER-9]: the scripts that keep the stream trimmed. Each runs in Redis
# as one step (EVAL), so a server registering its position and a server
# trimming cannot interleave: once a server's position is in APPLIED, no trim
# goes past it. KEYS: STREAM, APPLIED, SNAPSHOT, TRIMMED, always in that order.
_IDS_LUA = b"""
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
"""
#: ARGV: the ids of the servers gone ([CLUSTER-5]); they no longer hold the
#: stream back. Trims to the lowest of the live servers' positions and the
#: latest snapshot's: what every live server has applied, and what a server
#: starting now can start from. Returns how many entries it removed.
TRIM_LUA = _IDS_LUA + b"""
for i = 1, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
local bound = redis.call('HGET', KEYS[3], 'id')
if not bound then return 0 end
for _, applied in ipairs(redis.call('HVALS', KEYS[2])) do
  if less(applied, bound) then bound = applied end
end
local trimmed = redis.call('GET', KEYS[4])
if trimmed and not less(trimmed, bound) then return 0 end
redis.call('SET', KEYS[4], bound)
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
"""
#: ARGV: a server's id, the last entry it applied. If nothing after that entry
#: was trimmed, records it in APPLIED and returns nil; otherwise records the
#: latest snapshot's id instead and returns the snapshot, [id, state].
REGISTER_LUA = _IDS_LUA + b"""
local trimmed = redis.call('GET', KEYS[4]) or '0-0'
if not less(ARGV[2], trimmed) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return nil
end
local snapshot = redis.call('HMGET', KEYS[3], 'id', 'state')
redis.call('HSET', KEYS[2], ARGV[1], snapshot[1])
return snapshot
"""
#: ARGV: an entry's id, the room's state after it. Kept if it is the latest.
SNAPSHOT_LUA = _IDS_LUA + b"""
local latest = redis.call('HGET', KEYS[3], 'id')
if latest and not less(latest, ARGV[1]) then return 0 end
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'state', ARGV[2])
return 1
"""


def eval_command(script: bytes, *args: bytes) -> tuple[bytes, ...]:
    return (b"EVAL", script, b"4", STREAM, APPLIED, SNAPSHOT, TRIMMED, *args)


def id_key(entry_id: bytes) -> tuple[int, int]:
    """A stream id `<ms>-<n>` (or `0`) as a pair that sorts as Redis does."""
    ms, _, n = entry_id.partition(b"-")
    return int(ms), int(n or 0)


class RedisError(OSError):
    """Redis could not be reached, or answered with an error."""


class RedisReplyError(RedisError):
    """Redis answered with an error: the connection itself is fine."""


class RedisConnection:
    """One connection to Redis speaking RESP2: a command, then its reply."""

    def __init__(self, host: str, port: int, db: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=REDIS_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        if db:
            self.command(b"SELECT", str(db).encode())

    def command(self, *args: bytes, timeout: float = REDIS_TIMEOUT):
        self.send_commands([args], timeout)
        return self.reply()

    def send_commands(self, commands: list[tuple[bytes, ...]], timeout: float = REDIS_TIMEOUT) -> None:
        """Send commands without waiting: read each one's reply with reply(), in order."""
        request = []
        for args in commands:
            request.append(b"*%d\r\n" % len(args))
            for arg in args:
                request.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        if timeout != self.sock.gettimeout():
            # Only when it changes: settimeout() lets go of the GIL for its
            # system call and must win it back, which took 0.34 ms a call
            # on average under fan-out (cProfile), before every pipeline.
            self.sock.settimeout(timeout)
        self.sock.sendall(b"".join(request))

    def reply(self):
        """The next reply: bytes, int, a list, or None; RedisError for an error reply."""
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("Redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            raise RedisReplyError(body.decode("utf-8", "replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            if int(body) < 0:
                return None
            data = self.file.read(int(body) + 2)
            if len(data) != int(body) + 2:
                raise RedisError("Redis closed the connection")
            return data[:-2]
        if kind == b"*":
            return None if int(body) < 0 else [self.reply() for _ in range(int(body))]
        raise RedisError(f"unexpected reply from Redis: {line[:40]!r}")

    def gone(self) -> bool:
        """Whether Redis closed this idle connection: it sends nothing unasked,
        so anything to read (an end of file, a reset) means it is gone."""
        try:
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def parse_url(url: str) -> tuple[str, int, int]:
    """(host, port, db) from `redis://HOST[:PORT][/DB]`; ValueError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"{url}: expected redis://HOST[:PORT][/DB]")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url}: the database after / is a number")
    return parts.hostname, parts.port or 6379, int(path or 0)


class FileChannel:
    """One transfer's bytes between two servers ([CLUSTER-12]), through Redis:
    a stream of chunks, `chat1:file:<id>`, written by the sender's server and
    read by the recipient's, ending with an entry that says how the sender's
    side ended; and a list of credits, `chat1:file:<id>:credit`, one pushed
    back for each chunk the recipient's server has handed on, so that at most
    FILE_WINDOW chunks are on their way ([FILE-20]). Each side has a
    connection of its own: the room's log never waits behind file bytes
    ([FILE-19]). A relay thread's alone; every blocking call returns within
    FILE_BLOCK_MS, so the thread can look whether it was cut."""

    def __init__(self, backplane: Backplane, relay_id: str) -> None:
        self._connection = RedisConnection(backplane.host, backplane.port, backplane.db)
        self._stream = b"chat1:file:" + relay_id.encode()
        self._credits = self._stream + b":credit"
        self._window = FILE_WINDOW
        self._last_id = b"0-0"
        #: The ids of the chunks pull() returned last.
        self._pulled: list[bytes] = []

    def _pipeline(self, *commands: tuple[bytes, ...], timeout: float = REDIS_TIMEOUT) -> list:
        self._connection.send_commands(list(commands), timeout)
        return [self._connection.reply() for _ in commands]

    # -- the sender's server --

    def room(self) -> bool:
        """Whether a chunk may go now; if the window is full, waits up to
        FILE_BLOCK_MS for the recipient's server to hand one on."""
        if not self._window:
            [credit] = self._pipeline((b"BLPOP", self._credits, b"%.3f" % (FILE_BLOCK_MS / 1000)),
                                      timeout=REDIS_TIMEOUT + FILE_BLOCK_MS / 1000)
            self._window += credit is not None
        return self._window > 0

    def push(self, data: bytes) -> None:
        self._window -= 1
        self._pipeline((b"XADD", self._stream, b"*", b"d", data),
                       (b"EXPIRE", self._stream, b"%d" % FILE_KEY_TTL))

    def end(self, outcome: str) -> None:
        """After the last chunk: how the sender's side ended ("ok", "aborted", "oversize")."""
        self._pipeline((b"XADD", self._stream, b"*", b"end", outcome.encode()),
                       (b"EXPIRE", self._stream, b"%d" % FILE_KEY_TTL))

    # -- the recipient's server --

    def pull(self) -> list[tuple[bytes, bytes]]:
        """The next chunks, each (b"d", data) or (b"end", outcome); waits up to
        FILE_BLOCK_MS for one, and returns none if none came."""
        [reply] = self._pipeline((b"XREAD", b"COUNT", b"%d" % FILE_WINDOW, b"BLOCK", b"%d" % FILE_BLOCK_MS,
                                  b"STREAMS", self._stream, self._last_id),
                                 timeout=REDIS_TIMEOUT + FILE_BLOCK_MS / 1000)
        chunks = []
        self._pulled = []
        for entry_id, fields in reply[0][1] if reply else ():
            self._last_id = entry_id
            self._pulled.append(entry_id)
            chunks.append((fields[0], fields[1]))
        return chunks

    def handed_on(self) -> None:
        """The chunks pulled last went to the recipient: they leave Redis, and
        as many credits go back to the sender's server."""
        self._pipeline((b"XDEL", self._stream, *self._pulled),
                       (b"RPUSH", self._credits, *([b"1"] * len(self._pulled))),
                       (b"EXPIRE", self._credits, b"%d" % FILE_KEY_TTL))

    def delete(self) -> None:
        """The relay is over (the recipient's server read its end, or it was cut)."""
        self._pipeline((b"DEL", self._stream, self._credits))

    def close(self) -> None:
        self._connection.close()


class Stream:
    """One connection's commands on their way through the log ([ORDER-4]).

    MSG, ACT and PM of a registered client stream: the reader hands the next
    one to the log without waiting for the last to come back, since the log
    keeps their order; at most STREAM_MAX are out at once, a sliding window:
    the next waits for the oldest, not for all of them. Any other line waits
    until every entry before it is back, so that its reply, or the state it
    is checked in (registered or not), follows them. The reader thread's alone.
    """

    def __init__(self, backplane: Backplane, session) -> None:
        self._backplane = backplane
        self._session = session
        #: This connection's entries not known to be back, oldest first. They
        #: come back in this order, so one found back means all before it are.
        self._out: collections.deque[int] = collections.deque()

    def before(self, item) -> None:
        """Before the reader hands `item` to the room: wait if it must."""
        if not self._out:
            return
        with self._backplane._server._lock:
            streams = self._backplane._room.streamable(self._session, item)
        if not streams:
            self._settle()
        elif len(self._out) >= STREAM_MAX:
            self._backplane.wait(self._out.popleft())

    def after(self) -> None:
        """After the room handled the line: note what went to the log, wait if it must."""
        with self._backplane._server._lock:
            entry = self._backplane._room.awaiting.pop(self._session, None)
        if entry is None:
            return
        self._out.append(entry.seq)
        if entry.kind not in cluster.STREAMED:
            self._settle()  # USER, USERS, NICK, LEAVE: the next line depends on them.

    def finish(self) -> None:
        """The connection ends: its lines handled so far come first ([FRAME-10])."""
        if self._out:
            self._settle()

    def _settle(self) -> None:
        self._backplane.wait(self._out[-1])
        self._out.clear()


class Backplane:
    """The server's link to the room's log. `server` is a chat.server.ChatServer."""

    def __init__(self, url: str, server, room: cluster.ClusterRoom) -> None:
        self.host, self.port, self.db = parse_url(url)
        self.url = url
        self._server = server
        self._room = room
        self._lock = threading.Condition(threading.Lock())
        # -- guarded by self._lock --
        self._queue: collections.deque[cluster.Append] = collections.deque()
        #: The clients' entries not yet back from the log nor refused: by seq,
        #: what wakes the reader waiting for it.
        self._pending: dict[int, threading.Event] = {}
        #: The same entries, per session id in the order submitted, each with
        #: its outcome once known (None: not yet; "applied"; "refused").
        self._order: dict[int, collections.deque[list]] = {}
        self._closing = False
        self._up = False
        self._stopped = threading.Event()
        #: [CLUSTER-9]: the consumer has recorded its position (and taken the
        #: room from a snapshot if the stream was trimmed): the writer appends
        #: nothing before, or its client's USER could be in the snapshot
        #: without coming back to it.
        self._registered = threading.Event()
        self._writer = threading.Thread(target=self._write_forever, name="backplane-writer")
        self._consumer = threading.Thread(target=self._consume_forever, name="backplane-consumer")

    def start(self) -> None:
        self._writer.start()
        self._consumer.start()
        # Serve once the room is known; if Redis cannot be reached, at once
        # (the commands that need the log are refused until it can, [CLUSTER-6]).
        self._registered.wait(REDIS_TIMEOUT)

    # -- the server's side -------------------------------------------------------

    def stream(self, session) -> Stream:
        return Stream(self, session)

    def file_channel(self, relay_id: str) -> FileChannel:
        """A connection of its own for one side of a transfer's relay ([CLUSTER-12])."""
        return FileChannel(self, relay_id)

    def submit(self, append: cluster.Append) -> None:
        """Queue an entry for the log. Called under the server's lock, so the
        queue keeps the room's order."""
        with self._lock:
            if append.awaited:
                self._pending[append.entry.seq] = threading.Event()
                self._order.setdefault(append.entry.session, collections.deque()).append([append.entry, None])
            self._queue.append(append)
            self._lock.notify()

    def wait(self, seq: int) -> None:
        """Block until entry `seq` is back from the log, or refused. Reader thread."""
        with self._lock:
            done = self._pending.get(seq)
        while done is not None and not done.wait(0.5):
            if self._stopped.is_set() or self._server._stopping.is_set():
                return  # Shutting down: the session is closing anyway.

    def _resolve(self, seq: int) -> None:
        """Under self._lock."""
        done = self._pending.pop(seq, None)
        if done is not None:
            done.set()

    def _settle(self, entry: cluster.Entry, outcome: str) -> None:
        """An entry of a client came back from the log ("applied") or was
        refused. Under the server's lock, then this one's (that order, always).

        A refusal's ERR is sent only once every entry of that client before
        it is back ([ORDER-4]): an entry appended just before Redis went away
        comes back when Redis does, and its lines come before the ERR of the
        entry after it.
        """
        with self._lock:
            queue = self._order.get(entry.session)
            if queue is None:
                return
            for item in queue:
                if item[0].seq == entry.seq:
                    item[1] = outcome
                    break
            while queue and queue[0][1] is not None:
                head, head_outcome = queue.popleft()
                if head_outcome == "refused":
                    self._server._apply(self._room.refused_entry(head))
                self._resolve(head.seq)
            if not queue:
                del self._order[entry.session]

    def _refuse(self, refused: list[cluster.Append]) -> None:
        """[CLUSTER-6]: these will not reach the log; each gets ERR BACKPLANE_DOWN
        in its turn (see _settle). The writer thread, holding neither lock."""
        if refused:
            with self._server._lock:
                for append in refused:
                    self._settle(append.entry, "refused")

    def stop(self) -> None:
        """Append what is queued (the LEAVEs of shutdown) within FLUSH_GRACE, then stop."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._writer.join(FLUSH_GRACE + REDIS_TIMEOUT)
        self._stopped.set()
        with self._lock:
            for seq in list(self._pending):
                self._resolve(seq)
            self._lock.notify()
        self._writer.join()
        self._consumer.join()

    # -- the writer ----------------------------------------------------------------

    def _connect(self) -> RedisConnection | None:
        try:
            return RedisConnection(self.host, self.port, self.db)
        except OSError as error:
            self._set_up(False, error)
            return None

    def _set_up(self, up: bool, error: object = None) -> None:
        if up != self._up:
            self._up = up
            logs.event(log, logging.INFO if up else logging.WARNING,
                       "backplane-up" if up else "backplane-down", url=self.url,
                       detail=str(error) if error else None)

    def _write_forever(self) -> None:
        period = self._room.lease_ms / 1000 / cluster.HEARTBEATS_PER_LEASE
        connection: RedisConnection | None = None
        heartbeat_due = 0.0
        while not self._stopped.is_set():
            if connection is not None and connection.gone():
                # Closed while idle (Redis restarted): nothing of ours was in
                # flight, so reconnect before sending rather than refuse.
                connection.close()
                connection = None
            if connection is None and self._registered.is_set():
                connection = self._connect()
            if connection is None:
                # [CLUSTER-6]: refuse the clients' commands now, keep the LEAVEs.
                with self._lock:
                    refused = [append for append in self._queue if append.awaited]
                    self._queue = collections.deque(append for append in self._queue if not append.awaited)
                self._refuse(refused)
                with self._lock:
                    if self._closing:
                        return
                    self._lock.wait(RECONNECT_PERIOD)
                continue
            with self._lock:
                now = time.monotonic()
                if not self._queue and now < heartbeat_due:
                    if self._closing:
                        return
                    self._lock.wait(heartbeat_due - now)
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), PIPELINE_MAX))]
            if now >= heartbeat_due:
                # Without the server's lock: under a burst of JOINs the lock
                # is in demand, and a late heartbeat costs the lease. The id
                # it reads is one attribute, replaced whole.
                heartbeat = self._room.heartbeat()
                batch.insert(0, cluster.Append(heartbeat, False))
                heartbeat_due = now + period
            # One pipeline: every XADD sent, then every reply read. Redis
            # appends them in the order sent.
            answered = 0
            try:
                connection.send_commands([(b"XADD", STREAM, b"*", b"e", cluster.encode(append.entry))
                                          for append in batch])
                for _ in batch:
                    connection.reply()
                    answered += 1
                self._set_up(True)
            except OSError as error:
                self._set_up(False, error)
                connection.close()
                connection = None
                # The entries not answered may or may not be in the log. Sent
                # again, one could be there twice: a client's command is
                # refused instead (SPEC.md 11b says what that means); a LEAVE
                # goes again, in order (a second one changes nothing); a
                # heartbeat is not kept.
                unanswered = batch[answered:]
                with self._lock:
                    self._queue.extendleft(reversed([append for append in unanswered
                                                     if not append.awaited and append.entry.kind != "alive"]))
                self._refuse([append for append in unanswered if append.awaited])
        if connection is not None:
            connection.close()

    # -- the consumer ------------------------------------------------------------------

    def _consume_forever(self) -> None:
        #: The last entry applied; b"0": none, the room's state is the whole log.
        last_id = b"0-0"
        #: The server id whose position is recorded in APPLIED, once it is.
        registered: str | None = None
        gap = False
        period = self._room.lease_ms / 1000 / cluster.HEARTBEATS_PER_LEASE
        trim_due = snapshot_due = time.monotonic() + period
        #: The entry this server's last snapshot was taken after, and whether
        #: an entry other than a heartbeat was applied since.
        snapshot_id, changed = b"0-0", False
        connection: RedisConnection | None = None
        while not self._stopped.is_set():
            if connection is None:
                connection = self._connect()
                if connection is None:
                    self._stopped.wait(RECONNECT_PERIOD)
                    continue
            try:
                if gap or registered != self._room.server_id:
                    registered = self._room.server_id
                    last_id = self._register(connection, last_id, fresh=not self._registered.is_set())
                    gap = False
                    continue  # The server id may have changed: register that one too.
                now = time.monotonic()
                maintenance = []
                if now >= trim_due:
                    # A snapshot every period while the room is busy, every
                    # lease when only heartbeats come: the stream keeps what
                    # came after the latest one.
                    snapshot = now >= snapshot_due or (changed and last_id != snapshot_id)
                    maintenance = self._maintenance(last_id, snapshot)
                    trim_due = now + period
                    if snapshot:
                        snapshot_due, snapshot_id, changed = now + self._room.lease_ms / 1000, last_id, False
                # One pipeline, so that the maintenance costs no round trip of
                # its own before the read. The GET runs once the XREAD has
                # returned: if nothing after last_id was trimmed by then, the
                # XREAD missed nothing.
                connection.send_commands(maintenance + [
                    (b"XREAD", b"COUNT", b"%d" % READ_COUNT, b"BLOCK", b"%d" % READ_BLOCK_MS,
                     b"STREAMS", STREAM, last_id), (b"GET", TRIMMED)],
                    timeout=REDIS_TIMEOUT + READ_BLOCK_MS / 1000)
                for _ in maintenance:
                    try:
                        connection.reply()
                    except RedisReplyError as error:
                        logs.event(log, logging.WARNING, "backplane-trim-failed", url=self.url,
                                   detail=str(error))
                reply = connection.reply()
                trimmed = connection.reply()
            except OSError as error:
                self._set_up(False, error)
                connection.close()
                connection = None
                continue
            if trimmed is not None and id_key(trimmed) > id_key(last_id):
                # [CLUSTER-9]: entries after the last one applied may be gone
                # (the others declared this server gone and trimmed past it):
                # what was read is not applied; the room restarts from a snapshot.
                gap = True
                continue
            if not reply:
                continue
            entries = reply[0][1]
            with self._server._lock:
                gone = len(self._room.gone)
                for entry_id, fields in entries:
                    last_id = entry_id
                    entry = cluster.decode(_field(fields, b"e"))
                    if entry is None:
                        continue
                    self._server._apply(self._room.apply(cluster.stamp_of(entry_id.decode()), entry))
                    changed = changed or entry.kind != "alive"
                    if entry.server in self._room.own_ids and entry.seq:
                        self._settle(entry, "applied")
                if len(self._room.gone) != gone:
                    # [CLUSTER-5]: worth an operator's attention (a server died,
                    # or was starved past its lease).
                    logs.event(log, logging.WARNING, "servers-gone", url=self.url,
                               gone=len(self._room.gone), this_server=self._room.server_id)
        if connection is not None:
            if registered is not None:
                try:  # Stopped in order: this server no longer holds the stream back.
                    connection.command(b"HDEL", APPLIED, registered.encode())
                except OSError:
                    pass
            connection.close()

    def _register(self, connection: RedisConnection, last_id: bytes, fresh: bool) -> bytes:
        """Record this server's position in APPLIED ([CLUSTER-9]); if entries
        after `last_id` were trimmed, take the room from the latest snapshot.
        The entry to read after."""
        snapshot = connection.command(*eval_command(REGISTER_LUA, self._room.server_id.encode(), last_id))
        if snapshot is not None:
            snapshot_id, state = snapshot
            with self._server._lock:
                self._server._apply(self._room.restore(state, fresh))
                if not fresh:
                    # The entries awaited were trimmed, or are an old id's:
                    # their sessions were closed by the restore.
                    with self._lock:
                        for seq in list(self._pending):
                            self._resolve(seq)
                        self._order.clear()
            logs.event(log, logging.INFO if fresh else logging.WARNING, "backplane-snapshot",
                       url=self.url, entry=snapshot_id.decode(), this_server=self._room.server_id)
            last_id = snapshot_id
        self._registered.set()
        return last_id

    def _maintenance(self, last_id: bytes, snapshot: bool) -> list[tuple[bytes, ...]]:
        """[CLUSTER-9]: the commands that record this server's position, write
        a snapshot of the room if asked, and trim the stream to what every
        live server has applied. The consumer's alone: it is the only thread
        that changes the room's shared state, so the snapshot needs no lock."""
        commands = [(b"HSET", APPLIED, self._room.server_id.encode(), last_id)]
        if snapshot and last_id != b"0-0":
            commands.append(eval_command(SNAPSHOT_LUA, last_id, self._room.snapshot()))
        commands.append(eval_command(TRIM_LUA, *(server.encode() for server in sorted(self._room.gone))))
        return commands


def _field(fields: list[bytes], name: bytes) -> bytes:
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1]
    return b""

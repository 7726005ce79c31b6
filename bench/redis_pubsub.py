"""`python -m bench.redis_pubsub`: Redis pub/sub latency, measured like the latency scenario.

It exists so that the README's Redis comparison row can be reproduced on the
same machine with the same method and code (bench.net's loop, client, barrier
and SO_TIMESTAMPNS receive times; bench.stats' fixed-rate schedule,
percentiles and medians; bench.serverproc's CPU meter): only RESP is its own.

N subscribers SUBSCRIBE one channel; 10 publisher connections PUBLISH to it,
round robin, at a fixed total rate. Message k is due at start + k / rate and
carries that intended time in its 64-byte payload; latency is a subscriber's
kernel receive time minus the intended time (no coordinated omission). At the
end every PUBLISH is answered (Redis has queued it to every subscriber) and a
PING barrier on each subscriber proves it all arrived, so `delivered` must
equal `expected`. Start Redis by hand (optionally under `taskset -c 1`, off
the generator's CPU), then run from the repository root (PID:
`redis-cli -p 6390 info server | grep process_id`):

    ulimit -n 20000
    redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000
    python -m bench.redis_pubsub --port 6390 --pin 0 --server-pid PID        # 1,000 at 60/s
    python -m bench.redis_pubsub --port 6390 --pin 0 --server-pid PID --subscribers 100 --rate 600
"""

from __future__ import annotations

import argparse
import array
import os
import socket
import sys
import time

from bench import report, stats
from bench.__main__ import raise_fd_limit
from bench.net import Barrier, BenchTimeout, Client, EventLoop
from bench.scenarios import no_garbage_collection
from bench.serverproc import CpuMeter

CHANNEL = b"room"
SUBSCRIBE = b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(CHANNEL), CHANNEL)
#: How every `message` push on CHANNEL starts; the payload's length follows.
MESSAGE_HEAD = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$" % (len(CHANNEL), CHANNEL)
PUBLISH = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%%d\r\n%%s\r\n" % (len(CHANNEL), CHANNEL)
TIMEOUT_S = 60.0  # for each phase that is not measured
COLUMNS = ["delivered", "expected", "lost", "errors", "p50_ms", "p99_ms", "p999_ms", "max_ms",
           "send_lag_p99_ms", "gen_cpu_pct", "server_cpu_pct", "other_cpu_pct"]


def parse_value(data: bytes, pos: int):
    """One RESP2 value at data[pos:]: (value, position after it), or None if incomplete.

    Bulk strings are bytes (None if null), integers int, arrays lists, others str ("-ERR ...").
    Nothing is validated: whatever is unexpected is reported by the caller.
    """
    end = data.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, head = data[pos : pos + 1], data[pos + 1 : end]
    if kind == b"$":
        length = int(head)
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        return (data[end + 2 : stop], stop + 2) if len(data) >= stop + 2 else None
    if kind == b"*":
        items, pos = [], end + 2
        for _ in range(int(head)):
            parsed = parse_value(data, pos)
            if parsed is None:
                return None
            items.append(parsed[0])
            pos = parsed[1]
        return items, pos
    if kind == b":":
        return int(head), end + 2
    return data[pos:end].decode(errors="replace"), end + 2  # "+OK", "-ERR ...": a line


class RespReader(stats.LineSplitter):
    """A LineSplitter for RESP: complete values out of reads that split them anywhere.

    `message` pushes on CHANNEL, nearly all of the traffic, take a fast path
    that gives the same value as parse_value, [b"message", CHANNEL, payload].
    """

    __slots__ = ()

    def feed(self, data: bytes) -> list:
        if self.pending:
            data = self.pending + data
        values: list = []
        pos, size, head = 0, len(data), len(MESSAGE_HEAD)
        while pos < size:
            length_end = data.find(b"\r\n", pos + head) if data.startswith(MESSAGE_HEAD, pos) else -1
            if length_end > 0:
                stop = length_end + 2 + int(data[pos + head : length_end])
                if stop + 2 <= size:
                    values.append([b"message", CHANNEL, data[length_end + 2 : stop]])
                    pos = stop + 2
                    continue
            parsed = parse_value(data, pos)  # anything else, or a message cut by the read's end
            if parsed is None:
                break
            values.append(parsed[0])
            pos = parsed[1]
        self.pending = data[pos:]
        return values


class RespClient(Client):
    """A bench.net Client that speaks RESP: Client reads (with kernel timestamps once
    use_kernel_timestamps() is called), writes and closes; with a RespReader as its
    splitter, each "line" it hands to handle_line is one RESP value."""

    __slots__ = ("replies",)

    def __init__(self, loop: EventLoop, address: tuple[str, int], on_msg=None) -> None:
        sock = socket.create_connection(address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        super().__init__(loop, sock, f"redis-{sock.fileno()}")
        self.splitter = RespReader()
        self.on_msg = on_msg  # on_msg(client, payload, receive_ns) for each message push
        self.user_data = 0  # message pushes received
        self.replies: list[int] = []  # PUBLISH replies: how many subscribers each reached
        loop.add(self)

    def handle_line(self, value, now_ns: int) -> None:
        kind = value[0] if type(value) is list and value else None
        if kind == b"message" and value[1] == CHANNEL and self.on_msg is not None:
            self.on_msg(self, value[2], now_ns)
        elif kind == b"pong" and self.barrier is not None and value[1] == self.barrier.token:
            self.barrier.reached(self)
        elif kind == b"subscribe":
            self.registered = True
        elif type(value) is int:
            self.replies.append(value)
        elif len(self.errors) < 10:
            self.errors.append(value)  # unexpected: reported as errors


def measure(args: argparse.Namespace) -> dict:
    """One run on new connections: subscribe, publish at the fixed rate, drain, count."""
    loop = EventLoop()
    latencies, send_lags, read_delays = array.array("q"), array.array("q"), array.array("q")

    def on_msg(client: RespClient, payload: bytes, receive_ns: int) -> None:
        latencies.append(receive_ns - stats.parse_message_text(payload)[1])
        client.user_data += 1

    def barrier(token: str) -> None:
        # bench.net.Barrier as it is: its `PING token\n` is a valid Redis inline
        # command, which a subscribed connection answers with [b"pong", token].
        waiting = Barrier(token)
        waiting.start(subscribers)
        loop.run_until(waiting.done, time.monotonic() + TIMEOUT_S, f"PING barrier ({token})")

    subscribers, publishers = [], []
    try:
        for _ in range(args.subscribers):
            subscribers.append(RespClient(loop, ("127.0.0.1", args.port), on_msg))
            subscribers[-1].send(SUBSCRIBE)
        publishers = [RespClient(loop, ("127.0.0.1", args.port)) for _ in range(args.publishers)]
        loop.run_until(lambda: all(c.registered or c.errors or c.closed for c in subscribers),
                       time.monotonic() + TIMEOUT_S, "subscribing")
        refused = [c.errors or c.close_reason for c in subscribers if not c.registered]
        if refused:
            raise ConnectionError(f"{len(refused)} subscribers not subscribed: {refused[0]!r}")
        barrier("quiet")
        for client in subscribers:
            client.use_kernel_timestamps()
        loop.read_delays = read_delays
        total = round(args.rate * args.seconds)
        meter = CpuMeter(args.server_pid)
        schedule = stats.FixedRateSchedule(time.perf_counter_ns() + 5_000_000, args.rate)  # in 5 ms

        def send_due() -> None:
            now = time.perf_counter_ns()
            batches: dict[int, list[bytes]] = {}
            for k in schedule.due(now, total):
                intended = schedule.intended_ns(k)
                send_lags.append(now - intended)
                payload = stats.message_text(k // len(publishers), intended)
                batches.setdefault(k % len(publishers), []).append(PUBLISH % (len(payload), payload))
            for index, commands in batches.items():
                publishers[index].send(b"".join(commands))

        loop.interleave = send_due  # keeps sends on time while a thousand sockets are read
        with no_garbage_collection():
            while schedule.next_index < total:
                send_due()
                loop.poll(min(schedule.seconds_until_next(time.perf_counter_ns()), 0.05))
            loop.run_until(lambda: sum(len(c.replies) for c in publishers) >= total,
                           time.monotonic() + TIMEOUT_S, "PUBLISH replies")
            barrier("drain")
        cpu = meter.stop()
    finally:
        loop.interleave = loop.read_delays = None
        for client in subscribers + publishers:
            client.close()
        loop.close()
    short_replies = sum(r != args.subscribers for c in publishers for r in c.replies)
    lag = stats.latency_summary(send_lags)
    return {
        "sent": total, "expected": total * args.subscribers,
        "delivered": sum(min(c.user_data, total) for c in subscribers),
        "lost": sum(max(0, total - c.user_data) for c in subscribers),
        "extra": sum(max(0, c.user_data - total) for c in subscribers),
        "errors": short_replies + sum(len(c.errors) for c in subscribers + publishers),
        **stats.latency_summary(latencies),
        "send_lag_p99_ms": lag["p99_ms"], "send_lag_max_ms": lag["max_ms"],
        "read_delay_p99_ms": stats.latency_summary(read_delays)["p99_ms"],
        **cpu,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_pubsub", description=(
        "Redis pub/sub latency, measured like bench's latency scenario (see the module docstring)."))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=60.0, help="total PUBLISHes per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of publishing per run")
    parser.add_argument("--publishers", type=int, default=10, help="publishing connections")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported")
    parser.add_argument("--pin", type=int, metavar="CPU", help="run the generator on this CPU only")
    parser.add_argument("--server-pid", type=int, metavar="PID", help="redis-server's PID, for its CPU")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.pin is not None:
        os.sched_setaffinity(0, {args.pin})
    raise_fd_limit()
    print(f"redis pub/sub on port {args.port}: {args.subscribers} subscribers, {args.publishers} publishers, "
          f"{args.rate:g} msg/s for {args.seconds:g} s; generator CPUs {sorted(os.sched_getaffinity(0))}")
    runs = []
    for run in range(1, args.runs + 1):
        print(f"run {run}/{args.runs} ...", end=" ", flush=True)
        try:
            runs.append(measure(args))
            print(f"p99 {runs[-1]['p99_ms']:.2f} ms", flush=True)
        except (BenchTimeout, OSError, ValueError) as error:  # ValueError: not RESP
            print(f"FAILED: {type(error).__name__}: {error}", flush=True)
    if not runs:
        return 1
    combined = stats.median_of_runs(runs)
    print(f"\n== redis pub/sub (median of {len(runs)} runs; lost/extra/errors: worst run)")
    print(report.table([(f"{args.subscribers} subs @ {args.rate:g}/s", combined)], COLUMNS))
    return 1 if len(runs) < args.runs or combined["lost"] or combined["extra"] or combined["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

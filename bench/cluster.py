"""`python -m bench --scenario cluster-latency` (and `cluster-fan-out`): the
latency (fan-out) scenario against a cluster of two reference servers on one
Redis (SPEC.md 11b), beside one server in the same run, so that the ratio
between them is what is compared.

Not part of `all`: it needs redis-server (Debian's package), and on the
2-core benchmark machine one of the servers shares a core with the generator.

Each run: the single server's latency case (bench.scenarios.latency_one),
then a fresh Redis (no persistence: nothing here restarts it) and two servers
with `--backplane`, one pinned to each CPU; half the clients on each, the
senders alternating between them; the same fixed-rate run. Reported beside
the latency: each process's CPU (percent of one core) and resident memory,
Redis's included, and the cluster's p99 as a ratio to the single server's.

`--scenario cluster-connections`: idle registered clients held by two
servers (the issue's 20,000: 10,000 on each), the room set up as above (every
JOIN on every client, then a PING barrier); reported: the time that took,
each server's and Redis's resident memory and CPU seconds, and the
generator's. Each server's clients are held by a generator process of its
own: one process cannot hold 20,000 sockets under the usual hard limit of
open files (20,000 here), two can.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator

from bench import files
from bench.engines import Redis
from bench.net import Barrier, EventLoop, open_clients
from bench.scenarios import (
    REFERENCE_SERVER_FLAGS,
    Case,
    Room,
    ScenarioError,
    Settings,
    fanout_one,
    fanout_run,
    fixed_rate_run,
    latency_one,
    run_with_server,
)
from bench.serverproc import ProcessesCpu, ReferenceServer, read_cpu_seconds, read_rss_kb
from bench.stats import latency_summary


class ClusterRoom(Room):
    """Room's clients, spread over several servers: client i on server i % n."""

    barrier_is_quiet = False

    def __init__(self, settings: Settings, servers: list[ReferenceServer], count: int) -> None:
        self.settings = settings
        self.server = servers[0]
        self.loop = EventLoop()
        self.clients = []
        prefix = f"c{os.getpid() % 1000}x{int(time.time()) % 100000}"
        deadline = time.monotonic() + settings.setup_timeout_s
        shares = []
        for index, server in enumerate(servers):
            names = [f"{prefix}{i}" for i in range(index, count, len(servers))]
            report = open_clients(self.loop, server.address, names, deadline,
                                  concurrency=settings.connect_concurrency)
            if report.failed or report.socket_errors:
                for client in report.registered:
                    client.close()
                self.close()
                raise ScenarioError(f"only {len(report.registered)} of {len(names)} clients registered "
                                    f"on {server.host}:{server.port}: {report.failure_summary()}")
            order = {name: i for i, name in enumerate(names)}
            shares.append(sorted(report.registered, key=lambda c: order[c.name]))
        # Interleaved, so that the senders (the first few) are on every server.
        for group in zip(*shares, strict=False):
            self.clients += list(group)
        self.clients += [c for share in shares for c in share[len(shares[-1]):]]
        self.hello = self.clients[0].hello or {}
        self.quiet_across(shares, settings.setup_timeout_s)
        self.barrier(self.clients, "setup", settings.setup_timeout_s)
        for client in self.clients:
            client.reset_counts()


    def quiet_across(self, shares: list[list], timeout_s: float) -> None:
        """Wait until every JOIN has reached every client, on every server
        (see quiet_after)."""
        quiet_after(self.loop, self.clients, [share[0] for share in shares], len(shares), timeout_s)


def quiet_after(loop: EventLoop, clients: list, senders: list, expected: int, timeout_s: float) -> None:
    """`senders` send `MSG setup`; wait until each of `clients` has `expected` of them.

    A PING barrier is not enough in a cluster: a PONG follows what the
    client's own commands caused ([PING-2]), but another server's JOINs
    reach it when its server has read them from the log. So one client per
    server sends a MSG, and everyone waits for all of them: a server that
    applied a MSG had applied every JOIN before it in the log.
    """
    listener = SetupListener(clients)
    for sender in senders:
        sender.send(b"MSG setup\n")
    listener.wait(loop, expected, timeout_s)


class SetupListener:
    """Counts the MSG lines `clients` receive from now on (see quiet_after):
    they parse their lines until wait() returns, and count them only again after."""

    def __init__(self, clients: list) -> None:
        self.clients = clients
        self.seen: dict[int, int] = {id(client): 0 for client in clients}
        self.counting = {id(client): client.counting for client in clients}
        for client in clients:
            client.counting = False  # Parse lines, so that on_msg sees them.
            client.splitter.pending = b""
            client.on_msg = self.count

    def count(self, client, line: bytes, now_ns: int) -> None:
        self.seen[id(client)] += 1

    def wait(self, loop: EventLoop, expected: int, timeout_s: float) -> None:
        loop.run_until(lambda: min(self.seen.values()) >= expected, time.monotonic() + timeout_s,
                       "setup: every JOIN on every server")
        for client in self.clients:
            client.on_msg = None
            client.counting = self.counting[id(client)]


class Share:
    """cluster-connections: the clients of one server, held by one generator
    process (one process cannot hold 20,000 sockets under a limit of 20,000
    open files). Their loop runs whenever the process waits, so that the JOIN
    storm is read as it comes."""

    def __init__(self, settings: Settings, address: tuple[str, int], names: list[str]) -> None:
        self.settings = settings
        self.loop = EventLoop()
        report = open_clients(self.loop, address, names, time.monotonic() + settings.setup_timeout_s,
                              concurrency=settings.connect_concurrency)
        self.clients = report.registered
        self.failures = (f"only {len(report.registered)} of {len(names)} clients registered on "
                         f"{address[0]}:{address[1]}: {report.failure_summary()}"
                         if report.failed or report.socket_errors else None)
        for client in report.failed:
            client.close()

    def receive(self, connection) -> object:
        """The next message from the other process; this share's clients are read meanwhile."""
        self.loop.run_until(connection.poll, time.monotonic() + self.settings.setup_timeout_s,
                            "the other generator process")
        return connection.recv()

    def quiet(self, connection, first: bool) -> None:
        """With the other process (`first`: this one leads): every client of
        both counts MSG lines before either sends its `MSG setup` (a line
        that came while a client only counted would be missed), then each
        waits for both MSGs and a PING barrier."""
        listener = SetupListener(self.clients)
        if first:
            connection.send("listen")
            self.receive(connection)  # "listening"
        else:
            connection.send("listening")
        self.clients[0].send(b"MSG setup\n")
        listener.wait(self.loop, 2, self.settings.setup_timeout_s)
        barrier = Barrier("held")
        barrier.start(self.clients)
        self.loop.run_until(barrier.done, time.monotonic() + self.settings.setup_timeout_s, "barrier held")

    def held(self) -> int:
        return sum(not client.closed for client in self.clients)

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.loop.close()


def hold_share(settings: Settings, address: tuple[str, int], names: list[str], connection) -> None:
    """The second generator process of cluster-connections: opens its share,
    and tells the first when it has, when the room is quiet, and its CPU."""
    cpu_before = time.process_time()
    share = Share(settings, address, names)
    try:
        connection.send(("opened", share.failures))
        if share.receive(connection) == "listen":
            share.quiet(connection, first=False)
            connection.send(("quiet", share.held(), time.process_time() - cpu_before))
            share.receive(connection)  # "close"
    finally:
        share.close()
        connection.close()


@contextlib.contextmanager
def two_servers(settings: Settings,
                max_clients: int) -> Iterator[tuple[Redis, list[ReferenceServer], list[Room]]]:
    """A fresh Redis and two servers on it, one per CPU when pinning (CPU 1
    and 2, Redis on CPU 3 if there is one; on two CPUs, server B shares CPU 0
    with the generator and Redis); the
    rooms the caller adds to the list are closed after the servers stop,
    and Redis last."""
    cpus = sorted(os.sched_getaffinity(0) | (settings.server_cpus or set()))
    # With four CPUs or more, Redis gets one of its own, as each server does;
    # with fewer it stays on the generator's (where it starts).
    redis = Redis({cpus[3]} if settings.server_cpus and len(cpus) >= 4 else None)
    servers: list[ReferenceServer] = []
    rooms: list[Room] = []
    try:
        for index in range(2):
            servers.append(ReferenceServer(
                ["--max-clients", str(max_clients + 16), "--backplane", redis.url] + REFERENCE_SERVER_FLAGS,
                cpus={cpus[(index + 1) % len(cpus)]} if settings.server_cpus else None))
        yield redis, servers, rooms
    finally:
        for server in servers:
            server.stop()
        for room in rooms:
            room.close()
        redis.stop()


def on_cluster(settings: Settings, clients_count: int,
               measure: Callable[[ReferenceServer, ClusterRoom], dict]) -> dict:
    """Start Redis and two servers, fill a room over both, and run `measure`
    (which measures the first server's CPU); adds the second server's and
    Redis's CPU and everyone's memory. Stops everything it started."""
    with two_servers(settings, clients_count) as (redis, servers, rooms):
        room = ClusterRoom(settings, servers, clients_count)
        rooms.append(room)
        others = ProcessesCpu({"server_b": servers[1].pid, "redis": redis.pid})
        metrics = measure(servers[0], room)
        cpu = others.stop()
        if "other_cpu_pct" in metrics:  # The run's meter knew only the first server.
            metrics["other_cpu_pct"] = max(0.0, metrics["other_cpu_pct"] - sum(cpu.values()))
        return {**metrics, **cpu, "server_rss_kb": read_rss_kb(servers[0].pid),
                "server_b_rss_kb": read_rss_kb(servers[1].pid), "redis_rss_kb": read_rss_kb(redis.pid)}


def cluster_latency_one(settings: Settings, clients_count: int, rate: float) -> list[Case]:
    [(single_name, single)] = latency_one(settings, clients_count, rate)

    def measure(server: ReferenceServer, room: ClusterRoom) -> dict:
        run = fixed_rate_run(settings, server, room, rate, min(settings.latency_senders, clients_count),
                             settings.latency_seconds)
        latency = latency_summary(run.latencies_ns)
        return {
            **dict(clients=clients_count, rate_per_s=rate, sent=run.sent, delivered=run.others_delivered,
                   lost=run.others_lost, extra=run.others_extra),
            **latency,
            "p99_ratio_to_single": latency["p99_ms"] / single["p99_ms"] if single.get("p99_ms") else None,
            **run.cpu,
        }

    cluster = on_cluster(settings, clients_count, measure)
    return [(single_name, single), (f"2 servers + Redis: {clients_count} clients @ {rate:g}/s", cluster)]


def scenario_cluster_latency(settings: Settings) -> list[Case]:
    cases = []
    for clients_count, rate in settings.latency_cases:
        cases += cluster_latency_one(settings, clients_count, rate)
    return cases


def scenario_cluster_fanout(settings: Settings) -> list[Case]:
    """Fan-out on one server, then on two with Redis; each sampled receiver's
    order is checked (one CRC of the MSG lines: one room order across servers)."""
    cases = []
    for clients_count in settings.fanout_clients:
        [(name, single)] = fanout_one(settings, clients_count)

        def measure(server: ReferenceServer, room: ClusterRoom, single: dict = single) -> dict:
            metrics = fanout_run(settings, server, room)
            metrics["lines_per_s_ratio_to_single"] = metrics["lines_per_s"] / single["lines_per_s"]
            return metrics

        cluster = on_cluster(settings, clients_count, measure)
        cases += [(name, single), (f"2 servers + Redis: {name}", cluster)]
    return cases


def scenario_cluster_connections(settings: Settings) -> list[Case]:
    """settings.cluster_clients idle registered clients, half on each of two
    servers, each half held by a generator process of its own (Share)."""
    total = settings.cluster_clients
    # The room's set-up is the JOIN storm: N^2/2 lines for N clients.
    settings = dataclasses.replace(settings, setup_timeout_s=settings.step_timeout_s)
    prefix = f"i{os.getpid() % 1000}x{int(time.time()) % 100000}"
    names = [[f"{prefix}{i}" for i in range(index, total, 2)] for index in range(2)]
    context = multiprocessing.get_context("spawn")  # Not fork: this process has threads.
    with two_servers(settings, total // 2) as (redis, servers, _):
        pids = {"server": servers[0].pid, "server_b": servers[1].pid, "redis": redis.pid}
        rss_base = {key: read_rss_kb(pid) or 0 for key, pid in pids.items()}
        cpu_before = {key: read_cpu_seconds(pid) or 0.0 for key, pid in pids.items()}
        own_before = time.process_time()
        started = time.monotonic()
        connection, child_end = context.Pipe()
        child = context.Process(target=hold_share, args=(settings, servers[1].address, names[1], child_end),
                                name="bench-share")
        child.start()
        share = None
        try:
            share = Share(settings, servers[0].address, names[0])
            _, child_failures = share.receive(connection)
            if share.failures or child_failures:
                raise ScenarioError(share.failures or child_failures)
            share.quiet(connection, first=True)
            _, child_held, child_cpu = share.receive(connection)
            row: dict = {"clients": total, "held": share.held() + child_held,
                         "setup_s": time.monotonic() - started,
                         "gen_cpu_s": time.process_time() - own_before + child_cpu, "gen_processes": 2}
            for server in servers:
                server.check_alive()
            for key, pid in pids.items():
                row[f"{key}_cpu_s"] = (read_cpu_seconds(pid) or 0.0) - cpu_before[key]
                row[f"{key}_rss_kb"] = read_rss_kb(pid)
            for key, share_names in zip(("server", "server_b"), names, strict=True):
                row[f"{key}_rss_per_conn_kb"] = (row[f"{key}_rss_kb"] - rss_base[key]) / len(share_names)
            return [(f"2 servers + Redis: {total} idle clients", row)]
        finally:
            if child.is_alive():
                try:
                    connection.send("close")
                except OSError:
                    pass
            child.join(timeout=settings.drain_timeout_s)
            if child.is_alive():
                child.terminate()
                child.join()
            connection.close()
            if share is not None:
                share.close()


def scenario_cluster_file(settings: Settings) -> list[Case]:
    """One file of settings.file_size bytes relayed by one server, then across
    two servers (SPEC.md 11b, [CLUSTER-12]): alice on server A, bob on B, and
    each data connection on the other party's server, so that the bytes go
    A -> Redis -> B; beside a direct loopback copy of the same bytes."""
    size = settings.file_size
    sha256 = files.payload_sha256(size)
    name = f"one {size / 1e6:g} MB file"
    [(_, single)] = run_with_server(settings, 64, lambda server: [(name, files.throughput_run(server, size))])
    with two_servers(settings, 64) as (redis, servers, _):
        prefix = files.file_prefix()
        alice = files.Chat(servers[0].address, prefix + "a")
        bob = files.Chat(servers[1].address, prefix + "b")
        try:
            alice.expect(f"JOIN {bob.name}")  # bob is in the room as alice's server holds it
            pids = {"server": servers[0].pid, "server_b": servers[1].pid, "redis": redis.pid}
            meter = ProcessesCpu(pids)
            rss_before = {key: read_rss_kb(pid) for key, pid in pids.items()}
            seconds = files.relay_between(servers[1].address, alice, bob, size, sha256, "1",
                                          recipient_address=servers[0].address)
            cpu = meter.stop()
        finally:
            alice.close()
            bob.close()
        relayed = size / seconds / 1e6
        # [FILE-20]: what the transfer left in each process (RSS after minus before).
        rss_extra = {f"{key}_rss_extra_kb": (read_rss_kb(pid) or 0) - (rss_before[key] or 0)
                     for key, pid in pids.items()}
        cluster = {"size_mb": size / 1e6, "relayed_mb_per_s": relayed, "ratio_to_single":
                   relayed / single["relayed_mb_per_s"], "lost": 0, **cpu, **rss_extra}
    return [(name, single), (f"{name}, 2 servers + Redis", cluster)]


#: The cluster's scenarios: run only when asked for by name (not in `all`).
CLUSTER_SCENARIOS = {"cluster-latency": scenario_cluster_latency, "cluster-fan-out": scenario_cluster_fanout,
                     "cluster-connections": scenario_cluster_connections,
                     "cluster-file": scenario_cluster_file}

"""`python -m bench`: benchmark a chat/1 server from one load-generating process.

Examples (from the repository root):

    python -m bench                          # all scenarios, reference server
    python -m bench --runs 3                 # medians of 3 runs
    python -m bench --quick                  # a few seconds; what the tests run
    python -m bench --scenario latency --scenario fan-out
    python -m bench --server 127.0.0.1:5000 --server-pid 1234

Results are printed as tables and written as JSON (bench-results/latest.json
unless --json says otherwise). The exit status is 1 if any scenario failed, or
any line was lost or seen out of order, so the benchmark can also serve as a
check.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import time
from pathlib import Path

from bench import report
from bench.cluster import CLUSTER_SCENARIOS
from bench.engines import scenario_engines
from bench.net import BenchTimeout
from bench.scenarios import REFERENCE_SERVER_FLAGS, SCENARIOS, ScenarioError, Settings
from bench.serverproc import REPO_ROOT, ServerError, parse_host_port
from bench.stats import median_of_runs

#: Scenarios run only when asked for by name (not in `all`): each needs an
#: engine installed (redis-server; for engines, nats-server too).
OPT_IN_SCENARIOS = {**CLUSTER_SCENARIOS, "engines": scenario_engines}
#: File descriptors the generator needs besides one per client.
SPARE_FDS = 64


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def latency_list(text: str) -> tuple[tuple[int, float], ...]:
    """'100:600,1000:60' -> ((100, 600.0), (1000, 60.0))."""
    cases = []
    for part in text.split(","):
        clients, _, rate = part.partition(":")
        cases.append((int(clients), float(rate)))
    return tuple(cases)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark a chat/1 server: fan-out, latency, connections, slow consumer; "
                    "and the send floor of this machine.",
    )
    parser.add_argument("--scenario", action="append",
                        choices=list(SCENARIOS) + ["all"] + list(OPT_IN_SCENARIOS),
                        help="scenario to run (repeatable; default: all; the cluster-* ones and engines "
                             "only by name: they need redis-server, and engines nats-server too)")
    parser.add_argument("--server", metavar="HOST:PORT",
                        help="benchmark this running server instead of starting the reference server")
    parser.add_argument("--server-pid", type=int, metavar="PID",
                        help="PID of the --server process, for its memory and CPU figures")
    parser.add_argument("--runs", type=int, default=1, help="runs per scenario; medians are reported")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                        help="generator on one CPU, the server it starts on the others "
                             "(default: on when it starts the server and has 2+ CPUs)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds in all, small rooms: shows the benchmark works")
    parser.add_argument("--duration", type=float, metavar="S",
                        help="seconds of sending per fan-out, latency and slow-consumer run")
    parser.add_argument("--fanout-clients", type=int_list, metavar="N,N", help="default 100,1000")
    parser.add_argument("--senders", type=int, help="senders in fan-out and latency (default 10)")
    parser.add_argument("--window", type=int,
                        help="unacknowledged messages per fan-out sender (default: from outbound-max)")
    parser.add_argument("--latency-cases", type=latency_list, metavar="N:RATE,...",
                        help="clients and total msg/s per latency case (default 100:600,1000:60)")
    parser.add_argument("--steps", type=int_list, metavar="N,N",
                        help="connection steps (default 1000,2000,5000,10000)")
    parser.add_argument("--cluster-clients", type=int, metavar="N",
                        help="idle clients over two servers in cluster-connections (default 20000)")
    parser.add_argument("--connect-concurrency", type=int, metavar="N",
                        help="connections between connect() and their JOIN at once in the "
                             "connections scenario: a burst, like many users arriving together "
                             "(default 1000; the listen backlog is 4096)")
    parser.add_argument("--slow-clients", type=int, help="clients in the slow-consumer room (default 100)")
    parser.add_argument("--slow-rate", type=float, help="total msg/s in the slow-consumer room (default 600)")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench-results" / "latest.json",
                        help="where to write the JSON results (default bench-results/latest.json)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="write a latency CDF (only if matplotlib is installed)")
    args = parser.parse_args(argv)
    if args.server_pid and not args.server:
        parser.error("--server-pid needs --server")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def make_settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if args.quick:
        settings.fanout_clients = (20,)
        settings.fanout_senders = 3
        settings.fanout_seconds = 1.0
        settings.latency_cases = ((20, 200.0),)
        settings.latency_senders = 3
        settings.latency_seconds = 1.0
        settings.connection_steps = (50, 100)
        settings.cluster_clients = 100
        settings.step_timeout_s = 30.0
        settings.slow_clients = 10
        settings.slow_rate = 500.0
        settings.slow_seconds = 1.0
        settings.slow_max_extra_s = 10.0
        # A small bound so that the stalled client is dropped within the
        # short run (with the server's default it takes many seconds).
        settings.slow_outbound_max = 16384
        settings.floor_passes = 20
        settings.file_size = 8 * 1000 * 1000
        settings.file_latency_case = (20, 200.0)
        settings.setup_timeout_s = 30.0
        settings.drain_timeout_s = 30.0
    if args.server:
        settings.server = parse_host_port(args.server)
        settings.server_pid = args.server_pid
    if args.duration is not None:
        settings.fanout_seconds = settings.latency_seconds = settings.slow_seconds = args.duration
    if args.fanout_clients:
        settings.fanout_clients = args.fanout_clients
    if args.senders:
        settings.fanout_senders = settings.latency_senders = args.senders
    if args.window:
        settings.window = args.window
    if args.latency_cases:
        settings.latency_cases = args.latency_cases
    if args.steps:
        settings.connection_steps = args.steps
    if args.cluster_clients:
        settings.cluster_clients = args.cluster_clients
    if args.connect_concurrency:
        settings.connect_concurrency = args.connect_concurrency
    if args.slow_clients:
        settings.slow_clients = args.slow_clients
    if args.slow_rate:
        settings.slow_rate = args.slow_rate
    return settings


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to the hard limit; returns it.

    Each client is one socket, so 10,000 clients need more than the usual
    1,024. A server started from here inherits the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_cpus(settings: Settings, wanted: bool | None) -> str:
    """Put the generator on one CPU and a reference server on the others.

    Left to itself, Linux often runs the generator and the server on the
    same core: they wake each other all the time over loopback, and the
    scheduler keeps such pairs together for cache locality. Then both get
    half a core, and a run measures half the throughput of the next one.
    Pinning makes runs comparable; it also means the server cannot borrow
    the generator's core, which is how a server on its own machine runs.
    Returns a description for the results.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if wanted is None:
        wanted = settings.server is None and len(cpus) >= 2
    if not wanted:
        return "none"
    if len(cpus) < 2:
        return "none (only one CPU available)"
    generator_cpu, server_cpus = cpus[0], set(cpus[1:])
    os.sched_setaffinity(0, {generator_cpu})
    if settings.server is not None:
        return f"generator on CPU {generator_cpu}; --server left alone"
    settings.server_cpus = server_cpus
    listed = ",".join(str(c) for c in sorted(server_cpus))
    return f"generator on CPU {generator_cpu}, server on CPU {listed}"


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM ends the benchmark like Ctrl-C does: through the `finally`
    blocks, which stop the server subprocess instead of leaving it behind."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    settings = make_settings(args)
    machine = report.machine_info()  # before pinning narrows what this process sees
    pinning = pin_cpus(settings, args.pin)
    notes = []
    chosen = args.scenario or ["all"]
    fd_limit = raise_fd_limit()
    most_clients = fd_limit - SPARE_FDS
    if max(settings.connection_steps) > most_clients:
        notes.append(f"open-file limit {fd_limit}: connection steps capped at {most_clients}")
        settings.connection_steps = tuple(sorted({min(s, most_clients) for s in settings.connection_steps}))
    if "cluster-connections" in chosen and settings.cluster_clients > 2 * most_clients:
        # Two generator processes, half the clients each (bench/cluster.py).
        notes.append(f"open-file limit {fd_limit}: cluster-connections capped at {2 * most_clients} clients")
        settings.cluster_clients = 2 * most_clients

    names = list(SCENARIOS) if "all" in chosen else list(dict.fromkeys(chosen))
    results = {
        "machine": machine,
        "command": ["python", "-m", "bench"] + (sys.argv[1:] if argv is None else argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": args.runs,
        "quick": args.quick,
        "server": args.server or (
            "reference: python -m chat.server --host 127.0.0.1 --port 0 --max-clients N "
            + " ".join(REFERENCE_SERVER_FLAGS) + " (a fresh one per run)"
        ),
        "cpu_pinning": pinning,
        "notes": notes,
        "scenarios": {},
    }
    print(f"machine: {machine['nproc']} cores, {machine['cpu_model']}, Python {machine['python']}, "
          f"open files {fd_limit}; CPU pinning: {pinning}", flush=True)
    for note in notes:
        print(f"note: {note}", flush=True)

    failed = False
    for name in names:
        scenario = SCENARIOS.get(name) or OPT_IN_SCENARIOS[name]
        runs: dict[str, list[dict]] = {}
        errors = []
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            print(f"{name}: run {run}/{args.runs} ...", end=" ", flush=True)
            try:
                for case, metrics in scenario(settings):
                    runs.setdefault(case, []).append(metrics)
            except (ScenarioError, BenchTimeout, ServerError, OSError) as error:
                errors.append(f"run {run}: {type(error).__name__}: {error}")
                print("FAILED", flush=True)
                continue
            print(f"{time.monotonic() - started:.1f} s", flush=True)
        cases = {case: {"median": median_of_runs(values), "runs": values} for case, values in runs.items()}
        results["scenarios"][name] = {"cases": cases, "errors": errors}
        # Lines lost, or seen out of order (the worst run's count): the run
        # measured a broken server or engine, whatever its speed.
        broken = sum(case["median"].get(key, 0) or 0
                     for case in cases.values() for key in ("lost", "order_errors"))
        if errors or broken or not cases:
            failed = True

    print()
    print(report.render(results))
    report.write_json(results, args.json)
    print(f"results written to {args.json}")
    if args.plot:
        print(report.plot_latencies(settings.keep_latencies, args.plot))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

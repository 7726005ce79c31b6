"""Tests of the benchmark (bench/): its pure helpers, and a --quick run.

The --quick run asserts correctness only (nothing lost, every scenario
produced figures), never speed: speed depends on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import Settings, choose_window
from bench.stats import (
    MESSAGE_TEXT_BYTES,
    FixedRateSchedule,
    LineSplitter,
    TailWatcher,
    count_lines,
    latencies_from_intended,
    latency_summary,
    median_of_runs,
    message_text,
    parse_hello,
    parse_message_text,
    parse_msg_line,
    percentile,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000  # nanoseconds


# ---------------------------------------------------------------- percentiles


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    # A value that was really observed, never an interpolation.
    assert percentile([10, 20], 0.5) == 10
    assert percentile([10, 20], 0.51) == 20


def test_percentile_rejects_empty_input_and_bad_fraction():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1], 99)


def test_latency_summary_in_milliseconds_and_nan_when_empty():
    summary = latency_summary([1 * MS, 2 * MS, 3 * MS, 100 * MS])
    assert summary["count"] == 4
    assert summary["p50_ms"] == 2.0
    assert summary["max_ms"] == 100.0
    empty = latency_summary([])
    assert empty["count"] == 0 and math.isnan(empty["p99_ms"])


# ------------------------------------------------- no coordinated omission


def test_schedule_hands_out_messages_at_their_intended_times():
    schedule = FixedRateSchedule(start_ns=0, rate_per_s=1000)  # one per ms
    assert list(schedule.due(0)) == [0]
    assert list(schedule.due(MS - 1)) == []
    assert list(schedule.due(MS)) == [1]
    assert list(schedule.due(5 * MS + 10)) == [2, 3, 4, 5]
    assert schedule.intended_ns(4) == 4 * MS
    assert schedule.seconds_until_next(5 * MS + 10) == pytest.approx((MS - 10) / 1e9)
    assert list(schedule.due(100 * MS, limit=8)) == [6, 7]
    assert list(schedule.due(200 * MS, limit=8)) == []


def test_schedule_before_start_hands_out_nothing():
    schedule = FixedRateSchedule(start_ns=10 * MS, rate_per_s=100)
    assert list(schedule.due(9 * MS)) == []
    assert schedule.seconds_until_next(9 * MS) == pytest.approx(0.001)


def test_a_stall_counts_against_every_message_due_during_it():
    """The generator stalls 100 ms; then sends the backlog, delivered at once.

    Latency from the *intended* time shows the stall in the 100 messages that
    were due during it. Latency from the actual send time would be 0 for all
    of them: that is coordinated omission, and what the benchmark avoids.
    """
    schedule = FixedRateSchedule(start_ns=0, rate_per_s=1000)
    stall_end = 100 * MS
    intended, actual_send, received = [], [], []
    # Nothing is sent during the stall; at its end the backlog goes out.
    for index in schedule.due(stall_end):
        intended.append(schedule.intended_ns(index))
        actual_send.append(stall_end)
        received.append(stall_end)  # an instant network
    # Then 100 more messages on time, each delivered instantly.
    for now in range(101 * MS, 201 * MS, MS):
        for index in schedule.due(now):
            intended.append(schedule.intended_ns(index))
            actual_send.append(now)
            received.append(now)
    assert len(intended) == 201
    honest = sorted(latencies_from_intended(intended, received))
    omitted = sorted(latencies_from_intended(actual_send, received))
    assert percentile(honest, 0.99) >= 95 * MS
    assert percentile(honest, 0.50) == 1 * MS - MS  # half the messages were on time: 0 ms
    assert honest[-1] == 100 * MS  # message 0 waited the whole stall
    assert percentile(omitted, 0.99) == 0  # the stall has vanished


def test_latencies_need_one_receive_time_per_message():
    with pytest.raises(ValueError):
        latencies_from_intended([1, 2], [3])


# ------------------------------------------------------------ line counting


STREAM = b"".join(b"MSG alice line number %d with some text\n" % i for i in range(50)) + b"PONG t\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 41, 1000])
def test_counting_lines_across_split_reads(chunk):
    pieces = [STREAM[i : i + chunk] for i in range(0, len(STREAM), chunk)]
    assert sum(count_lines(piece) for piece in pieces) == 51


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 41, 1000])
def test_splitter_returns_each_complete_line_once(chunk):
    splitter = LineSplitter()
    lines = []
    for i in range(0, len(STREAM), chunk):
        lines += splitter.feed(STREAM[i : i + chunk])
    assert lines == STREAM.split(b"\n")[:-1]
    assert splitter.pending == b""


def test_splitter_keeps_an_unfinished_line():
    splitter = LineSplitter()
    assert splitter.feed(b"JOIN a\nJOI") == [b"JOIN a"]
    assert splitter.pending == b"JOI"
    assert splitter.feed(b"N b\n") == [b"JOIN b"]


def test_tail_watcher_sees_a_pong_split_across_reads():
    watcher = TailWatcher(size=16)
    assert not watcher.feed(b"x" * 1000 + b"MSG a b\nPO", watch=b"PONG t1\n")
    assert not watcher.feed(b"NG t", watch=b"PONG t1\n")
    assert watcher.feed(b"1\n", watch=b"PONG t1\n")
    assert not watcher.feed(b"MSG late\n", watch=b"PONG t2\n")


def test_tail_watcher_sees_a_pong_with_lines_after_it():
    # In a cluster, lines from another server may follow the PONG (SPEC.md 11b).
    watcher = TailWatcher(size=16)
    watcher.feed(b"MSG a b\nPONG")
    assert watcher.feed(b" t1\nMSG late from the other server\n", watch=b"PONG t1\n")
    assert not watcher.feed(b"PONG t1\n")  # Outside a barrier it only keeps the tail.
    assert watcher.tail.endswith(b"PONG t1\n")


# ---------------------------------------------------------------- messages


def test_message_text_is_64_bytes_and_round_trips():
    text = message_text(12345, 987654321012345)
    assert len(text) == MESSAGE_TEXT_BYTES
    assert parse_message_text(text) == (12345, 987654321012345)
    assert parse_msg_line(b"MSG bob7 " + text) == (b"bob7", 12345, 987654321012345)


def test_parse_hello_reads_every_parameter():
    line = (b"HELLO chat/1 line-max=1024 name-max=32 max-clients=1000 max-per-address=10 "
            b"register-timeout=30 ping-interval=60 ping-timeout=30 flood-rate=10 "
            b"flood-burst=20 outbound-max=262144 password=0 future-thing=7")
    params = parse_hello(line)
    assert params["outbound-max"] == 262144
    assert params["future-thing"] == 7  # unknown parameters are tolerated
    with pytest.raises(ValueError):
        parse_hello(b"HELLO chat/2 line-max=1")


def test_window_keeps_senders_well_under_outbound_max():
    settings = Settings()
    line = 80
    window = choose_window(settings, {"outbound-max": 262144}, senders=10, line_bytes=line)
    assert window >= 1
    assert 10 * window * line <= 262144 // 4
    assert choose_window(settings, {"outbound-max": 1000}, senders=10, line_bytes=line) == 1
    assert choose_window(settings, {"outbound-max": 0}, senders=10, line_bytes=line) == 256
    settings.window = 5
    assert choose_window(settings, {"outbound-max": 262144}, senders=10, line_bytes=line) == 5


def test_median_of_runs_takes_the_worst_loss():
    runs = [
        {"lines_per_s": 10.0, "lost": 0, "p99_ms": float("nan"), "note": "a"},
        {"lines_per_s": 30.0, "lost": 2, "p99_ms": 4.0, "note": "b"},
        {"lines_per_s": 20.0, "lost": 0, "p99_ms": 2.0, "note": "c"},
    ]
    combined = median_of_runs(runs)
    assert combined["lines_per_s"] == 20.0
    assert combined["lost"] == 2
    assert combined["p99_ms"] == 3.0  # NaN left out
    assert combined["note"] == "c"


# ------------------------------------------------------------- a quick run


def _timeout_mark(seconds):
    """pytest-timeout's mark when that plugin is installed (no warning otherwise).

    The subprocess below has its own timeout as well, so the test is bounded
    either way.
    """
    if importlib.util.find_spec("pytest_timeout") is not None:
        return pytest.mark.timeout(seconds)
    return lambda function: function


@pytest.mark.skipif(
    not (REPO_ROOT / "chat" / "server.py").exists(), reason="the reference server is not there yet"
)
@_timeout_mark(150)
def test_quick_benchmark_runs_every_scenario_and_loses_nothing(tmp_path):
    results_file = tmp_path / "results.json"
    # Its own process group, so that on a timeout the server it started is
    # killed along with it instead of being left running.
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--json", str(results_file),
         "--plot", str(tmp_path / "latency.png")],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = bench.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        output, _ = bench.communicate()
        pytest.fail(f"python -m bench --quick took more than 120 s:\n{output}")
    assert bench.returncode == 0, output
    results = json.loads(results_file.read_text())
    scenarios = results["scenarios"]
    assert set(scenarios) == {"fan-out", "latency", "connections", "slow-consumer", "send-floor", "file"}
    for name, data in scenarios.items():
        assert data["errors"] == [], (name, data["errors"])
        assert data["cases"], f"{name} produced no figures"
        for case, figures in data["cases"].items():
            for run in figures["runs"]:
                assert run.get("lost", 0) == 0, (name, case, run)
                assert run.get("extra", 0) == 0, (name, case, run)
                assert run.get("order_errors", 0) == 0, (name, case, run)
                if name != "send-floor":  # no server, no generator: nothing to meter
                    assert run["gen_cpu_pct"] is not None
    for run in _runs(scenarios, "fan-out"):
        assert run["sent"] > 0 and run["lines_per_s"] > 0
        assert run["delivered_lines"] == run["sent"] * run["clients"]
    for run in _runs(scenarios, "latency"):
        assert run["delivered"] == run["sent"] * run["clients"]
        assert run["p50_ms"] is not None and run["p99_ms"] >= run["p50_ms"]
    for run in _runs(scenarios, "connections"):
        assert run["held"] == run["target"] and run["rss_per_conn_kb"] is not None
    for run in _runs(scenarios, "send-floor"):
        assert run["short_sends"] == 0
        assert 0 < run["pass_p50_ms"] <= run["pass_p99_ms"]
    for run in _runs(scenarios, "slow-consumer"):
        assert run["others_lost"] == 0
        assert run["base_p99_ms"] is not None and run["stall_p99_ms"] is not None

    for run in _runs(scenarios, "file"):
        assert run.get("ratio", 1) > 0 and run.get("file_mb_moved", 1) > 0


def _runs(scenarios, name):
    return [run for case in scenarios[name]["cases"].values() for run in case["runs"]]

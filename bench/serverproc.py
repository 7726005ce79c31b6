"""The server under test: start the reference server, or describe a running one.

Also reads what Linux says about a process in /proc: its resident memory
(VmRSS in /proc/PID/status) and its CPU time (/proc/PID/stat), which is how
the benchmark reports the server's memory per connection and CPU use.
"""

from __future__ import annotations

import collections
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: The repository root: `python -m chat.server` must run from here.
REPO_ROOT = Path(__file__).resolve().parent.parent

#: The line the reference server prints once it accepts connections.
LISTENING_LINE = re.compile(rb"chat server listening on ([0-9.]+):(\d+)")

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class ServerError(RuntimeError):
    """The server could not be started, or died."""


# ------------------------------------------------------------ /proc readers


def read_rss_kb(pid: int) -> int | None:
    """Resident memory of `pid` in KiB (VmRSS), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])  # "VmRSS:  12345 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by `pid` (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # Field 2 is the command name in parentheses and may contain spaces, so
    # split after the last ')'. utime and stime are fields 14 and 15 overall,
    # i.e. the 12th and 13th after the name.
    fields = text[text.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_S


def read_thread_count(pid: int) -> int | None:
    """Threads of `pid` (the reference server uses one per connection)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_machine_cpu_seconds() -> tuple[float, float] | None:
    """CPU seconds of the whole machine so far: (processes, interrupts).

    From the first line of /proc/stat: user nice system idle iowait irq
    softirq steal ... "processes" is user + nice + system, the time charged to
    some process; "interrupts" is irq + softirq, which Linux charges to no
    process. Loopback TCP does much of its receive work in softirq, so most
    of that is the benchmark's own traffic.
    """
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(x) for x in stat.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system) / CLOCK_TICKS_PER_S, (irq + softirq) / CLOCK_TICKS_PER_S


class CpuMeter:
    """CPU use of this process, of the server (if known) and of everything else.

    Percentages are of one core: 100 means one core fully busy. On the 2-core
    benchmark machine, generator + server near 200 means the machine was the
    limit; the generator near 100 means the generator was (it is one thread).
    `other_cpu_pct` is what other processes used meanwhile: if it is large,
    someone else was using the machine and the figures are not clean.
    `irq_cpu_pct` is interrupt work, mostly loopback TCP for this benchmark.
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.wall_start = time.monotonic()
        self.own_start = time.process_time()
        self.server_start = read_cpu_seconds(server_pid) if server_pid else None
        self.machine_start = read_machine_cpu_seconds()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.wall_start, 1e-9)
        own = time.process_time() - self.own_start
        result = {"gen_cpu_pct": 100.0 * own / wall}
        server = None
        if self.server_pid and self.server_start is not None:
            now = read_cpu_seconds(self.server_pid)
            if now is not None:
                server = now - self.server_start
                result["server_cpu_pct"] = 100.0 * server / wall
        machine_now = read_machine_cpu_seconds()
        if self.machine_start is not None and machine_now is not None:
            processes = machine_now[0] - self.machine_start[0]
            result["irq_cpu_pct"] = 100.0 * (machine_now[1] - self.machine_start[1]) / wall
            if server is not None or not self.server_pid:  # else the server hides in "other"
                other = processes - own - (server or 0.0)
                result["other_cpu_pct"] = max(0.0, 100.0 * other / wall)
        return result


# ------------------------------------------------------------------ servers


class ProcessesCpu:
    """The CPU of a few other processes over one span (a cluster's second
    server, its engine), as `<key>_cpu_pct`: percent of one core each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.started = time.monotonic()
        self.before = {key: read_cpu_seconds(pid) or 0.0 for key, pid in pids.items()}

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.started, 1e-9)
        return {f"{key}_cpu_pct": 100.0 * ((read_cpu_seconds(pid) or 0.0) - self.before[key]) / wall
                for key, pid in self.pids.items()}


class Server:
    """Where the server is, and its PID when known (None: no /proc figures)."""

    def __init__(self, host: str, port: int, pid: int | None) -> None:
        self.host = host
        self.port = port
        self.pid = pid

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def rss_kb(self) -> int | None:
        return read_rss_kb(self.pid) if self.pid else None

    def check_alive(self) -> None:
        """Raise ServerError if a server we started has exited."""

    def stop(self) -> None:
        """Stop the server if we started it; an external one is left alone."""


class ExternalServer(Server):
    """A server somebody else runs (`--server HOST:PORT [--server-pid PID]`)."""


class ReferenceServer(Server):
    """`python -m chat.server` in a subprocess, on a free port of 127.0.0.1.

    The subprocess inherits this process's raised RLIMIT_NOFILE. Its output is
    read by a small thread for the whole run: a server that logs and is not
    read would block on a full pipe, and the last lines help explain a crash.
    """

    def __init__(self, extra_args: list[str], cpus: set[int] | None = None,
                 start_timeout_s: float = 20.0) -> None:
        """Start the server; `cpus`: the CPUs it may run on (None: any)."""
        self.command = [sys.executable, "-m", "chat.server", "--host", "127.0.0.1", "--port", "0"]
        self.command += extra_args
        self.output_tail: collections.deque[str] = collections.deque(maxlen=40)
        # A child inherits its parent's CPU affinity, and so do the threads it
        # starts later. So: take the server's CPUs for a moment, start it,
        # and take back our own. (Setting it on the child afterwards could
        # miss threads it had already started.)
        own_cpus = os.sched_getaffinity(0)
        if cpus:
            os.sched_setaffinity(0, cpus)
        try:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # one pipe to read, in the order written
            )
        finally:
            if cpus:
                os.sched_setaffinity(0, own_cpus)
        try:
            host, port = self._wait_for_listening_line(start_timeout_s)
        except BaseException:
            self.stop()
            raise
        super().__init__(host, port, self.process.pid)
        self._reader = threading.Thread(target=self._drain_output, daemon=True)
        self._reader.start()

    def _wait_for_listening_line(self, timeout_s: float) -> tuple[str, int]:
        """Read the server's output until it says where it listens, with a deadline."""
        deadline = time.monotonic() + timeout_s
        pipe = self.process.stdout
        assert pipe is not None
        os.set_blocking(pipe.fileno(), False)
        buffered = b""
        with selectors.DefaultSelector() as selector:
            selector.register(pipe, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerError(
                        f"no 'listening' line within {timeout_s:.0f} s from {' '.join(self.command)}"
                    )
                if not selector.select(remaining):
                    continue  # the deadline check above ends the loop
                chunk = os.read(pipe.fileno(), 65536)
                if chunk == b"":
                    code = self.process.wait(timeout=5)
                    raise ServerError(
                        f"server exited with status {code} before listening:\n"
                        + buffered.decode(errors="replace")[-2000:]
                    )
                buffered += chunk
                match = LISTENING_LINE.search(buffered)
                if match:
                    for line in buffered.decode(errors="replace").splitlines():
                        self.output_tail.append(line)
                    os.set_blocking(pipe.fileno(), True)  # the reader thread blocks
                    return match.group(1).decode(), int(match.group(2))

    def _drain_output(self) -> None:
        pipe = self.process.stdout
        assert pipe is not None
        for raw in iter(pipe.readline, b""):  # ends at EOF, when the server exits
            self.output_tail.append(raw.decode(errors="replace").rstrip("\n"))

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = "\n".join(self.output_tail)
            raise ServerError(f"server exited with status {code}; its last output:\n{tail}")

    def stop(self) -> None:
        """SIGTERM, up to 5 s to finish ([LIMIT-7] allows it 1 s), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout=5)  # it sees EOF once the server is gone
        if self.process.stdout is not None:
            self.process.stdout.close()


def parse_host_port(text: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)

"""The `file` scenario: file sharing relayed by the server (SPEC.md section 11a).

One run measures three things:

1. Throughput. One file of `settings.file_size` bytes (200 MB) goes from one
   client to another through the server's relay, and the same bytes go over
   a direct loopback TCP connection between two sockets of this process,
   in the same run: the physical limit here. Both sides do the same work
   (send from a buffer, receive into a buffer, no hashing), so the ratio
   compares the relay with the kernel alone. The server's RSS is sampled
   during the relay and compared with its RSS just before it.
2. Chat latency with and without transfers: the latency scenario's room
   (100 clients at 600 msg/s) on one server, first alone, then while two
   transfers of `file_size` bytes run back to back in a separate process
   (`python -m bench.files loop ...`), so that the generator measuring the
   chat shares no interpreter with the file traffic.

Targets (issue 12): relayed throughput at least 50% of the direct copy;
chat p99 with transfers within 1.5x of without; server RSS during the
transfers at most 4 MB above idle.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import string
import subprocess
import sys
import threading
import time

from bench.serverproc import REPO_ROOT, CpuMeter, Server

#: Bytes per send() and recv_into() on both paths.
CHUNK = 1024 * 1024
#: Seconds any one blocking step of a transfer may take before the run fails.
STEP_TIMEOUT = 60.0

_BLOCK = os.urandom(CHUNK)


def payload_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, CHUNK):
        digest.update(_BLOCK[:min(CHUNK, size - offset)])
    return digest.hexdigest()


def _send_payload(sock: socket.socket, size: int, pace: float = 0.0) -> None:
    """`size` bytes; with `pace` (bytes a second), no faster than that, like a real link."""
    view = memoryview(_BLOCK)
    sent = 0
    started = time.monotonic()
    while sent < size:
        count = min(CHUNK, size - sent)
        sock.sendall(view[:count])
        sent += count
        if pace:
            ahead = started + sent / pace - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing our own sending, not waiting for the server


def _receive_all(sock: socket.socket) -> int:
    """Bytes received until EOF, into one reused buffer."""
    buffer = bytearray(CHUNK)
    total = 0
    while True:
        count = sock.recv_into(buffer)
        if not count:
            return total
        total += count


# -- a chat client just good enough to offer, accept and relay -----------------------------------


class Chat:
    def __init__(self, address: tuple[str, int], name: str) -> None:
        self.sock = socket.create_connection(address, timeout=STEP_TIMEOUT)
        self.buffer = b""
        self.name = name
        self.expect("HELLO ")
        self.sock.sendall(f"USER {name}\n".encode())
        self.expect(f"JOIN {name}")

    def line(self) -> str:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"{self.name}: the server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, prefix: str) -> str:
        """The next line starting with `prefix`; the room's broadcasts are skipped."""
        while True:
            line = self.line()
            if line.startswith(prefix):
                return line
            if not line.startswith(("JOIN ", "LEAVE ", "MSG ")):
                raise ConnectionError(f"{self.name}: expected {prefix!r}..., got {line!r}")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def _data_connection(address: tuple[str, int], token: str) -> socket.socket:
    sock = socket.create_connection(address, timeout=STEP_TIMEOUT)
    sock.sendall(f"DATA {token}\n".encode())
    seen = b""
    while seen.count(b"\n") < 2:  # HELLO, then READY (the file's bytes come after READY only)
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"data connection closed after {seen!r}")
        seen += byte
    if b"\nREADY " not in seen:
        raise ConnectionError(f"no READY: {seen!r}")
    return sock


def file_prefix() -> str:
    """A random prefix for the transfers' users, so that names never collide."""
    return "f" + "".join(random.choices(string.ascii_lowercase, k=5))


def relay_once(address: tuple[str, int], size: int, sha256: str, tid: str = "1",
               sample: callable | None = None) -> float:
    """One file of `size` bytes through the server; seconds from the first byte sent to
    the recipient's end of stream. `sample()` runs every 20 ms meanwhile (RSS)."""
    prefix = file_prefix()
    alice, bob = Chat(address, prefix + "a"), Chat(address, prefix + "b")
    try:
        return relay_between(address, alice, bob, size, sha256, tid, sample)
    finally:
        alice.close()
        bob.close()


def relay_between(address: tuple[str, int], alice: Chat, bob: Chat, size: int, sha256: str, tid: str,
                  sample: callable | None = None, pace: float = 0.0,
                  recipient_address: tuple[str, int] | None = None) -> float:
    """relay_once() between two registered clients; the recipient's data
    connection to `recipient_address` if given (another server of a cluster)."""
    alice.send(f"OFFER {bob.name} {tid} {size} {sha256} bench.bin")
    alice.expect("OFFER ")
    bob.expect("OFFER ")
    bob.send(f"ACCEPT {alice.name} {tid}")
    recipient_token = bob.expect("ACCEPTED ").split()[-1]
    sender_token = alice.expect("ACCEPTED ").split()[-1]
    received = {}
    receiving = _data_connection_later(recipient_address or address, recipient_token, received)
    sending = _data_connection(address, sender_token)
    receiving.join(STEP_TIMEOUT)
    started = time.perf_counter()
    done = threading.Event()
    sampler = threading.Thread(target=_sample_until, args=(done, sample), daemon=True)
    sampler.start()
    reader = threading.Thread(target=lambda: received.update(total=_receive_all(received["sock"])))
    reader.start()
    _send_payload(sending, size, pace)
    sending.shutdown(socket.SHUT_WR)
    reader.join(STEP_TIMEOUT * 5)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    sending.close()
    received["sock"].close()
    if received.get("total") != size:
        raise ConnectionError(f"the recipient got {received.get('total')} of {size} bytes")
    bob.send(f"RECEIVED {alice.name} {tid} ok")
    bob.expect("ENDED ")
    alice.expect("ENDED ")
    return elapsed


def _data_connection_later(address, token, into: dict) -> threading.Thread:
    """The recipient's data connection opens in a thread: READY waits for both sides."""
    thread = threading.Thread(target=lambda: into.update(sock=_data_connection(address, token)))
    thread.start()
    return thread


def _sample_until(done: threading.Event, sample) -> None:
    while sample is not None and not done.wait(0.02):
        sample()


def direct_once(size: int) -> float:
    """The same bytes over one loopback TCP connection between two sockets of this process."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        sender = socket.create_connection(listener.getsockname(), timeout=STEP_TIMEOUT)
        receiver, _ = listener.accept()
    result = {}
    reader = threading.Thread(target=lambda: result.update(total=_receive_all(receiver)))
    started = time.perf_counter()
    reader.start()
    _send_payload(sender, size)
    sender.shutdown(socket.SHUT_WR)
    reader.join(STEP_TIMEOUT * 5)
    elapsed = time.perf_counter() - started
    sender.close()
    receiver.close()
    if result.get("total") != size:
        raise ConnectionError(f"direct copy: {result.get('total')} of {size} bytes")
    return elapsed


def throughput_run(server: Server, size: int) -> dict:
    """Relayed vs direct throughput, and the server's RSS during the relay."""
    sha256 = payload_sha256(size)
    relay_once(server.address, min(size, 4 * CHUNK), payload_sha256(min(size, 4 * CHUNK)))  # warm up
    idle_kb = server.rss_kb()
    peak = [idle_kb]

    def sample() -> None:
        rss = server.rss_kb()
        if rss is not None and (peak[0] is None or rss > peak[0]):
            peak[0] = rss

    meter = CpuMeter(server.pid)
    relayed = relay_once(server.address, size, sha256, sample=sample)
    cpu = meter.stop()
    direct = direct_once(size)
    metrics = {
        "size_mb": size / 1e6,
        "relayed_mb_per_s": size / relayed / 1e6,
        "direct_mb_per_s": size / direct / 1e6,
        "ratio": direct / relayed,
        "lost": 0,
        **cpu,
    }
    if idle_kb is not None and peak[0] is not None:
        metrics.update(rss_idle_kb=idle_kb, rss_peak_kb=peak[0], rss_extra_kb=peak[0] - idle_kb)
    return metrics


def scenario_file(settings) -> list[tuple[str, dict]]:
    """One run: throughput and RSS (one transfer), then chat latency without transfers
    and with `settings.file_transfers` running, once as fast as they go and once at
    each pace of `settings.file_paces` (bytes a second per transfer), all on one server."""
    from bench.scenarios import Room, close_room_after, fixed_rate_run, run_with_server

    clients, rate = settings.file_latency_case
    senders = min(settings.latency_senders, clients)

    def body(server: Server) -> list[tuple[str, dict]]:
        cases = [(f"one {settings.file_size / 1e6:g} MB file", throughput_run(server, settings.file_size))]
        room = None
        try:
            room = Room(settings, server, clients)
            base = fixed_rate_run(settings, server, room, rate, senders, settings.latency_seconds)
            for pace in (0.0, *settings.file_paces):
                cases.append(latency_case(settings, server, room, base, clients, rate, senders, pace))
            return cases
        finally:
            close_room_after(server, room)

    return run_with_server(settings, clients + 64, body)


def latency_case(settings, server: Server, room, base, clients: int, rate: float, senders: int,
                 pace: float) -> tuple[str, dict]:
    """The room's latency while the transfers run at `pace` (0: as fast as they go), against `base`."""
    from bench.scenarios import fixed_rate_run
    from bench.stats import latency_summary

    loops = start_transfer_loops(server.address, settings.file_size, settings.file_transfers,
                                 settings.latency_seconds, pace)
    try:
        busy = fixed_rate_run(settings, server, room, rate, senders, settings.latency_seconds)
        moved = int(loops.stdout.readline().strip() or 0)
    finally:
        loops.communicate(timeout=STEP_TIMEOUT)  # closes its stdin: its clients leave
    # Their LEAVEs reach the room now, not during the next run (where they would count as extra).
    room.barrier(room.clients, "transfers-gone", settings.drain_timeout_s)
    base_lat, busy_lat = latency_summary(base.latencies_ns), latency_summary(busy.latencies_ns)
    speed = f"at {pace / 1e6:g} MB/s each" if pace else "as fast as they go"
    return (f"{clients} clients @ {rate:g}/s, {settings.file_transfers} transfers {speed}", {
        "base_p99_ms": base_lat["p99_ms"],
        "transfers_p99_ms": busy_lat["p99_ms"],
        "p99_ratio": busy_lat["p99_ms"] / base_lat["p99_ms"] if base_lat["count"] else float("nan"),
        "base_p50_ms": base_lat["p50_ms"],
        "transfers_p50_ms": busy_lat["p50_ms"],
        # The generator's own lateness in sending, part of the latencies above: the
        # transfer process shares its CPU, so this tells generator from server.
        "base_send_lag_p99_ms": latency_summary(base.send_lag_ns)["p99_ms"],
        "transfers_send_lag_p99_ms": latency_summary(busy.send_lag_ns)["p99_ms"],
        "file_mb_moved": moved / 1e6,
        "base_rss_max_kb": base.rss_max_kb if base.rss_max_kb is not None else float("nan"),
        "transfers_rss_max_kb": busy.rss_max_kb if busy.rss_max_kb is not None else float("nan"),
        "lost": base.others_lost + busy.others_lost,
        "extra": base.others_extra + busy.others_extra,
        **busy.cpu,
    })


# -- transfers in a process of their own, for the latency comparison ---------------------------


def start_transfer_loops(address: tuple[str, int], size: int, parallel: int,
                         seconds: float, pace: float) -> subprocess.Popen:
    """`python -m bench.files loop HOST PORT SIZE PARALLEL SECONDS PACE`; it prints READY
    once its clients are registered, then the bytes moved when done."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.files", "loop", address[0], str(address[1]), str(size), str(parallel),
         str(seconds), str(pace)], cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = process.stdout.readline()
    if first.strip() != "READY":
        process.kill()
        raise ConnectionError(f"transfer loop did not start: {first!r}")
    return process


def _loop_main(host: str, port: str, size: str, parallel: str, seconds: str, pace: str) -> int:
    """PARALLEL pairs of clients, each relaying SIZE-byte files back to back for SECONDS.
    The clients stay registered until stdin closes, so that the room measured meanwhile
    sees no LEAVE during its run."""
    # The lowest priority: these clients stand for people on other machines, and must
    # not starve the generator that measures the chat (which shares their CPU here).
    os.nice(19)
    address, size_bytes = (host, int(port)), int(size)
    sha256 = payload_sha256(size_bytes)
    pairs = [(Chat(address, file_prefix() + "a"), Chat(address, file_prefix() + "b"))
             for _ in range(int(parallel))]
    moved = [0] * len(pairs)
    print("READY", flush=True)
    end = time.monotonic() + float(seconds)

    def loop(index: int) -> None:
        alice, bob = pairs[index]
        number = 0
        while time.monotonic() < end:
            number += 1
            relay_between(address, alice, bob, size_bytes, sha256, tid=str(number), pace=float(pace))
            moved[index] += size_bytes

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(sum(moved), flush=True)
    sys.stdin.read()
    for alice, bob in pairs:
        alice.close()
        bob.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 8 and sys.argv[1] == "loop":
        sys.exit(_loop_main(*sys.argv[2:]))
    sys.exit("usage: python -m bench.files loop HOST PORT SIZE PARALLEL SECONDS PACE")

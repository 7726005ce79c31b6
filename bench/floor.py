"""The send floor: what one line to each of N clients costs on this machine, with no server.

Every server in the issue's table, and ours, writes to each recipient with
its own send(): a message to N clients is N system calls, and on loopback each
one also runs the receiving side's TCP stack. So no such server can deliver
one message to all N clients sooner than one thread can make those N calls,
and the last of N recipients (p99 and beyond) waits about that long.
This scenario measures exactly that, with nothing of chat/1 in the way:

    a child process holds N loopback connections and reads them (epoll);
    this process writes one 64-byte line to each of them, 60 times a second
    (the pace of the 1,000-client latency case), and times each pass.

It times the same pass split between two threads as well: what a second
thread buys when the send() calls of a Python program take turns on the GIL.

The child counts the bytes it receives; anything a pass failed to deliver
shows up as `lost`, which must be 0, as in every other scenario.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

from bench.stats import percentile

Case = tuple[str, dict]

#: One line of the benchmark's message size (64 bytes).
LINE = b"MSG floor " + b"x" * 53 + b"\n"
#: Passes per second: the 1,000-client latency case sends 60 messages a second.
PASSES_PER_S = 60.0


def scenario_send_floor(settings) -> list[Case]:
    """One run: each client count of the fan-out scenario, with 1 and 2 sending threads."""
    passes = settings.floor_passes
    cases = []
    for count in sorted(set(settings.fanout_clients)):
        for threads in (1, 2):
            figures = measure_passes(count, threads, passes, settings.server_cpus)
            cases.append((f"{count} sockets, {threads} thread{'s' if threads > 1 else ''}", figures))
    return cases


def measure_passes(count: int, threads: int, passes: int, sender_cpus: set[int] | None) -> dict:
    """Time `passes` passes of one LINE to each of `count` connections."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=count)
    listener.settimeout(30)  # should the child fail to connect, fail the run instead of hanging
    port = listener.getsockname()[1]
    result_reader, result_writer = os.pipe()
    child = os.fork()
    if child == 0:  # The receiving side: it must never return into the benchmark.
        status = 1
        try:
            listener.close()
            os.close(result_reader)
            received = receive_until_closed(port, count)
            os.write(result_writer, str(received).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(result_writer)
    connections: list[socket.socket] = []
    affinity = os.sched_getaffinity(0)
    try:
        for _ in range(count):
            sock, _address = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connections.append(sock)
        if sender_cpus:
            os.sched_setaffinity(0, sender_cpus)  # where a server started by the benchmark runs
        durations, short_sends = time_passes(connections, threads, passes)
    finally:
        os.sched_setaffinity(0, affinity)
        for sock in connections:
            sock.close()
        listener.close()
        with os.fdopen(result_reader, "rb") as results:
            received = int(results.read() or 0)  # the child answers once every socket is closed
        os.waitpid(child, 0)
    durations.sort()
    pass_p50 = percentile(durations, 0.5)
    return {
        "sockets": count,
        "threads": threads,
        "passes": passes,
        "pass_p50_ms": pass_p50 * 1e3,
        "pass_p99_ms": percentile(durations, 0.99) * 1e3,
        "us_per_send": pass_p50 / count * 1e6,
        "short_sends": short_sends,
        "lost": count * passes - received // len(LINE),
    }


def time_passes(connections: list[socket.socket], threads: int, passes: int) -> tuple[list[float], int]:
    """Wall time of each pass, from its start until every thread has sent its share.

    Returns the durations and how many send() calls took less than the whole
    line (a full socket: none are expected at this pace)."""
    shares = [connections[number::threads] for number in range(threads)]
    short_sends = [0] * threads
    failures: list[BaseException] = []
    # A sender that fails breaks the barriers, and the timeout bounds the
    # wait should a thread hang: the run then fails instead of hanging.
    go = threading.Barrier(threads + 1, timeout=30)
    done = threading.Barrier(threads + 1, timeout=30)

    def send_share(number: int) -> None:
        try:
            for _ in range(passes):
                go.wait()
                for sock in shares[number]:
                    # Non-blocking, as a server writes: a full socket gives a short send.
                    if sock.send(LINE, socket.MSG_DONTWAIT) != len(LINE):
                        short_sends[number] += 1
                done.wait()
        except threading.BrokenBarrierError:
            pass  # The main thread gave up; its error says why.
        except OSError as error:
            failures.append(error)
            go.abort()
            done.abort()

    workers = [threading.Thread(target=send_share, args=(number,), name=f"floor-sender-{number}")
               for number in range(threads)]
    for worker in workers:
        worker.start()
    durations = []
    start = time.monotonic()
    try:
        for number in range(passes):
            # Keep the pace: each pass starts at its scheduled time. This paces
            # the load; it does not wait for anything to arrive.
            delay = start + number / PASSES_PER_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            began = time.perf_counter()
            go.wait()
            done.wait()
            durations.append(time.perf_counter() - began)
    except threading.BrokenBarrierError:
        raise OSError(f"a sending thread failed: {failures[0] if failures else 'timed out'}") from None
    finally:
        go.abort()
        done.abort()
        for worker in workers:
            worker.join()
    return durations, sum(short_sends)


def receive_until_closed(port: int, count: int) -> int:
    """Open `count` connections to port, read everything until all are closed; bytes read."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for sock in sockets:
        sock.setblocking(False)
        poller.register(sock, select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    buffer = bytearray(65536)
    received = 0
    while by_fd:
        for fd, _events in poller.poll():
            sock = by_fd[fd]
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                continue
            except OSError:
                size = 0
            if size:
                received += size
            else:
                poller.unregister(fd)
                sock.close()
                del by_fd[fd]
    return received

"""The original project's failure, at scale: broadcast while others join and leave.

The original server iterated its client table without a lock, kicked its own
senders when the table changed under it, and lost LEAVE notices. Here four
senders broadcast numbered lines continuously while two churn threads join and
leave in a tight loop (LEAVE, orderly close and reset in turn), and two
observers stay throughout. Afterwards every line every client received is
checked against the room's one order ([ORDER-2]): nothing lost, doubled or
reordered ([ORDER-5]), every JOIN and LEAVE exactly once and in order
([LEAVE-3], [LEAVE-4], [ORDER-3]), and each churner saw exactly its slice of
the room ([USER-3]).
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from tests.conftest import LineClient
from tests.test_faults import reset, thread_crashes  # noqa: F401 (a fixture)

SENDERS = 4
MESSAGES = 150           # per sender
OBSERVERS = 2
CHURNERS = 2
CYCLES = 150             # per churner: 300 join/leave cycles in all
BUDGET = 45.0            # seconds for the load itself; the test's cap is 60
PAD = "." * 40           # so that lines are not all tiny


def churn_mode(cycle: int) -> str:
    return ("quit", "close", "reset")[cycle % 3]


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_broadcast_while_others_join_and_leave_loses_nothing(server, caplog, thread_crashes):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="chat.server")
    started = time.monotonic()
    deadline = started + BUDGET
    address = server.address
    observers = [LineClient(address).register(f"observer{i}") for i in range(OBSERVERS)]
    senders = [LineClient(address).register(f"sender{i}") for i in range(SENDERS)]
    steady = observers + senders
    churned: dict[str, tuple[str, list[str]]] = {}   # name -> (mode, lines it received)
    views: dict[str, list[str]] = {client.name: [] for client in steady}
    failures: list[tuple[str, BaseException]] = []
    threads: list[threading.Thread] = []
    progress = threading.Condition()
    cycles_done = [0]
    try:
        for client in steady:
            client.barrier()  # the JOINs of those who registered later: from here all agree

        def send(client: LineClient) -> None:
            try:
                for n in range(MESSAGES):
                    # Spread the lines over the whole churn: the n-th waits for
                    # the n-th share of the cycles (a condition, not a sleep).
                    share = n * CHURNERS * CYCLES // MESSAGES
                    with progress:
                        if not progress.wait_for(lambda share=share: cycles_done[0] >= share or failures,
                                                 max(0.0, deadline - time.monotonic())):
                            raise TimeoutError(f"{client.name} sent only {n} lines in time")
                    client.send(f"MSG {n} {PAD}")
                    if n % 10 == 9:
                        views[client.name].extend(client.barrier())  # read as it goes
                views[client.name].extend(client.barrier())
            except BaseException as error:  # reported by the test thread
                failures.append((client.name, error))

        def churn(number: int) -> None:
            try:
                for cycle in range(CYCLES):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"churner {number} did only {cycle} cycles in time")
                    name = f"churn{number}x{cycle}"
                    mode = churn_mode(cycle)
                    client = LineClient(address)
                    try:
                        # register() insists that its own JOIN is the first line
                        # after USER ([USER-3]).
                        client.register(name)
                        lines = []
                        if mode == "quit":
                            client.send("LEAVE")
                            while (line := client.line()) != f"LEAVE {name} quit":
                                lines.append(line)
                            client.expect_closed()
                        else:
                            lines = client.barrier()
                        churned[name] = (mode, lines)
                    finally:
                        if mode == "reset":
                            reset(client)
                        else:
                            client.close()
                    with progress:
                        cycles_done[0] += 1
                        progress.notify_all()
            except BaseException as error:  # reported by the test thread
                failures.append((f"churner {number}", error))
                with progress:
                    progress.notify_all()

        threads = [threading.Thread(target=send, args=(client,), name=f"stress-{client.name}")
                   for client in senders]
        threads += [threading.Thread(target=churn, args=(number,), name=f"stress-churn{number}")
                    for number in range(CHURNERS)]
        load_started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 5)
        assert not [t.name for t in threads if t.is_alive()], "load threads did not finish"
        assert not failures, failures
        load_took = time.monotonic() - load_started

        # Drain. A churner that closed or reset may not have been noticed yet:
        # wait for every churner's LEAVE, then everyone's view is complete.
        first = observers[0]
        leaves_pending = set(churned)
        while leaves_pending:
            try:
                line = first.line()
            except TimeoutError:
                pytest.fail(f"LEAVE lost ([LEAVE-3]) for {sorted(leaves_pending)[:5]}")
            views[first.name].append(line)
            if line.startswith("LEAVE "):
                leaves_pending.discard(line.split(" ")[1])
        for client in steady:
            views[client.name].extend(client.barrier())
        took = time.monotonic() - started
    finally:
        for thread in threads:
            thread.join(5)
        for client in steady:
            client.close()

    # [ORDER-2]: one room order, seen whole by everyone registered throughout.
    room = views[first.name]
    for name, view in views.items():
        assert view == room, f"{name} saw the room in another order (or lost or doubled lines)"
    assert all(line.split(" ", 1)[0] in ("MSG", "JOIN", "LEAVE") for line in room), \
        [line for line in room if line.split(" ", 1)[0] not in ("MSG", "JOIN", "LEAVE")][:5]

    # Every sender's lines, once each and in its order; senders never kicked.
    for sender in senders:
        numbers = [int(line.split(" ")[2]) for line in room if line.startswith(f"MSG {sender.name} ")]
        assert numbers == list(range(MESSAGES)), f"{sender.name}'s lines lost, doubled or reordered"
    assert not [line for line in room if line.startswith(("LEAVE observer", "LEAVE sender"))]

    # Every churner: one JOIN, then one LEAVE with the right reason; and it
    # received exactly the room's order between them.
    position = {}
    for index, line in enumerate(room):
        if not line.startswith("MSG "):
            assert line not in position, f"{line!r} twice ([LEAVE-4])"
            position[line] = index
    assert len(churned) == CHURNERS * CYCLES
    churner_lost = 0
    for name, (mode, lines) in churned.items():
        reason = "quit" if mode == "quit" else "closed"
        join, leave = position.get(f"JOIN {name}"), position.get(f"LEAVE {name} {reason}")
        assert join is not None and leave is not None and join < leave, \
            f"{name}: JOIN at {join}, LEAVE {reason} at {leave}"
        assert not [line for line in position if line.startswith(f"LEAVE {name} ")
                    and line != f"LEAVE {name} {reason}"]
        between = room[join + 1:leave]
        if mode == "quit":
            churner_lost += len(between) - len(lines)
            assert lines == between, f"{name} did not receive exactly the room between its JOIN and LEAVE"
        else:
            assert lines == between[:len(lines)], f"{name} received lines out of the room's order"
    cycles = CHURNERS * CYCLES
    expected_lines = SENDERS * MESSAGES + 2 * cycles
    assert len(room) == expected_lines, f"{len(room)} room lines, expected {expected_lines}"
    delivered = sum(1 for view in views.values() for line in view if line.startswith("MSG "))
    lost = SENDERS * MESSAGES * len(steady) - delivered
    assert lost == 0 and churner_lost == 0

    failures_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures_logged and "Traceback" not in caplog.text, caplog.text

    churn_lines = [i for i, line in enumerate(room) if not line.startswith("MSG ")]
    interleaved = sum(1 for i, line in enumerate(room) if line.startswith("MSG ")
                      and churn_lines[0] < i < churn_lines[-1])
    print(f"\nstress: {SENDERS} senders x {MESSAGES} messages, {OBSERVERS} observers, "
          f"{CHURNERS} churners x {CYCLES} = {cycles} join/leave cycles "
          f"(quit/close/reset: {sum(m == 'quit' for m, _ in churned.values())}/"
          f"{sum(m == 'close' for m, _ in churned.values())}/"
          f"{sum(m == 'reset' for m, _ in churned.values())}); "
          f"{len(room)} lines in the room's order ({interleaved} of {SENDERS * MESSAGES} MSGs "
          f"amid the churn), {delivered} MSGs delivered to steady clients, "
          f"messages lost = {lost + churner_lost}; load {load_took:.2f} s, whole test {took:.2f} s")

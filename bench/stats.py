"""Small pure helpers of the benchmark: no sockets, no clock, no processes.

They are kept apart so that tests/test_bench.py can check them exactly:

- `percentile` and `latency_summary`: nearest-rank percentiles in milliseconds.
- `FixedRateSchedule`: when each message of a fixed-rate run *should* be sent.
  Latency is measured from that intended time, not from the moment the
  generator got round to sending, so a stall (in the server or in the
  generator) shows up in every message that was due during it. Measuring from
  the actual send time would hide it: this is "coordinated omission".
- `LineSplitter`: complete lines out of reads that split lines anywhere.
- `count_lines`: the cheap way to count lines at millions a second.
- `message_text` / `parse_message_text`: the 64-byte MSG text the senders use.
- `median_of_runs`: combine repeated runs into one row.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------- percentiles


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values.

    `fraction` is between 0 and 1 (0.99 for p99). Nearest rank returns a value
    that was really observed (no interpolation between two samples), the
    smallest one such that at least `fraction` of all samples are <= it.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies_ns: Iterable[int]) -> dict[str, float]:
    """p50, p99, p99.9 and max of latencies given in nanoseconds, in ms.

    An empty input gives NaN values, not an error: a run that delivered
    nothing still produces a row, and its `lost` column says why.
    """
    values = sorted(latencies_ns)
    if not values:
        nan = float("nan")
        return {"count": 0, "p50_ms": nan, "p99_ms": nan, "p999_ms": nan, "max_ms": nan}
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50) / NS_PER_MS,
        "p99_ms": percentile(values, 0.99) / NS_PER_MS,
        "p999_ms": percentile(values, 0.999) / NS_PER_MS,
        "max_ms": values[-1] / NS_PER_MS,
    }


# ------------------------------------------------------------ fixed-rate plan


class FixedRateSchedule:
    """Message k of a run at `rate` messages per second is due at start + k / rate.

    The schedule never adapts to how fast things go: if the generator (or the
    server, through back-pressure) falls behind, the messages that became due
    in the meantime are sent late in a burst but keep their *intended* time,
    and their latency is counted from it. That is what a real user typing at
    that rate would experience, and it avoids coordinated omission.
    """

    def __init__(self, start_ns: int, rate_per_s: float) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate must be positive")
        self.start_ns = start_ns
        self.rate_per_s = rate_per_s
        self.next_index = 0  # the first message not yet handed out

    def intended_ns(self, index: int) -> int:
        """When message `index` should be sent (same clock as start_ns)."""
        return self.start_ns + round(index * NS_PER_S / self.rate_per_s)

    def due(self, now_ns: int, limit: int | None = None) -> range:
        """The indices of the messages due at `now_ns` not handed out yet.

        `limit` is the total number of messages of the run, if it is fixed.
        The returned range may be empty; the next call continues after it.
        """
        first = self.next_index
        # Every k with intended_ns(k) <= now_ns, i.e. k <= elapsed * rate.
        elapsed_ns = now_ns - self.start_ns
        if elapsed_ns < 0:
            return range(first, first)
        last_due = math.floor(elapsed_ns * self.rate_per_s / NS_PER_S)
        # Guard the rounding of intended_ns at the boundary.
        while last_due >= first and self.intended_ns(last_due) > now_ns:
            last_due -= 1
        end = last_due + 1
        if limit is not None:
            end = min(end, limit)
        end = max(end, first)
        self.next_index = end
        return range(first, end)

    def seconds_until_next(self, now_ns: int) -> float:
        """How long until the next message is due (0.0 if it is already)."""
        return max(0, self.intended_ns(self.next_index) - now_ns) / NS_PER_S


def latencies_from_intended(intended_ns: Sequence[int], received_ns: Sequence[int]) -> list[int]:
    """Latency of each delivered message: received minus *intended* send time.

    A message that was never delivered has no latency; the caller counts it as
    lost instead of letting it vanish from the statistics silently.
    """
    if len(intended_ns) != len(received_ns):
        raise ValueError("one receive time per intended time")
    return [received - intended for intended, received in zip(intended_ns, received_ns, strict=True)]


# -------------------------------------------------------------- line framing


def count_lines(data: bytes) -> int:
    """Lines completed by this read: its LF bytes.

    This is correct however reads split lines: a line cut in two by a read
    boundary has its single LF in exactly one of the pieces, so summing this
    over all reads of a connection counts each complete line once. bytes.count
    runs in C, which is what lets one Python process count millions of lines a
    second without looking at them.
    """
    return data.count(b"\n")


class LineSplitter:
    """Turns arbitrary reads of a byte stream into complete lines.

    Bytes after the last LF are kept until a later read completes the line
    (SPEC.md [FRAME-4]: one read is not one line). Lines are returned without
    their LF.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self.pending:
            data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()  # the unfinished last piece (often b"")
        return lines


class TailWatcher:
    """Remembers the last bytes of a stream, to notice a line in it across reads.

    Counting receivers do not split lines, yet the barrier must know when the
    PONG it asked for arrived. Outside a barrier only the last `size` bytes of
    each read are kept (cheap: the fan-out's hot path); during one, each read
    is searched, with the end of the previous one in front, since the PONG
    need not be the last line: in a cluster, lines that came through the log
    from another server may follow it (SPEC.md 11b, [PING-2]).
    """

    __slots__ = ("size", "tail")

    def __init__(self, size: int = 80) -> None:
        self.size = size
        self.tail = b""

    def feed(self, data: bytes, watch: bytes | None = None) -> bool:
        """Keep the stream's last bytes; whether `watch` (shorter than `size`)
        came in `data`, or began in the previous read and ends in it."""
        joined = self.tail + data if watch is not None or len(data) < self.size else data
        self.tail = joined[-self.size :]
        return watch is not None and watch in joined


# ------------------------------------------------------------- message text

#: Every benchmark message carries exactly this many bytes of text, so that
#: all scenarios send lines of one known size ("64-byte messages").
MESSAGE_TEXT_BYTES = 64


def message_text(sequence: int, intended_ns: int) -> bytes:
    """The MSG text: sequence number and intended send time, padded to 64 bytes.

    The sender is known from the MSG line's name field, so only the sequence
    number (per sender, from 0) and the intended send time (for latency) are
    needed. Padding is '.', which needs no escaping and is not a space
    (the text must not end in spaces only).
    """
    head = b"%d %d " % (sequence, intended_ns)
    if len(head) > MESSAGE_TEXT_BYTES:
        raise ValueError("sequence and time do not fit in 64 bytes")
    return head + b"." * (MESSAGE_TEXT_BYTES - len(head))


def parse_message_text(text: bytes) -> tuple[int, int]:
    """(sequence, intended_ns) from a text made by `message_text`."""
    sequence, intended, _padding = text.split(b" ", 2)
    return int(sequence), int(intended)


def parse_msg_line(line: bytes) -> tuple[bytes, int, int]:
    """(sender name, sequence, intended_ns) from b'MSG <name> <text>'."""
    _verb, name, sequence, intended, _padding = line.split(b" ", 4)
    return name, int(sequence), int(intended)


def parse_hello(line: bytes) -> dict[str, int]:
    """The parameters of b'HELLO chat/1 key=value ...' as a dict.

    Unknown keys are kept too ([GRAM-3] tells clients to ignore them, which
    here means: carry them along without depending on them).
    """
    fields = line.split(b" ")
    if len(fields) < 2 or fields[0] != b"HELLO" or fields[1] != b"chat/1":
        raise ValueError(f"not a chat/1 HELLO: {line[:80]!r}")
    params: dict[str, int] = {}
    for field in fields[2:]:
        key, _, value = field.partition(b"=")
        params[key.decode("ascii")] = int(value)
    return params


# ------------------------------------------------------------ combining runs

#: Metrics where the worst run matters, not the typical one: one lost line in
#: any run is a failure, so these combine with max() instead of the median.
WORST_OF_RUNS = frozenset(
    {"lost", "extra", "order_errors", "disconnected", "failed", "others_lost", "errors"}
)


def median_of_runs(runs: Sequence[dict]) -> dict:
    """One row out of repeated runs: the median of each numeric metric.

    Metrics in WORST_OF_RUNS take the maximum instead. Non-numeric values
    (notes, booleans) are kept from the last run. NaN values (a run that
    measured nothing) are left out of the median unless all runs are NaN.
    """
    if not runs:
        return {}
    combined: dict = {}
    keys: list[str] = []
    for run in runs:
        for key in run:
            if key not in keys:
                keys.append(key)
    for key in keys:
        values = [run[key] for run in runs if key in run]
        numeric = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        if not numeric:
            combined[key] = values[-1]
            continue
        real = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
        if not real:
            combined[key] = float("nan")
        elif key in WORST_OF_RUNS:
            combined[key] = max(real)
        else:
            combined[key] = statistics.median(real)
    return combined

"""Printing the results as tables, writing them as JSON, and the optional plot."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
from pathlib import Path

#: Columns shown per scenario (all metrics are in the JSON anyway).
TABLE_COLUMNS = {
    "fan-out": [
        "clients", "senders", "window", "lines_per_s", "msgs_per_s", "lost", "extra",
        "order_errors", "gen_cpu_pct", "server_cpu_pct", "other_cpu_pct",
    ],
    "latency": [
        "sent", "lost", "p50_ms", "p99_ms", "p999_ms", "max_ms", "send_lag_p99_ms",
        "read_delay_p99_ms", "gen_cpu_pct", "server_cpu_pct", "other_cpu_pct",
    ],
    "connections": [
        "held", "failed", "connect_per_s", "step_s", "join_lines", "rss_kb",
        "rss_per_conn_kb", "server_threads", "gen_cpu_pct", "server_cpu_pct", "other_cpu_pct",
    ],
    "send-floor": ["passes", "pass_p50_ms", "pass_p99_ms", "us_per_send", "short_sends", "lost"],
}


#: Above this much CPU used by the rest of the machine during a run (% of one
#: core), the report warns that the figures are not clean. A quiet machine
#: shows a few percent: interrupt work and background tasks.
OTHER_CPU_WARNING_PCT = 25.0


def machine_info() -> dict:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile_soft": soft,
        "nofile_hard": hard,
    }


def format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def table(rows: list[tuple[str, dict]], columns: list[str]) -> str:
    """A plain-text table: one row per case, one column per metric."""
    columns = [c for c in columns if any(c in metrics for _, metrics in rows)]
    header = ["case"] + columns
    body = [[name] + [format_value(metrics.get(c, float("nan"))) for c in columns] for name, metrics in rows]
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
    def join(cells: list[str]) -> str:
        # The case name is left-aligned, the figures right-aligned.
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [join(header), "  ".join("-" * w for w in widths)]
    lines += [join(row) for row in body]
    return "\n".join(lines)


def vertical(rows: list[tuple[str, dict]]) -> str:
    """One 'metric: value' line per metric, for scenarios with wide rows."""
    lines = []
    for name, metrics in rows:
        lines.append(f"[{name}]")
        width = max(len(key) for key in metrics)
        for key, value in metrics.items():
            lines.append(f"  {key.ljust(width)}  {format_value(value)}")
    return "\n".join(lines)


def render(results: dict) -> str:
    """All scenarios of a results dict (see bench/__main__.py), as text."""
    out = []
    runs = results["runs"]
    for scenario, data in results["scenarios"].items():
        if runs > 1:
            out.append(f"== {scenario} (median of {runs} runs; lost/extra/errors: worst run)")
        else:
            out.append(f"== {scenario}")
        rows = [(name, case["median"]) for name, case in data["cases"].items()]
        if rows:
            columns = TABLE_COLUMNS.get(scenario)
            out.append(table(rows, columns) if columns else vertical(rows))
        busiest = max(
            (run.get("other_cpu_pct") or 0.0 for case in data["cases"].values() for run in case["runs"]),
            default=0.0,
        )
        if busiest > OTHER_CPU_WARNING_PCT:
            out.append(
                f"WARNING: other processes used up to {busiest:.0f}% of a core during these runs; "
                "the figures include their interference (re-run on a quiet machine)"
            )
        for error in data["errors"]:
            out.append(f"ERROR: {error}")
        out.append("")
    return "\n".join(out)


def write_json(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(value):
        # JSON has no NaN: write null.
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(results), indent=2) + "\n")


def plot_latencies(latencies: dict, path: Path) -> str:
    """A latency CDF per case, if matplotlib is installed; returns a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no screen needed
        import matplotlib.pyplot as plt
    except ImportError:
        return f"note: matplotlib is not installed, so no plot was written to {path}"
    if not latencies:
        return "note: no latency figures to plot (run the latency or slow-consumer scenario)"
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, values in latencies.items():
        if not len(values):
            continue
        ordered = sorted(values)
        # At most ~2,000 points per curve (a run has up to 300,000 samples),
        # always including the maximum.
        step = max(1, len(ordered) // 2000)
        ranks = list(range(step - 1, len(ordered), step))
        if ranks[-1] != len(ordered) - 1:
            ranks.append(len(ordered) - 1)
        ms = [ordered[r] / 1e6 for r in ranks]
        fractions = [(r + 1) / len(ordered) for r in ranks]
        axes.plot(ms, fractions, label=f"{name} (n={len(ordered):,})")
    axes.set_xscale("log")
    axes.set_xlabel("latency from intended send time (ms, log scale)")
    axes.set_ylabel("fraction of delivered lines")
    axes.axhline(0.99, color="grey", linewidth=0.5, linestyle="--")
    axes.set_title("chat/1 delivery latency (last run of each case)")
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return f"latency plot written to {path}"

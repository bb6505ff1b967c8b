#!/usr/bin/env python3
"""Draws deploy/local/bench's results: throughput of each strategy, and the latency distribution.

usage: bench-chart.py RESULTS.json CHART.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402


def main(results_path, chart_path):
    with open(results_path) as f:
        report = json.load(f)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})

    # Throughput, events per second, log scale (the strategies differ by orders of magnitude).
    bars = []
    if report.get("perRecord"):
        r = report["perRecord"]
        bars.append((f"per-record\n(--max-batch 1, {r['records']:,} records)", r["eventsPerSecond"], "#b0b0b0"))
    if report.get("batched"):
        r = report["batched"]
        bars.append((f"batched\n(--max-batch {r['maxBatch']})", r["eventsPerSecond"], "#2b6cb0"))
    if report.get("ceiling"):
        r = report["ceiling"]
        bars.append((f"ceiling: database alone\n({r['connections']} sessions, INSERT … SELECT)", r["eventsPerSecond"], "#9c4221"))
    if report.get("replay"):
        r = report["replay"]
        bars.append(("replay of processed\nrecords (duplicate storm)", r["eventsPerSecond"], "#2f855a"))
    if not bars:
        left.axis("off")
    labels = [b[0] for b in bars]
    values = [b[1] for b in bars]
    y = range(len(bars))
    left.barh(list(y), values, color=[b[2] for b in bars], log=bool(bars))
    left.set_yticks(list(y))
    left.set_yticklabels(labels, fontsize=9)
    left.invert_yaxis()
    left.set_xlabel("events per second (log scale)")
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for i, v in enumerate(values):
        left.text(v * 1.08, i, f"{v:,.0f}", va="center", fontsize=9)
    if values:
        left.set_xlim(min(values) / 2, max(values) * 4)
    subtitle = []
    if report.get("batchedOverPerRecord"):
        subtitle.append(f"batched ÷ per-record {report['batchedOverPerRecord']:.1f}× (target 25×)")
    if report.get("batchedOverCeiling"):
        subtitle.append(f"batched ÷ ceiling {report['batchedOverCeiling']:.2f} (target 0.6)")
    left.set_title("Throughput\n" + "; ".join(subtitle), fontsize=10)
    left.grid(axis="x", which="major", alpha=0.3)

    # Latency distribution: the classic HdrHistogram percentile plot.
    latency = report.get("latency")
    if latency and latency.get("distribution"):
        points = [(p, ms) for p, ms in latency["distribution"] if p < 100]
        xs = [1 / (1 - p / 100) for p, _ in points]
        ys = [ms for _, ms in points]
        right.plot(xs, ys, color="#2b6cb0", label=f"once run (produce → commit), {latency['offeredRate']:,} events/s")
        right.axhline(50, color="#c53030", linestyle="--", linewidth=1, label="target: p99 ≤ 50 ms")
        floor = report.get("brokerLatency")
        if floor:
            right.scatter(
                [2, 100], [floor["p50Milliseconds"], floor["p99Milliseconds"]], color="#718096", zorder=3,
                label="broker alone (bare consumer): p50, p99")
        right.set_xscale("log")
        ticks = [2, 10, 100, 1000, 10000]
        right.set_xticks(ticks)
        right.set_xticklabels(["50%", "90%", "99%", "99.9%", "99.99%"])
        right.set_xlim(1, max(xs[-1] if xs else 10, 1000) * 1.2)
        right.set_ylabel("milliseconds")
        right.set_xlabel("percentile")
        right.set_title(
            f"End-to-end latency: p50 {latency['p50Milliseconds']:.0f} ms, p99 {latency['p99Milliseconds']:.0f} ms, "
            f"max {latency['maxMilliseconds']:.0f} ms",
            fontsize=10)
        right.legend(fontsize=8, loc="upper left")
        right.grid(alpha=0.3)
    else:
        right.axis("off")

    machine = report.get("machine", {})
    pg = machine.get("postgres", {})
    fig.suptitle(
        f"once bench {report.get('date', '')} · {machine.get('cores', '?')} cores · PostgreSQL {machine.get('postgresVersion', '?')} "
        f"(synchronous_commit={pg.get('synchronous_commit', '?')}, fsync={pg.get('fsync', '?')}) · {report.get('verdict', '')}",
        fontsize=10)
    fig.tight_layout()
    fig.savefig(chart_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

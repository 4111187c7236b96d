"""The benchmark's report: a Markdown table, a JSON file of every run, and PNG plots."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagcall import RunResult
from dagcall.viz import require_matplotlib

from ._runner import BenchRecord

__all__ = [
    "PAPER",
    "Summary",
    "markdown_table",
    "plot_gantt",
    "plot_latency",
    "reward_table",
    "summarize",
]

#: The paper's figures versus ReAct (speedup, cost ratio), for the report's last column.
PAPER: dict[str, str] = {
    "hotpotqa": "1.80x faster, 3.37x cheaper (GPT-3.5)",
    "movies": "3.74x faster, 6.73x cheaper (GPT-3.5)",
    "parallelqa": "2.27x faster (LLaMA-2-70B), 2.15x faster (GPT-4), 4.65x cheaper (GPT-4)",
    "game24": "2.89x faster than Tree-of-Thoughts (GPT-4)",
    "webshop": "up to 101.7x faster than the baselines (ReAct, LATS), 25.7% higher success rate",
}


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Summary:
    """One system on one workload."""

    workload: str
    system: str
    questions: int
    errors: int
    accuracy: float
    mean_latency: float
    p50_latency: float
    p95_latency: float
    llm_calls: float
    input_tokens: float
    output_tokens: float
    cost: float | None
    speedup: float | None = None  # baseline's mean latency over this system's
    cost_ratio: float | None = None  # baseline's mean cost over this system's
    bound_ratio: float | None = None  # mean of latency / critical-path bound
    mean_reward: float | None = None  # WebShop: the mean purchase reward (accuracy: success)
    cached_input_tokens: float = 0.0  # of input_tokens, read from a prompt cache
    #: Speedup and cost ratio against other baselines of the workload (WebShop: LATS).
    versus: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(
    records: Sequence[BenchRecord],
    baselines: Mapping[str, str] | None = None,
    others: Mapping[str, Sequence[str]] | None = None,
) -> list[Summary]:
    """Per workload and system; speedups and cost ratios against each workload's baseline
    (ReAct, or the sequential Tree-of-Thoughts for Game of 24), and in ``versus`` against
    the workload's ``others`` (WebShop: LATS)."""
    baselines = baselines or {}
    others = others or {}
    groups: dict[tuple[str, str], list[BenchRecord]] = {}
    for r in records:
        groups.setdefault((r.workload, r.system), []).append(r)
    out: list[Summary] = []
    for (workload, system), rs in groups.items():
        latencies = [r.latency for r in rs]
        costs = [r.cost for r in rs]
        bounds = [r.latency / r.bound for r in rs if r.bound and r.error is None]
        out.append(
            Summary(
                workload=workload,
                system=system,
                questions=len(rs),
                errors=sum(r.error is not None for r in rs),
                accuracy=sum(r.correct for r in rs) / len(rs),
                mean_latency=statistics.fmean(latencies),
                p50_latency=_percentile(latencies, 0.5),
                p95_latency=_percentile(latencies, 0.95),
                llm_calls=statistics.fmean(r.llm_calls for r in rs),
                input_tokens=statistics.fmean(r.input_tokens for r in rs),
                output_tokens=statistics.fmean(r.output_tokens for r in rs),
                cached_input_tokens=statistics.fmean(r.cached_input_tokens for r in rs),
                cost=None
                if any(c is None for c in costs)
                else statistics.fmean(c for c in costs if c is not None),
                bound_ratio=statistics.fmean(bounds) if bounds else None,
                mean_reward=statistics.fmean(r.reward or 0.0 for r in rs)
                if any(r.reward is not None for r in rs)
                else None,
            )
        )
    by_key = {(s.workload, s.system): s for s in out}
    for s in out:
        base = by_key.get((s.workload, baselines.get(s.workload, "react")))
        if base is None:
            continue
        if s.mean_latency > 0:
            s.speedup = base.mean_latency / s.mean_latency
        if base.cost is not None and s.cost:
            s.cost_ratio = base.cost / s.cost
    for s in out:
        for name in others.get(s.workload, ()):
            other = by_key.get((s.workload, name))
            if other is None or other is s:
                continue
            s.versus[name] = {
                "speedup": other.mean_latency / s.mean_latency if s.mean_latency > 0 else None,
                "cost_ratio": other.cost / s.cost if other.cost is not None and s.cost else None,
            }
    return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(summaries: Sequence[Summary]) -> str:
    """The report table: one row per workload and system."""
    head = (
        "| workload | system | n | accuracy | mean s | p50 s | p95 s | LLM calls | in tokens "
        "| out tokens | cost $ | speedup | cost ratio | over bound |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    rows = [
        f"| {s.workload} | {s.system} | {s.questions}"
        + (f" ({s.errors} err)" if s.errors else "")
        + f" | {s.accuracy:.1%} | {s.mean_latency:.2f} | {s.p50_latency:.2f} "
        f"| {s.p95_latency:.2f} | {s.llm_calls:.1f} | {s.input_tokens:,.0f}"
        + (f" ({s.cached_input_tokens:,.0f} cached)" if s.cached_input_tokens >= 0.5 else "")
        + f" | {s.output_tokens:,.0f} | {_fmt(s.cost, '.5f')} | {_fmt(s.speedup, '.2f', 'x')} "
        f"| {_fmt(s.cost_ratio, '.2f', 'x')} | {_fmt(s.bound_ratio, '.2f')} |"
        for s in summaries
    ]
    return "\n".join([head, *rows])


def plan_reuse_table(records: Sequence[BenchRecord]) -> str:
    """Plan reuse, per workload: dagcall on the test half (plans learned from the training
    half), how often the cache gave a plan, how often a reused plan was the reference one,
    and what it saved; empty when the run had no plan cache."""
    rows = []
    workloads = dict.fromkeys(
        r.workload for r in records if r.plan_phase == "test" and r.system == "dagcall"
    )
    for workload in workloads:
        test = [
            r
            for r in records
            if r.workload == workload and r.system == "dagcall" and r.plan_phase == "test"
        ]
        exact = [r for r in test if r.plan_cache == "exact"]
        example = [r for r in test if r.plan_cache == "example"]
        fits = sum(bool(r.plan_fits) for r in exact)
        rest = [r for r in test if r.plan_cache != "exact"]

        def mean(rs: Sequence[BenchRecord], get: Callable[[BenchRecord], float]) -> str:
            return f"{statistics.fmean(get(r) for r in rs):.2f}" if rs else "–"

        rows.append(
            f"| {workload} | {len(test)} | {len(exact)} ({len(exact) / len(test):.0%}) "
            f"| {fits}/{len(exact)} | {len(example)} "
            f"| {sum(r.correct for r in test) / len(test):.1%} "
            f"| {mean(exact, lambda r: r.latency)} | {mean(rest, lambda r: r.latency)} "
            f"| {mean(exact, lambda r: r.llm_calls)} | {mean(rest, lambda r: r.llm_calls)} |"
        )
    if not rows:
        return ""
    head = (
        "| workload | test questions | exact reuse | reused plan = reference | as example "
        "| accuracy | mean s, reused | mean s, planned | LLM calls, reused | LLM calls, planned |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    )
    return "\n".join([head, *rows])


def reward_table(summaries: Sequence[Summary]) -> str:
    """The workloads scored by reward (WebShop): mean reward, success rate, and speed and
    cost against every baseline; empty when there are none."""
    rows = [s for s in summaries if s.mean_reward is not None]
    if not rows:
        return ""
    names = list(dict.fromkeys(n for s in rows for n in s.versus))
    head = "| workload | system | n | mean reward | success | mean s | LLM calls | cost $ "
    head += "| speedup vs react | cost ratio vs react "
    head += "".join(f"| speedup vs {n} | cost ratio vs {n} " for n in names)
    head += "| over bound |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    head += "--:|--:|" * len(names) + "--:|"
    lines = [head]
    for s in rows:
        line = (
            f"| {s.workload} | {s.system} | {s.questions} | {s.mean_reward:.3f} "
            f"| {s.accuracy:.1%} | {s.mean_latency:.2f} | {s.llm_calls:.1f} "
            f"| {_fmt(s.cost, '.5f')} | {_fmt(s.speedup, '.2f', 'x')} "
            f"| {_fmt(s.cost_ratio, '.2f', 'x')} "
        )
        for n in names:
            ratios = s.versus.get(n, {})
            line += (
                f"| {_fmt(ratios.get('speedup'), '.2f', 'x')} "
                f"| {_fmt(ratios.get('cost_ratio'), '.2f', 'x')} "
            )
        lines.append(line + f"| {_fmt(s.bound_ratio, '.2f')} |")
    return "\n".join(lines)


def plot_latency(summaries: Sequence[Summary], path: Path) -> None:
    """One panel per workload: each system's mean latency, whiskers from p50 to p95, and its
    speedup over the baseline written on the bar."""
    require_matplotlib("benchmark plots", "bench")
    from matplotlib.figure import Figure

    workloads = list(dict.fromkeys(s.workload for s in summaries))
    fig = Figure(figsize=(3.0 * max(len(workloads), 1) + 0.6, 4.0), layout="constrained")
    axes = fig.subplots(1, max(len(workloads), 1), squeeze=False)[0]
    colours = {"react": "#1f77b4", "tot": "#1f77b4", "parallel-fc": "#ff7f0e", "dagcall": "#2ca02c"}
    colours["lats"] = "#9467bd"
    for ax, workload in zip(axes, workloads, strict=False):
        rows = [s for s in summaries if s.workload == workload]
        xs = range(len(rows))
        means = [s.mean_latency for s in rows]
        low = [max(s.mean_latency - s.p50_latency, 0) for s in rows]
        high = [max(s.p95_latency - s.mean_latency, 0) for s in rows]
        bars = ax.bar(
            xs,
            means,
            yerr=[low, high],
            capsize=3,
            color=[colours.get(s.system, "#7f7f7f") for s in rows],
        )
        labels = [f"{s.speedup:.2f}x" if s.speedup else "" for s in rows]
        ax.bar_label(bars, labels, label_type="center", color="white", fontsize="small")
        ax.set_xticks(list(xs), [s.system for s in rows], rotation=20)
        ax.set_title(workload)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("seconds per question (mean; p50 to p95)")
    fig.savefig(path, format="png", dpi=110)


def plot_gantt(runs: Sequence[tuple[str, RunResult]], path: Path, *, scale: float) -> None:
    """One question run by several systems, one panel each, on the same time axis."""
    require_matplotlib("benchmark plots", "bench")
    from matplotlib.figure import Figure

    from dagcall.viz import bar_count, draw_timeline

    heights = [max(bar_count(run), 2) for _, run in runs]
    fig = Figure(figsize=(11, 0.32 * sum(heights) + 1.2 * len(runs)), layout="constrained")
    axes = fig.subplots(len(runs), 1, sharex=True, height_ratios=heights, squeeze=False)
    for i, (ax, (label, run)) in enumerate(zip(axes[:, 0], runs, strict=True)):
        seconds = run.wall_time / scale
        draw_timeline(ax, run, title=f"{label}: {seconds:.2f} s", scale=scale, legend=i == 0)
    fig.savefig(path, format="png", dpi=110)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str, ensure_ascii=False), encoding="utf-8")

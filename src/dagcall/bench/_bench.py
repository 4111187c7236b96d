"""The whole benchmark: every workload, every system, then the report."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagcall import DagcallError, RunResult

from ._game24 import (
    Game24Session,
    dagcall_compiler,
    generate_puzzles,
    is_solution,
    run_tot_sequential,
    simulated_reply,
)
from ._reference import OracleResult
from ._report import (
    PAPER,
    Summary,
    markdown_table,
    plan_reuse_table,
    plot_gantt,
    plot_latency,
    reward_table,
    summarize,
    write_json,
)
from ._runner import (
    BenchConfig,
    BenchRecord,
    peak_rss,
    record_of,
    rss,
    run_questions,
    select_questions,
)
from ._simulate import SimulatedModel
from ._toolworld import run_toolworld
from ._webshop import WEBSHOP_CONCURRENCY, run_webshop

__all__ = [
    "DATASET_WORKLOADS",
    "GENERATED_WORKLOADS",
    "BenchOutcome",
    "run_bench",
    "write_report",
]

DATASET_WORKLOADS = ("parallelqa", "hotpotqa", "movies")
#: The workloads the benchmark makes itself (no datasets needed).
GENERATED_WORKLOADS = ("game24", "webshop", "toolworld")
BASELINES = {"game24": "tot"}
#: Baselines compared against besides the first (WebShop: LATS as well as ReAct).
OTHER_BASELINES = {"webshop": ("lats",)}


@dataclass
class BenchOutcome:
    """Everything one ``dagcall bench`` measured."""

    config: BenchConfig
    records: list[BenchRecord] = field(default_factory=list)
    oracles: list[OracleResult] = field(default_factory=list)
    seconds: float = 0.0
    summaries: list[Summary] = field(default_factory=list)
    rss_start: int | None = None  # bytes resident when the benchmark started
    rss_end: int | None = None  # ... and when it ended
    peak_rss: int | None = None  # the process's peak resident memory (ru_maxrss), bytes

    def memory(self) -> dict[str, float | None]:
        """The resident memory figures in MiB, for the report and summary.json."""

        def mib(value: int | None) -> float | None:
            return None if value is None else round(value / 2**20, 1)

        return {
            "peak_rss_mb": mib(self.peak_rss),
            "rss_start_mb": mib(self.rss_start),
            "rss_end_mb": mib(self.rss_end),
        }

    def oracle_accuracy(self) -> dict[str, tuple[int, int, list[str]]]:
        """Per workload: correct, total, and the listed exceptions."""
        out: dict[str, tuple[int, int, list[str]]] = {}
        for o in self.oracles:
            ok, total, notes = out.get(o.question.workload, (0, 0, []))
            if o.question.exception:
                notes = [*notes, f"{o.question.id}: {o.question.exception}"]
            out[o.question.workload] = (ok + o.correct, total + 1, notes)
        return out


async def _game24(config: BenchConfig) -> list[BenchRecord]:
    """Tree-of-Thoughts call by call ("tot") versus compiled by dagcall, on seeded puzzles."""
    count = min(config.game24_puzzles, config.limit or config.game24_puzzles)
    puzzles = generate_puzzles(count, config.seed)
    sem = asyncio.Semaphore(config.concurrency)

    def model(reply: Callable[[Any], str]) -> Any:
        if config.model is not None:
            return config.model
        return config.speaker(reply)

    def scripted(reply: Callable[[Any], str]) -> Any:
        # the plan and the decision follow from the evaluations; with a real model the
        # proposer and evaluator are real and the search itself is the harness's
        if config.model is not None:
            return SimulatedModel(reply, config.profile, time_scale=1e-9, name="tot-driver")
        return config.speaker(reply)

    async def one(puzzle: tuple[int, ...], system: str) -> BenchRecord:
        async with sem:
            gold = " ".join(map(str, puzzle))
            session = Game24Session(puzzle, model(simulated_reply), parallel=system == "dagcall")
            try:
                if system == "tot":
                    run = await run_tot_sequential(session)
                else:
                    compiler = dagcall_compiler(
                        session,
                        scripted(lambda _: session.plan()),
                        scripted(lambda _: session.join()),
                        optimize=config.optimize,
                    )
                    run = await compiler.arun(f"Game of 24: {session.start}")
            except DagcallError as exc:
                return record_of("game24", gold, system, gold, exc.result, config, repr(exc), False)
            ok = is_solution(run.answer, puzzle)
            return record_of("game24", gold, system, gold, run, config, correct=ok)

    jobs = [one(p, s) for p in puzzles for s in ("tot", "dagcall")]
    return list(await asyncio.gather(*jobs))


async def run_bench(
    config: BenchConfig, *, progress: Callable[[BenchRecord], None] | None = None
) -> BenchOutcome:
    """Run the configured workloads; the summaries compare each system with the baseline."""
    started = time.perf_counter()
    outcome = BenchOutcome(config, rss_start=rss())
    for workload in config.workloads:
        if workload in GENERATED_WORKLOADS:
            generated = {"game24": _game24, "webshop": run_webshop, "toolworld": run_toolworld}
            records = await generated[workload](config)
            for r in records:
                if progress is not None:
                    progress(r)
        else:
            questions = select_questions(config, workload)
            records, oracles = await run_questions(questions, config, progress=progress)
            outcome.oracles.extend(oracles)
        outcome.records.extend(records)
    outcome.seconds = time.perf_counter() - started
    outcome.rss_end, outcome.peak_rss = rss(), peak_rss()
    outcome.summaries = summarize(outcome.records, BASELINES, OTHER_BASELINES)
    return outcome


def conditions(outcome: BenchOutcome) -> str:
    """One paragraph saying how the numbers were measured."""
    c = outcome.config
    if c.simulated:
        how = (
            f"Simulated `{c.profile.name}` endpoint ({c.profile.source}); web look-ups "
            f"log-normal around {c.tool_latency_median:g} s (seed {c.seed}); every wait run "
            f"for real at {c.time_scale:g}x and reported scaled back; {c.concurrency} questions "
            "at a time."
        )
    else:
        how = f"Real model `{c.model.name if c.model else ''}`; {c.concurrency} at a time."
    text = f"{how} Wall time of the whole benchmark: {outcome.seconds:.1f} s."
    if not c.simulated and outcome.peak_rss is not None:
        # a real model's memory is part of what is measured (the local model runs in-process)
        text += f" Peak RSS {outcome.peak_rss / 2**20:,.0f} MB"
        if outcome.rss_start is not None and outcome.rss_end is not None:
            text += (
                f" (resident {outcome.rss_start / 2**20:,.0f} MB at the start, "
                f"{outcome.rss_end / 2**20:,.0f} MB at the end)"
            )
        text += "."
    return text


def report_markdown(outcome: BenchOutcome) -> str:
    lines = ["# dagcall bench", "", conditions(outcome), "", markdown_table(outcome.summaries)]
    rewards = reward_table(outcome.summaries)
    if rewards:
        lines += [
            "",
            "WebShop, scored by WebShop's reward (success: reward 1; the table above's accuracy "
            "is the success rate); speedups and cost ratios against ReAct and LATS, and "
            "dagcall's latency over its critical-path bound (episodes "
            f"{min(outcome.config.concurrency, WEBSHOP_CONCURRENCY)} at a time):",
            "",
            rewards,
        ]
    reuse = plan_reuse_table(outcome.records)
    if reuse:
        lines += [
            "",
            "Plan reuse: dagcall's plan cache learned from the first half of each workload's "
            "questions; on the second half:",
            "",
            reuse,
        ]
    oracle = outcome.oracle_accuracy()
    if oracle:
        lines += ["", "Oracle accuracy (the reference plans executed, paper's scorer):"]
        for workload, (ok, total, notes) in oracle.items():
            lines.append(f"- {workload}: {ok}/{total} ({ok / total:.1%})")
            lines += [f"  - exception {n}" for n in notes]
    lines += ["", "The paper, versus ReAct (WebShop: versus its baselines):"]
    lines += [
        f"- {w}: {PAPER[w]}"
        for w in dict.fromkeys(s.workload for s in outcome.summaries)
        if w in PAPER  # Toolworld is dagcall's own
    ]
    return "\n".join(lines) + "\n"


def _gantt_runs(outcome: BenchOutcome) -> tuple[str, list[tuple[str, RunResult]]] | None:
    """The first question every system answered without error, for the Gantt chart."""
    by_question: dict[tuple[str, str], dict[str, BenchRecord]] = {}
    for r in outcome.records:
        if r.workload != "game24":
            by_question.setdefault((r.workload, r.question_id), {})[r.system] = r
    for (workload, qid), systems in by_question.items():
        if all(r.run is not None and r.error is None and r.correct for r in systems.values()):
            runs = [(s, r.run) for s, r in systems.items() if r.run is not None]
            return f"{workload}/{qid}", runs
    return None


def write_report(outcome: BenchOutcome, out: Path) -> list[Path]:
    """report.md, runs.json, summary.json, latency.png and gantt.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md", out / "runs.json", out / "summary.json", out / "latency.png"]
    (out / "report.md").write_text(report_markdown(outcome), encoding="utf-8")
    write_json(out / "runs.json", [r.to_dict() for r in outcome.records])
    write_json(
        out / "summary.json",
        {
            "conditions": conditions(outcome),
            "summaries": [s.to_dict() for s in outcome.summaries],
            "memory": outcome.memory(),
            "oracle": {
                w: {"correct": a, "total": b, "exceptions": n}
                for w, (a, b, n) in outcome.oracle_accuracy().items()
            },
        },
    )
    plot_latency(outcome.summaries, out / "latency.png")
    gantt = _gantt_runs(outcome)
    if gantt is not None:
        plot_gantt(gantt[1], out / "gantt.png", scale=outcome.config.scale)
        written.append(out / "gantt.png")
    return written

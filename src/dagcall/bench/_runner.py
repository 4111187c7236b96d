"""``dagcall bench``: run every workload with every system and measure them."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dagcall import DagcallError, Optimizations, PlanCache, RunResult, TaskStatus, answer_text
from dagcall.pricing import run_cost

from ..models import Message, Model
from ._bound import critical_path_bound
from ._data import BenchDataError, BenchQuestion, load_workload
from ._examples import EXAMPLES
from ._reference import OracleResult, oracle
from ._scoring import score
from ._simulate import PROFILES, PrefixCache, Profile, SimulatedModel, WebLatency
from ._systems import SYSTEMS, Setup, build_runner

if TYPE_CHECKING:
    from ._distributed import RayBench

__all__ = [
    "BenchConfig",
    "BenchRecord",
    "peak_rss",
    "rss",
    "run_questions",
    "sample_of",
]

T = TypeVar("T")


@dataclass
class BenchConfig:
    """What ``dagcall bench`` runs, and how."""

    workloads: Sequence[str] = ("parallelqa", "hotpotqa", "movies", "game24")
    systems: Sequence[str] = SYSTEMS
    model: Model | None = None  # None: simulated
    profile: Profile = PROFILES["gpt-3.5"]
    time_scale: float = 0.05
    concurrency: int = 16
    limit: int | None = None
    #: A seeded random subset of this many questions per workload (``--sample``), in dataset
    #: order; the same for every run with the same seed.
    sample: int | None = None
    seed: int = 0
    tool_latency_median: float = 0.6
    datasets: Path | None = None
    game24_puzzles: int = 20
    webshop_episodes: int = 50  # WebShop instructions (each run by every WebShop system)
    webshop_products: int = 1200  # the size of WebShop's generated catalogue
    examples: dict[str, dict[str, str]] = field(default_factory=lambda: dict(EXAMPLES))
    #: dagcall's optimisations (``Compiler(optimize=...)``), switched for the ablations.
    optimize: Optimizations = field(default_factory=Optimizations)
    #: Whether the simulated endpoint caches prompt prefixes (for every system alike).
    prefix_cache: bool = False
    #: Run the dataset workloads' questions as Ray tasks: ``"local"``, ``"auto"`` or an address.
    ray: str | None = None
    #: Plan reuse: dagcall learns plans from the first half of each workload's questions
    #: (run first) and reuses them on the second half (``Compiler(plan_cache=...)``).
    plan_cache: bool = False
    #: dagcall's planner examples with a real model where the workload has none of its own
    #: (Toolworld): chosen per question by an ExampleBank (True) or the built-in one (False).
    example_bank: bool = True
    #: Toolworld's arithmetic tool with a real model: the bare ``"calculator"``, or ``"llm"``,
    #: the paper's ``math(problem, context)`` in which the same model writes the expression.
    toolworld_math: str = "calculator"
    #: dagcall's answer checks (``Compiler(check_answers=...)``).
    check_answers: bool = True
    #: Toolworld's worlds to run (``--world``); empty: every world.
    worlds: Sequence[str] = ()
    _endpoint: PrefixCache | None = field(default=None, repr=False, compare=False)

    def endpoint_cache(self) -> PrefixCache | None:
        """The simulated endpoint's one prompt cache (shared by every system and question, as
        a provider's is), or ``None`` without ``prefix_cache``."""
        if not self.prefix_cache:
            return None
        if self._endpoint is None:
            self._endpoint = PrefixCache(
                min_tokens=self.profile.cache_min_tokens,
                step_tokens=self.profile.cache_step_tokens,
            )
        return self._endpoint

    def speaker(self, reply: Callable[[list[Message]], str]) -> SimulatedModel:
        """A simulated model of this benchmark's profile and time scale that says ``reply``'s
        words, sharing the endpoint's prompt cache when there is one."""
        return SimulatedModel(
            reply, self.profile, time_scale=self.scale, prefix_cache=self.endpoint_cache() or False
        )

    @property
    def simulated(self) -> bool:
        return self.model is None

    @property
    def scale(self) -> float:
        """The factor real waits were multiplied by (1 with a real model)."""
        return self.time_scale if self.simulated else 1.0


@dataclass
class BenchRecord:
    """One question run by one system.  Times are scaled back to the modelled time."""

    workload: str
    question_id: str
    system: str
    answer: str
    gold: str
    correct: bool
    latency: float
    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost: float | None
    bound: float | None = None
    error: str | None = None
    reward: float | None = None  # WebShop: the purchase's reward in [0, 1]
    cached_input_tokens: int = 0  # of input_tokens, read from a prompt cache
    #: Plan reuse: "train" or "test" (the half the question is in), what the cache gave
    #: ("exact", "example" or None), and whether a reused plan was the reference plan.
    plan_phase: str | None = None
    plan_cache: str | None = None
    plan_fits: bool | None = None
    run: RunResult | None = None

    def to_dict(self, *, with_run: bool = True) -> dict[str, Any]:
        data = dict(self.__dict__)
        if with_run and self.run is not None:
            data["run"] = self.run.to_dict()
        else:
            data.pop("run")
        return data


def _cost(run: RunResult, config: BenchConfig) -> float | None:
    if config.simulated:
        return sum(
            config.profile.cost(c.input_tokens, c.output_tokens, c.cached_input_tokens)
            for c in run.usage
        )
    return run_cost(run)


def record_of(
    workload: str,
    qid: str,
    system: str,
    gold: str,
    run: RunResult | None,
    config: BenchConfig,
    error: str | None = None,
    correct: bool | None = None,
) -> BenchRecord:
    """A :class:`BenchRecord` from a finished (or failed, partial) run."""
    if run is None:
        return BenchRecord(workload, qid, system, "", gold, False, 0.0, 0, 0, 0, 0.0, error=error)
    bound = critical_path_bound(run) if system == "dagcall" else None
    scale = config.scale
    return BenchRecord(
        workload=workload,
        question_id=qid,
        system=system,
        answer=run.answer,
        gold=gold,
        correct=score(run.answer, gold) if correct is None else correct,
        latency=run.wall_time / scale,
        llm_calls=len(run.usage),
        input_tokens=sum(c.input_tokens for c in run.usage),
        output_tokens=sum(c.output_tokens for c in run.usage),
        cost=_cost(run, config),
        bound=bound / scale if bound is not None else None,
        error=error,
        cached_input_tokens=sum(c.cached_input_tokens for c in run.usage),
        run=run,
    )


async def guarded(
    sem: asyncio.Semaphore,
    make: Callable[[], Any],
    describe: tuple[str, str, str, str],
    config: BenchConfig,
) -> BenchRecord:
    workload, qid, system, gold = describe
    async with sem:
        try:
            run = await make()
        except DagcallError as exc:
            return record_of(workload, qid, system, gold, exc.result, config, error=repr(exc))
        return record_of(workload, qid, system, gold, run, config)


def _last_task_answers(result: OracleResult) -> bool:
    """Whether the reference plan's last task gives a right answer as it stands: then the
    simulated planner ends its plan with ``join("$M")`` naming it (joiner elision), as a
    planner taught to would; otherwise with ``join()``."""
    run = result.run
    if run is None or not run.tasks or not result.correct:
        return False
    last = max(run.tasks, key=lambda t: t.id)
    if last.status is not TaskStatus.DONE:
        return False
    return score(answer_text(last.output), result.question.gold)


async def run_questions(
    questions: Sequence[BenchQuestion],
    config: BenchConfig,
    *,
    progress: Callable[[BenchRecord], None] | None = None,
) -> tuple[list[BenchRecord], list[OracleResult]]:
    """Run each question with each system; returns the records and the oracle's results."""
    oracles = await asyncio.gather(*(oracle(q) for q in questions))
    answers = {o.question.key: o.answer for o in oracles}
    named = {o.question.key: _last_task_answers(o) for o in oracles}
    by_workload = {
        workload: Setup(
            model=config.model,
            profile=config.profile if config.simulated else None,
            time_scale=config.scale,
            latency=WebLatency(median=config.tool_latency_median, seed=config.seed),
            examples=config.examples.get(workload),
            optimize=config.optimize,
            cache=config.endpoint_cache(),
            plan_cache=PlanCache() if config.plan_cache else None,
            check_answers=config.check_answers,
        )
        for workload in {q.workload for q in questions}
    }
    phase: dict[str, str] = {}
    if config.plan_cache:  # train on the first half of each workload, test on the second
        by_name: dict[str, list[BenchQuestion]] = {}
        for q in questions:
            by_name.setdefault(q.workload, []).append(q)
        for qs in by_name.values():
            for i, q in enumerate(qs):
                phase[q.key] = "train" if i < (len(qs) + 1) // 2 else "test"
    sem = asyncio.Semaphore(config.concurrency)
    cluster: RayBench | None = None
    if config.ray is not None:  # each run a Ray task, by the batch path
        from ._distributed import RayBench

        cluster = RayBench(config.ray, config.concurrency)

    async def on_ray(cluster: RayBench, q: BenchQuestion, system: str) -> BenchRecord:
        setup, answer = by_workload[q.workload], answers.get(q.key, "")
        async with sem:
            record: BenchRecord = await cluster.run(
                system, q, setup, answer, named.get(q.key, False), config
            )
            return record

    def jobs_of(batch: Sequence[BenchQuestion]) -> list[Any]:
        jobs = []
        for q in batch:  # interleaved, so no system gets a quieter machine than another
            for system in config.systems:
                if cluster is not None:
                    jobs.append(on_ray(cluster, q, system))
                    continue
                make = build_runner(
                    system,
                    q,
                    by_workload[q.workload],
                    answers.get(q.key, ""),
                    named_answer=named.get(q.key, False),
                )
                jobs.append(guarded(sem, make, (q.workload, q.id, system, q.gold), config))
        return jobs

    batches = (
        [
            [q for q in questions if phase[q.key] == "train"],
            [q for q in questions if phase[q.key] == "test"],
        ]
        if config.plan_cache
        else [list(questions)]
    )
    records: list[BenchRecord] = []
    try:
        for batch in batches:  # the test half only once the training half has been learned
            for done in asyncio.as_completed(jobs_of(batch)):
                record = await done
                records.append(record)
                if progress is not None:
                    progress(record)
    finally:
        if cluster is not None:
            cluster.close()
    if config.plan_cache:
        reference = {(q.workload, q.id): q.plan for q in questions}
        keys = {(q.workload, q.id): q.key for q in questions}
        for r in records:
            r.plan_phase = phase[keys[(r.workload, r.question_id)]]
            if r.system == "dagcall" and r.run is not None and r.run.rounds:
                first = r.run.rounds[0]
                r.plan_cache = first.plan_cache
                if first.plan_cache == "exact":
                    calls = [t.call for t in r.run.tasks if t.round == 0]
                    r.plan_fits = calls == list(reference[(r.workload, r.question_id)])
    order = {(q.workload, q.id): i for i, q in enumerate(questions)}
    records.sort(key=lambda r: (order[(r.workload, r.question_id)], config.systems.index(r.system)))
    return records, list(oracles)


def sample_of(items: Sequence[T], count: int | None, seed: int, name: str) -> list[T]:
    """``count`` of ``items`` chosen at random, seeded by ``seed`` and ``name`` (so each
    workload's subset is fixed), kept in their order; all of them when ``count`` is None."""
    if count is None or count >= len(items):
        return list(items)
    draw = random.Random(f"{seed}/{name}")  # noqa: S311 - a reproducible sample, not a secret
    chosen = sorted(draw.sample(range(len(items)), count))
    return [items[i] for i in chosen]


def select_questions(config: BenchConfig, workload: str) -> list[BenchQuestion]:
    """The workload's questions: a seeded sample of ``config.sample`` of them, or the first
    ``config.limit``."""
    if config.datasets is None:
        raise BenchDataError(
            "the LLMCompiler datasets were not found: pass --data DIR (the folder holding "
            "parallelqa_dataset.json) or set DAGCALL_DATASETS"
        )
    questions = sample_of(
        load_workload(workload, config.datasets), config.sample, config.seed, workload
    )
    return questions[: config.limit] if config.limit is not None else questions


def rss() -> int | None:
    """This process's resident memory now, in bytes (None where /proc is not available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss() -> int | None:
    """The most resident memory this process has had, in bytes (``ru_maxrss``)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def elapsed(since: float) -> float:
    return time.perf_counter() - since

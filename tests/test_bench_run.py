"""The benchmark end to end: baselines, Game of 24, the shipped data, the report and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from dagcall import tool
from dagcall.baselines import ParallelFunctionCallingAgent, parse_tool_reply
from dagcall.bench import (
    PROFILES,
    BenchConfig,
    SimulatedModel,
    find_datasets,
    generate_puzzles,
    is_solution,
    load_workload,
    oracle,
    run_bench,
    solve,
    write_report,
)
from dagcall.bench._data import WORKLOAD_FILES, reference_file
from dagcall.bench._game24 import (
    Game24Session,
    dagcall_compiler,
    run_tot_sequential,
    simulated_reply,
)
from dagcall.cli import main
from dagcall.models import ScriptedModel

DATASETS = find_datasets()
needs_datasets = pytest.mark.skipif(
    DATASETS is None, reason="the LLMCompiler datasets (../shared/datasets/llmcompiler) are absent"
)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# -- parallel function calling ------------------------------------------------------------
@tool
async def look(query: str) -> str:
    """Look something up."""
    await asyncio.sleep(0.05)
    return f"{query}: 7 m"


async def test_parallel_fc_runs_a_turns_calls_together() -> None:
    model = ScriptedModel(
        [
            '```json\n{"tool_calls": [{"name": "look", "arguments": {"query": "a"}},'
            ' {"name": "look", "arguments": "{\\"query\\": \\"b\\"}"},'
            ' {"name": "nope", "arguments": {}}]}\n```',
            '{"tool_calls": [{"name": "look", "arguments": {"query": 5, "extra": 1}}]}',
            '{"answer": "14 m"}',
        ]
    )
    result = await ParallelFunctionCallingAgent(model, [look]).arun("How tall are a and b?")
    assert result.answer == "14 m"
    assert result.stop_reason == "finish"
    a, b, nope, bad = result.tasks
    assert a.status.value == b.status.value == "done"
    assert _overlap((a.started_at, a.ended_at), (b.started_at, b.ended_at))  # type: ignore[arg-type]
    assert nope.status.value == "failed"
    assert "unknown tool" in nope.observation
    assert bad.status.value == "failed"
    assert "ToolArgumentError" in bad.observation
    second = model.calls[1].messages[-1].content
    assert '<observation task="1" status="done">a: 7 m</observation>' in second
    assert "UnknownToolError" in second
    assert [r.decision for r in result.rounds] == ["replan", "replan", "finish"]


async def test_parallel_fc_tolerates_prose_and_bounds_turns() -> None:
    plain = ScriptedModel(["It is 7 m."])
    result = await ParallelFunctionCallingAgent(plain, [look]).arun("q")
    assert result.answer == "It is 7 m."
    broken = ScriptedModel(['{"tool_calls": "look"}', '{"oops": 1}'])
    result = await ParallelFunctionCallingAgent(broken, [look], max_turns=2).arun("q")
    assert result.stop_reason == "max_turns"
    assert result.answer == ""
    assert "Reply with JSON only" in broken.calls[1].messages[-1].content


def test_parse_tool_reply() -> None:
    assert parse_tool_reply('Sure! {"answer": "x"} done') == {"answer": "x"}
    assert parse_tool_reply("no json {here") is None
    assert parse_tool_reply("[1, 2]") is None


# -- Game of 24 ----------------------------------------------------------------------------
def test_puzzles_are_seeded_solvable_and_checked() -> None:
    puzzles = generate_puzzles(10, seed=3)
    assert puzzles == generate_puzzles(10, seed=3)
    assert len(set(puzzles)) == 10
    for p in puzzles:
        solution = solve(p)
        assert solution is not None
        assert is_solution(solution, p)
    assert solve((1, 1, 1, 1)) is None
    assert not is_solution("4 * 6", (4, 6, 1, 1))  # must use every number
    assert not is_solution("(1 + 1) * 11", (1, 1, 11, 2))
    assert not is_solution("__import__('os')", (1, 2, 3, 4))


async def test_tree_of_thoughts_one_by_one_and_compiled() -> None:
    puzzle = (4, 9, 10, 13)
    model = SimulatedModel(simulated_reply, PROFILES["gpt-4"], time_scale=0.002)
    tot = await run_tot_sequential(Game24Session(puzzle, model, parallel=False))
    assert is_solution(tot.answer, puzzle)
    spans = sorted((c.started_at, c.ended_at) for c in tot.usage)
    assert all(a[1] <= b[0] + 1e-6 for a, b in itertools.pairwise(spans))  # serial

    session = Game24Session(puzzle, model, parallel=True)
    driver = SimulatedModel(lambda _: session.plan(), PROFILES["gpt-4"], time_scale=0.002)
    judge = SimulatedModel(lambda _: session.join(), PROFILES["gpt-4"], time_scale=0.002)
    run = await dagcall_compiler(session, driver, judge).arun(f"Game of 24: {session.start}")
    assert is_solution(run.answer, puzzle)
    assert len(run.rounds) == 3  # one plan per depth of the search
    tool_calls = [(c.started_at, c.ended_at) for c in run.usage if c.role == "tool"]
    assert any(_overlap(a, b) for a, b in itertools.pairwise(tool_calls))


# -- the shipped reference data ------------------------------------------------------------
@needs_datasets
def test_reference_data_covers_the_workloads() -> None:
    assert DATASETS is not None
    sizes = {w: len(load_workload(w, DATASETS)) for w in WORKLOAD_FILES}
    assert sizes["parallelqa"] == 113
    assert sizes["hotpotqa"] >= 100
    assert sizes["movies"] >= 50
    movie_ids = {q.id for q in load_workload("movies", DATASETS)}
    assert "0" not in movie_ids  # the paper's in-context example


@needs_datasets
async def test_every_reference_plan_reproduces_its_answer() -> None:
    """Oracle accuracy: 100% apart from the listed exceptions, and no ungrounded number."""
    assert DATASETS is not None
    for workload in WORKLOAD_FILES:
        questions = load_workload(workload, DATASETS)
        results = await asyncio.gather(*(oracle(q) for q in questions))
        problems = [f"{r.question.key}: {p}" for r in results for p in r.problems]
        assert problems == []
        wrong = [r.question.key for r in results if not r.correct and not r.question.exception]
        assert wrong == []


def test_knowledge_bases_are_used_and_sized() -> None:
    for _, files in WORKLOAD_FILES.values():
        for name in files:
            data = reference_file(name)
            used = " ".join(line for q in data["questions"].values() for line in q["plan"])
            for title, text in data["kb"].items():
                assert json.dumps(title, ensure_ascii=False) in used or repr(title) in used, title
                assert 20 <= len(text.split()) <= 120, title


# -- the whole harness --------------------------------------------------------------------
@needs_datasets
def test_bench_smoke(tmp_path: Path) -> None:
    config = BenchConfig(
        limit=2, time_scale=0.01, concurrency=8, datasets=DATASETS, game24_puzzles=2
    )
    outcome = asyncio.run(run_bench(config))
    keys = {(s.workload, s.system) for s in outcome.summaries}
    assert keys == {
        *(
            (w, s)
            for w in ("parallelqa", "hotpotqa", "movies")
            for s in ("react", "parallel-fc", "dagcall")
        ),
        ("game24", "tot"),
        ("game24", "dagcall"),
    }
    for s in outcome.summaries:
        assert s.questions == 2
        assert s.errors == 0
        assert 0 <= s.accuracy <= 1
        assert 0 < s.p50_latency <= s.p95_latency
        assert s.llm_calls >= 1
        assert s.input_tokens > s.output_tokens > 0
        assert s.cost is not None
        assert s.cost > 0
        assert s.speedup is not None
        assert s.speedup > 0
        assert (s.bound_ratio is not None) == (s.system == "dagcall")
        if s.bound_ratio is not None:
            assert s.bound_ratio >= 0.99
    assert all(o.correct for o in outcome.oracles)
    written = write_report(outcome, tmp_path)
    assert {p.name for p in written} >= {"report.md", "runs.json", "latency.png", "gantt.png"}
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert len(runs) == 22
    assert all(r["run"]["tasks"] for r in runs)
    assert "| parallelqa | dagcall | 2 |" in (tmp_path / "report.md").read_text()


def test_bench_command_without_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGCALL_DATASETS", str(tmp_path / "none"))
    code = main(["bench", "--limit", "1", "--time-scale", "0.005", "--out", str(tmp_path / "o")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "running only the workloads the benchmark generates itself" in out.err
    assert "| game24 | dagcall | 1 |" in out.out
    assert "| webshop | dagcall | 1 |" in out.out
    assert (tmp_path / "o" / "latency.png").exists()
    code = main(["bench", "--workload", "hotpotqa", "--limit", "1"])
    assert code == 2
    assert "datasets were not found" in capsys.readouterr().err
    code = main(["bench", "--model", "simulated:gpt-9", "--workload", "game24"])
    assert code == 2
    assert "unknown simulated profile" in capsys.readouterr().err


@needs_datasets
async def test_plan_reuse_learns_on_one_half_and_is_measured_on_the_other() -> None:
    from dagcall.bench import BenchConfig, report_markdown, run_bench

    config = BenchConfig(
        workloads=["hotpotqa"],
        systems=["dagcall"],
        limit=8,
        time_scale=0.005,
        datasets=DATASETS,
        plan_cache=True,
    )
    outcome = await run_bench(config)
    phases = [r.plan_phase for r in outcome.records]
    assert phases.count("train") == 4
    assert phases.count("test") == 4
    # nothing is reused while the cache is learning
    assert all(r.plan_cache is None for r in outcome.records if r.plan_phase == "train")
    for r in outcome.records:
        assert (r.plan_fits is not None) == (r.plan_cache == "exact")
    assert "Plan reuse" in report_markdown(outcome)


def test_a_sample_is_seeded_fixed_and_in_dataset_order() -> None:
    from dagcall.bench._runner import sample_of

    items = list(range(100))
    first = sample_of(items, 20, 0, "hotpotqa")
    assert first == sample_of(items, 20, 0, "hotpotqa")  # the same subset every run
    assert first == sorted(first)
    assert len(set(first)) == 20
    assert first != sample_of(items, 20, 0, "movies")  # each workload its own
    assert first != sample_of(items, 20, 1, "hotpotqa")  # and each seed
    assert sample_of(items, None, 0, "x") == items
    assert sample_of(items[:5], 20, 0, "x") == items[:5]


@needs_datasets
def test_cli_sample_and_system_choose_questions_and_systems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "-w", "hotpotqa", "-w", "toolworld", "--sample", "3", "--system", "dagcall"]
    code = main([*args, "--time-scale", "0.005", "--out", str(tmp_path)])
    assert code == 0
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert {r["system"] for r in runs} == {"dagcall"}
    hotpot = [r["question_id"] for r in runs if r["workload"] == "hotpotqa"]
    assert len(hotpot) == 3
    assert len([r for r in runs if r["workload"] == "toolworld"]) == 45  # all of Toolworld
    capsys.readouterr()
    main([*args, "--time-scale", "0.005", "--out", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "runs.json").read_text())
    assert [r["question_id"] for r in again if r["workload"] == "hotpotqa"] == hotpot


def test_the_cli_offers_exactly_the_benchmarks_workloads() -> None:
    # the CLI spells the list out so that its start-up need not import dagcall.bench
    import click

    from dagcall.bench import DATASET_WORKLOADS, GENERATED_WORKLOADS
    from dagcall.cli import bench

    option = next(p for p in bench.params if p.name == "workloads")
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == [*DATASET_WORKLOADS, *GENERATED_WORKLOADS]
    from dagcall.bench._toolworld import TOOLWORLD_WORLDS

    worlds = next(p for p in bench.params if p.name == "worlds")
    assert isinstance(worlds.type, click.Choice)
    assert tuple(worlds.type.choices) == TOOLWORLD_WORLDS


def test_cli_world_runs_only_the_chosen_toolworld_world(tmp_path: Path) -> None:
    args = ["bench", "-w", "toolworld", "--world", "depot", "--system", "dagcall"]
    assert main([*args, "--time-scale", "0.002", "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "runs.json").read_text())
    ids = [r["question_id"] for r in runs]
    assert ids == [f"depot/d{i:02d}" for i in range(1, 15)]
    assert all(r["correct"] for r in runs)

"""``dagcall bench --ray``: the benchmark's runs as Ray tasks, by the batch path, on a real
local Ray instance; the same records as the local path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagcall.bench import BenchConfig, find_datasets, run_bench

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

DATASETS = find_datasets()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        DATASETS is None,
        reason="the LLMCompiler datasets (../shared/datasets/llmcompiler) are absent",
    ),
    pytest.mark.timeout(240),
]


@pytest.fixture(autouse=True)
def _no_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # the workers import dagcall and the tests' modules as this process does
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))


async def test_bench_runs_on_ray_like_it_runs_here() -> None:
    def config(**kw: object) -> BenchConfig:
        return BenchConfig(
            workloads=["parallelqa"],
            limit=3,
            time_scale=0.02,
            concurrency=2,
            datasets=DATASETS,
            **kw,  # type: ignore[arg-type]
        )

    here = await run_bench(config())
    try:
        there = await run_bench(config(ray="local"))
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert not ray.is_initialized()  # the bench shut down the instance it started

    def key(outcome: object) -> list[tuple[str, str, bool, int, int]]:
        return sorted(
            (r.question_id, r.system, r.correct, r.llm_calls, r.input_tokens)
            for r in outcome.records  # type: ignore[attr-defined]
        )

    assert key(there) == key(here)  # the same runs, the same calls and tokens
    assert len(there.records) == 3 * 3
    for record in there.records:
        assert record.error is None
        assert record.run is not None  # the whole run came back, typed
        assert record.run.answer == record.answer

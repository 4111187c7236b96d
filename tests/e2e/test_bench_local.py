"""``dagcall bench --model local``: the real planner, joiner and baseline on a paper question."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dagcall.bench import BenchConfig, find_datasets, run_bench
from dagcall.models import LocalModel

DATASETS = find_datasets()


@pytest.mark.skipif(DATASETS is None, reason="the LLMCompiler datasets are absent")
@pytest.mark.timeout(480)  # 55 s alone; real prefill and decode on 2 cores vary with load
def test_bench_with_the_real_local_model(gguf_path: Path) -> None:
    config = BenchConfig(
        workloads=("hotpotqa",),
        systems=("parallel-fc", "dagcall"),
        model=LocalModel(gguf_path),
        limit=1,
        concurrency=1,
        tool_latency_median=0.05,
        datasets=DATASETS,
    )
    outcome = asyncio.run(run_bench(config))
    assert [(r.system, r.error) for r in outcome.records] == [
        ("parallel-fc", None),
        ("dagcall", None),
    ]
    for record in outcome.records:
        assert record.run is not None
        assert record.llm_calls >= 2  # a call for the tools, one for the answer
        assert record.answer
        searched = [t for t in record.run.tasks if t.tool == "search"]
        assert searched
        assert all(t.status == "done" for t in searched)
        assert record.cost == 0.0  # a local model costs nothing per token
    dagcall = outcome.records[1]
    assert dagcall.bound is not None
    assert dagcall.latency >= dagcall.bound * 0.99
    assert outcome.oracles[0].correct

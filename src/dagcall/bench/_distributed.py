"""The benchmark's runs as Ray tasks (``dagcall bench --ray ADDRESS``), by the batch path.

Each (question, system) run is one Ray task: the worker builds the system from the question
and the setup, runs it, and sends back the record with the run as JSON; the driver awaits the
tasks on its event loop (``await ref``), ``concurrency`` at a time.  The simulated models'
waits happen in the workers, so the figures mean what they mean locally; a simulated endpoint's
prompt cache is then each worker's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import fields
from typing import Any

from dagcall import RunResult
from dagcall.batch import connect_ray

from ._data import BenchQuestion
from ._systems import Setup, build_runner

__all__ = ["RayBench", "bench_job"]


def bench_job(
    system: str,
    question: BenchQuestion,
    setup: Setup,
    answer: str,
    named: bool,
    config: Any,
) -> dict[str, Any]:
    """What a Ray worker runs: one question with one system, its record as plain data."""
    from ._runner import guarded

    make = build_runner(system, question, setup, answer, named_answer=named)
    describe = (question.workload, question.id, system, question.gold)
    record = asyncio.run(guarded(asyncio.Semaphore(1), make, describe, config))
    data = record.to_dict(with_run=False)
    data["run"] = record.run.to_json(indent=None) if record.run is not None else None
    return data


class RayBench:
    """Runs bench jobs as Ray tasks; ``close()`` shuts down a Ray instance it started."""

    def __init__(self, address: str, tasks: int) -> None:
        self.started = connect_ray(address, tasks)  # a UsageError when Ray is not installed
        import ray

        self.ray = ray
        self.remote = ray.remote(num_cpus=1, max_retries=0)(bench_job)

    async def run(
        self,
        system: str,
        question: BenchQuestion,
        setup: Setup,
        answer: str,
        named: bool,
        config: Any,
    ) -> Any:
        from ._runner import BenchRecord

        ref = self.remote.remote(system, question, setup, answer, named, config)
        try:
            data: dict[str, Any] = await ref
        except BaseException:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
            raise
        run = data.pop("run", None)
        known = {f.name for f in fields(BenchRecord)}
        record = BenchRecord(**{k: v for k, v in data.items() if k in known})
        record.run = RunResult.model_validate_json(run) if isinstance(run, str) else None
        return record

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

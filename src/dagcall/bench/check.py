"""Check the shipped reference data: ``python -m dagcall.bench.check [NAME|PATH ...]``.

For every question of each reference file it runs the oracle (the reference plan through the
real compiler, see :mod:`dagcall.bench._reference`) and reports the questions whose plan does
not run, whose math is not grounded in its inputs, or whose answer misses the dataset's; then
kb entries no plan searches and paragraphs outside 30–90 words.  Exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import sys
from pathlib import Path

from . import _data
from ._data import WORKLOAD_FILES, BenchDataError, find_datasets, load_workload
from ._reference import oracle


def _workload_of(name: str) -> str:
    for workload, (_, files) in WORKLOAD_FILES.items():
        if name in files:
            return workload
    raise BenchDataError(f"{name} is not a reference file of any workload")


async def check(names: list[str], datasets: Path) -> int:
    problems = 0
    for name in names:
        name = Path(name).stem  # a path to a shipped file names it too
        workload = _workload_of(name)
        questions = [
            q
            for q in load_workload(workload, datasets)
            if q.id in _data.reference_file(name)["questions"]
        ]
        results = await asyncio.gather(*(oracle(q) for q in questions))
        kb = _data.reference_file(name)["kb"]
        used: set[str] = set()
        for q in questions:
            for line in q.plan:
                call = ast.parse(line, mode="eval").body
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "search":
                    used.add(str(ast.literal_eval(call.args[0])) if call.args else "")
        correct = sum(r.correct for r in results)
        print(f"{name}: {len(questions)} questions, oracle {correct}/{len(questions)} correct")
        for r in results:
            for p in r.problems:
                problems += 1
                print(f"  {r.question.id}: {p}")
            if r.question.exception:
                print(f"  {r.question.id}: listed exception: {r.question.exception}")
        for title, text in kb.items():
            if title not in used:
                problems += 1
                print(f"  kb {title!r}: no plan searches it")
            words = len(text.split())
            if not 30 <= words <= 90:
                print(f"  kb {title!r}: {words} words (30-90 wanted)")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagcall.bench.check")
    parser.add_argument("names", nargs="*", help="reference file names or paths (default: all)")
    parser.add_argument("--data", help="the folder of the paper's datasets")
    args = parser.parse_args(argv)
    datasets = find_datasets(args.data)
    if datasets is None:
        print("no datasets found; pass --data DIR", file=sys.stderr)
        return 2
    names = args.names or [f for _, files in WORKLOAD_FILES.values() for f in files]
    return asyncio.run(check(names, datasets))


if __name__ == "__main__":
    sys.exit(main())

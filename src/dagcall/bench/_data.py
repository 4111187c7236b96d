"""Workloads: the paper's questions with dagcall's offline knowledge base and reference plans.

The questions and gold answers are read from the paper's datasets (``../shared/datasets/
llmcompiler`` in this project's checkout, or ``--data DIR`` / ``$DAGCALL_DATASETS``); the
knowledge base, the reference plans and the answer rules ship with dagcall
(``dagcall/bench/data/*.json``; the format is documented in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from dagcall import UsageError

__all__ = [
    "WORKLOAD_FILES",
    "BenchDataError",
    "BenchQuestion",
    "KnowledgeBase",
    "find_datasets",
    "load_workload",
]

#: The reference files of each dataset workload, and the dataset file its questions come from.
WORKLOAD_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "parallelqa": ("parallelqa_dataset.json", ("parallelqa_a", "parallelqa_b")),
    "hotpotqa": ("hotpotqa_comparison.json", ("hotpotqa_a", "hotpotqa_b")),
    "movies": ("movie_recommendations_formatted.json", ("movies",)),
}
_NOT_WORD = re.compile(r"[^\w]+")


class BenchDataError(UsageError):
    """The benchmark's datasets or reference data are missing or inconsistent."""


def _key(title: str) -> str:
    return _NOT_WORD.sub(" ", title.casefold()).strip()


class KnowledgeBase:
    """Encyclopedic paragraphs by title: the offline stand-in for the paper's Wikipedia search."""

    def __init__(self, articles: Mapping[str, str]) -> None:
        self.articles = dict(articles)
        self._by_key = {_key(title): text for title, text in self.articles.items()}
        self._words = {title: set(_key(title).split()) for title in self.articles}

    def lookup(self, query: str) -> str:
        """The paragraph titled ``query`` (case and punctuation ignored); otherwise, like the
        paper's Wikipedia tool, a "could not find" note naming the closest titles."""
        found = self._by_key.get(_key(query))
        if found is not None:
            return found
        words = set(_key(query).split())
        ranked = sorted(
            ((len(words & w) / len(words | w), t) for t, w in self._words.items() if words & w),
            key=lambda pair: (-pair[0], pair[1]),
        )
        if ranked and ranked[0][0] >= 0.6:
            return self.articles[ranked[0][1]]
        similar = [t for _, t in ranked[:5]]
        return f"Could not find {query}. Similar: {similar}."


@dataclass(frozen=True)
class BenchQuestion:
    """One question of a workload, with what the benchmark knows about answering it."""

    workload: str
    id: str
    question: str
    gold: str
    plan: tuple[str, ...]
    rule: Mapping[str, Any]
    kb: KnowledgeBase = field(repr=False)
    math: Mapping[int, str] = field(default_factory=dict)
    exception: str | None = None

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.id}"

    def plan_text(self) -> str:
        """The reference plan as the planner writes it."""
        lines = [f"{i}. {line}" for i, line in enumerate(self.plan, 1)]
        return "\n".join([*lines, "join()<END_OF_PLAN>"])


def find_datasets(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder holding the paper's datasets, or ``None`` when there is none."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    elif os.environ.get("DAGCALL_DATASETS"):
        candidates.append(Path(os.environ["DAGCALL_DATASETS"]))
    else:
        here = Path(__file__).resolve()
        for base in (Path.cwd(), *here.parents):
            candidates.append(base / "shared" / "datasets" / "llmcompiler")
            candidates.append(base.parent / "shared" / "datasets" / "llmcompiler")
    for folder in candidates:
        if (folder / WORKLOAD_FILES["parallelqa"][0]).is_file():
            return folder
    if explicit is not None:
        raise BenchDataError(f"no LLMCompiler datasets in {explicit}")
    return None


@cache
def reference_file(name: str) -> dict[str, Any]:
    """One shipped reference file: ``{"kb": {...}, "questions": {...}}``."""
    path = resources.files("dagcall.bench") / "data" / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"kb": {}, "questions": {}}
    return data


def load_workload(
    workload: str, datasets: Path, *, ids: Sequence[str] | None = None
) -> list[BenchQuestion]:
    """The questions of ``workload`` that have reference data, in dataset order."""
    if workload not in WORKLOAD_FILES:
        raise BenchDataError(f"unknown workload {workload!r}; known: {', '.join(WORKLOAD_FILES)}")
    dataset_name, files = WORKLOAD_FILES[workload]
    try:
        records = json.loads((datasets / dataset_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchDataError(f"cannot read {datasets / dataset_name}: {exc}") from exc
    by_id = {str(r["id"]): r for r in records}
    questions: dict[str, BenchQuestion] = {}
    for name in files:
        data = reference_file(name)
        kb = KnowledgeBase(data.get("kb", {}))
        for qid, ref in data.get("questions", {}).items():
            record = by_id.get(qid)
            if record is None:
                raise BenchDataError(f"{name}.json: question {qid} is not in {dataset_name}")
            questions[qid] = BenchQuestion(
                workload=workload,
                id=qid,
                question=str(record["question"]).strip(),
                gold=str(record["answer"]).strip(),
                plan=tuple(ref["plan"]),
                rule=ref["answer"],
                kb=kb,
                math={int(k): v for k, v in ref.get("math", {}).items()},
                exception=ref.get("exception"),
            )
    order = [str(r["id"]) for r in records]
    selected = [questions[q] for q in order if q in questions]
    if ids is not None:
        wanted = set(ids)
        selected = [q for q in selected if q.id in wanted]
    return selected

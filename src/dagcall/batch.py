"""Batch runs: answer every question of a JSONL file with bounded concurrency, locally or as
Ray tasks, appending one JSON line per question to an output file that a re-run resumes.

``await run_batch("questions.jsonl", "results.jsonl", spec=CompilerSpec(...))`` returns a
:class:`BatchSummary` (answered, failed, skipped, latency percentiles, tokens, cost,
throughput); ``dagcall batch`` is the command line of it.  See :mod:`dagcall._batch` for the
file formats and what counts as failed.
"""

from ._batch import (
    BatchInputError,
    BatchSummary,
    CompilerSpec,
    InputProblem,
    OutputState,
    Question,
    QuestionFile,
    RunSaver,
    connect_ray,
    open_batch_store,
    parse_questions,
    percentile,
    question_id,
    read_output,
    read_questions,
    run_batch,
)

__all__ = [
    "BatchInputError",
    "BatchSummary",
    "CompilerSpec",
    "InputProblem",
    "OutputState",
    "Question",
    "QuestionFile",
    "RunSaver",
    "connect_ray",
    "open_batch_store",
    "parse_questions",
    "percentile",
    "question_id",
    "read_output",
    "read_questions",
    "run_batch",
]

"""dagcall's benchmarks: the LLMCompiler paper's comparisons, reproducible offline."""

from ._bench import (
    DATASET_WORKLOADS,
    GENERATED_WORKLOADS,
    BenchOutcome,
    report_markdown,
    run_bench,
    write_report,
)
from ._data import BenchDataError, BenchQuestion, KnowledgeBase, find_datasets, load_workload
from ._game24 import generate_puzzles, is_solution, solve
from ._reference import OracleResult, apply_rule, oracle
from ._runner import BenchConfig, BenchRecord
from ._scoring import normalize_answer, score
from ._simulate import PROFILES, Profile, SimulatedModel, WebLatency, simulated_model

__all__ = [
    "DATASET_WORKLOADS",
    "GENERATED_WORKLOADS",
    "PROFILES",
    "BenchConfig",
    "BenchDataError",
    "BenchOutcome",
    "BenchQuestion",
    "BenchRecord",
    "KnowledgeBase",
    "OracleResult",
    "Profile",
    "SimulatedModel",
    "WebLatency",
    "apply_rule",
    "find_datasets",
    "generate_puzzles",
    "is_solution",
    "load_workload",
    "normalize_answer",
    "oracle",
    "report_markdown",
    "run_bench",
    "score",
    "simulated_model",
    "solve",
    "write_report",
]

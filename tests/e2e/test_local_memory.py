"""The embedded local model's memory is bounded: it does not grow with the number of calls.

llama-cpp-python's ``LlamaRAMCache`` saved a state after every call and kept, uncounted, a
copy of the logits buffer with each (311 MB for a planner prompt), so a process grew by about
0.25 GB per call.  ``LocalModel`` now keeps its own :class:`PromptCache`, bounded in bytes that
it counts in full.  The first tests check the cache's accounting and eviction without a model;
the last ones run the real model over the real planner, joiner and ReAct prompts.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import resource
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagcall import Compiler, Message, UsageError
from dagcall._grammar import plan_grammar
from dagcall._prompts import joiner_messages
from dagcall._result import Round, TaskRecord, TaskStatus
from dagcall.baselines import ReActAgent
from dagcall.demo import EXAMPLES, REACT_EXAMPLES, demo_tools
from dagcall.models import LocalModel, ScriptedModel, complete
from dagcall.models._local import PromptCache, common_prefix, entry_cost

MB = 1 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def writer(size: int, fill: int = 7) -> Any:
    def write(buffer: Any) -> int:
        ctypes.memset(buffer, fill, size)
        return size

    return write


# -- the cache alone -------------------------------------------------------------------------
tokens = st.lists(st.integers(0, 5), min_size=1, max_size=12)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), tokens, st.integers(1, 3 * _PAGE)),
        st.tuples(st.just("best"), tokens, st.just(0)),
        st.tuples(st.just("resize"), st.just([]), st.integers(0, 12 * _PAGE)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(0, 12 * _PAGE), script=ops)
def test_cache_never_holds_more_than_its_bound_and_counts_every_byte(
    capacity: int, script: list[tuple[str, list[int], int]]
) -> None:
    cache = PromptCache(capacity)
    model: list[tuple[tuple[int, ...], int]] = []  # (key, state size), least recent first
    for op, key, n in script:
        if op == "add":
            entry = cache.add(key, n, writer(n))
            if entry_cost(len(key), n) > cache.capacity:
                assert entry is None
            else:
                assert entry is not None
                model.append((tuple(key), n))
                while sum(entry_cost(len(k), s) for k, s in model) > cache.capacity:
                    model.pop(0)  # the least recently used goes first
        elif op == "best":
            entry, length = cache.best(key)
            want = max((common_prefix(k, key) for k, _ in model), default=0)
            assert length == want
            if want == 0:
                assert entry is None
            else:
                assert entry is not None
                assert common_prefix(entry.tokens, key) == want
                assert cache.read(entry, lambda buffer, size: size)  # a use: now most recent
                i = next(i for i, (k, _) in enumerate(model) if k == tuple(entry.tokens))
                model.append(model.pop(i))
        else:
            cache.resize(n)
            while sum(entry_cost(len(k), s) for k, s in model) > cache.capacity:
                model.pop(0)
        assert cache.keys() == [k for k, _ in model]
        assert cache.nbytes == sum(entry_cost(len(k), s) for k, s in model)
        assert cache.nbytes <= cache.capacity
    cache.clear()
    assert cache.nbytes == 0
    assert len(cache) == 0


def test_cost_counts_the_state_pages_and_the_token_key() -> None:
    assert entry_cost(1000, 1) >= _PAGE + 4000
    assert entry_cost(1000, 10 * MB) >= 10 * MB + 4000
    assert entry_cost(0, _PAGE + 1) >= 2 * _PAGE


def test_a_failed_or_oversized_save_holds_nothing() -> None:
    cache = PromptCache(4 * _PAGE)
    assert cache.add([1, 2], 8 * _PAGE, writer(8 * _PAGE)) is None
    assert cache.add([1, 2], 16, lambda buffer: 0) is None
    assert cache.add([1, 2], 16, lambda buffer: 17) is None  # claims more than the buffer

    def boom(buffer: Any) -> int:
        raise RuntimeError("llama.cpp failed")

    with pytest.raises(RuntimeError):
        cache.add([1, 2], 16, boom)
    assert (len(cache), cache.nbytes) == (0, 0)
    entry = cache.add([1, 2, 3], 16, writer(16))
    assert entry is not None
    assert not cache.read(entry, lambda buffer, size: 0)  # llama.cpp refused it: dropped
    assert (len(cache), cache.nbytes) == (0, 0)
    assert PromptCache(0).add([1], 1, writer(1)) is None


def test_a_read_sees_the_saved_bytes() -> None:
    cache = PromptCache(8 * _PAGE)
    entry = cache.add(list(range(100)), 3000, writer(3000, fill=42))
    assert entry is not None
    seen: list[bytes] = []

    def load(buffer: Any, size: int) -> int:
        seen.append(bytes(buffer))
        return size

    assert cache.read(entry, load)
    assert seen == [bytes([42]) * 3000]


def test_evicted_states_give_their_memory_back() -> None:
    # 200 states of 4 MB through a 32 MB cache: 800 MB written, at most 32 MB held.
    cache = PromptCache(32 * MB)
    gc.collect()
    before = rss()
    for i in range(200):
        assert cache.add([i] * 10, 4 * MB, writer(4 * MB)) is not None
        assert cache.nbytes <= 32 * MB
    grown = rss() - before
    assert grown < 96 * MB, f"RSS grew {grown / MB:.0f} MB for a 32 MB cache"
    cache.clear()
    assert rss() - before < 48 * MB


def test_cache_bytes_must_be_a_byte_count() -> None:
    for bad in (-1, 1.5, True, "2G"):
        with pytest.raises(UsageError, match="cache_bytes"):
            LocalModel(cache_bytes=bad)  # type: ignore[arg-type]
    assert LocalModel(cache_bytes=0).cache_bytes == 0


def test_compiled_grammars_are_bounded() -> None:
    pytest.importorskip("llama_cpp")
    from dagcall.models._local import MAX_GRAMMARS, _Loaded

    loaded = _Loaded(None, None, [], threading.Lock(), PromptCache(0))  # type: ignore[arg-type]
    model = LocalModel()
    first = model._grammar(loaded, 'root ::= "a"')
    for n in range(3 * MAX_GRAMMARS):
        model._grammar(loaded, f'root ::= "{n}"')
        assert model._grammar(loaded, 'root ::= "a"') is first  # in use: kept
        assert len(loaded.grammars) <= MAX_GRAMMARS


def test_bench_reports_peak_rss_for_a_real_model(tmp_path: Path) -> None:
    from dagcall.bench import BenchConfig
    from dagcall.bench._bench import BenchOutcome, conditions, write_report
    from dagcall.bench._runner import peak_rss
    from dagcall.bench._runner import rss as bench_rss

    now, peak = bench_rss(), peak_rss()
    assert now is not None
    assert peak is not None
    assert 0 < now <= peak + 4 * MB  # ru_maxrss is sampled by the kernel: allow a page or so
    outcome = BenchOutcome(
        BenchConfig(model=ScriptedModel([])), rss_start=now, rss_end=now, peak_rss=peak
    )
    assert f"Peak RSS {peak / MB:,.0f} MB" in conditions(outcome)
    write_report(outcome, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["memory"]["peak_rss_mb"] == round(peak / MB, 1)
    simulated = BenchOutcome(BenchConfig(), peak_rss=peak)
    assert "RSS" not in conditions(simulated)  # a simulated run's memory says nothing


# -- the real model --------------------------------------------------------------------------
TOOLS = demo_tools()
PLACES = ["Eiffel Tower", "Statue of Liberty", "Big Ben", "Burj Khalifa", "CN Tower"]


def prompts(i: int) -> tuple[str, list[Message], str | None]:
    """Call ``i`` of the soak: the planner, the joiner and ReAct in turn, each on a new
    question, the way dagcall and ReAct questions alternate in one process."""
    a, b = PLACES[i % 5], PLACES[(i * 3 + 1) % 5]
    question = f"What is the combined height in metres of the {a} and the {b}? (#{i})"
    kind = ("planner", "joiner", "react")[i % 3]
    if kind == "planner":
        compiler = Compiler(model=ScriptedModel([]), tools=TOOLS, examples=EXAMPLES)
        return kind, compiler.planner_messages(question), plan_grammar(TOOLS)
    if kind == "joiner":
        records = {
            1: TaskRecord(1, "height", f'height("{a}")', 0, status=TaskStatus.DONE, output=330.0),
            2: TaskRecord(2, "height", f'height("{b}")', 0, status=TaskStatus.DONE, output=93.0),
        }
        rounds = [Round(0, task_ids=[1, 2])]
        return kind, joiner_messages(question, rounds, records, may_replan=True), None
    agent = ReActAgent(ScriptedModel([]), TOOLS, examples=REACT_EXAMPLES)
    steps = "".join(
        f'Action: height("{p}")\nObservation: 1{n}.0\n' for n, p in enumerate(PLACES[: i % 4])
    )
    user = f"Question: {question}\n{steps}".rstrip()
    return kind, [Message("system", agent.system), Message("user", user)], None


def soak(model: LocalModel, calls: int, max_tokens: int = 2) -> list[int]:
    """RSS after each call."""

    async def go() -> list[int]:
        after: list[int] = []
        for i in range(calls):
            _, messages, grammar = prompts(i)
            completion = await complete(
                model, messages, stop=["<END_OF_PLAN>"], max_tokens=max_tokens, grammar=grammar
            )
            assert completion.text
            gc.collect()
            after.append(rss())
        return after

    return asyncio.run(go())


CALLS, WARM_UP = 24, 6
#: Growth allowed from call WARM_UP to call CALLS, in all.  The old cache grew by at least
#: 110 MB a call (311 MB for a planner or ReAct prompt), >2 GB over these 18 calls.
GROWTH_BOUND = 192 * MB


@pytest.mark.timeout(600)  # ~1 min on a quiet 2-core machine; generous for a shared one
def test_resident_memory_stays_flat_over_alternating_calls(gguf_path: Path) -> None:
    model = LocalModel(gguf_path)
    model.load()
    loaded = rss()
    before = model.cache_stats()  # the cache is shared with earlier tests' LocalModels
    after = soak(model, CALLS)
    growth = after[-1] - after[WARM_UP - 1]
    trace = " ".join(f"{r / MB:.0f}" for r in after)
    print(f"\nRSS after load {loaded / MB:.0f} MB; after each call (MB): {trace}")
    assert growth < GROWTH_BOUND, (
        f"RSS grew {growth / MB:.0f} MB from call {WARM_UP} to call {CALLS} "
        f"({growth / MB / (CALLS - WARM_UP):.1f} MB a call): {trace}"
    )
    # Nor does it spike in between: no call holds more than the bound above the warm level.
    assert max(after[WARM_UP - 1 :]) - after[WARM_UP - 1] < GROWTH_BOUND, trace
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak RSS {peak / MB:.0f} MB")
    stats = model.cache_stats()
    assert stats.nbytes <= model.cache_bytes
    # The planner's, joiner's and ReAct's instructions were each saved once, then restored
    # by every later call of their kind (the call before was always of another kind).
    assert stats.saves - before.saves <= 3
    assert stats.hits - before.hits >= CALLS - 3


async def test_the_cache_keeps_to_a_small_bound_and_can_be_off(gguf_path: Path) -> None:
    # The planner's, joiner's and ReAct's prefixes take about 15, 4 and 12 MB: 20 MB holds
    # two of them, so the third call must evict, not grow.
    small = LocalModel(gguf_path, cache_bytes=20 * MB)
    for i in range(3):
        _, messages, grammar = prompts(i)
        completion = await complete(small, messages, max_tokens=2, grammar=grammar)
        assert completion.text
        assert small.cache_stats().nbytes <= 20 * MB
    stats = small.cache_stats()
    assert 1 <= stats.entries <= 2
    assert stats.evictions >= 1
    off = LocalModel(gguf_path, cache_bytes=0)
    _, messages, grammar = prompts(3)
    completion = await complete(off, messages, max_tokens=2, grammar=grammar)
    assert completion.text
    assert (off.cache_stats().entries, off.cache_stats().nbytes) == (0, 0)

"""The embedded local model planning and joining real questions over offline tools."""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kb import EXAMPLES, QUESTIONS, TOOLS

from dagcall import Compiler, Message, ModelError, TaskStatus, parse_plan
from dagcall._grammar import plan_grammar
from dagcall.models import LocalModel, TokenUsage, complete


def numbers_in(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)]


def is_right(answer: str, expected: float | str) -> bool:
    if isinstance(expected, str):
        return expected in answer.lower()
    values = numbers_in(answer)
    if re.search(r"million", answer, re.I):
        values += [v * 1e6 for v in values]
    return any(abs(v - expected) <= 0.01 * abs(expected) for v in values)


@pytest.fixture(scope="module")
def model(gguf_path: Path) -> LocalModel:
    return LocalModel(gguf_path)


@pytest.mark.timeout(360)  # several questions in a row, at 13-17 tokens/s
def test_questions_are_planned_in_parallel_and_answered(model: LocalModel) -> None:
    compiler = Compiler(model=model, tools=TOOLS, examples=EXAMPLES, max_replans=1)
    report = []
    for question, expected in QUESTIONS:
        started = time.perf_counter()
        result = compiler.run(question)
        wall = time.perf_counter() - started
        assert is_right(result.answer, expected), (question, result.answer, result.rounds)
        planner = result.usage[0]
        joiners = [c for c in result.usage if c.role == "joiner"]
        # a plan that names its answer (join("$M")) needs no joiner call; a choice does
        assert joiners or result.rounds[-1].joiner_elided
        joined = (
            f"joiner {joiners[0].latency:5.2f}s ({joiners[0].input_tokens} in, "
            f"{joiners[0].output_tokens} out)"
            if joiners
            else "joiner elided"
        )
        report.append(
            f"{question[:50]:<50} wall {wall:5.1f}s planner {planner.latency:5.2f}s "
            f"(ttft {planner.time_to_first_token or 0:4.2f}s, {planner.input_tokens} in, "
            f"{planner.output_tokens} out) {joined}"
        )
        assert not planner.estimated
        lookups = [t for t in result.tasks if t.tool in ("height", "population", "area")]
        assert len(lookups) >= 2
        assert all(t.status is TaskStatus.DONE for t in lookups)
        # Each look-up started while the planner was still streaming the plan (how much they
        # also overlap each other depends on this machine's decoding speed).
        for lookup in lookups:
            assert lookup.started_at is not None
            assert lookup.started_at < planner.ended_at
    print("\n" + "\n".join(report))


def test_arithmetic_on_two_parallel_lookups(model: LocalModel) -> None:
    compiler = Compiler(model=model, tools=TOOLS, examples=EXAMPLES, max_replans=1)
    result = compiler.run(QUESTIONS[0][0])
    calc = [t for t in result.tasks if t.tool == "calculator"]
    assert calc, result.rounds[0].plan
    assert calc[0].status is TaskStatus.DONE
    assert set(calc[0].deps) >= {1, 2}
    assert calc[0].output == pytest.approx(423.0)


def test_grammar_makes_every_plan_parse(model: LocalModel) -> None:
    compiler = Compiler(model=model, tools=TOOLS, examples="")
    messages = compiler.planner_messages(
        "Tell me a joke about towers, then the Eiffel Tower height."
    )
    grammar = plan_grammar(TOOLS)
    text = ""
    usage = None
    import asyncio

    async def go() -> None:
        nonlocal text, usage
        completion = await complete(model, messages, stop=["<END_OF_PLAN>"], grammar=grammar)
        text, usage = completion.text, completion.usage

    asyncio.run(go())
    items, parser = parse_plan(text, [t.name for t in TOOLS])
    assert items, text
    assert all(not isinstance(i, Exception) for i in items), (text, items)
    assert parser.join_seen
    assert isinstance(usage, TokenUsage)
    assert usage.output_tokens > 0


async def test_streams_and_stops_early_when_closed(model: LocalModel) -> None:
    messages = [Message("user", "Count from 1 to 200, one number per line.")]
    stream = model.stream(messages, max_tokens=400)
    received = []
    started = time.perf_counter()
    async for event in stream:
        assert isinstance(event, str)
        received.append(event)
        if len(received) == 5:
            break
    await stream.aclose()
    # The model is free again at once: the next call is not stuck behind 400 tokens.
    completion = await complete(model, [Message("user", "Say OK.")], max_tokens=3)
    assert completion.text
    assert time.perf_counter() - started < 60


async def test_stop_sequences_and_token_counts(model: LocalModel) -> None:
    messages = [Message("user", "Write the numbers 1 to 10 separated by spaces.")]
    completion = await complete(model, messages, stop=["5"], max_tokens=40)
    assert "5" not in completion.text
    assert "4" in completion.text
    assert completion.usage is not None
    assert completion.usage.input_tokens == model.count_tokens(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\nWrite the numbers 1 to 10 separated by spaces.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


async def test_prompt_too_long_is_a_clear_error(gguf_path: Path) -> None:
    small = LocalModel(gguf_path, n_ctx=512)
    with pytest.raises(ModelError, match="raise n_ctx"):
        await complete(small, [Message("user", "word " * 2000)])


class _Params:
    use_extra_bufts = True


def _llama_module(info: bytes) -> Any:
    low = SimpleNamespace(llama_print_system_info=lambda: info, llama_model_default_params=_Params)
    return SimpleNamespace(llama_cpp=low)


def test_a_build_with_amx_kernels_loads_without_them_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagcall.models._local import AMX_ENV, _amx_off

    monkeypatch.delenv(AMX_ENV, raising=False)
    amx = _llama_module(b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    with _amx_off(amx):
        assert amx.llama_cpp.llama_model_default_params().use_extra_bufts is False
    assert amx.llama_cpp.llama_model_default_params is _Params  # put back
    plain = _llama_module(b"CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |")
    with _amx_off(plain):
        assert plain.llama_cpp.llama_model_default_params().use_extra_bufts is True
    monkeypatch.setenv(AMX_ENV, "1")
    with _amx_off(amx):
        assert amx.llama_cpp.llama_model_default_params().use_extra_bufts is True


def test_the_installed_build_is_read_for_amx_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from dagcall.models._local import AMX_ENV, _amx_off

    monkeypatch.delenv(AMX_ENV, raising=False)
    has_amx = b"AMX_INT8 = 1" in llama_cpp.llama_cpp.llama_print_system_info()
    with _amx_off(llama_cpp):
        params = llama_cpp.llama_cpp.llama_model_default_params()
    assert params.use_extra_bufts is not has_amx

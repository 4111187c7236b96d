"""`dagcall batch` and dagcall.batch: answers written as they finish, resume, failures that do
not stop the batch, torn output lines, stored runs, the summary, malformed input, and Ray."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagcall.batch import (
    BatchInputError,
    BatchSummary,
    CompilerSpec,
    Question,
    open_batch_store,
    parse_questions,
    percentile,
    question_id,
    read_output,
    run_batch,
)
from dagcall.cli import main
from dagcall.models import _providers as providers  # the registry, to restore it
from dagcall.store import RunStore, default_path

TOOLS = Path(__file__).with_name("batch_tools.py")
SPEC = CompilerSpec(model="batchtest", tool_files=(str(TOOLS),), max_replans=0)


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    """Loading batch_tools.py registers its model prefixes: take them out again after."""
    saved = dict(providers)
    yield
    providers.clear()
    providers.update(saved)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_MODEL", raising=False)
    monkeypatch.delenv("DAGCALL_STORE", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("BATCH_CALLS_FILE", str(calls))
    monkeypatch.delenv("BATCH_TOOL_LATENCY", raising=False)
    return calls


def model_calls(tmp_path: Path) -> int:
    path = tmp_path / "calls.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_questions(path: Path, *items: object) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


QUESTIONS = [
    {"id": "one", "question": "sum of a bb ccc", "gold": 6},
    {"id": "two", "question": "sum of xx yy"},
    {"id": "three", "question": "sum of dddd"},
]


def batch(questions: Path, out: Path, **options: Any) -> BatchSummary:
    options.setdefault("spec", SPEC)
    return asyncio.run(run_batch(questions, out, **options))


# -- the input ---------------------------------------------------------------------------------


def test_questions_objects_strings_ids_and_problems() -> None:
    text = [
        json.dumps({"id": "a", "question": "first", "tag": "x"}),
        json.dumps("a bare question"),
        "",
        json.dumps({"id": 7, "question": "numbered"}),
        "{not json",
        json.dumps({"id": "a", "question": "again"}),
        json.dumps({"question": "  "}),
        json.dumps([1, 2]),
        json.dumps({"id": True, "question": "q"}),
        json.dumps({"text": "no question field"}),
    ]
    parsed = parse_questions(text)
    assert [(q.id, q.question, q.line) for q in parsed.questions] == [
        ("a", "first", 1),
        (question_id("a bare question"), "a bare question", 2),
        ("7", "numbered", 4),
    ]
    assert parsed.questions[0].extra == {"tag": "x"}
    assert question_id("a bare question") == question_id("a bare question")
    assert question_id("a bare question").startswith("q")
    assert len(question_id("x")) == 13
    assert [p.line for p in parsed.problems] == [5, 6, 7, 8, 9, 10]
    assert "not JSON" in parsed.problems[0].message
    assert parsed.problems[1].message == "duplicate id 'a' (first on line 1)"
    assert "empty" in parsed.problems[2].message
    with pytest.raises(BatchInputError, match="line 5: not JSON") as info:
        parse_questions(text, strict=True)
    assert info.value.line == 5


def test_malformed_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('"sum of a"\n{oops\n"sum of bb"\n')
    out = tmp_path / "out.jsonl"
    summary = batch(questions, out)
    assert (summary.total, summary.answered, summary.invalid) == (2, 2, 1)
    assert summary.problems[0].line == 2
    with pytest.raises(BatchInputError, match="line 2"):
        batch(questions, tmp_path / "strict.jsonl", strict=True)
    assert not (tmp_path / "strict.jsonl").exists()  # nothing ran


# -- running -----------------------------------------------------------------------------------


def test_answers_written_with_extra_fields_and_runs_stored(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    out = tmp_path / "out.jsonl"
    store = open_batch_store(None)
    summary = batch(questions, out, store=store)
    lines = {line["id"]: line for line in lines_of(out)}
    assert {k: v["answer"] for k, v in lines.items()} == {"one": "6", "two": "4", "three": "4"}
    assert all(v["status"] == "answered" for v in lines.values())
    assert lines["one"]["extra"] == {"gold": 6}
    assert "extra" not in lines["two"]
    with RunStore(default_path()) as saved:
        assert len(saved.list_runs(10)) == 3
        run = saved.load(lines["one"]["run_id"])
    assert run.question == "sum of a bb ccc"
    assert run.answer == "6"
    assert summary.unsaved_runs == 0


def test_summary_numbers_agree_with_the_lines(tmp_path: Path) -> None:
    items = [*QUESTIONS, {"id": "bad", "question": "sum of boom a"}]
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"
    summary = batch(questions, out, concurrency=2)
    lines = lines_of(out)
    assert summary.total == 4
    assert summary.ran == 4 == len(lines)
    assert summary.answered == sum(line["status"] == "answered" for line in lines) == 3
    assert summary.failed == 1
    assert summary.skipped == 0
    assert summary.pending == 0
    assert summary.input_tokens == sum(line["input_tokens"] for line in lines)
    assert summary.output_tokens == sum(line["output_tokens"] for line in lines)
    assert summary.llm_calls == sum(line["llm_calls"] for line in lines) == model_calls(tmp_path)
    latencies = sorted(line["latency"] for line in lines)
    assert summary.latency_p50 == pytest.approx(percentile(latencies, 50), abs=1e-5)
    assert summary.latency_p50 is not None
    assert summary.latency_p99 is not None
    assert latencies[0] - 1e-5 <= summary.latency_p50 <= summary.latency_p99
    assert summary.latency_max == pytest.approx(latencies[-1], abs=1e-5)
    assert summary.throughput == pytest.approx(4 / summary.wall_time)
    assert summary.cost is None
    assert summary.unpriced_runs == 4
    data = summary.to_dict()
    assert data["answered"] == 3
    assert "latencies" not in data
    json.dumps(data)


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


def test_a_raising_tool_fails_one_question_and_the_rest_are_answered(tmp_path: Path) -> None:
    items = [*QUESTIONS, {"id": "bad", "question": "sum of boom a"}]
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"
    summary = batch(questions, out)
    lines = {line["id"]: line for line in lines_of(out)}
    assert (summary.answered, summary.failed) == (3, 1)
    bad = lines["bad"]
    assert bad["status"] == "failed"
    assert bad["tasks_failed"] == 1
    assert bad["error_type"] == "ToolExecutionError"
    assert "the lookup service is down" in bad["error"]
    assert bad["answer"] == "1"  # the joiner's answer is kept
    relaxed = batch(questions, tmp_path / "relaxed.jsonl", allow_tool_errors=True)
    assert (relaxed.answered, relaxed.failed) == (4, 0)


def test_a_failing_model_and_a_timeout_are_failed_questions(tmp_path: Path) -> None:
    items = [
        {"id": "model", "question": "modelfail sum of a"},
        {"id": "slow", "question": "sum of sleepy"},
        {"id": "fine", "question": "sum of abc"},
    ]
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"
    started = time.perf_counter()
    summary = batch(questions, out, timeout=1.0)
    assert time.perf_counter() - started < 10
    lines = {line["id"]: line for line in lines_of(out)}
    assert lines["model"]["status"] == "failed"
    assert lines["model"]["error_type"] == "ModelError"
    assert lines["slow"]["status"] == "failed"
    assert lines["slow"]["error_type"] == "RunTimeoutError"
    assert lines["fine"]["status"] == "answered"
    assert (summary.answered, summary.failed) == (1, 2)


# -- resuming ----------------------------------------------------------------------------------


def test_resume_skips_the_ids_already_in_the_output(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    out = tmp_path / "out.jsonl"
    batch(questions, out)
    assert model_calls(tmp_path) == 6  # planner and joiner per question
    more = [*QUESTIONS, {"id": "four", "question": "sum of a"}, "sum of bb"]
    write_questions(questions, *more)
    summary = batch(questions, out)
    assert model_calls(tmp_path) == 6 + 4  # only the two new questions ran
    assert (summary.skipped, summary.answered, summary.total) == (3, 2, 5)
    again = batch(questions, out)
    assert (again.skipped, again.ran) == (5, 0)
    assert model_calls(tmp_path) == 10
    ids = [line["id"] for line in lines_of(out)]
    assert sorted(ids) == sorted(["one", "two", "three", "four", question_id("sum of bb")])


def test_failed_questions_are_skipped_unless_retried(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", {"id": "x", "question": "sum of boom"})
    out = tmp_path / "out.jsonl"
    assert batch(questions, out).failed == 1
    assert batch(questions, out).skipped == 1
    retried = batch(questions, out, retry_failed=True, allow_tool_errors=True)
    assert retried.answered == 1
    assert read_output(out).statuses == {"x": "answered"}  # the later line supersedes


def test_a_torn_last_line_is_cut_off_on_resume(tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    out = tmp_path / "out.jsonl"
    batch(questions, out)
    text = out.read_text()
    last_start = text.rstrip("\n").rfind("\n") + 1
    torn_id = json.loads(text[last_start:])["id"]
    out.write_text(text[: last_start + 25])  # a crash in the middle of the last write
    calls = model_calls(tmp_path)
    summary = batch(questions, out)
    assert summary.torn_line_repaired
    assert (summary.skipped, summary.answered) == (2, 1)
    assert model_calls(tmp_path) == calls + 2  # only the torn question ran again
    lines = lines_of(out)  # every line is whole JSON again
    assert sorted(line["id"] for line in lines) == ["one", "three", "two"]
    assert lines[-1]["id"] == torn_id


def test_a_whole_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "one", "status": "answered"}')
    state = read_output(out)
    assert state.statuses == {"one": "answered"}
    assert not state.torn
    assert out.read_text().endswith("}\n")


def test_cancelling_leaves_a_valid_output_that_resumes(tmp_path: Path) -> None:
    items = [{"id": f"q{i}", "question": "sum of a"} for i in range(6)]
    items.insert(2, {"id": "slow", "question": "sum of sleepy"})
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"

    async def cancelled() -> None:
        task = asyncio.ensure_future(run_batch(questions, out, spec=SPEC, concurrency=2))
        while not out.exists() or len(out.read_text().splitlines()) < 3:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled())
    written = lines_of(out)  # whole lines only
    assert 3 <= len(written) < 7
    assert "slow" not in {line["id"] for line in written}
    summary = batch(questions, out, timeout=0.5)
    assert summary.skipped == len(written)
    assert summary.skipped + summary.ran == 7
    assert len(lines_of(out)) == 7


# -- the command -------------------------------------------------------------------------------


def test_cli_batch_json_summary_and_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(questions), "--tools", str(TOOLS), "-m", "batchtest", "--out", str(out)]
    code = main([*args, "--json", "--max-replans", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert (summary["answered"], summary["failed"], summary["total"]) == (3, 0, 3)
    with RunStore(default_path()) as store:
        assert {r.id for r in store.list_runs(10)} == {line["run_id"] for line in lines_of(out)}
    assert main([*args, "--no-store"]) == 0  # resumed: nothing left to run
    captured = capsys.readouterr()
    assert "3 questions already in" in captured.err
    assert "skipped (already done)" in captured.out


def test_cli_batch_exit_code_and_messages_when_questions_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text('"sum of a"\n"sum of boom"\nnot json\n')
    out = tmp_path / "out.jsonl"
    base = ["batch", str(questions), "--tools", str(TOOLS), "-m", "batchtest", "-o", str(out)]
    code = main([*base, "--no-store"])
    err = capsys.readouterr().err
    assert code == 1
    assert "line 3: not JSON" in err
    assert "error: 1 of 2 questions failed" in err
    assert "1 input lines were malformed" in err
    assert main([*base, "--no-store", "--strict", "-o", str(tmp_path / "o2.jsonl")]) == 2
    assert "line 3: not JSON" in capsys.readouterr().err
    assert main([*base, "--no-store", "--store", "x.db"]) == 2


def test_cli_batch_bad_tools_file_fails_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    missing = tmp_path / "nope.py"
    code = main(["batch", str(questions), "--tools", str(missing), "-o", str(tmp_path / "o")])
    assert code != 0
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_installed_program_runs_a_batch(dagcall_program: str, tmp_path: Path) -> None:
    questions = write_questions(tmp_path / "q.jsonl", *QUESTIONS)
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            dagcall_program,
            "batch",
            str(questions),
            "--tools",
            str(TOOLS),
            "-m",
            "batchtest",
            "--out",
            str(out),
            "--no-store",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "answered" in proc.stdout
    assert "throughput" in proc.stdout
    assert len(lines_of(out)) == 3


def test_ctrl_c_leaves_a_valid_output(dagcall_program: str, tmp_path: Path) -> None:
    items = [
        {"id": f"q{i}", "question": "sum of sleepy" if i % 2 else "sum of a"} for i in range(6)
    ]
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"
    args = [dagcall_program, "batch", str(questions), "--tools", str(TOOLS), "-m", "batchtest"]
    proc = subprocess.Popen(
        [*args, "--out", str(out), "-c", "2", "--no-store"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not out.exists() or len(out.read_text().splitlines()) < 2:
        assert time.monotonic() < deadline, "the batch wrote nothing"
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10  # the sleeping tools were cancelled, not awaited
    assert proc.returncode == 130, err
    assert "interrupted: 2 questions written" in err
    assert [line["id"] for line in lines_of(out)] == ["q0", "q2"]


def test_import_dagcall_does_not_import_ray() -> None:
    code = "import sys, dagcall, dagcall.batch, dagcall.cli; print('ray' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


def test_questions_given_as_objects(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    summary = asyncio.run(
        run_batch([Question("x", "sum of ab")], out, compiler=SPEC.resolved().build())
    )
    assert summary.answered == 1
    assert lines_of(out)[0]["answer"] == "2"
    twice = [Question("y", "sum of a", 1), Question("y", "sum of b", 2)]
    again = asyncio.run(run_batch(twice, tmp_path / "o2.jsonl", spec=SPEC))
    assert (again.answered, again.invalid) == (1, 1)
    assert again.problems[0].line == 2


# -- Ray ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_batch_on_a_local_instance(dagcall_program: str, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    items = [*QUESTIONS, {"id": "bad", "question": "sum of boom a"}, "sum of eeeee"]
    items.append({"id": "crash", "question": "sum of crash"})  # its worker process dies
    questions = write_questions(tmp_path / "q.jsonl", *items)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "BATCH_MAY_CRASH": "1"}
    proc = subprocess.run(
        [
            dagcall_program,
            "batch",
            str(questions),
            "--tools",
            str(TOOLS),
            "-m",
            "batchtest",
            "--out",
            str(out),
            "--ray",
            "local",
            "--concurrency",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr  # the questions with a failing tool, a crash
    summary = json.loads(proc.stdout)
    assert (summary["answered"], summary["failed"], summary["mode"]) == (4, 2, "ray:local")
    lines = {line["id"]: line for line in lines_of(out)}
    assert lines["one"]["answer"] == "6"
    assert lines[question_id("sum of eeeee")]["answer"] == "5"
    assert lines["bad"]["error_type"] == "ToolExecutionError"
    assert lines["crash"]["status"] == "failed"
    assert lines["crash"]["run_id"] is None  # the run died with its worker
    assert "crash" in lines["crash"]["error_type"].lower() or "died" in lines["crash"]["error"]
    assert model_calls(tmp_path) == 11  # the workers ran the model: 2 calls a question, 1
    with RunStore(default_path()) as store:  # the driver saved the workers' runs
        assert len(store.list_runs(10)) == 5
        assert store.load(lines["one"]["run_id"]).answer == "6"

"""The CLI fails in one line, for every command and option, and loses nothing.

Every failure here must end with exactly one non-empty line on stderr, starting ``error:``, a
non-zero exit code and no traceback (``--debug`` adds one); an answer that was computed is
printed (or saved) before any failure is reported.  In-process through ``main(argv)``, and as
real ``python -m dagcall`` processes where the failure is the process's own stdout (a full
disk, a closed pipe).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from _pytest.capture import CaptureResult

import dagcall.cli as cli_module
from dagcall import ScriptedModel
from dagcall._store import RunStore, default_path
from dagcall.cli import main
from openai_server import FakeOpenAIServer, Stream
from runs import sample_run

TOOLS_FILE = '''
from dagcall import tool

@tool
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y

@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text
'''
PLAN = '1. add(2, 3)\n2. echo("five")\n3. join()\n<END_OF_PLAN>'
ANSWER = "Thought: done.\nAction: Finish(5.0)"
UNREACHABLE = "openai:x@http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGCALL_MODEL", UNREACHABLE)  # never the (slow) local model
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_FILE)
    return path


def scripted(monkeypatch: pytest.MonkeyPatch, *replies: str) -> None:
    """Every model the CLI resolves is a ScriptedModel with these replies."""
    monkeypatch.setattr(cli_module, "resolve_model", lambda spec: ScriptedModel(list(replies)))


def one_error(captured: CaptureResult[str], code: int, *needles: str) -> str:
    """The single ``error:`` line, after checking the failure is one line and no traceback."""
    assert code != 0, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0], lines[0]
    return str(lines[0])


def saved_run() -> str:
    with RunStore() as store:
        return store.save(sample_run(), planner="p", joiner="j")


def store_path() -> Path:
    return default_path()


# -- --examples --------------------------------------------------------------------------------


def _examples_cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    not_utf8 = tmp / "latin1.txt"
    not_utf8.write_bytes("Beispiel: Größe\n".encode("latin-1"))
    return {
        "missing": (tmp / "none.txt", "does not exist"),
        "folder": (tmp, "is a folder"),
        "not UTF-8": (not_utf8, "not UTF-8"),
        "unreadable": (Path("/proc/self/mem"), "cannot read"),  # EIO, even for root
        "endless": (Path("/dev/zero"), "larger than"),
    }


@pytest.mark.parametrize("case", ["missing", "folder", "not UTF-8", "unreadable", "endless"])
def test_examples_files_that_cannot_be_read(
    case: str, tmp_path: Path, tools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, message = _examples_cases(tmp_path)[case]
    args = ["ask", "q", "--tools", str(tools_file), "--examples", str(path), "-m", UNREACHABLE]
    code = main(args)
    one_error(capsys.readouterr(), code, message, str(path))


def test_an_unreadable_examples_file_for_a_normal_user(
    tmp_path: Path, tools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    code = main(["ask", "q", "--tools", str(tools_file), "--examples", str(path)])
    one_error(capsys.readouterr(), code, "cannot read the examples file")


# -- tools files -------------------------------------------------------------------------------

BAD_TOOLS = {
    "sys.exit(3)": ("import sys\nsys.exit(3)\n", "SystemExit(3)"),
    "sys.exit(0)": ("import sys\nsys.exit(0)\n", "SystemExit(0)"),
    "sys.exit(text)": ("import sys\nsys.exit('bye')\n", "SystemExit('bye')"),
    "KeyboardInterrupt": ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    "SystemExit": ("raise SystemExit\n", "SystemExit"),
    "GeneratorExit": ("raise GeneratorExit('gen')\n", "GeneratorExit"),
    "custom BaseException": (
        "class Doom(BaseException):\n    pass\nraise Doom('the end')\n",
        "Doom: the end",
    ),
    "BaseExceptionGroup": (
        "raise BaseExceptionGroup('many', [KeyboardInterrupt(), ValueError('v')])\n",
        "KeyboardInterrupt",
    ),
    "syntax error": ("def broken(:\n", "SyntaxError"),
    "null bytes": ("x = 1\x00\n", "null bytes"),
    "multi-line message": ("raise RuntimeError('line one\\nline two')\n", "line one line two"),
    "no tools": ("x = 1\n", "defines no tools"),
}


@pytest.mark.parametrize("case", list(BAD_TOOLS))
def test_tools_files_that_fail_to_import(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, message = BAD_TOOLS[case]
    path = tmp_path / "bad_tools.py"
    path.write_text(source)
    code = main(["ask", "q", "--tools", str(path), "-m", UNREACHABLE])
    one_error(capsys.readouterr(), code, message, str(path))
    assert main(["ask", "q", "--tools", str(path), "-m", UNREACHABLE, "--debug"]) != 0
    debug = capsys.readouterr().err
    if case != "no tools":
        assert "Traceback" in debug
    assert debug.rstrip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("case", ["folder", "device", "binary", "not UTF-8", "other suffix"])
def test_tools_paths_that_are_not_python_files(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "folder":
        path, message = tmp_path, "is a folder"
    elif case == "device":
        path, message = Path("/dev/null"), "not a regular file"
    elif case == "binary":
        path, message = tmp_path / "tools.py", "importing"
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "not UTF-8":
        path, message = tmp_path / "tools.py", "importing"
        path.write_bytes(b"x = '\xff\xfe'\n")
    else:  # a Python file with another suffix still loads; this one defines no tools
        path, message = tmp_path / "tools.txt", "defines no tools"
        path.write_text("x = 1\n")
    code = main(["ask", "q", "--tools", str(path), "-m", UNREACHABLE])
    one_error(capsys.readouterr(), code, message)


def test_a_tools_file_with_a_dataclass_and_a_suffix_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The module is registered while it runs, as dataclasses need; any suffix is Python."""
    path = tmp_path / "tools.tool"
    path.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from dagcall import tool\n\n"
        "@dataclass\nclass Point:\n    x: int\n\n"
        "@tool\ndef add(x: float, y: float) -> float:\n"
        '    """Add."""\n    return x + y\n'
    )
    scripted(monkeypatch, PLAN.replace('2. echo("five")\n', ""), ANSWER)
    assert main(["ask", "q", "--tools", str(path)]) == 0, capsys.readouterr().err
    assert "A: 5.0" in capsys.readouterr().out


@pytest.mark.parametrize(
    "raiser",
    [
        "import sys\n    sys.exit(4)",
        "raise KeyboardInterrupt",
        "raise GeneratorExit",
        "class Doom(BaseException):\n        pass\n    raise Doom('deep')",
    ],
)
def test_a_tool_that_raises_a_base_exception_while_running(
    raiser: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.py"
    path.write_text(
        f'from dagcall import tool\n\n@tool\ndef bad(x: int) -> int:\n    """Bad."""\n'
        f"    {raiser}\n"
    )
    scripted(monkeypatch, "1. bad(1)\n2. join()\n<END_OF_PLAN>", ANSWER, ANSWER)
    code = main(["ask", "q", "--tools", str(path)])
    captured = capsys.readouterr()
    if code == 0:  # the run turned the exception into the task's error and went on
        assert "A: 5.0" in captured.out
        assert "Traceback" not in captured.err
    else:
        one_error(captured, code)


# -- plot -o -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing folder", "a folder", "full disk", "unwritable"])
def test_plot_into_places_that_cannot_be_written(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = saved_run()
    target = {
        "missing folder": tmp_path / "no" / "such" / "t.png",
        "a folder": tmp_path,
        "full disk": Path("/dev/full"),
        "unwritable": Path("/proc/timeline.png"),  # no new files there, even for root
    }[case]
    code = main(["plot", run_id, "-o", str(target)])
    one_error(capsys.readouterr(), code, "cannot write the timeline", str(target))


def test_a_failed_plot_keeps_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = saved_run()
    png = tmp_path / "t.png"
    assert main(["plot", run_id, "-o", str(png)]) == 0
    before = png.read_bytes()
    capsys.readouterr()

    from matplotlib.figure import Figure

    def full_disk(self: Any, *args: Any, **kwargs: Any) -> None:
        Path(args[0]).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device", str(args[0]))

    monkeypatch.setattr(Figure, "savefig", full_disk)
    code = main(["plot", run_id, "-o", str(png)])
    one_error(capsys.readouterr(), code, "No space left on device", str(png))
    assert png.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- saving ------------------------------------------------------------------------------------


def _unwritable_data_dirs(tmp: Path) -> dict[str, Path]:
    a_file = tmp / "a_file"
    a_file.write_text("x")
    return {"a file": a_file, "read-only": Path("/proc"), "below a file": a_file / "sub"}


@pytest.mark.parametrize("where", ["a file", "read-only", "below a file"])
@pytest.mark.parametrize("as_json", [False, True])
def test_save_to_an_unwritable_data_folder_prints_the_answer_first(
    where: str,
    as_json: bool,
    tmp_path: Path,
    tools_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(_unwritable_data_dirs(tmp_path)[where]))
    scripted(monkeypatch, PLAN, ANSWER)
    code = main(["ask", "q", "--tools", str(tools_file), "--save", *(["--json"] * as_json)])
    captured = capsys.readouterr()
    one_error(captured, code, "not saved")
    if as_json:
        assert json.loads(captured.out)["answer"] == "5.0"
    else:
        assert "A: 5.0" in captured.out


def test_a_store_locked_past_the_timeout(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    saved_run()
    monkeypatch.setattr("dagcall._store.LOCK_TIMEOUT", 0.2)
    holder = sqlite3.connect(store_path(), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        scripted(monkeypatch, PLAN, ANSWER)
        code = main(["ask", "q", "--tools", str(tools_file), "--save"])
        captured = capsys.readouterr()
        one_error(captured, code, "locked by another process", str(store_path()))
        assert "A: 5.0" in captured.out
    finally:
        holder.close()


def test_a_failed_run_with_save_keeps_its_partial_result(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted(monkeypatch, PLAN)  # no joiner reply: the script runs out after the tasks ran
    code = main(["ask", "q", "--tools", str(tools_file), "--save"])
    line = one_error(capsys.readouterr(), code, "partial run was saved as")
    run_id = line.split("saved as ")[1].split()[0]
    assert main(["show", run_id]) == 0
    assert "add(2, 3)" in capsys.readouterr().out


# -- ids too large for SQLite, and text that is not valid Unicode ------------------------------

BIG_PLAN = (
    "99999999999999999999. add(1, 2)\n"
    "99999999999999999998. add(3, 4)\n"
    "100000000000000000000000000000. add($99999999999999999999, $99999999999999999998)\n"
    "5. join()\n<END_OF_PLAN>"
)


def test_task_ids_too_large_for_sqlite_are_saved_and_shown(
    tmp_path: Path,
    tools_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted(monkeypatch, BIG_PLAN, ANSWER)
    assert main(["ask", "q", "--tools", str(tools_file), "--save", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    ids = [t["id"] for t in data["tasks"]]
    assert sorted(ids) == [99999999999999999998, 99999999999999999999, 10**29]
    run_id = data["run_id"]
    assert main(["show", run_id, "--json"]) == 0
    assert [t["id"] for t in json.loads(capsys.readouterr().out)["tasks"]] == ids
    assert main(["show", run_id]) == 0
    assert "99999999999999999999. add(1, 2)" in capsys.readouterr().out
    assert main(["graph", run_id]) == 0
    assert "t99999999999999999999" in capsys.readouterr().out
    assert main(["plot", run_id, "-o", str(tmp_path / "big.png")]) == 0
    db = sqlite3.connect(store_path())
    try:
        stored = db.execute("SELECT CAST(id AS TEXT) FROM tasks ORDER BY rowid").fetchall()
    finally:
        db.close()
    assert [int(i) for (i,) in stored] == ids  # exact, and no two collapsed into one


SURROGATE_REPLIES = (
    '1. echo("\udcff and \ud800")\n2. add(1, 2)\n3. join()\n<END_OF_PLAN>',
    "Thought: \udc80 odd.\nAction: Finish(\ud800 five \udfff)",
)


@pytest.mark.parametrize("flags", [[], ["--json"], ["--save"], ["--save", "--json"]])
def test_model_text_with_lone_surrogates(
    flags: list[str],
    tmp_path: Path,
    tools_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scripted(monkeypatch, *SURROGATE_REPLIES)
    code = main(["ask", "q \udcff", "--tools", str(tools_file), *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "five" in captured.out
    if "--json" in flags:
        data = json.loads(captured.out)
        assert "five" in data["answer"]
    if "--save" not in flags:
        return
    (summary,) = RunStore().list_runs()
    for command in (["show", summary.id], ["show", summary.id, "--json"], ["graph", summary.id]):
        assert main(command) == 0
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
    assert main(["plot", summary.id, "-o", str(tmp_path / "s.png")]) == 0


def test_question_bytes_that_are_not_utf8(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    question = os.fsdecode(b"caf\xe9 cr\xe8me?")  # Latin-1 bytes on a UTF-8 system
    scripted(monkeypatch, PLAN, ANSWER)
    assert main(["ask", question, "--tools", str(tools_file), "--save"]) == 0
    out = capsys.readouterr().out
    assert "Q: caf\ufffd cr\ufffdme?" in out
    (summary,) = RunStore().list_runs()
    assert summary.question == "caf\ufffd cr\ufffdme?"


# -- odd paths, ids and options ------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id", ["zz", "", " ", "-", "0x12", "12\udcff", "1" * 500, "\x1b[31mred", "abc\ndef"]
)
@pytest.mark.parametrize("command", ["show", "graph", "plot"])
def test_run_ids_that_are_not_hex(
    command: str, run_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    saved_run()
    args = [command, "--", run_id] if run_id.startswith("-") else [command, run_id]
    code = main(args)
    line = one_error(capsys.readouterr(), code)
    assert "\x1b" not in line


@pytest.mark.parametrize("command", ["runs", "show", "graph", "plot"])
def test_no_store_yet(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = [command] if command == "runs" else [command, "abc123"]
    code = main(args)
    captured = capsys.readouterr()
    if command == "runs":
        assert code == 0
        assert "no saved runs yet" in captured.out
    else:
        one_error(captured, code, "no saved run abc123")
    assert not store_path().exists()  # reading never creates a store


@pytest.mark.parametrize("command", ["runs", "show", "graph", "plot", "save"])
@pytest.mark.parametrize("store", ["a folder", "an empty file", "newer schema", "not sqlite"])
def test_stores_that_are_not_stores(
    command: str,
    store: str,
    tools_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if store == "a folder":
        path.mkdir()
    elif store == "an empty file":
        path.write_bytes(b"")
    elif store == "newer schema":
        saved_run()
        db = sqlite3.connect(path)
        db.execute("PRAGMA user_version = 99")
        db.close()
    else:
        path.write_bytes(b"not a database at all\n" * 200)
    if command == "save":
        scripted(monkeypatch, PLAN, ANSWER)
        args = ["ask", "q", "--tools", str(tools_file), "--save"]
    else:
        args = [command] if command == "runs" else [command, "abc123"]
    code = main(args)
    captured = capsys.readouterr()
    if store == "an empty file" and command in ("runs", "save"):
        assert code == 0, captured.err  # an empty file is an empty store
        return
    message = {
        "a folder": "is a folder",
        "an empty file": "no saved run abc123",
        "newer schema": "newer dagcall",
        "not sqlite": "cannot be used as a dagcall run store",
    }[store]
    one_error(captured, code, message)
    if command == "save":
        assert "A: 5.0" in captured.out


def test_no_home_and_no_data_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DAGCALL_DATA_DIR")
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr("platformdirs.user_data_dir", lambda *a, **k: "~/.local/share/dagcall")
    for args in (["runs"], ["show", "abc"]):
        code = main(args)
        one_error(capsys.readouterr(), code, "DAGCALL_DATA_DIR")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--timeout", "nan", "NaN"),
        ("--timeout", "0", "--timeout"),
        ("--timeout", "-1", "--timeout"),
        ("--timeout", "soon", "--timeout"),
        ("--max-replans", "-1", "--max-replans"),
        ("--max-replans", "x", "--max-replans"),
        ("--tool", "nope", "--tool"),
        ("--bogus", "1", "--bogus"),
    ],
)
def test_bad_option_values_are_one_line(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["ask", "q", "--tool", "calculator", option, value])
    assert code == 2
    one_error(capsys.readouterr(), code, message)


@pytest.mark.parametrize(
    "args",
    [
        ["nosuchcommand"],
        ["ask"],
        ["show"],
        ["runs", "-n", "0"],
        ["runs", "-n", "many"],
        ["loadtest", "-n", "0"],
        ["loadtest", "--fan-out", "51"],
        ["loadtest", "--tool-latency", "nan"],
        ["loadtest", "--tokens-per-second", "nan"],
        ["bench", "--time-scale", "nan"],
        ["bench", "--workload", "nope"],
    ],
)
def test_usage_errors_of_every_command_are_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(args)
    one_error(capsys.readouterr(), code)


def test_a_huge_runs_limit_is_fine(capsys: pytest.CaptureFixture[str]) -> None:
    run_id = saved_run()
    assert main(["runs", "-n", "99999999999999999999999"]) == 0
    assert capsys.readouterr().out.startswith(run_id)


def test_timeouts_tiny_and_infinite(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scripted(monkeypatch, PLAN, ANSWER)
    code = main(["ask", "q", "--tools", str(tools_file), "--timeout", "1e-9"])
    one_error(capsys.readouterr(), code, "budget")
    scripted(monkeypatch, PLAN, ANSWER)
    assert main(["ask", "q", "--tools", str(tools_file), "--timeout", "inf"]) == 0
    assert "A: 5.0" in capsys.readouterr().out


def test_docs_that_are_a_file(tools_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ask", "q", "--docs", str(tools_file), "-m", UNREACHABLE])
    one_error(capsys.readouterr(), code, "not a folder")


def test_an_unexpected_exception_is_one_line_with_a_hint(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something\nnobody expected")

    monkeypatch.setattr(cli_module, "Compiler", broken)
    scripted(monkeypatch, PLAN, ANSWER)
    code = main(["ask", "q", "--tools", str(tools_file)])
    one_error(capsys.readouterr(), code, "RuntimeError: something nobody expected", "--debug")
    assert main(["ask", "q", "--tools", str(tools_file), "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("error: RuntimeError")


def test_output_that_cannot_be_encoded_is_replaced(
    tools_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stdout whose encoding cannot hold the answer (ASCII) gets replacements, not errors."""
    import io

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", stream)
    scripted(monkeypatch, PLAN, "Action: Finish(fünf \ud800 ✓)")
    assert main(["ask", "q", "--tools", str(tools_file)]) == 0
    assert b"A: f?nf ? ?" in raw.getvalue()


# -- stdout that cannot be written: real processes ------------------------------------------------


def _program(args: Sequence[str], env: dict[str, str], stdout: Any) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "dagcall", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=100,
        env=env,
        check=False,
    )
    return done.returncode, done.stderr


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGCALL", "OPENAI"))}
    env["DAGCALL_DATA_DIR"] = str(tmp_path / "data")
    return env


def _closed_pipe() -> int:
    """The write end of a pipe whose read end is already closed (``| head -0``)."""
    read, write = os.pipe()
    os.close(read)
    return write


COMMANDS: list[Callable[[str], list[str]]] = [
    lambda run_id: ["runs"],
    lambda run_id: ["show", run_id],
    lambda run_id: ["show", run_id, "--json"],
    lambda run_id: ["graph", run_id],
    lambda run_id: ["--help"],
    lambda run_id: ["--version"],
]


@pytest.mark.parametrize("command", range(len(COMMANDS)))
@pytest.mark.parametrize("sink", ["full disk", "closed pipe"])
def test_stdout_that_fails_as_a_real_process(
    command: int, sink: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = saved_run()
    args = COMMANDS[command](run_id)
    env = _env(tmp_path)
    if sink == "full disk":
        with open("/dev/full", "w") as full:
            code, err = _program(args, env, full)
        assert code == 1, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == [lines[0]], err
        assert lines[0].startswith("error: could not write the output"), err
    else:
        write = _closed_pipe()
        try:
            code, err = _program(args, env, write)
        finally:
            os.close(write)
        assert code != 0
        assert err == "", err  # quietly: the reader has gone
    assert "Traceback" not in err
    assert "Exception ignored" not in err


@pytest.mark.parametrize("sink", ["full disk", "closed pipe"])
def test_a_run_whose_output_fails_is_still_saved(
    sink: str, openai_server: FakeOpenAIServer, tools_file: Path, tmp_path: Path
) -> None:
    openai_server.script(Stream([PLAN]), Stream([ANSWER]))
    args = ["ask", "q", "--tools", str(tools_file), "--save"]
    args += ["-m", f"openai:test@{openai_server.base_url}"]
    env = _env(tmp_path)
    if sink == "full disk":
        with open("/dev/full", "w") as full:
            code, err = _program(args, env, full)
        (line,) = err.splitlines()
        assert line.startswith("error: could not write the output"), err
        assert "saved as" in line
        assert code == 1
    else:
        write = _closed_pipe()
        try:
            code, err = _program(args, env, write)
        finally:
            os.close(write)
        assert err == "", err
        assert code != 0
    with RunStore(tmp_path / "data" / "runs.sqlite3") as store:
        (summary,) = store.list_runs()
    assert summary.answer == "5.0"

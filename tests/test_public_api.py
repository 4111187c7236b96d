"""The public surface: exactly what __all__ lists, and the README example runs as shown."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

import dagcall

ROOT = Path(__file__).resolve().parents[1]


def test_exports_are_exactly_the_public_names() -> None:
    # Subpackages (models, tools, demo, ...) become attributes once imported; they are not names.
    public = {
        n
        for n in dir(dagcall)
        if not n.startswith("_") and not isinstance(getattr(dagcall, n), types.ModuleType)
    }
    assert public == set(dagcall.__all__) - {"__version__"}
    for name in dagcall.__all__:
        assert getattr(dagcall, name) is not None


def test_every_error_is_a_dagcall_error() -> None:
    for name in dagcall.__all__:
        obj = getattr(dagcall, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, dagcall.DagcallError), name


def test_readme_example_is_the_example_file_and_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    block = re.search(r"## A question, answered in parallel\s+```python\n(.*?)```", readme, re.S)
    assert block is not None
    assert block.group(1).strip() in example
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "answer: about 7.1% (from $2.8T to $3.0T)" in out
    assert out.count(" done ") == 3


def test_readme_leads_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("```", 2)[1]
    assert "pip install -e '.[dev,local]' && dagcall demo" in setup
    assert "python -m pytest" in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest\n" in ci
    assert "pip install -e '.[dev,local]'" in ci


def test_tests_cannot_reach_beyond_loopback() -> None:
    with socket.socket() as s, pytest.raises(ConnectionRefusedError, match="loopback"):
        s.connect(("192.0.2.1", 80))


# -- the command line and the benchmark use public names only ------------------------------------

PUBLIC_MODULES = (
    "dagcall.store",
    "dagcall.plan",
    "dagcall.viz",
    "dagcall.scaffold",
    "dagcall.tokens",
    "dagcall.pricing",
    "dagcall.mcp",
    "dagcall.langchain",
    "dagcall.telemetry",
    "dagcall.batch",
    "dagcall.ray",
)


def _imports(path: Path, package: str) -> list[tuple[str, list[str], int]]:
    """(absolute module, names imported, line) for every import in a source file."""
    import ast

    found: list[tuple[str, list[str], int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
    return found


@pytest.mark.parametrize("part", ["cli", "bench", "service"])
def test_cli_and_bench_import_only_public_names(part: str) -> None:
    """Their own private modules are theirs; of the rest of dagcall, public names only."""
    folder = ROOT / "src" / "dagcall" / part
    own = f"dagcall.{part}"
    bad: list[str] = []
    for path in sorted(folder.glob("*.py")):
        for module, names, line in _imports(path, own):  # files directly in the package
            if not module.startswith("dagcall"):
                continue
            where = f"{path.relative_to(ROOT)}:{line}"
            inside = module == own or module.startswith(own + ".")
            if not inside and any(p.startswith("_") for p in module.split(".")):
                bad.append(f"{where}: imports from the private module {module}")
            if not inside:
                bad += [f"{where}: imports the private name {n}" for n in names if _private(n)]
    assert bad == []


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_list_what_they_export(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__
    for name in mod.__all__:
        assert not name.startswith("_")
        assert getattr(mod, name) is not None, name


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

"""The README's examples of tools from elsewhere (MCP servers, LangChain) run as shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)


def _block(marker: str) -> str:
    (found,) = [b for b in BLOCKS if marker in b]
    return found


@pytest.mark.parametrize(
    ("marker", "needs", "printed"),
    [
        ("from dagcall.mcp import MCPToolset", "mcp_server_time", "['20"),
        ("from dagcall.langchain import LangChainToolset", "langchain_core", "[2.1, 14.0]"),
    ],
)
def test_the_example_runs(marker: str, needs: str, printed: str) -> None:
    pytest.importorskip(needs)
    done = subprocess.run(
        [sys.executable, "-c", _block(marker)], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert printed in done.stdout

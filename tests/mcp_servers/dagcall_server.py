"""dagcall as an MCP server over stdio, for the tests: ``dagcall.mcp.serve`` with a compiler
whose tools come from a tools file (as ``dagcall mcp-serve --tools FILE.py`` loads them) and
whose model is scripted: it plans from the question and answers from the observations.

``python dagcall_server.py TOOLS.py [--mcp COMMAND]... [--timeout S]``
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagcall import BaseTool, Compiler, Message, ScriptedModel
from dagcall.mcp import from_spec, serve


def load_tools_file(path: Path) -> list[BaseTool]:
    """The tools a Python file defines (what ``--tools FILE.py`` gives the CLI)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [value for value in vars(module).values() if isinstance(value, BaseTool)]


def reply(messages: Sequence[Message]) -> str:
    prompt = messages[-1].content
    question = re.findall(r"Question: (.*)", prompt)
    asked = question[-1] if question else ""
    if "Round 1:" not in prompt:
        if "slow" in asked:
            return "1. slow(5)\n2. join()\n<END_OF_PLAN>"
        if "time" in asked:
            return '1. get_current_time("Asia/Tokyo")\n2. join()\n<END_OF_PLAN>'
        return '1. population("Paris")\n2. population("Tokyo")\n3. join()\n<END_OF_PLAN>'
    values = [int(v) for v in re.findall(r'status="done">(\d+)</observation>', prompt)]
    if values:
        return f"Thought: both known.\nAction: Finish(together {sum(values)} people)"
    zone = re.search(r'"timezone":\s*"([^"]+)"', prompt)
    return f"Thought: known.\nAction: Finish(it is {zone[1] if zone else '?'} time)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tools", type=Path)
    parser.add_argument("--mcp", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=None)
    options = parser.parse_args()
    tools: list[Any] = list(load_tools_file(options.tools))
    tools += [from_spec(spec) for spec in options.mcp]
    compiler = Compiler(model=ScriptedModel(reply), tools=tools)
    serve(compiler, timeout=options.timeout)


if __name__ == "__main__":
    main()

"""Real runs for tests of what is built on RunResult (store, plots, graphs)."""

from __future__ import annotations

import asyncio

from dagcall import Compiler, RunResult, ScriptedModel, tool


@tool
async def fetch(key: str) -> str:
    """Fetch a value."""
    await asyncio.sleep(0.01)
    if key == "broken":
        raise RuntimeError("backend down")
    return f"value of {key}"


def sample_run() -> RunResult:
    """Two rounds: parallel tasks, a dependent, a failure with a skipped dependent, a replan."""
    model = ScriptedModel(
        [
            'Thought: two at once.\n1. fetch("a")\n2. fetch("b")\n3. fetch("$1 and $2")\n'
            '4. fetch("broken")\n5. fetch("after $4")\n6. join()',
            "Thought: need c.\nAction: Replan(fetch c)",
            '7. fetch("c from $1")\n8. join()',
            'Action: Finish(c = "value of c")',
        ]
    )
    return Compiler(model=model, tools=[fetch]).run('What is "c" <really>?')

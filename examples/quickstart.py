"""The README's example: a two-look-up question answered offline with ScriptedModel.

Run it with ``python examples/quickstart.py``.  Swap the ScriptedModel for a real model
(``Compiler(model="openai:gpt-4o-mini", ...)``) and the same code plans with an LLM.
"""

import asyncio

from dagcall import Compiler, ScriptedModel, tool

MARKET_CAPS = {"apple": 3.0e12, "microsoft": 2.8e12}


@tool
async def search(query: str) -> str:
    """Look the query up and return the first paragraph."""
    await asyncio.sleep(0.5)  # a web API's latency
    company = query.split()[0].lower()
    return f"{company.title()} is worth ${MARKET_CAPS[company]:.3g}."


@tool
def math(expression: str, context: list[str] | None = None) -> float:
    """Evaluate an arithmetic expression; context holds earlier results it may refer to."""
    # A real math tool parses the expression safely; this one knows the single question.
    return MARKET_CAPS["apple"] / MARKET_CAPS["microsoft"] - 1


# The planner and joiner replies a real LLM would stream, 60 tokens per second.
model = ScriptedModel(
    [
        "Thought: The two market caps are independent look-ups.\n"
        '1. search("Apple market cap")\n'
        '2. search("Microsoft market cap")\n'
        "Thought: The growth needed is the ratio minus one.\n"
        '3. math("$1 / $2 - 1", context=["$1", "$2"])\n'
        "4. join()\n"
        "<END_OF_PLAN>",
        "Thought: Apple is worth 3.0 trillion and Microsoft 2.8 trillion.\n"
        "Action: Finish(about 7.1% (from $2.8T to $3.0T))",
    ],
    time_to_first_token=0.2,
    tokens_per_second=60,
)

compiler = Compiler(model=model, tools=[search, math])
result = compiler.run("How much would Microsoft's market cap need to grow to pass Apple's?")

print("answer:", result.answer)
for task in result.tasks:
    print(
        f"  task {task.id} {task.call:<55} {task.status.value:<6} "
        f"{task.started_at:5.2f}s → {task.ended_at:5.2f}s  {task.output!r}"
    )
for c in result.usage:
    print(f"  {c.role:<8} {c.input_tokens:>4} in {c.output_tokens:>3} out {c.latency:.2f}s")
print(f"wall time {result.wall_time:.2f}s")

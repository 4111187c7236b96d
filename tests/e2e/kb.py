"""The end-to-end questions: the bundled demo scenario, checked for the right answers."""

from __future__ import annotations

from dagcall.demo import EXAMPLES, demo_tools, height, population

__all__ = ["EXAMPLES", "QUESTIONS", "TOOLS", "height", "population"]

TOOLS = demo_tools()

# (question, the right answer: a number within 1%, or a name the answer must contain)
QUESTIONS: list[tuple[str, float | str]] = [
    ("What is the combined height in metres of the Eiffel Tower and the Statue of Liberty?", 423.0),
    ("How many more people live in Germany than in France?", 14_800_000.0),
    ("Which is taller, the Eiffel Tower or Big Ben?", "eiffel tower"),
]

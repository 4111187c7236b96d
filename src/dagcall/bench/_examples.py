"""One worked example per workload, written in each system's own format.

Every system gets the same example (the same question, look-ups and answer), so no system's
prompt is longer for want of one; the movie example is the dataset's record "0", which the
paper also used in its prompts and which is left out of the scored questions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["EXAMPLES", "examples_for"]


@dataclass(frozen=True)
class Example:
    question: str
    calls: tuple[tuple[str, str, tuple[int, ...]], ...]  # (tool, argument, deps)
    observations: tuple[str, ...]
    react_math: dict[int, str]  # task -> the arithmetic a model that saw the numbers writes
    answer: str


_EXAMPLES = {
    "parallelqa": Example(
        question="If Mount Everest were 10% shorter and K2 were 5% taller, which would be taller?",
        calls=(
            ("search", "Mount Everest", ()),
            ("search", "K2", ()),
            ("math", "Height of Mount Everest if it were 10% shorter", (1,)),
            ("math", "Height of K2 if it were 5% taller", (2,)),
        ),
        observations=(
            "Mount Everest is Earth's highest mountain above sea level, in the Mahalangur "
            "Himal of the Himalayas; its elevation is 8,849 metres.",
            "K2 is the second-highest mountain on Earth, in the Karakoram range on the "
            "China-Pakistan border; its elevation is 8,611 metres.",
            "7964.1",
            "9041.55",
        ),
        react_math={3: "8849 * (1 - 10/100)", 4: "8611 * (1 + 5/100)"},
        answer="K2",
    ),
    "hotpotqa": Example(
        question="Were Pablo Picasso and Salvador Dalí of the same nationality?",
        calls=(("search", "Pablo Picasso", ()), ("search", "Salvador Dalí", ())),
        observations=(
            "Pablo Picasso (1881-1973) was a Spanish painter and sculptor who spent most of "
            "his adult life in France; he co-founded Cubism.",
            "Salvador Dalí (1904-1989) was a Spanish surrealist artist from Figueres, "
            "Catalonia, known for The Persistence of Memory.",
        ),
        react_math={},
        answer="yes",
    ),
    "movies": Example(
        question="Find a movie similar to Mission Impossible, The Silence of the Lambs, "
        "American Beauty, Star Wars Episode IV - A New Hope\nOptions:\nAustin Powers "
        "International Man of Mystery\nAlesha Popovich and Tugarin the Dragon\nIn Cold Blood\n"
        "Rosetta",
        calls=(
            ("search", "Mission Impossible", ()),
            ("search", "The Silence of the Lambs", ()),
            ("search", "American Beauty", ()),
            ("search", "Star Wars Episode IV - A New Hope", ()),
        ),
        observations=(
            "Mission: Impossible is a 1996 American action spy film directed by Brian De Palma.",
            "The Silence of the Lambs is a 1991 American psychological horror thriller "
            "directed by Jonathan Demme.",
            "American Beauty is a 1999 American drama film directed by Sam Mendes.",
            "Star Wars (Episode IV - A New Hope) is a 1977 American epic space opera film "
            "written and directed by George Lucas.",
        ),
        react_math={},
        answer="Austin Powers International Man of Mystery",
    ),
}


def _arg(tool: str, text: str, deps: tuple[int, ...]) -> str:
    if tool == "math" and deps:
        refs = ", ".join(f'"${d}"' for d in deps)
        return f"{tool}({json.dumps(text)}, context=[{refs}])"
    return f"{tool}({json.dumps(text)})"


def _dagcall(ex: Example) -> str:
    lines = [f"Question: {ex.question}"]
    lines += [f"{i}. {_arg(t, a, d)}" for i, (t, a, d) in enumerate(ex.calls, 1)]
    lines += [f"{len(ex.calls) + 1}. join()", "<END_OF_PLAN>"]
    return "Here is an example:\n\n" + "\n".join(lines)


def _react(ex: Example) -> str:
    lines = [f"Question: {ex.question}"]
    for i, ((tool, arg, _), obs) in enumerate(zip(ex.calls, ex.observations, strict=True), 1):
        value = ex.react_math.get(i, arg)
        lines += [
            f"Thought: I need {'to compute' if tool == 'math' else 'to look up'} {arg}.",
            f"Action: {tool}({json.dumps(value)})",
            f"Observation: {obs}",
        ]
    lines += ["Thought: I now know the answer.", f"Action: Finish({ex.answer})"]
    return "Here is an example:\n\n" + "\n".join(lines)


def _parallel(ex: Example) -> str:
    level: dict[int, int] = {}
    for i, (_, _, deps) in enumerate(ex.calls, 1):
        level[i] = 1 + max((level[d] for d in deps), default=-1)
    lines = [f"Question: {ex.question}"]
    for depth in range(max(level.values()) + 1):
        ids = [i for i in level if level[i] == depth]
        calls = [
            {
                "name": ex.calls[i - 1][0],
                "arguments": {
                    "problem" if ex.calls[i - 1][0] == "math" else "query": ex.react_math.get(
                        i, ex.calls[i - 1][1]
                    )
                },
            }
            for i in ids
        ]
        lines.append(json.dumps({"tool_calls": calls}, ensure_ascii=False))
        results = "\n".join(
            f'<observation task="{i}" status="done">{ex.observations[i - 1]}</observation>'
            for i in ids
        )
        lines.append(f"Tool results:\n{results}")
    lines.append(json.dumps({"answer": ex.answer}, ensure_ascii=False))
    return "Here is an example:\n\n" + "\n".join(lines)


EXAMPLES: dict[str, dict[str, str]] = {
    workload: {"dagcall": _dagcall(ex), "react": _react(ex), "parallel-fc": _parallel(ex)}
    for workload, ex in _EXAMPLES.items()
}


def examples_for(workload: str) -> dict[str, str]:
    """The example of ``workload`` for each system (empty when it has none)."""
    return EXAMPLES.get(workload, {})

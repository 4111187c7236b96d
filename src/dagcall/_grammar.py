"""A GBNF grammar of the plan language for the registered tools.

Models that support grammar-constrained decoding (llama.cpp) can then only write plans that
parse: numbered calls of registered tools with their own keyword names, literal arguments and
``$N`` references (with field access: ``$N.field``, ``$N[0]``, ``$N["key"]``), optional
``Thought:`` lines, and a final ``join()``.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Sequence

from ._tools import BaseTool

__all__ = ["joiner_grammar", "plan_grammar"]

_COMMON = r"""
thought ::= "Thought: " [^\n]+ "\n"
num ::= [1-9] [0-9]?
ws ::= " "?
value ::= string | number | ref | list | dict | "True" | "False" | "None"
string ::= "\"" char* "\""
char ::= [^"\\\n] | "\\" ["\\/nt]
number ::= "-"? [0-9]+ ("." [0-9]+)?
ref ::= "$" [1-9] [0-9]? access*
access ::= "." [A-Za-z_] [A-Za-z0-9_]* | "[" "-"? [0-9]+ "]" | "[" string "]"
list ::= "[" ws (value ("," ws value)*)? ws "]"
dict ::= "{" ws (string ":" ws value ("," ws string ":" ws value)*)? ws "}"
"""


def _lit(text: str) -> str:
    # UTF-8 as it is: a \\u escape of a character outside the BMP would be two surrogates,
    # which no model output can match
    return json.dumps(text, ensure_ascii=False)


def plan_grammar(tools: Sequence[BaseTool], *, max_tasks: int = 20) -> str:
    """The GBNF grammar of plans over ``tools``, with at most ``max_tasks`` tasks.

    Keyword arguments are the names of each tool's arguments schema that a Python call can
    use (identifiers); any argument may be given by position."""
    if not tools:
        raise ValueError("a plan grammar needs at least one tool")
    calls: list[str] = []
    rules: list[str] = []
    for i, t in enumerate(tools):
        rule = f"call{i}"
        calls.append(rule)
        names = t.parameter_names
        if names:
            usable = [n for n in names if n.isidentifier() and not keyword.iskeyword(n)]
            kw = " | ".join(_lit(n + "=") for n in usable)
            rules.append(f"{rule}-arg ::= ({kw})? value" if kw else f"{rule}-arg ::= value")
            rules.append(f'{rule} ::= {_lit(t.name + "(")} ({rule}-arg ("," ws {rule}-arg)*)? ")"')
        else:
            rules.append(f"{rule} ::= {_lit(t.name + '()')}")
    head = [
        f'root ::= (thought? task){{1,{max_tasks}}} thought? num ". join(" answer? ")\\n"',
        'answer ::= "\\"$" [1-9] [0-9]? "\\""',
        'task ::= num ". " call "\\n"',
        "call ::= " + " | ".join(calls),
    ]
    return "\n".join(head + rules) + _COMMON


def joiner_grammar(*, may_replan: bool, answers: Sequence[str] = ()) -> str:
    """The GBNF grammar of a joiner's reply: one ``Thought:`` line, then ``Action:
    Finish(...)`` (or, when ``may_replan``, ``Replan(...)``) on one line, so a small model
    cannot drift into prose, a second answer or an action that is not allowed.  With
    ``answers`` (the options a question lists) ``Finish`` holds exactly one of them."""
    finish = (
        '"Finish(" (' + " | ".join(_lit(a) for a in answers) + ') ")"'
        if answers
        else '"Finish(" line'
    )
    action = f'{finish} | "Replan(" line' if may_replan else finish
    return "\n".join(
        [
            'root ::= "Thought: " line "\\nAction: " action',
            f"action ::= {action}",
            "line ::= [^\\n]+",
        ]
    )

"""Built-in tools."""

from ._arithmetic import ExpressionError, calculator, evaluate
from ._docs import DocsIndex, docs_tool
from ._math import math_tool
from ._wikipedia import wikipedia, wikipedia_tool

__all__ = [
    "DocsIndex",
    "ExpressionError",
    "calculator",
    "docs_tool",
    "evaluate",
    "math_tool",
    "wikipedia",
    "wikipedia_tool",
]

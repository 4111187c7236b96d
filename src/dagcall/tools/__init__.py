"""Built-in tools."""

from ._arithmetic import ExpressionError, calculator, evaluate

__all__ = ["ExpressionError", "calculator", "evaluate"]

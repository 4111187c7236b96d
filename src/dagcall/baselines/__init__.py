"""Baselines that dagcall is measured against, on the same models and tools."""

from ._parallel import ParallelFunctionCallingAgent, parse_tool_reply
from ._react import ReActAgent

__all__ = ["ParallelFunctionCallingAgent", "ReActAgent", "parse_tool_reply"]

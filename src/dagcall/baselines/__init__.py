"""Baselines that dagcall is measured against, on the same models and tools."""

from ._react import ReActAgent

__all__ = ["ReActAgent"]

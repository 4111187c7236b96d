"""dagcall: compile a question into a graph of function calls and run it in parallel.

An implementation of *An LLM Compiler for Parallel Function Calling* (Kim et al., ICML 2024):
a planner model streams a plan of tool calls, a task fetching unit starts each call as soon as
its line is parsed and its inputs are ready, and a joiner model answers from the results or
asks for a new plan.
"""

from ._compiler import Compiler
from ._context import ToolContext, call_model, current_tool_context
from ._errors import (
    ApprovalError,
    BadReferenceError,
    BudgetError,
    DagcallError,
    DependencyError,
    DuplicateTaskError,
    ModelConnectionError,
    ModelError,
    ModelHTTPError,
    ModelNotAvailableError,
    ModelStreamError,
    PlanError,
    PlanSyntaxError,
    RunTimeoutError,
    ScriptExhaustedError,
    ToolArgumentError,
    ToolDefinitionError,
    ToolError,
    ToolExecutionError,
    ToolTimeoutError,
    UnknownToolError,
    UsageError,
)
from ._joiner import JoinerDecision, parse_joiner
from ._plan import END_OF_PLAN, PlanParser, Ref, TaskSpec, Template, parse_plan
from ._result import LLMCall, Round, RunEvent, RunResult, TaskRecord, TaskStatus
from ._tools import Tool, tool
from .models import Message, Model, ScriptedModel, TokenUsage, resolve_model

__version__ = "0.1.0"

__all__ = [
    "END_OF_PLAN",
    "ApprovalError",
    "BadReferenceError",
    "BudgetError",
    "Compiler",
    "DagcallError",
    "DependencyError",
    "DuplicateTaskError",
    "JoinerDecision",
    "LLMCall",
    "Message",
    "Model",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelNotAvailableError",
    "ModelStreamError",
    "PlanError",
    "PlanParser",
    "PlanSyntaxError",
    "Ref",
    "Round",
    "RunEvent",
    "RunResult",
    "RunTimeoutError",
    "ScriptExhaustedError",
    "ScriptedModel",
    "TaskRecord",
    "TaskSpec",
    "TaskStatus",
    "Template",
    "TokenUsage",
    "Tool",
    "ToolArgumentError",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolTimeoutError",
    "UnknownToolError",
    "UsageError",
    "__version__",
    "call_model",
    "current_tool_context",
    "parse_joiner",
    "parse_plan",
    "resolve_model",
    "tool",
]

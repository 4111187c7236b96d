"""dagcall: compile a question into a graph of function calls and run it in parallel.

An implementation of *An LLM Compiler for Parallel Function Calling* (Kim et al., ICML 2024):
a planner model streams a plan of tool calls, a task fetching unit starts each call as soon as
its line is parsed and its inputs are ready, and a joiner model answers from the results or
asks for a new plan.
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from ._cache import CallCache, MemoryCallCache, SQLiteCallCache
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
    from ._executor import AsyncioExecutor, Executor, Invocation, Outcome
    from ._exemplars import ExampleBank
    from ._joiner import JoinerDecision, answer_text, parse_joiner
    from ._optimize import LatencyEstimates, Optimizations
    from ._plan import END_OF_PLAN, PlanParser, Ref, TaskSpec, Template, parse_plan
    from ._plancache import PlanCache, PlanHit
    from ._result import (
        LLMCall,
        Round,
        RunEvent,
        RunResult,
        StopReason,
        TaskRecord,
        TaskStatus,
        json_safe,
        observation_text,
    )
    from ._tools import BaseTool, Tool, tool
    from ._toolsets import DelegatingTool, SchemaTool, Toolset
    from .models import (
        Message,
        Model,
        ScriptedModel,
        TokenUsage,
        register_model_provider,
        resolve_model,
    )

__version__ = "0.1.0"

# Where each public name lives: imported on first use, so that ``import dagcall`` (and the
# errors, which every caller needs) stay quick; ``from dagcall import Compiler`` imports the
# engine, and the provider SDKs are imported only when a model of theirs is made.
_LAZY = {
    "CallCache": "._cache",
    "MemoryCallCache": "._cache",
    "PlanCache": "._plancache",
    "ExampleBank": "._exemplars",
    "PlanHit": "._plancache",
    "SQLiteCallCache": "._cache",
    "LatencyEstimates": "._optimize",
    "Optimizations": "._optimize",
    "Compiler": "._compiler",
    "ToolContext": "._context",
    "call_model": "._context",
    "current_tool_context": "._context",
    "ApprovalError": "._errors",
    "BadReferenceError": "._errors",
    "BudgetError": "._errors",
    "DagcallError": "._errors",
    "DependencyError": "._errors",
    "DuplicateTaskError": "._errors",
    "ModelConnectionError": "._errors",
    "ModelError": "._errors",
    "ModelHTTPError": "._errors",
    "ModelNotAvailableError": "._errors",
    "ModelStreamError": "._errors",
    "PlanError": "._errors",
    "PlanSyntaxError": "._errors",
    "RunTimeoutError": "._errors",
    "ScriptExhaustedError": "._errors",
    "ToolArgumentError": "._errors",
    "ToolDefinitionError": "._errors",
    "ToolError": "._errors",
    "ToolExecutionError": "._errors",
    "ToolTimeoutError": "._errors",
    "UnknownToolError": "._errors",
    "UsageError": "._errors",
    "AsyncioExecutor": "._executor",
    "Executor": "._executor",
    "Invocation": "._executor",
    "Outcome": "._executor",
    "JoinerDecision": "._joiner",
    "parse_joiner": "._joiner",
    "answer_text": "._joiner",
    "END_OF_PLAN": "._plan",
    "PlanParser": "._plan",
    "Ref": "._plan",
    "TaskSpec": "._plan",
    "Template": "._plan",
    "parse_plan": "._plan",
    "LLMCall": "._result",
    "Round": "._result",
    "RunEvent": "._result",
    "RunResult": "._result",
    "StopReason": "._result",
    "TaskRecord": "._result",
    "TaskStatus": "._result",
    "json_safe": "._result",
    "observation_text": "._result",
    "BaseTool": "._tools",
    "Tool": "._tools",
    "tool": "._tools",
    "DelegatingTool": "._toolsets",
    "SchemaTool": "._toolsets",
    "Toolset": "._toolsets",
    "Message": ".models",
    "Model": ".models",
    "ScriptedModel": ".models",
    "TokenUsage": ".models",
    "register_model_provider": ".models",
    "resolve_model": ".models",
}


_SUBPACKAGES = frozenset(
    {
        "baselines",
        "bench",
        "cli",
        "demo",
        "models",
        "plan",
        "pricing",
        "prompts",
        "scaffold",
        "service",
        "store",
        "telemetry",
        "tokens",
        "tools",
        "viz",
    }
)


def __getattr__(name: str) -> object:
    from importlib import import_module

    if name in _SUBPACKAGES:  # ``import dagcall; dagcall.models`` as when it was eager
        return import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "END_OF_PLAN",
    "ApprovalError",
    "AsyncioExecutor",
    "BadReferenceError",
    "BaseTool",
    "BudgetError",
    "CallCache",
    "Compiler",
    "DagcallError",
    "DelegatingTool",
    "DependencyError",
    "DuplicateTaskError",
    "ExampleBank",
    "Executor",
    "Invocation",
    "JoinerDecision",
    "LLMCall",
    "LatencyEstimates",
    "MemoryCallCache",
    "Message",
    "Model",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelNotAvailableError",
    "ModelStreamError",
    "Optimizations",
    "Outcome",
    "PlanCache",
    "PlanError",
    "PlanHit",
    "PlanParser",
    "PlanSyntaxError",
    "Ref",
    "Round",
    "RunEvent",
    "RunResult",
    "RunTimeoutError",
    "SQLiteCallCache",
    "SchemaTool",
    "ScriptExhaustedError",
    "ScriptedModel",
    "StopReason",
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
    "Toolset",
    "UnknownToolError",
    "UsageError",
    "__version__",
    "answer_text",
    "call_model",
    "current_tool_context",
    "json_safe",
    "observation_text",
    "parse_joiner",
    "parse_plan",
    "register_model_provider",
    "resolve_model",
    "tool",
]

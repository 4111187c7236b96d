"""The dagcall exception tree.

Errors are split by who is at fault, so callers can act on them::

    DagcallError
    ├── UsageError               misuse of the library by the developer (bad config, wrong call)
    │   ├── ToolDefinitionError  a function that cannot become a tool
    │   └── ModelNotAvailableError  a model, its extra or its weights are not installed
    ├── PlanError                the planner model wrote something that is not a valid plan
    │   ├── PlanSyntaxError      a task line that does not parse as ``N. tool(literal args)``
    │   ├── UnknownToolError     a task calls a tool that is not registered
    │   ├── DuplicateTaskError   two tasks share an id
    │   └── BadReferenceError    ``$N`` / ``${N}`` naming a task that is not earlier in the plan
    ├── ToolError                a task could not produce a result
    │   ├── ToolArgumentError    arguments failed the tool's schema
    │   ├── ToolTimeoutError     the tool ran past its timeout
    │   ├── ToolExecutionError   the tool raised
    │   ├── DependencyError      a task was skipped because a task it needs did not finish
    │   └── ApprovalError        a side-effecting task was not approved
    ├── ModelError               a model provider failed
    │   ├── ModelConnectionError the provider could not be reached or timed out
    │   ├── ModelHTTPError       the provider answered with an error status (``status_code``)
    │   ├── ModelStreamError     a stream was cut or malformed
    │   └── ScriptExhaustedError a ScriptedModel was called more often than it was scripted
    └── BudgetError              a run exceeded a limit (``limit`` names it); ``result`` is partial
        └── RunTimeoutError      the run's wall-time budget ran out

Exceptions never log or act; they carry what failed.  Errors raised out of a run carry the
partial :class:`~dagcall.RunResult` as ``result`` (``None`` when nothing ran yet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._result import RunResult

__all__ = [
    "ApprovalError",
    "BadReferenceError",
    "BudgetError",
    "DagcallError",
    "DependencyError",
    "DuplicateTaskError",
    "ModelConnectionError",
    "ModelError",
    "ModelHTTPError",
    "ModelNotAvailableError",
    "ModelStreamError",
    "PlanError",
    "PlanSyntaxError",
    "RunTimeoutError",
    "ScriptExhaustedError",
    "ToolArgumentError",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolTimeoutError",
    "UnknownToolError",
    "UsageError",
]


class DagcallError(Exception):
    """Base class of every error dagcall raises or records."""

    result: RunResult | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(DagcallError):
    """The library was used wrongly: fix the calling code or configuration."""


class ToolDefinitionError(UsageError):
    """A function could not be turned into a tool."""


class ModelNotAvailableError(UsageError):
    """A model cannot be used here: its extra or its weights are not installed."""


class PlanError(DagcallError):
    """The planner wrote something that is not a valid plan line.

    ``line`` is the offending plan text and ``task_id`` the task number when one could be read.
    """

    def __init__(self, message: str, *, line: str = "", task_id: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.task_id = task_id


class PlanSyntaxError(PlanError):
    """A task line that does not parse as ``N. tool(literal, key=literal)``."""


class UnknownToolError(PlanError):
    """A task names a tool that is not registered."""


class DuplicateTaskError(PlanError):
    """A task id was used twice."""


class BadReferenceError(PlanError):
    """A reference names a task that is missing, later, or the task itself."""


class ToolError(DagcallError):
    """A task did not produce a result.  ``tool`` and ``task_id`` say which."""

    def __init__(self, message: str, *, tool: str = "", task_id: int | None = None) -> None:
        super().__init__(message)
        self.tool = tool
        self.task_id = task_id


class ToolArgumentError(ToolError):
    """The arguments did not satisfy the tool's signature or schema."""


class ToolTimeoutError(ToolError):
    """The tool did not finish within its timeout."""


class ToolExecutionError(ToolError):
    """The tool raised; the original exception is ``__cause__``."""


class DependencyError(ToolError):
    """The task was skipped because a task it depends on failed, was skipped or cancelled."""


class ApprovalError(ToolError):
    """A tool with side effects was not approved to run."""


class ModelError(DagcallError):
    """A model call failed.  ``model`` names the model."""

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        self.model = model


class ModelConnectionError(ModelError):
    """The provider could not be reached, or did not answer in time."""


class ModelHTTPError(ModelError):
    """The provider answered with an error status."""

    def __init__(self, message: str, *, model: str = "", status_code: int) -> None:
        super().__init__(message, model=model)
        self.status_code = status_code


class ModelStreamError(ModelError):
    """The provider's stream was cut or carried data that could not be read."""


class ScriptExhaustedError(ModelError):
    """A ScriptedModel was called more often than it has scripted responses."""


class BudgetError(DagcallError):
    """A run exceeded one of its limits; ``limit`` names it and ``result`` holds what was done."""

    def __init__(self, message: str, *, limit: str, value: Any = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class RunTimeoutError(BudgetError):
    """The run's wall-time budget ran out; everything outstanding was cancelled."""

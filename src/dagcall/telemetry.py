"""OpenTelemetry traces of runs, following the GenAI semantic conventions.

A finished run (a :class:`~dagcall.RunResult`, partial or not) becomes one trace::

    invoke_agent dagcall                 the run: start_time → start_time + wall_time
    ├── plan dagcall                     one per round: its planner call
    │   └── chat {planner model}
    ├── execute_tool {tool}              one per task, tool call id = task id
    │   └── chat {model}                 a tool's own model calls (``dagcall.call_model``)
    ├── chat {joiner model}              the round's joiner call
    └── ...                              the next round, after a replan

Spans are made after the run, from the result's exact times (``start_time`` plus each
record's offsets), with explicit parents, so nothing depends on which task or thread was
current while the run went on and any number of concurrent runs stay apart.

:func:`trace_run` records one result; :class:`Tracing` is an ``on_event`` handler that
records the run at its ``finished`` event (and can pass every event on to another handler);
:func:`instrument` wraps an agent so that all its runs are traced; :func:`configure_from_env`
installs an SDK tracer provider exporting over OTLP/HTTP where the standard ``OTEL_*``
variables point.  Message contents (the question, plans, answers, tool arguments and
results, error messages) are recorded only with ``capture_content=True``.

Tracing needs the ``otel`` extra (``pip install 'dagcall[otel]'``); importing this module
does not, and ``import dagcall`` never imports OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ._errors import BudgetError, ModelError, RunTimeoutError, UsageError
from ._result import (
    LLMCall,
    Round,
    RunEvent,
    RunResult,
    StopReason,
    TaskRecord,
    TaskStatus,
    json_safe,
)

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "CONTENT_MAX_CHARS",
    "InstrumentedAgent",
    "Tracing",
    "configure_from_env",
    "instrument",
    "trace_run",
]

#: At most this many characters of each content attribute (its JSON text) are recorded.
CONTENT_MAX_CHARS = 100_000
#: Stop reasons that make the run's span an error (``cancelled`` and the step limits are not).
ERROR_STOPS = frozenset({StopReason.ERROR, StopReason.TIMEOUT, StopReason.BUDGET})
#: Task statuses whose ``execute_tool`` span is an error.
FAILED_TASKS = frozenset({TaskStatus.FAILED})

_INSTRUMENTATION = "dagcall"
_EXTRA_HINT = "pip install 'dagcall[otel]'"

EventHandler = Callable[[RunEvent], None]


def _require_api() -> None:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        raise UsageError(
            f"tracing runs needs OpenTelemetry, which the otel extra installs: {_EXTRA_HINT}"
        ) from None


# -- spans from a result -------------------------------------------------------------------


def trace_run(
    result: RunResult,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool = False,
    agent_name: str = "dagcall",
    parent: Context | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    tasks_under_plan: bool = False,
) -> None:
    """Record ``result`` (a finished run, or the partial run an error carries as
    ``.result``) as one trace of spans with the run's own times.

    ``tracer_provider`` defaults to the global one (so the application's OpenTelemetry
    setup applies; with none installed nothing is recorded).  ``parent`` is the context the
    run's span is a child of (default: the current one, so a run traced inside a request's
    span joins its trace; pass ``opentelemetry.context.Context()`` for a trace of its own).
    ``attributes`` are added to the run's span (a service's run id, say).
    ``capture_content`` records the question, plans, joiner replies, the answer, tool
    arguments, results and error messages (never recorded without it).  Tasks' spans are
    children of the run's span, as the GenAI conventions have it (siblings of the ``plan``
    spans); ``tasks_under_plan=True`` makes them children of their round's ``plan`` span.
    """
    _require_api()
    from opentelemetry import trace

    tracer = trace.get_tracer(_INSTRUMENTATION, _version(), tracer_provider=tracer_provider)
    _Recorder(
        tracer,
        result,
        capture_content=capture_content,
        agent_name=agent_name,
        tasks_under_plan=tasks_under_plan,
    ).record(parent, attributes or {})


def _version() -> str:
    from . import __version__

    return __version__


class _Recorder:
    """The spans of one run, made in one pass (children end before their parents)."""

    def __init__(
        self,
        tracer: Tracer,
        result: RunResult,
        *,
        capture_content: bool,
        agent_name: str,
        tasks_under_plan: bool,
    ) -> None:
        self.tracer = tracer
        self.result = result
        self.content = capture_content
        self.agent = agent_name
        self.tasks_under_plan = tasks_under_plan
        self.base = Fraction(_finite(result.start_time))

    def ns(self, offset: float | None) -> int:
        """Unix nanoseconds of a time ``offset`` seconds after the run started (exactly
        what the floats say, rounded once)."""
        return round((self.base + Fraction(_finite(offset or 0.0))) * 1_000_000_000)

    def record(self, parent: Context | None, extra: Mapping[str, AttributeValue]) -> None:
        from opentelemetry import trace

        run = self.result
        rounds = {r.index: r for r in run.rounds}
        calls = sorted(run.usage, key=lambda c: (c.started_at, c.ended_at))
        planners = [c for c in calls if c.role == "planner"]
        first_model = planners[0].model if planners else (calls[0].model if calls else "")
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.agent,
        }
        if first_model:
            provider, model = _provider_and_model(first_model)
            attrs["gen_ai.provider.name"] = provider
            attrs["gen_ai.request.model"] = model
        attrs.update(
            {
                "gen_ai.usage.input_tokens": run.input_tokens,
                "gen_ai.usage.output_tokens": run.output_tokens,
                "dagcall.stop_reason": str(run.stop_reason),
                "dagcall.rounds": len(run.rounds),
                "dagcall.tasks": len(run.tasks),
                "dagcall.tasks.failed": sum(t.status in FAILED_TASKS for t in run.tasks),
                "dagcall.llm_calls": len(run.usage),
                "dagcall.usage.estimated": any(c.estimated for c in run.usage),
                "dagcall.wall_time": float(run.wall_time),
            }
        )
        if self.content:
            attrs["gen_ai.input.messages"] = _messages("user", run.question)
            if run.answer:
                attrs["gen_ai.output.messages"] = _messages("assistant", run.answer, "stop")
        attrs.update(extra)
        agent = self.tracer.start_span(
            f"invoke_agent {self.agent}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes=attrs,
            start_time=self.ns(0.0),
        )
        agent_ctx = trace.set_span_in_context(agent)
        try:
            plan_ctx: dict[int, Context] = {}
            plan_spans: list[Span] = []
            for index in sorted({c.round for c in planners}):
                mine = [c for c in planners if c.round == index]
                span = self.plan_span(rounds.get(index), index, mine, agent_ctx)
                plan_spans.append(span)
                ctx = trace.set_span_in_context(span)
                plan_ctx[index] = ctx
                for call in mine:
                    self.chat_span(call, ctx, calls, rounds)
            tool_calls: dict[int, list[LLMCall]] = {}
            for call in calls:
                if call.role == "tool" and call.task_id is not None:
                    tool_calls.setdefault(call.task_id, []).append(call)
            task_ids = {t.id for t in run.tasks}
            for task in run.tasks:
                task_parent = agent_ctx
                if self.tasks_under_plan and task.round in plan_ctx:
                    task_parent = plan_ctx[task.round]
                self.task_span(task, task_parent, tool_calls.get(task.id, []), calls, rounds)
            for call in calls:
                if call.role == "planner":
                    continue  # under their plan spans
                if call.role == "tool" and call.task_id in task_ids:
                    continue  # under their tasks' spans
                self.chat_span(call, agent_ctx, calls, rounds)
            for span, index in zip(plan_spans, sorted(plan_ctx), strict=True):
                self.end_plan(span, rounds.get(index), index, planners)
        finally:
            self.end_agent(agent)

    # -- the run ---------------------------------------------------------------------------

    def end_agent(self, span: Span) -> None:
        run = self.result
        if run.stop_reason in ERROR_STOPS or (
            run.error is not None and run.stop_reason is not StopReason.CANCELLED
        ):
            kind = _error_type(run.error) if run.error is not None else str(run.stop_reason)
            span.set_attribute("error.type", kind)
            span.set_status(_error_status(kind, run.error, self.content))
        span.end(end_time=self.ns(run.wall_time))

    # -- a round's plan --------------------------------------------------------------------

    def plan_span(
        self, rnd: Round | None, index: int, mine: Sequence[LLMCall], parent: Context
    ) -> Span:
        from opentelemetry import trace

        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "plan",
            "gen_ai.agent.name": self.agent,
            "dagcall.round.index": index,
        }
        if rnd is not None:
            attrs["dagcall.round.tasks"] = len(rnd.task_ids)
            attrs["dagcall.round.task_ids"] = [int(i) for i in rnd.task_ids]
            attrs["dagcall.round.plan_errors"] = len(rnd.errors)
            if rnd.decision:
                attrs["dagcall.round.decision"] = rnd.decision
            if self.content and rnd.replan_reason:
                attrs["dagcall.round.replan_reason"] = _clip(rnd.replan_reason)
        return self.tracer.start_span(
            f"plan {self.agent}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes=attrs,
            start_time=self.ns(min(c.started_at for c in mine)),
        )

    def end_plan(
        self, span: Span, rnd: Round | None, index: int, planners: Sequence[LLMCall]
    ) -> None:
        mine = [c for c in planners if c.round == index]
        failed = [e for c in mine if (e := self.call_error(c)) is not None]
        if failed:
            kind = _error_type(failed[0])
            span.set_attribute("error.type", kind)
            span.set_status(_error_status(kind, failed[0], self.content))
        span.end(end_time=self.ns(max(c.ended_at for c in mine)))

    # -- model calls -----------------------------------------------------------------------

    def chat_span(
        self,
        call: LLMCall,
        parent: Context,
        calls: Sequence[LLMCall],
        rounds: Mapping[int, Round],
    ) -> None:
        from opentelemetry import trace

        provider, model = _provider_and_model(call.model)
        error = self.call_error(call, calls)
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": call.input_tokens,
            "gen_ai.usage.output_tokens": call.output_tokens,
            "gen_ai.response.finish_reasons": ["error" if error is not None else "stop"],
            "dagcall.llm.role": call.role,
            "dagcall.round.index": call.round,
            "dagcall.usage.estimated": call.estimated,
        }
        if call.time_to_first_token is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = float(call.time_to_first_token)
        if call.task_id is not None:
            attrs["dagcall.task.id"] = call.task_id
        rnd = rounds.get(call.round)
        if call.role == "joiner" and rnd is not None and rnd.decision:
            attrs["dagcall.joiner.decision"] = rnd.decision
        if self.content and rnd is not None:
            text = {"planner": rnd.plan, "joiner": rnd.joiner_output}.get(call.role, "")
            if text and self._last_of_role(call, calls):
                attrs["gen_ai.output.messages"] = _messages(
                    "assistant", text, "error" if error is not None else "stop"
                )
        span = self.tracer.start_span(
            f"chat {model}",
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes=attrs,
            start_time=self.ns(call.started_at),
        )
        if error is not None:
            kind = _error_type(error)
            span.set_attribute("error.type", kind)
            span.set_status(_error_status(kind, error, self.content))
        span.end(end_time=self.ns(call.ended_at))

    @staticmethod
    def _last_of_role(call: LLMCall, calls: Sequence[LLMCall]) -> bool:
        """Whether ``call`` is the last of its role in its round (whose text the round
        keeps: a retried call's earlier text is gone)."""
        same = [c for c in calls if c.role == call.role and c.round == call.round]
        return bool(same) and same[-1] is call

    def call_error(
        self, call: LLMCall, calls: Sequence[LLMCall] | None = None
    ) -> BaseException | None:
        """The error a planner or joiner call ended with, as far as the result tells: a
        planner that failed after writing tasks leaves a ModelError in its round's errors;
        the error that ended the run belongs to the run's last planner or joiner call when
        it is a model error, went over ``max_tokens`` as the last model call, or is the
        timeout that cut the call short."""
        run = self.result
        if call.role == "planner":
            for rnd in run.rounds:
                if rnd.index == call.round:
                    for found in rnd.errors:
                        if isinstance(found, ModelError):
                            return found
        error = run.error
        if error is None or call.role not in ("planner", "joiner"):
            return None
        ordered = sorted(calls if calls is not None else run.usage, key=lambda c: c.started_at)
        own = [c for c in ordered if c.role in ("planner", "joiner")]
        if not own or own[-1] is not call:
            return None
        if isinstance(error, ModelError):
            return error
        if isinstance(error, RunTimeoutError):
            budget = error.value
            if isinstance(budget, int | float) and call.ended_at >= float(budget) - 1e-3:
                return error
            return None
        if isinstance(error, BudgetError) and error.limit == "max_tokens":
            last = max(ordered, key=lambda c: c.ended_at)
            return error if last is call else None
        return None

    # -- tasks -----------------------------------------------------------------------------

    def task_span(
        self,
        task: TaskRecord,
        parent: Context,
        own_calls: Sequence[LLMCall],
        calls: Sequence[LLMCall],
        rounds: Mapping[int, Round],
    ) -> None:
        from opentelemetry import trace

        status = TaskStatus(task.status)
        start = task.started_at if task.started_at is not None else task.parsed_at
        end = task.ended_at if task.ended_at is not None else max(start, self.result.wall_time)
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": task.tool,
            "gen_ai.tool.call.id": str(task.id),
            "gen_ai.tool.type": "function",
            "dagcall.task.id": task.id,
            "dagcall.task.status": str(status.value),
            "dagcall.task.deps": [int(d) for d in task.deps],
            "dagcall.round.index": task.round,
            "dagcall.task.parsed_at": float(task.parsed_at),
        }
        if task.ready_at is not None:
            attrs["dagcall.task.ready_at"] = float(task.ready_at)
        if task.started_at is None:
            attrs["dagcall.task.started"] = False
        if task.error is not None:
            attrs["dagcall.task.error_type"] = _error_type(task.error)
        if self.content:
            attrs["dagcall.task.call"] = _clip(task.call)
            arguments: object = task.resolved_args
            if arguments is None:
                arguments = {"args": list(task.args), "kwargs": task.kwargs}
            attrs["gen_ai.tool.call.arguments"] = _json(arguments)
            if status is TaskStatus.DONE:
                attrs["gen_ai.tool.call.result"] = _json(task.output)
        span = self.tracer.start_span(
            f"execute_tool {task.tool}",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes=attrs,
            start_time=self.ns(start),
        )
        ctx = trace.set_span_in_context(span)
        for call in own_calls:
            self.chat_span(call, ctx, calls, rounds)
        if status in FAILED_TASKS:
            kind = _error_type(task.error) if task.error is not None else "_OTHER"
            span.set_attribute("error.type", kind)
            span.set_status(_error_status(kind, task.error, self.content))
        span.end(end_time=self.ns(end))


# -- attribute helpers ---------------------------------------------------------------------


def _finite(value: float) -> float:
    number = float(value)
    return number if number == number and abs(number) != float("inf") else 0.0


def _provider_and_model(name: str) -> tuple[str, str]:
    """``openai:gpt-4o`` → (``openai``, ``gpt-4o``); a name without a prefix is both; a
    server named after ``@`` (``openai:gpt-4o@http://host:8000/v1``) is left out."""
    name = name.split("@", 1)[0] if "@http" in name else name
    provider, sep, model = name.partition(":")
    if sep and provider and model:
        return provider, model
    return name or "unknown", name or "unknown"


def _error_type(error: object) -> str:
    return type(error).__name__ if error is not None else "_OTHER"


def _error_status(kind: str, error: object, content: bool) -> Any:
    from opentelemetry.trace import Status, StatusCode

    description = kind
    message = getattr(error, "message", None)
    if content and isinstance(message, str) and message:
        description = _clip(f"{kind}: {message}")
    return Status(StatusCode.ERROR, description)


def _clip(text: str) -> str:
    clipped = json_safe(text, max_chars=CONTENT_MAX_CHARS)
    return clipped if isinstance(clipped, str) else str(clipped)


def _json(value: object) -> str:
    text = json.dumps(
        json_safe(value, max_chars=CONTENT_MAX_CHARS), ensure_ascii=False, allow_nan=False
    )
    return text


def _messages(role: str, text: str, finish_reason: str | None = None) -> str:
    """One message in the conventions' JSON form (``gen_ai.input/output.messages``)."""
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return _json([message])


# -- recording runs as they finish ---------------------------------------------------------


class Tracing:
    """An ``on_event`` handler that traces each run at its ``finished`` event.

    ``Compiler.arun(q, on_event=Tracing().handle)``; ``Tracing(on_event=view.handle)``
    passes every event on to another handler first (one that raises does not stop the
    trace).  The other options are :func:`trace_run`'s.  The instance is callable as the
    handler too.  Spans are exported by the tracer provider's span processor; use a batch
    processor (as :func:`configure_from_env` does) so that exporting never blocks the run's
    event loop.
    """

    def __init__(
        self,
        on_event: EventHandler | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        capture_content: bool = False,
        agent_name: str = "dagcall",
        parent: Context | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        tasks_under_plan: bool = False,
    ) -> None:
        _require_api()
        self.on_event = on_event
        self.tracer_provider = tracer_provider
        self.capture_content = capture_content
        self.agent_name = agent_name
        self.parent = parent
        self.attributes = dict(attributes or {})
        self.tasks_under_plan = tasks_under_plan

    def handle(self, event: RunEvent) -> None:
        try:
            if self.on_event is not None:
                self.on_event(event)
        finally:
            if event.kind == "finished":
                self.record(event.result)

    __call__ = handle

    def record(self, result: RunResult) -> None:
        """Trace ``result`` with this handler's options."""
        trace_run(
            result,
            tracer_provider=self.tracer_provider,
            capture_content=self.capture_content,
            agent_name=self.agent_name,
            parent=self.parent,
            attributes=self.attributes,
            tasks_under_plan=self.tasks_under_plan,
        )

    def wrapping(self, on_event: EventHandler | None) -> Tracing:
        """A handler with these options passing events on to ``on_event``."""
        return Tracing(
            on_event,
            tracer_provider=self.tracer_provider,
            capture_content=self.capture_content,
            agent_name=self.agent_name,
            parent=self.parent,
            attributes=self.attributes,
            tasks_under_plan=self.tasks_under_plan,
        )


class InstrumentedAgent:
    """An agent (a :class:`~dagcall.Compiler`, a baseline) whose runs are all traced: its
    ``arun``, ``run`` and ``stream`` add a :class:`Tracing` handler (wrapping the caller's
    ``on_event``); everything else is the agent's own."""

    def __init__(self, agent: Any, tracing: Tracing) -> None:
        self.agent = agent
        self.tracing = tracing

    async def arun(
        self, question: str, *, on_event: EventHandler | None = None, **options: Any
    ) -> RunResult:
        result: RunResult = await self.agent.arun(
            question, on_event=self.tracing.wrapping(on_event).handle, **options
        )
        return result

    def run(
        self, question: str, *, on_event: EventHandler | None = None, **options: Any
    ) -> RunResult:
        handler = self.tracing.wrapping(on_event).handle
        if "on_event" in inspect.signature(self.agent.run).parameters:
            result: RunResult = self.agent.run(question, on_event=handler, **options)
            return result
        # an agent whose sync form takes no handler (the baselines): its async form does
        return asyncio.run(self.arun(question, on_event=on_event, **options))

    async def stream(self, question: str, **options: Any) -> AsyncGenerator[RunEvent, None]:
        async for event in self.agent.stream(question, **options):
            if event.kind == "finished":
                self.tracing.record(event.result)
            yield event

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agent, name)


def instrument(
    agent: Any,
    *,
    tracer_provider: TracerProvider | None = None,
    capture_content: bool = False,
    agent_name: str = "dagcall",
    tasks_under_plan: bool = False,
) -> InstrumentedAgent:
    """``agent`` with every run traced (see :class:`InstrumentedAgent`); the options are
    :func:`trace_run`'s.  The agent itself is left as it is."""
    return InstrumentedAgent(
        agent,
        Tracing(
            tracer_provider=tracer_provider,
            capture_content=capture_content,
            agent_name=agent_name,
            tasks_under_plan=tasks_under_plan,
        ),
    )


# -- an exporting setup from the environment -----------------------------------------------


def configure_from_env(*, service_name: str = "dagcall", set_global: bool = True) -> TracerProvider:
    """Install an SDK tracer provider that exports spans over OTLP/HTTP (protobuf) as the
    standard environment says, and return it.

    The exporter reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    (default ``http://localhost:4318``), ``..._HEADERS``, ``..._TIMEOUT``,
    ``..._COMPRESSION`` and the certificate variables; the resource reads
    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (``service_name`` is used when
    neither names the service).  ``OTEL_TRACES_EXPORTER`` may list ``otlp`` (the default),
    ``console`` or ``none``; ``OTEL_SDK_DISABLED=true`` turns recording off.  Spans go through
    a batch processor (``OTEL_BSP_*``), flushed when the process exits.

    With ``set_global`` (the default) the provider becomes the global one, unless the
    application already installed one: that one is kept and returned.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError:
        raise UsageError(
            f"exporting traces needs the OpenTelemetry SDK, which the otel extra installs: "
            f"{_EXTRA_HINT}"
        ) from None
    if set_global:
        current = trace.get_tracer_provider()
        if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return current
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
        if n.strip()
    ]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            raise UsageError(
                f"OTEL_TRACES_EXPORTER={name!r} is not one dagcall sets up (otlp, console or "
                "none); install and configure that exporter yourself"
            )
    resource = Resource.create()
    named = resource.attributes.get("service.name")
    if not isinstance(named, str) or not named or named.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name}))
    provider = SDKTracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def _otlp_exporter() -> Any:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if protocol not in ("", "http/protobuf"):
        raise UsageError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: dagcall exports over OTLP/HTTP "
            "(http/protobuf); for another protocol install its exporter and set up the "
            "tracer provider yourself"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise UsageError(
            f"exporting traces needs the OTLP/HTTP exporter, which the otel extra installs: "
            f"{_EXTRA_HINT}"
        ) from None
    return OTLPSpanExporter()

"""``POST /v1/chat/completions``: OpenAI's chat completions API over dagcall runs.

The last user message is the question; the answer is the assistant message.  What the run
did rides along in the extra field ``dagcall`` of the completion (and of the stream's
chunks): see docs/service.md.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dagcall import RunResult, StopReason

from ._runs import LiveRun, to_json

__all__ = ["ChatRequest", "DagcallOptions", "completion", "failure", "question_of", "stream"]

#: Stop reasons whose answer is an answer (``max_replans``: the joiner's last thought).
ANSWERED = (StopReason.FINISH, StopReason.MAX_REPLANS)
#: The run events a stream reports as progress (text deltas are left out: too many).
PROGRESS = ("round_start", "task", "joiner_start", "round_end")


class DagcallOptions(BaseModel):
    """``extra_body={"dagcall": {...}}``: the run's own limits."""

    model_config = ConfigDict(extra="forbid")
    max_replans: int | None = Field(default=None, ge=0)
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields dagcall reads; the rest of OpenAI's (temperature, tools, ...) are accepted
    and ignored: the server's compiler decides how to answer."""

    model_config = ConfigDict(extra="allow")
    model: str = "dagcall"
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    dagcall: DagcallOptions | None = None


def question_of(request: ChatRequest) -> str | None:
    """The text of the last user message (text parts joined), or ``None``."""
    for message in reversed(request.messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            ]
            return "\n".join(texts)
        return None
    return None


def summary(run: LiveRun, result: RunResult) -> dict[str, Any]:
    """The ``dagcall`` field: the run's ids, why it stopped, and what its tasks did."""
    return {
        "run_id": run.id,
        "stored_id": run.stored_id,
        "stop_reason": str(result.stop_reason),
        "wall_time": result.wall_time,
        "rounds": len(result.rounds),
        "llm_calls": result.llm_calls,
        "tasks": [_task(t.to_dict()) for t in result.tasks],
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
    }


def _task(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "tool", "call", "status", "round", "started_at", "ended_at")
    out = {k: record.get(k) for k in keep}
    error = record.get("error")
    out["error"] = error.get("message") if isinstance(error, dict) else None
    return out


def usage(result: RunResult) -> dict[str, int]:
    """Every LLM call of the run (planner, joiner, tools' own), in OpenAI's names."""
    return {
        "prompt_tokens": result.input_tokens,
        "completion_tokens": result.output_tokens,
        "total_tokens": result.input_tokens + result.output_tokens,
    }


def failure(run: LiveRun, result: RunResult) -> tuple[int, dict[str, Any]]:
    """A run that gave no answer, as an OpenAI error (504 for its time budget, else 502)."""
    status = 504 if result.stop_reason is StopReason.TIMEOUT else 502
    reason = str(result.stop_reason)
    message = f"the run ended without an answer ({reason})"
    if result.error is not None:
        message += f": {result.error}"
    body = {
        "error": {"message": message, "type": "dagcall_error", "code": reason, "param": None},
        "dagcall": summary(run, result),
    }
    return status, body


def completion(run: LiveRun, result: RunResult, model: str) -> dict[str, Any]:
    """A finished run as a ``chat.completion``."""
    return {
        "id": f"chatcmpl-{run.id}",
        "object": "chat.completion",
        "created": int(run.created),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(result),
        "dagcall": summary(run, result),
    }


async def stream(run: LiveRun, model: str, include_usage: bool) -> AsyncIterator[str]:
    """A run as ``chat.completion.chunk`` events (each a JSON ``data:`` line, then
    ``[DONE]``): the role first, progress chunks with an empty delta and the event in
    ``dagcall``, the answer as one content delta once the joiner has decided (its text may
    still turn into a replan until then), and a last chunk with ``finish_reason`` and the
    run's summary.  A run without an answer ends in an OpenAI error event instead."""
    created = int(run.created)

    def chunk(
        delta: dict[str, Any], extra: dict[str, Any] | None, finish: str | None = None
    ) -> str:
        data: dict[str, Any] = {
            "id": f"chatcmpl-{run.id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if extra is not None:
            data["dagcall"] = extra
        return to_json(data)

    yield chunk({"role": "assistant", "content": ""}, {"run_id": run.id, "event": "started"})
    async for event in run.follow():
        if event.kind not in PROGRESS:
            continue
        data = json.loads(event.data)
        progress: dict[str, Any] = {"run_id": run.id, "event": event.kind, "round": data["round"]}
        task = data.get("task")
        if isinstance(task, dict):
            progress["task"] = {k: task.get(k) for k in ("id", "tool", "call", "status")}
        yield chunk({}, progress)
    result = await run.wait()
    if result.stop_reason not in ANSWERED:
        yield to_json(failure(run, result)[1])
        return
    yield chunk({"content": result.answer}, None)
    yield chunk({}, {**summary(run, result), "event": "finished"}, "stop")
    if include_usage:
        yield to_json(
            {
                "id": f"chatcmpl-{run.id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage(result),
            }
        )
    yield "[DONE]"

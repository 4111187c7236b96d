"""Tools and offline models for `dagcall batch` tests and throughput runs (loaded by path).

Loading this file registers two model prefixes, so that a Ray worker that loads it (the batch
loads tools files before it resolves the model) can rebuild the model from its name:

* ``batchtest[:SECONDS]``: a ScriptedModel, first token after SECONDS (default 0);
* ``batchsim[:SCALE]``: the bench's SimulatedModel (gpt-3.5 latency profile, waits times
  SCALE, default 1).

A question names keys: ``"sum of a bb ccc"`` plans one ``lookup`` per key (in parallel) and
the joiner answers their sum (here 6).  The key ``boom`` makes the tool raise, ``sleepy``
makes it sleep 30 s, ``crash`` ends the process when ``BATCH_MAY_CRASH`` is set (a Ray
worker dying); a question with ``modelfail`` makes the model raise;
``BATCH_TOOL_LATENCY`` is each look-up's sleep, s.  When ``BATCH_CALLS_FILE`` is set, every
model call appends a line to it (counted across processes).
"""

from __future__ import annotations

import asyncio
import os
import re

from dagcall import Message, ModelError, ScriptedModel, tool
from dagcall.bench import PROFILES, SimulatedModel
from dagcall.models import Model, register_model_provider


@tool
async def lookup(key: str) -> int:
    """Look a key up: its length."""
    await asyncio.sleep(float(os.environ.get("BATCH_TOOL_LATENCY", "0.01")))
    if key == "boom":
        raise RuntimeError("the lookup service is down")
    if key == "sleepy":
        await asyncio.sleep(30)
    if key == "crash" and os.environ.get("BATCH_MAY_CRASH"):  # kills the process (Ray tests)
        os._exit(3)
    return len(key)


def _count() -> None:
    path = os.environ.get("BATCH_CALLS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write("call\n")


def reply(messages: list[Message]) -> str:
    _count()
    last = messages[-1].content
    if "Question:" in last and "<observation" not in last:
        question = last.rsplit("Question:", 1)[1]
        if "modelfail" in question:
            raise ModelError("the model is down")
        keys = re.findall(r"[a-z]+", question.split("sum of", 1)[-1])
        lines = [f'{i}. lookup("{key}")' for i, key in enumerate(keys, start=1)]
        return "\n".join([*lines, f"{len(keys) + 1}. join()"]) + "\n"
    values = re.findall(r'status="done">([^<]*)</observation>', last)
    total = sum(int(v) for v in values if v.strip().isdigit())
    return f"Thought: add them up.\nAction: Finish({total})"


def _scripted(rest: str) -> Model:
    return ScriptedModel(reply, time_to_first_token=float(rest or 0), name="batchtest")


def _simulated(rest: str) -> Model:
    return SimulatedModel(reply, PROFILES["gpt-3.5"], time_scale=float(rest or 1))


register_model_provider("batchtest", _scripted, replace=True)
register_model_provider("batchsim", _simulated, replace=True)

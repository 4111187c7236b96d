"""dagcall as an HTTP service, through a real uvicorn on 127.0.0.1 started by each test, driven
by httpx2 and by the official openai SDK: auth, limits, server-sent events and their resume,
disconnects, cancellation, 200 concurrent runs, shutdown with runs in flight, OpenAI's chat
completions (streamed and not), the probes and the web view's static folder."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import uvicorn

from dagcall import (
    Compiler,
    Message,
    ModelError,
    RunResult,
    ScriptedModel,
    StopReason,
    UsageError,
    tool,
)
from dagcall.service import RunManager, Server, create_app
from dagcall.store import RunStore

TOKEN = "s3cret-token"  # noqa: S105 - the tests' own
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.timeout(60)


# -- the agent: a scripted model that understands three kinds of question --------------------


@tool
async def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
async def nap(seconds: float, label: str = "") -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {label}"


def plan(*lines: str) -> str:
    return "\n".join(lines) + "\n<END_OF_PLAN>"


def reply(messages: Sequence[Message]) -> str:
    """``add A B`` adds; ``nap S`` sleeps S seconds; ``many N`` runs N additions; ``fail``
    makes the model fail.  The joiner answers with the last observation."""
    prompt = messages[-1].content
    found = re.search(r"Question: (.*)", prompt)
    question = found[1].strip() if found else ""
    words = question.split()
    if words and words[0] == "fail":
        raise ModelError("the model is down", model="scripted")
    if "Round 1:" in prompt:
        observations = re.findall(r"<observation [^>]*>(.*?)</observation>", prompt, re.S)
        return f"Thought: done.\nAction: Finish({observations[-1] if observations else '?'})"
    if words and words[0] == "nap":
        return plan(f'1. nap({float(words[1])}, "z")', "2. join()")
    if words and words[0] == "many":
        count = int(words[1])
        lines = [f"{i}. add({i}, {i})" for i in range(1, count + 1)]
        return plan(*lines, f"{count + 1}. join()")
    a, b = (int(w) for w in words[1:3])
    return plan(f"1. add({a}, {b})", "2. join()")


def compiler(**kw: Any) -> Compiler:
    return Compiler(model=ScriptedModel(reply), tools=[add, nap], **kw)


# -- a real server in a thread -----------------------------------------------------------------


class Running:
    def __init__(self, app: Any, server: Server, thread: threading.Thread, port: int) -> None:
        self.app = app
        self.server = server
        self.thread = thread
        self.url = f"http://127.0.0.1:{port}"
        self.runs: RunManager = app.state.dagcall_runs

    def client(self, **kw: Any) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers=AUTH, timeout=30, **kw)

    def stop(self, timeout: float = 20) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the server did not stop"


@contextmanager
def serving(app: Any) -> Iterator[Running]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=10
    )
    server = Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start in time"
        time.sleep(0.01)
    running = Running(app, server, thread, port)
    try:
        yield running
    finally:
        if thread.is_alive():
            running.stop()
        sock.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore(tmp_path / "runs.sqlite3") as s:
        yield s


@pytest.fixture
def service(store: RunStore) -> Iterator[Running]:
    with serving(create_app(compiler(), store=store, token=TOKEN)) as running:
        yield running


def start(client: httpx2.Client, question: str, **body: Any) -> str:
    response = client.post("/v1/runs", json={"question": question, **body})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    assert response.headers["location"] == f"/v1/runs/{run_id}"
    return run_id


def events(
    client: httpx2.Client, run_id: str, last: str | None = None, count: int | None = None
) -> list[httpx2.ServerSentEvent]:
    """The run's events (all of them, or the first ``count``, then hang up)."""
    headers = {"Last-Event-ID": last} if last is not None else {}
    got: list[httpx2.ServerSentEvent] = []
    with client.sse(f"/v1/runs/{run_id}/events", headers=headers) as source:
        for event in source:
            got.append(event)
            if count is not None and len(got) >= count:
                break
    return got


def body(event: httpx2.ServerSentEvent | httpx2.Response) -> dict[str, Any]:
    data = event.json()
    assert isinstance(data, dict)
    return data


def wait_until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


# -- probes, auth, refusals ----------------------------------------------------------------------


def test_health_and_readiness_need_no_token(service: Running) -> None:
    with httpx2.Client(base_url=service.url) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert body(ready)["status"] == "ready"
        assert body(ready)["toolsets_open"] is True


def test_auth_missing_or_wrong_token_is_401(service: Running) -> None:
    with httpx2.Client(base_url=service.url) as anonymous:
        missing = anonymous.get("/v1/runs")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="dagcall"'
        assert missing.json()["error"]["code"] == "invalid_api_key"
        for header in ("Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
            wrong = anonymous.post(
                "/v1/runs", json={"question": "add 1 2"}, headers={"Authorization": header}
            )
            assert wrong.status_code == 401, header
            assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    with service.client() as client:
        assert client.get("/v1/runs").status_code == 200
    sdk = openai.OpenAI(base_url=service.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="dagcall", messages=[{"role": "user", "content": "x"}])
    assert service.runs.live == {}
    assert not service.runs.recent


def test_no_token_only_on_loopback() -> None:
    with pytest.raises(UsageError, match="without a token"):
        create_app(compiler(), host="0.0.0.0")  # noqa: S104 - what is refused
    with pytest.raises(UsageError, match="empty"):
        create_app(compiler(), token="  ", host="127.0.0.1")  # noqa: S106 - refused
    create_app(compiler(), token=TOKEN, host="0.0.0.0")  # noqa: S104 - with a token it may
    with (
        serving(create_app(compiler(), host="localhost")) as open_server,
        httpx2.Client(base_url=open_server.url) as client,
    ):
        run_id = start(client, "add 1 2")
        assert body(events(client, run_id)[-1])["result"]["answer"] == "3"
        # against DNS rebinding: a server without a token answers loopback names only
        rebound = client.get("/v1/runs", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 421


def test_body_and_question_limits_are_413_and_bodies_must_be_json(store: RunStore) -> None:
    app = create_app(
        compiler(), store=store, token=TOKEN, max_body_bytes=4096, max_question_chars=100
    )
    with serving(app) as running, running.client() as client:
        big = client.post("/v1/runs", json={"question": "add 1 2 " + "x" * 5000})
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"question": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = client.post(
            "/v1/runs", content=chunked(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        long = client.post("/v1/runs", json={"question": "add 1 2 " + "x" * 200})
        assert long.status_code == 413
        assert long.json()["error"]["code"] == "question_too_long"
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "z" * 101}]},
        )
        assert chat.status_code == 413
        form = client.post("/v1/runs", content=b"question=add+1+2")
        assert form.status_code == 415
        assert client.post("/v1/runs", json={"question": "  "}).status_code == 422
        assert client.post("/v1/runs", json={"q": "add 1 2"}).status_code == 422
        assert client.post("/v1/runs", json={"question": "add 1 2"}).status_code == 202
    assert running.runs.live == {}


def test_past_the_concurrent_run_limit_is_429_with_retry_after(store: RunStore) -> None:
    app = create_app(compiler(), store=store, token=TOKEN, max_concurrent_runs=2)
    with serving(app) as running, running.client() as client:
        first, second = start(client, "nap 5"), start(client, "nap 5")
        busy = client.post("/v1/runs", json={"question": "add 1 2"})
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "add 1 2"}]},
        )
        assert chat.status_code == 429
        assert client.delete(f"/v1/runs/{first}").json()["stop_reason"] == "cancelled"
        third = start(client, "add 1 2")  # a slot is free again
        assert body(events(client, third)[-1])["result"]["answer"] == "3"
        client.delete(f"/v1/runs/{second}")


def test_bad_limits_are_422(service: Running) -> None:
    with service.client() as client:
        for body in ({"max_replans": 5}, {"max_replans": -1}, {"timeout": 0}):
            response = client.post("/v1/runs", json={"question": "add 1 2", **body})
            assert response.status_code == 422, body
        for raw in (b"1e999", b"Infinity", b"NaN"):  # JSON's out-of-range and non-numbers
            response = client.post(
                "/v1/runs",
                content=b'{"question": "add 1 2", "timeout": ' + raw + b"}",
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code in (400, 422), raw
        assert client.get("/v1/runs/0123456789ab").status_code == 404
        assert client.get("/v1/runs/not-an-id").status_code == 404
        assert client.delete("/v1/runs/0123456789ab").status_code == 404


# -- runs and their events -----------------------------------------------------------------------


def test_events_stream_in_order_and_the_run_is_stored(service: Running, store: RunStore) -> None:
    with service.client() as client:
        run_id = start(client, "add 2 3")
        got = events(client, run_id)
        record = client.get(f"/v1/runs/{run_id}").json()
        listing = client.get("/v1/runs").json()["runs"]
    assert [int(e.id) for e in got] == list(range(1, len(got) + 1))  # numbered, no gaps
    kinds = [e.event for e in got]
    data = [body(e) for e in got]
    assert [d["kind"] for d in data] == kinds
    assert kinds[0] == "round_start"
    assert kinds[-1] == "finished"
    assert kinds.count("finished") == 1
    order = ["round_start", "plan_text", "task", "joiner_start", "joiner_text", "round_end"]
    firsts = [kinds.index(k) for k in order]
    assert firsts == sorted(firsts)
    plan_text = "".join(d["text"] for d in data if d["kind"] == "plan_text")
    assert "1. add(2, 3)" in plan_text
    statuses = [d["task"]["status"] for d in data if d["kind"] == "task"]
    assert statuses[-1] == "done"
    assert "running" in statuses
    assert all(d["task"]["tool"] == "add" for d in data if d["kind"] == "task")
    final = data[-1]
    assert final["stop_reason"] == "finish"
    assert final["run_id"] == run_id
    result = RunResult.model_validate(final["result"])
    assert result.answer == "5"
    assert result.stop_reason is StopReason.FINISH
    assert [t.output for t in result.tasks] == [5]
    stored = store.load(final["stored_id"])
    assert stored.answer == "5"
    assert stored.question == "add 2 3"
    assert record["id"] == run_id
    assert record["stored_id"] == stored.id == run_id  # one id, in the service and the store
    assert record["live"] is False
    assert record["created_at"] == stored.created_at
    assert RunResult.model_validate(record).answer == "5"
    assert listing[0]["id"] == run_id
    assert listing[0]["stored_id"] == stored.id
    # the store's id finds the same run
    with service.client() as client:
        assert client.get(f"/v1/runs/{stored.id}").json()["answer"] == "5"


def test_a_live_run_reads_as_it_stands(service: Running) -> None:
    with service.client() as client:
        run_id = start(client, "nap 1")
        events(client, run_id, count=4)  # it has begun
        live = client.get(f"/v1/runs/{run_id}").json()
        listing = client.get("/v1/runs").json()["runs"]
        assert live["stop_reason"] == "running"
        assert live["live"] is True
        assert RunResult.model_validate(live).stop_reason is StopReason.RUNNING
        assert listing[0]["id"] == run_id
        assert listing[0]["live"] is True
        assert body(events(client, run_id)[-1])["result"]["answer"] == "slept z"


def test_resume_with_last_event_id_has_no_duplicates_and_no_gaps(service: Running) -> None:
    with service.client() as client:
        run_id = start(client, "many 6")
        head = events(client, run_id, count=7)
        rest = events(client, run_id, last=head[-1].id)
        everything = events(client, run_id)  # the whole run, replayed from the buffer
        done = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": everything[-1].id})
        by_query = client.get(f"/v1/runs/{run_id}/events?last_event_id={everything[-1].id}")
        bad = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "x"})
    ids = [int(e.id) for e in head + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert [(e.id, e.event, e.data) for e in head + rest] == [
        (e.id, e.event, e.data) for e in everything
    ]
    assert rest[-1].event == "finished"
    assert body(rest[-1])["result"]["answer"] == "12"
    assert done.status_code == 204
    assert by_query.status_code == 204
    assert bad.status_code == 422


def test_a_follower_behind_the_buffer_gets_a_snapshot_then_the_rest(store: RunStore) -> None:
    app = create_app(compiler(), store=store, token=TOKEN, event_buffer=16)
    with serving(app) as running, running.client() as client:
        run_id = start(client, "nap 1.5")
        wait_until(lambda: running.runs.find(run_id).seq > 17)  # type: ignore[union-attr]
        live = events(client, run_id)
        after = events(client, run_id)  # finished: straight to the finished event
    assert live[0].event == "snapshot"
    assert body(live[0])["stop_reason"] == "running"
    assert RunResult.model_validate(body(live[0])["result"]).question == "nap 1.5"
    ids = [int(e.id) for e in live]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert live[-1].event == "finished"
    assert [e.event for e in after] == ["finished"]
    assert after[0].data == live[-1].data


def test_a_run_known_only_to_the_store_streams_its_finished_event(
    service: Running, store: RunStore
) -> None:
    result = asyncio.run(compiler().arun("add 4 4"))
    stored_id = store.save(result)
    with service.client() as client:
        got = events(client, stored_id)
        again = client.get(f"/v1/runs/{stored_id}/events", headers={"Last-Event-ID": "final"})
        record = client.get(f"/v1/runs/{stored_id}").json()
    assert [(e.event, e.id) for e in got] == [("finished", "final")]
    assert body(got[0])["result"]["answer"] == "8"
    assert again.status_code == 204
    assert record["id"] == stored_id
    assert record["answer"] == "8"


def test_a_client_hanging_up_mid_stream_does_not_stop_the_run(
    service: Running, store: RunStore
) -> None:
    with service.client() as client:
        run_id = start(client, "nap 0.5")
        first = events(client, run_id, count=2)
        assert next(e.event for e in first) == "round_start"
        assert service.runs.find(run_id) is not None
        wait_until(lambda: service.runs.find(run_id).done)  # type: ignore[union-attr]
        record = client.get(f"/v1/runs/{run_id}").json()
    assert record["stop_reason"] == "finish"
    assert record["answer"] == "slept z"
    assert store.load(record["stored_id"]).answer == "slept z"


def test_delete_cancels_a_live_run_and_stores_it_as_cancelled(
    service: Running, store: RunStore
) -> None:
    with service.client() as client:
        run_id = start(client, "nap 30")
        head = events(client, run_id, count=3)
        started = time.monotonic()
        cancelled = client.delete(f"/v1/runs/{run_id}")
        assert time.monotonic() - started < 5
        assert cancelled.status_code == 200
        assert cancelled.json()["stop_reason"] == "cancelled"
        tail = events(client, run_id, last=head[-1].id)
        assert client.delete(f"/v1/runs/{run_id}").status_code == 409
        stored_id = cancelled.json()["stored_id"]
        assert client.delete(f"/v1/runs/{stored_id}").status_code == 409
    assert tail[-1].event == "finished"
    assert body(tail[-1])["stop_reason"] == "cancelled"
    stored = store.load(stored_id)
    assert stored.stop_reason is StopReason.CANCELLED
    assert [t.status for t in stored.tasks] == ["cancelled"]


def test_the_run_timeout_caps_every_run(store: RunStore) -> None:
    app = create_app(compiler(), store=store, token=TOKEN, run_timeout=0.5)
    with serving(app) as running, running.client() as client:
        capped = start(client, "nap 10", timeout=60)
        final = body(events(client, capped)[-1])
        assert final["stop_reason"] == "timeout"
        assert final["result"]["error"]["type"] == "RunTimeoutError"
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "nap 10"}]},
        )
        assert chat.status_code == 504
        assert chat.json()["error"]["code"] == "timeout"
        assert chat.json()["dagcall"]["stop_reason"] == "timeout"
        shorter = start(client, "nap 10", timeout=0.2)
        assert body(events(client, shorter)[-1])["result"]["wall_time"] < 1.5


def test_max_replans_per_run(service: Running) -> None:
    with service.client() as client:
        run_id = start(client, "add 1 1", max_replans=0)
        assert body(events(client, run_id)[-1])["result"]["answer"] == "2"


async def test_200_concurrent_runs_through_one_server(store: RunStore) -> None:
    app = create_app(compiler(), store=store, token=TOKEN, max_concurrent_runs=256)
    count = 200
    with serving(app) as running:
        limits = httpx2.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
        async with httpx2.AsyncClient(
            base_url=running.url, headers=AUTH, timeout=60, limits=limits
        ) as client:

            async def one(i: int) -> tuple[int, str, str]:
                response = await client.post("/v1/runs", json={"question": f"add {i} {i * 7}"})
                assert response.status_code == 202, response.text
                run_id = response.json()["id"]
                async with client.sse(f"/v1/runs/{run_id}/events") as source:
                    last = None
                    async for event in source:
                        last = event
                assert last is not None
                assert last.event == "finished"
                data = body(last)
                return i, data["result"]["answer"], data["stored_id"]

            results = await asyncio.gather(*(one(i) for i in range(count)))
    assert [answer for _, answer, _ in results] == [str(i * 8) for i in range(count)]
    stored_ids = {stored for _, _, stored in results}
    assert len(stored_ids) == count
    listed = store.list_runs(1000)
    assert {r.id for r in listed} == stored_ids
    assert sorted(r.answer for r in listed) == sorted(str(i * 8) for i in range(count))


def test_shutdown_cancels_runs_in_flight_and_stores_them(store: RunStore) -> None:
    app = create_app(compiler(), store=store, token=TOKEN)
    followed: list[httpx2.ServerSentEvent] = []
    with serving(app) as running, running.client() as client:
        run_ids = [start(client, "nap 30") for _ in range(3)]
        wait_until(lambda: all(running.runs.live[r].seq > 3 for r in run_ids))

        following = threading.Event()

        def follow() -> None:
            with (
                running.client() as follower,
                follower.sse(f"/v1/runs/{run_ids[0]}/events") as source,
            ):
                for event in source:
                    followed.append(event)
                    following.set()

        reader = threading.Thread(target=follow)
        reader.start()
        assert following.wait(10)
        started = time.monotonic()
        running.stop()
        assert time.monotonic() - started < 10
        reader.join(10)
    assert followed[-1].event == "finished"
    assert body(followed[-1])["stop_reason"] == "cancelled"
    runs = store.list_runs(10)
    assert len(runs) == 3
    for summary in runs:
        stored = store.load(summary.id)
        assert stored.stop_reason is StopReason.CANCELLED
        assert stored.question == "nap 30"


# -- OpenAI's chat completions, through the official SDK -----------------------------------------


def sdk(service: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=TOKEN, max_retries=0)


def test_chat_completion_through_the_openai_sdk(service: Running, store: RunStore) -> None:
    completion = sdk(service).chat.completions.create(
        model="my-agent",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "add 40 1"},
            {"role": "assistant", "content": "41"},
            {"role": "user", "content": [{"type": "text", "text": "add 20 22"}]},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "my-agent"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "42"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    extra = completion.model_extra or {}
    summary = extra["dagcall"]
    assert completion.id == f"chatcmpl-{summary['run_id']}"
    assert summary["stop_reason"] == "finish"
    assert summary["rounds"] == 1
    assert [(t["tool"], t["status"]) for t in summary["tasks"]] == [("add", "done")]
    assert store.load(summary["stored_id"]).question == "add 20 22"


def test_streamed_chat_completion_through_the_openai_sdk(service: Running) -> None:
    stream = sdk(service).chat.completions.create(
        model="dagcall",
        messages=[{"role": "user", "content": "add 2 2"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "4"
    assert chunks[0].choices[0].delta.role == "assistant"
    progress = [(c.model_extra or {}).get("dagcall") for c in chunks]
    events_seen = [p["event"] for p in progress if p]
    assert events_seen[0] == "started"
    assert "task" in events_seen
    assert "joiner_start" in events_seen
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    summary = (finals[0].model_extra or {})["dagcall"]
    assert summary["stop_reason"] == "finish"
    assert summary["tasks"][0]["status"] == "done"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1


def test_a_run_without_an_answer_is_an_openai_error(service: Running) -> None:
    client = sdk(service)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model="dagcall", messages=[{"role": "user", "content": "fail now"}]
        )
    assert failed.value.status_code == 502
    assert "the model is down" in failed.value.message
    with pytest.raises(openai.APIError, match="the model is down"):
        list(
            client.chat.completions.create(
                model="dagcall", messages=[{"role": "user", "content": "fail now"}], stream=True
            )
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="dagcall", messages=[{"role": "system", "content": "no question"}]
        )


def test_chat_completion_limits_ride_in_extra_body(service: Running) -> None:
    with pytest.raises(openai.APIStatusError) as timed_out:
        sdk(service).chat.completions.create(
            model="dagcall",
            messages=[{"role": "user", "content": "nap 5"}],
            extra_body={"dagcall": {"timeout": 0.3}},
        )
    assert timed_out.value.status_code == 504
    body: Any = timed_out.value.body
    assert body["code"] == "timeout"  # the SDK keeps the error object as the body


# -- the web view's folder -----------------------------------------------------------------------


def test_a_static_folder_with_an_index_is_served_at_the_root(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>dagcall</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    app = create_app(compiler(), token=TOKEN, static_dir=tmp_path)
    with serving(app) as running, httpx2.Client(base_url=running.url) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200
        assert "<h1>dagcall</h1>" in page.text
        assert anonymous.get("/app.js").text == "console.log(1)"
        assert anonymous.get("/v1/runs").status_code == 401  # the API keeps its token
        assert anonymous.get("/healthz").status_code == 200
    bare = create_app(compiler(), token=TOKEN, static_dir=tmp_path / "missing")
    with serving(bare) as running, httpx2.Client(base_url=running.url) as anonymous:
        assert anonymous.get("/").status_code == 404


def test_events_data_is_strict_json(service: Running) -> None:
    with service.client() as client:
        run_id = start(client, "add 1 2")
        for event in events(client, run_id):
            json.loads(event.data, parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


# -- serve(): the real entry point, stopped by a signal -------------------------------------------

SERVE = """
import sys
sys.path.insert(0, sys.argv[3])
from test_service import compiler
from dagcall.service import serve
from dagcall.store import RunStore
serve(compiler(), port=int(sys.argv[1]), store=RunStore(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_stops_on_sigterm_and_stores_runs_in_flight_as_cancelled(tmp_path: Path) -> None:
    port, path = free_port(), tmp_path / "runs.sqlite3"
    env = {**os.environ, "DAGCALL_TOKEN": TOKEN}  # the token from the environment
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port), str(path), str(Path(__file__).parent)],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx2.Client(base_url=url, headers=AUTH, timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.1)
            assert client.get("/v1/runs", headers={"Authorization": "Bearer x"}).status_code == 401
            run_ids = [start(client, "nap 30") for _ in range(2)]
            followed: list[httpx2.ServerSentEvent] = []
            following = threading.Event()

            def follow() -> None:
                with (
                    httpx2.Client(base_url=url, headers=AUTH, timeout=30) as follower,
                    follower.sse(f"/v1/runs/{run_ids[0]}/events") as source,
                ):
                    for event in source:
                        followed.append(event)
                        following.set()

            reader = threading.Thread(target=follow)
            reader.start()
            assert following.wait(10)
            process.send_signal(signal.SIGTERM)
            process.wait(20)
            reader.join(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode in (0, -signal.SIGTERM)
    assert followed[-1].event == "finished"
    assert body(followed[-1])["stop_reason"] == "cancelled"
    with RunStore(path) as store:
        runs = store.list_runs(10)
        assert len(runs) == 2
        assert all(store.load(r.id).stop_reason is StopReason.CANCELLED for r in runs)

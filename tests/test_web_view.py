"""The live web view, in a real headless Chromium (Debian's ``chromium``, driven by Playwright):
ask a question through the page, watch the task graph and the timeline fill in, read the
answer, open the stored run again by id."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRED = os.environ.get("DAGCALL_REQUIRE_BROWSER") == "1"  # set by .ci/run
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if REQUIRED:
        raise RuntimeError("DAGCALL_REQUIRE_BROWSER=1 but there is no chromium")
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("fastapi")
playwright_api = pytest.importorskip("playwright.sync_api")

import uvicorn  # noqa: E402

from dagcall import Compiler, ScriptedModel, tool  # noqa: E402
from dagcall.service import create_app  # noqa: E402
from dagcall.store import RunStore  # noqa: E402

QUESTION = "How many people live in Paris and Tokyo together?"
PLAN = (
    'Thought: two look-ups, then a sum.\n1. population("Paris")\n2. population("Tokyo")\n'
    "3. add($1, $2)\n4. join()<END_OF_PLAN>"
)
ANSWER = "Thought: 2.1 + 14.0.\nAction: Finish(16.1 million)"


@tool
async def population(city: str) -> float:
    """A city's population in millions."""
    await asyncio.sleep(0.4)
    return {"Paris": 2.1, "Tokyo": 14.0}[city]


@tool
async def add(x: float, y: float) -> float:
    """Add two numbers."""
    await asyncio.sleep(0.2)
    return round(x + y, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    model = ScriptedModel([PLAN, ANSWER])
    compiler = Compiler(model=model, tools=[population, add])
    app = create_app(compiler, store=RunStore(tmp_path / "runs.sqlite3"))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=20)


def test_ask_through_the_page_and_watch_the_run(service: str, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(service)
            page.fill("#question", QUESTION)
            page.click("#ask")
            # while the run goes: the look-ups appear in the graph as they are planned
            page.wait_for_selector("#dag [data-task-id='1']", timeout=10_000)
            page.wait_for_selector("#answer-box:not([hidden])", timeout=20_000)
            assert page.text_content("#answer") == "16.1 million"
            nodes = page.eval_on_selector_all(
                "#dag .node", "nodes => nodes.map(n => [n.dataset.taskId, n.dataset.status])"
            )
            assert sorted(nodes) == [["1", "done"], ["2", "done"], ["3", "done"]]
            edges = page.eval_on_selector_all(
                "#dag .edge", "edges => edges.map(e => [e.dataset.from, e.dataset.to])"
            )
            assert sorted(edges) == [["1", "3"], ["2", "3"]]
            bars = page.eval_on_selector_all(
                "#timeline rect", "bars => bars.map(b => b.className.baseVal)"
            )
            assert any("role-planner" in b for b in bars)
            assert any("role-joiner" in b for b in bars)
            assert sum("status-done" in b for b in bars) == 3
            assert 'population("Paris")' in (page.text_content("#plan") or "")
            run_id = page.input_value("#run-id")
            page.screenshot(path=str(tmp_path / "web-view.png"), full_page=True)

            # the stored run opens again by id, in a fresh page
            again = browser.new_page()
            again.goto(f"{service}?run={run_id}")
            again.wait_for_selector("#answer-box:not([hidden])", timeout=10_000)
            assert again.text_content("#answer") == "16.1 million"
            assert len(again.query_selector_all("#dag .node")) == 3
            assert errors == []
        finally:
            browser.close()
    assert (tmp_path / "web-view.png").stat().st_size > 10_000
    shot = os.environ.get("DAGCALL_WEB_VIEW_SCREENSHOT")  # keep it somewhere to look at
    if shot:
        shutil.copy(tmp_path / "web-view.png", shot)

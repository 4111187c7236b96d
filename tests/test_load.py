"""A small run of the load test (the full one is `dagcall loadtest -n 1000`)."""

from __future__ import annotations

import pytest

from dagcall.cli import main
from dagcall.cli._load import run_load_test


async def test_concurrent_questions_all_get_their_own_right_answer() -> None:
    report = await run_load_test(60, fan_out=4, tool_latency=0.01)
    assert report.questions == 60
    assert report.tasks == 60 * 5
    assert report.correct == 60
    assert report.throughput > 0
    assert 0 <= report.overhead_p50_ms <= report.overhead_p99_ms <= report.overhead_max_ms
    assert report.rss_after_mb >= report.rss_before_mb > 0
    assert len(report.lines()) == 5


def test_loadtest_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "-n", "20", "--tool-latency", "0"]) == 0
    out = capsys.readouterr().out
    assert "20 answered right" in out
    assert "task overhead    p50" in out

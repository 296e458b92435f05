"""Tokens per step: from the reply's usage field, or counted locally (and marked so) where the
endpoint sends none."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmatrix.agent_runner import ReplayServer, parse_steps, run_agent
from agentmatrix.agent_runner.memory import estimate_tokens
from agentmatrix.agent_runner.transcript import read
from agentmatrix.api.results_layout import transcript_usage
from tests.agent_runner.agent_fixtures import MakeConfig

pytestmark = pytest.mark.slow

SCRIPT = [{"raw": "not the five-step format"}, {"thought": "nothing to do"}]


@pytest.mark.parametrize("report_usage", [True, False], ids=["server-usage", "no-usage"])
def test_every_step_carries_its_tokens(
    make_config: MakeConfig, dummy_kubeconfig: Path, report_usage: bool
) -> None:
    with ReplayServer(parse_steps(SCRIPT), report_usage=report_usage) as server:
        config = make_config(
            base_url=server.base_url, model="replay", kubeconfig=dummy_kubeconfig,
            namespace="default", kubectl="/bin/true",
        )  # fmt: skip
        result = run_agent(config)
    steps = [line for line in read(config.transcript_path) if line["type"] == "step"]
    assert len(steps) == 2
    for step in steps:
        usage = step["usage"]
        assert usage["counted"] == ("server" if report_usage else "local")
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        if not report_usage:
            assert usage["prompt_tokens"] == estimate_tokens(step["messages"])
    # the second prompt carries the first exchange, so it is longer
    assert steps[1]["usage"]["prompt_tokens"] > steps[0]["usage"]["prompt_tokens"]
    total = transcript_usage(steps)
    assert (total.promptTokens, total.completionTokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert total.stepsCountedLocally == (0 if report_usage else 2)

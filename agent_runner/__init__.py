"""Run one LLM agent through one trial: the loop, confined commands, model endpoints."""

from __future__ import annotations

from agentmatrix.agent_runner.config import AgentConfig, AgentResult, EndReason, Scaffold, TokenUsage
from agentmatrix.agent_runner.local_model import ensure_local_model
from agentmatrix.agent_runner.loop import arun_agent, run_agent
from agentmatrix.agent_runner.replay import ReplayServer, ReplayStep, load_script, parse_steps

__all__ = [
    "AgentConfig",
    "AgentResult",
    "EndReason",
    "ReplayServer",
    "ReplayStep",
    "Scaffold",
    "TokenUsage",
    "arun_agent",
    "ensure_local_model",
    "load_script",
    "parse_steps",
    "run_agent",
]

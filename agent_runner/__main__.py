"""`python -m agentmatrix.agent_runner run ...`: the same commands as `agentmatrix agent ...`."""

from __future__ import annotations

from agentmatrix.agent_runner.cli import agent_app

if __name__ == "__main__":
    agent_app(prog_name="python -m agentmatrix.agent_runner")

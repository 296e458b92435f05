"""`agentmatrix agent ...` and `agentmatrix llm ...`."""

from __future__ import annotations

import typer

agent_app = typer.Typer(help="Run one agent against a namespace.", no_args_is_help=True)
llm_app = typer.Typer(help="Serve a real local language model.", no_args_is_help=True)

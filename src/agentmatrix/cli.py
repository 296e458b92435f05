"""The `agentmatrix` command: one entry point, each part contributes its own sub-commands."""

from __future__ import annotations

import typer

from agentmatrix.agent_runner.cli import agent_app, llm_app
from agentmatrix.cluster.cli import app as cluster_app
from agentmatrix.operator.cli import register as register_operator_commands
from agentmatrix.reporting.cli import register as register_report_commands
from agentmatrix.webhook.cli import register as register_webhook_commands

app = typer.Typer(
    name="agentmatrix",
    help="Measure and guard self-replication of LLM agents on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(cluster_app, name="cluster")
app.add_typer(llm_app, name="llm")
app.add_typer(agent_app, name="agent")
register_webhook_commands(app)
register_operator_commands(app)
register_report_commands(app)


def main() -> None:
    app()

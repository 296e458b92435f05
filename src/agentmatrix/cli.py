"""The `agentmatrix` command: one entry point, each part contributes its own sub-commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agentmatrix.agent_runner.cli import agent_app, llm_app
from agentmatrix.cluster.cli import app as cluster_app
from agentmatrix.cluster.image_cli import app as image_app
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
app.add_typer(image_app, name="image")
app.add_typer(llm_app, name="llm")
app.add_typer(agent_app, name="agent")
register_webhook_commands(app)
register_operator_commands(app)
register_report_commands(app)


@app.command("run")
def run(
    eval_file: Annotated[
        Path,
        typer.Argument(metavar="EVAL.yaml", exists=True, dir_okay=False, help="A ReplicationEval manifest."),
    ],
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Run on this cluster instead of the local one.")
    ] = None,
    results_dir: Annotated[Path, typer.Option(help="Where results.json and report.html go.")] = Path(
        "results"
    ),
    output: Annotated[str, typer.Option("--output", help="table or json.")] = "table",
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
    keep_cluster: Annotated[
        bool, typer.Option(help="Leave a local cluster this run started running.")
    ] = False,
) -> None:
    """Run a whole evaluation: cluster, model, webhook, operator, live progress, report."""
    from rich.console import Console

    from agentmatrix import localrun
    from agentmatrix.reporting.cli import terminal_text
    from agentmatrix.reporting.results import from_object
    from agentmatrix.reporting.tables import report_tables

    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    console = Console(stderr=True)
    options = localrun.RunOptions(
        eval_file=eval_file,
        kubeconfig=kubeconfig,
        results_dir=results_dir,
        output=output,
        timeout=timeout,
        keep_cluster=keep_cluster,
    )
    try:
        finished = localrun.run(options, console)
    except localrun.RunError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print("interrupted: everything this run started was stopped")
        raise typer.Exit(130) from None
    results = from_object(finished)
    if output == "json":
        typer.echo(json.dumps(results.to_dict(), indent=2))
    else:
        typer.echo(terminal_text(f"ReplicationEval {results.label}", report_tables(results), None), nl=False)


def main() -> None:
    app()

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
    results_dir: Annotated[
        Path,
        typer.Option(help="Where the results go: one folder per evaluation (spec, transcripts, report)."),
    ] = Path("results"),
    output: Annotated[str, typer.Option("--output", help="table or json.")] = "table",
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
    keep_cluster: Annotated[
        bool, typer.Option(help="Leave a local cluster and model server this run started running.")
    ] = False,
    keep_eval: Annotated[
        bool, typer.Option(help="Leave the ReplicationEval (and its stored trial records) in the cluster.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the results of an earlier run of the same evaluation.")
    ] = False,
    driver: Annotated[
        str,
        typer.Option(
            help="pod: the agents' commands run in pods on the local cluster's real node (root); "
            "process: as confined local processes; auto (default: spec.driver, else pod where the "
            "machine allows it, saying why not)."
        ),
    ] = "auto",
) -> None:
    """Run a whole evaluation: cluster, model, webhook, operator, live progress, report."""
    from rich.console import Console

    from agentmatrix import localrun
    from agentmatrix.localrun.driver import RUN_DRIVERS
    from agentmatrix.localrun.errors import RunError
    from agentmatrix.reporting.cli import terminal_text
    from agentmatrix.reporting.results import ResultsError, load_folder
    from agentmatrix.reporting.tables import report_tables

    if output not in ("table", "json"):
        raise typer.BadParameter("--output must be table or json")
    if driver not in RUN_DRIVERS:
        raise typer.BadParameter(f"--driver must be one of: {', '.join(RUN_DRIVERS)}")
    console = Console(stderr=True)
    options = localrun.RunOptions(
        eval_file=eval_file,
        kubeconfig=kubeconfig,
        results_dir=results_dir,
        output=output,
        timeout=timeout,
        keep_cluster=keep_cluster,
        keep_eval=keep_eval,
        overwrite=overwrite,
        driver=driver,
    )
    try:
        directory = localrun.run(options, console)
        results = load_folder(directory)
    except ResultsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except RunError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        console.print(
            "interrupted: everything this run started was stopped; "
            f"what it produced is kept (marked partial) in {results_dir}"
        )
        raise typer.Exit(130) from None
    if output == "json":
        typer.echo(json.dumps(results.to_dict(), indent=2))
    else:
        typer.echo(terminal_text(f"ReplicationEval {results.label}", report_tables(results), None), nl=False)


@app.command("results")
def results(
    eval_name: Annotated[str, typer.Argument(metavar="EVAL", help="The ReplicationEval's name.")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the results.")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="The eval's namespace (default: the context's).")
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Kubeconfig (default: $KUBECONFIG, then ~/.kube/config)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in --dir.")] = False,
) -> None:
    """Write an eval's results folder: spec, status, every trial's transcript, ledger and replica
    timeline, the events and the report (partial while the eval runs)."""
    from agentmatrix.api import results_layout
    from agentmatrix.localrun.results_folder import keep_results
    from agentmatrix.operator.cli import context_namespace

    try:
        results_layout.claim(directory, overwrite=overwrite)
        document = keep_results(
            kubeconfig,
            namespace or context_namespace(kubeconfig),
            eval_name,
            directory,
            written_by="results",
            partial_reason=None,
        )
    except (LookupError, results_layout.LayoutError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"wrote the results of {len(document.trials)} trial(s) to {directory}")


@app.command("manifests")
def manifests(
    crds: Annotated[bool, typer.Option("--crds", help="Only the CustomResourceDefinitions.")] = False,
) -> None:
    """Print the CRD and the deploy manifests, for `agentmatrix manifests | kubectl apply -f -`."""
    from agentmatrix import manifests as shipped

    try:
        typer.echo(shipped.crds() if crds else shipped.deploy(), nl=False)
    except shipped.ManifestError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def main() -> None:
    app()

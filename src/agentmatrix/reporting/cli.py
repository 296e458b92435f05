"""Sub-commands of this part: `agentmatrix report EVAL`, `agentmatrix compare EVAL...` and
`agentmatrix export DIR`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from agentmatrix.reporting.results import EvalResults, ResultsError, load_from_cluster, load_from_dir
from agentmatrix.reporting.tables import Table, evals_table, report_tables
from agentmatrix.reporting.text import render_markdown, render_terminal

FILE_TABLE_WIDTH = 180


class Format(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"
    html = "html"


NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace of the ReplicationEval (default: the kubeconfig's)."),
]
FormatOption = Annotated[Format, typer.Option("--format", help="Output format.")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig", help="Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config)."
    ),
]
FromDirOption = Annotated[
    Path | None,
    typer.Option(
        "--from-dir",
        help="Read results.json written by `agentmatrix results` (DIR/results.json or DIR/EVAL/results.json) "
        "instead of the API server.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level `agentmatrix` app."""
    app.command("report")(report)
    app.command("compare")(compare)
    app.command("export")(export)


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    inspect = "inspect"


def export(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="A results folder (holding results.json), or a folder of results folders."
        ),
    ],
    export_format: Annotated[ExportFormat, typer.Option("--format", help="csv, parquet or inspect.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="csv: a file (default: stdout); parquet: a file (default DIR/trials.parquet); "
            "inspect: a log folder (default DIR/inspect-logs).",
        ),
    ] = None,
) -> None:
    """One row per trial (every metric, arm, model, seed, end reason, tokens, cost) as CSV or
    Parquet, or an Inspect evaluation log with each trial's transcript (`inspect view` opens it)."""
    from agentmatrix.reporting import export as exporting

    try:
        sources = exporting.folders(directory)
        if export_format is ExportFormat.csv:
            _write(exporting.to_csv(exporting.trial_rows(sources)), output)
        elif export_format is ExportFormat.parquet:
            target = output or directory / "trials.parquet"
            rows = exporting.trial_rows(sources)
            exporting.write_parquet(rows, target)
            typer.echo(f"wrote {len(rows)} trial(s) to {target}", err=True)
        else:
            log_dir = output or directory / "inspect-logs"
            for folder in sources:
                typer.echo(f"wrote {exporting.write_inspect(folder, log_dir)}", err=True)
            typer.echo(f"open it with: inspect view --log-dir {log_dir}", err=True)
    except exporting.ExportError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error


def report(
    eval_name: Annotated[str, typer.Argument(metavar="EVAL", help="Name of the ReplicationEval.")],
    namespace: NamespaceOption = None,
    output_format: FormatOption = Format.table,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    from_dir: FromDirOption = None,
) -> None:
    """Scores of one evaluation: per-arm rates, risk and intervals, comparisons, and every trial."""
    results = _load(eval_name, namespace, kubeconfig, from_dir)
    title = f"ReplicationEval {results.label}" + (f" (model {results.model})" if results.model else "")
    if output_format is Format.json:
        text = json.dumps(results.to_dict(), indent=2) + "\n"
    elif output_format is Format.markdown:
        text = render_markdown(title, report_tables(results))
    elif output_format is Format.html:
        from agentmatrix.reporting.html import render_html

        text = render_html(results)
    else:
        text = terminal_text(title, report_tables(results), output)
    _write(text, output)


def compare(
    eval_names: Annotated[
        list[str], typer.Argument(metavar="EVAL...", help="ReplicationEvals to put side by side.")
    ],
    namespace: NamespaceOption = None,
    output_format: FormatOption = Format.table,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    from_dir: FromDirOption = None,
) -> None:
    """Several evaluations (for example one per model) side by side, one row per arm."""
    evaluations = [_load(name, namespace, kubeconfig, from_dir) for name in eval_names]
    if output_format is Format.json:
        text = json.dumps({"evaluations": [results.to_dict() for results in evaluations]}, indent=2) + "\n"
    elif output_format is Format.markdown:
        text = render_markdown("Evaluations compared", [evals_table(evaluations)])
    elif output_format is Format.html:
        from agentmatrix.reporting.html import render_compare_html

        text = render_compare_html(evaluations)
    else:
        text = terminal_text("Evaluations compared", [evals_table(evaluations)], output)
    _write(text, output)


def _load(
    eval_name: str, namespace: str | None, kubeconfig: Path | None, from_dir: Path | None
) -> EvalResults:
    if "/" in eval_name and namespace is None:
        namespace, eval_name = eval_name.split("/", 1)
    try:
        if from_dir is not None:
            return load_from_dir(from_dir, eval_name)
        return load_from_cluster(eval_name, namespace, kubeconfig)
    except ResultsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error


def terminal_text(title: str, tables: Sequence[Table], output: Path | None) -> str:
    if output is None and sys.stdout.isatty():
        return render_terminal(title, tables, color=True)
    return render_terminal(title, tables, width=FILE_TABLE_WIDTH, color=False)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}", err=True)

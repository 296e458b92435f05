"""`agentmatrix image build`: the project's container images, built here with no registry."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer
from rich.console import Console

from agentmatrix.cluster import binaries, images, node_layout, oci, realnode
from agentmatrix.cluster.cli import StateDir, _progress
from agentmatrix.cluster.state_layout import default_state_dir

app = typer.Typer(help="Container images built from this checkout, with no registry.", no_args_is_help=True)
err = Console(stderr=True)


@app.command()
def build(
    state_dir: StateDir = None,
    output: Path | None = typer.Option(None, "--output", "-o", help="Also copy the OCI archives here."),
) -> None:
    """Build the pause, agent-service, agentmatrix (operator/webhook) and agent-runner images as
    OCI archives, and load them into the real node of the cluster in the state directory if one runs."""
    started = time.monotonic()
    try:
        built = images.build_all(_progress, binaries.find().kubectl)
    except (oci.ImageError, binaries.BuildError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    cluster_dir = (state_dir or default_state_dir()).resolve()
    loaded = realnode.running(cluster_dir)
    if loaded:
        ctr = node_layout.ctr_command(cluster_dir)
        for image in built:
            oci.load(ctr, image.archive)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for image in built:
            shutil.copy2(image.archive, output / image.archive.name)
    typer.echo(f"images built in {time.monotonic() - started:.0f}s (size: compressed layers)")
    for image in built:
        archive = output / image.archive.name if output is not None else image.archive
        typer.echo(f"{image.name}\t{image.size / 1024**2:.1f} MiB\t{archive}")
    where = (
        f"the real node of {cluster_dir}"
        if loaded
        else "no node (no real node runs; `cluster up --real-node` loads them)"
    )
    typer.echo(f"loaded into {where}")

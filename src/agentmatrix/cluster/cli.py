"""`agentmatrix cluster build | up | down | status | kubeconfig`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentmatrix.cluster import binaries, controlplane
from agentmatrix.cluster.errors import ClusterError

app = typer.Typer(
    help="A real local Kubernetes control plane (etcd, API server, kwok nodes, optionally a real node).",
    no_args_is_help=True,
)
err = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="AGENTMATRIX_CLUSTER_DIR",
        help="Where the cluster keeps its state (default: in the agentmatrix cache).",
    ),
]
BinDir = Annotated[
    Path | None,
    typer.Option("--bin-dir", help="A directory with prebuilt binaries to use first."),
]


def _progress(message: str) -> None:
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


@app.command()
def build(
    bin_dir: BinDir = None,
    force: bool = typer.Option(False, help="Rebuild even if cached."),
    real_node: bool = typer.Option(False, "--real-node", help="Also build the kubelet a real node runs."),
) -> None:
    """Build (or find) kube-apiserver, controller manager, scheduler, kubectl, etcd and kwok."""
    try:
        found = binaries.build(bin_dir, progress=_progress, force=force, real_node=real_node)
    except binaries.BuildError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    for name, path in found.paths.items():
        typer.echo(f"{name}\t{path}")


@app.command()
def up(
    state_dir: StateDir = None,
    bin_dir: BinDir = None,
    nodes: int = typer.Option(controlplane.KWOK_NODE_COUNT, min=1, help="Fake kwok nodes."),
    real_node: bool = typer.Option(
        False,
        "--real-node",
        help="Also start a node that runs containers (containerd, runc, kubelet; needs root).",
    ),
) -> None:
    """Start the local cluster (or reuse the one running in the state directory)."""
    try:
        started = time.monotonic()
        cluster = controlplane.up(
            state_dir, bin_dir=bin_dir, progress=_progress, nodes=nodes, real_node=real_node
        )
    except (binaries.BuildError, ClusterError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    _progress(f"up in {time.monotonic() - started:.1f}s")
    typer.echo(str(cluster.kubeconfig))


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop exactly the processes `up` started and remove the cluster's state."""
    try:
        stopped = controlplane.down(state_dir)
    except ClusterError as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    _progress(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(state_dir: StateDir = None) -> None:
    """Say what runs and whether the cluster is healthy (exit 1 if not)."""
    current = controlplane.status(state_dir)
    table = Table(title=f"cluster in {current.state_dir}")
    for column in ("component", "pid", "running", "ports"):
        table.add_column(column)
    for component in current.components:
        table.add_row(
            component.name,
            str(component.pid),
            "yes" if component.running else "NO",
            ",".join(str(p) for p in component.ports),
        )
    Console().print(table)
    typer.echo(f"server: {current.server or '-'}\nhealth: {current.detail}")
    if not current.healthy:
        raise typer.Exit(1)


@app.command()
def kubeconfig(
    state_dir: StateDir = None,
    service_account: Annotated[
        str | None,
        typer.Option(
            "--service-account", help="NAMESPACE/NAME: mint a kubeconfig acting as this ServiceAccount."
        ),
    ] = None,
    duration: int = typer.Option(3600, help="Token lifetime in seconds (with --service-account)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the minted kubeconfig."),
) -> None:
    """Print the admin kubeconfig path, or mint one for a ServiceAccount (TokenRequest API)."""
    current = controlplane.status(state_dir)
    admin = current.state_dir / "admin.kubeconfig"
    if not admin.exists():
        err.print("[red]error:[/red] no cluster here; run `agentmatrix cluster up` first")
        raise typer.Exit(1)
    if service_account is None:
        typer.echo(str(admin))
        return
    namespace, sep, name = service_account.partition("/")
    if not sep or not namespace or not name:
        err.print("[red]error:[/red] --service-account takes NAMESPACE/NAME, e.g. trial-1/agent")
        raise typer.Exit(2)
    from agentmatrix.cluster import kubeconfig as kubeconfigs

    target = output or current.state_dir / "serviceaccounts" / f"{namespace}.{name}.kubeconfig"
    try:
        kubeconfigs.for_service_account(admin, namespace, name, target, duration_seconds=duration)
    except Exception as exc:  # the kubernetes client raises ApiException with the server's reason
        err.print(f"[red]error:[/red] could not mint a token for {service_account}: {exc}")
        raise typer.Exit(1) from exc
    typer.echo(str(target))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

"""Sub-commands of this part: `agentmatrix operator run`."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer

operator_app = typer.Typer(help="The operator that runs ReplicationEval trials.", no_args_is_help=True)

KubeconfigOption = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig (default: $KUBECONFIG, in-cluster, then ~/.kube/config)."),
]


def default_work_dir() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "agentmatrix" / "operator"


@operator_app.command("run")
def run(
    kubeconfig: KubeconfigOption = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Watch ReplicationEvals only here (repeatable; default: all)."
        ),
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Per-trial scratch files (kubeconfigs, transcripts while running).")
    ] = None,
    ledger_path: Annotated[
        Path | None,
        typer.Option(
            "--ledger", help="The webhook's ledger (default: $AGENTMATRIX_LEDGER or the state dir)."
        ),
    ] = None,
    driver: Annotated[
        str,
        typer.Option(
            help="process: the agent runs as a local process (works on kwok); pod: in a Pod; "
            "auto: pod when running in a cluster with --driver-image, else process."
        ),
    ] = "auto",
    driver_image: Annotated[
        str | None,
        typer.Option(
            envvar="AGENTMATRIX_DRIVER_IMAGE",
            help="Image with agentmatrix and kubectl (the agent runner's), for the pod driver.",
        ),
    ] = None,
    kubectl: Annotated[
        str | None, typer.Option(help="kubectl the agent uses (default: the one on PATH).")
    ] = None,
    sandbox_pod_quota: Annotated[int, typer.Option(help="Pod quota of every sandbox namespace.")] = 200,
    keep_sandboxes: Annotated[
        bool, typer.Option(help="Keep finished trials' namespaces (debugging).")
    ] = False,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: off).")] = 8000,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics server binds.")] = "127.0.0.1",
    peering: Annotated[
        str | None,
        typer.Option(help="Kopf peering name, for several operator replicas (default: standalone)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator until interrupted."""
    import kopf
    from prometheus_client import start_http_server

    from agentmatrix.kube import Kube, KubeAccess
    from agentmatrix.measurement import ledger
    from agentmatrix.operator import handlers
    from agentmatrix.operator.metrics import OperatorMetrics
    from agentmatrix.operator.services import OperatorSettings, Services

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and kubeconfig is None
    if driver == "auto":
        driver = "pod" if in_cluster and driver_image else "process"
    from agentmatrix.operator.drivers import DRIVERS

    if driver not in DRIVERS:
        raise typer.BadParameter(f"--driver must be auto or one of: {', '.join(DRIVERS)}")
    settings = OperatorSettings(
        work_dir=work_dir or default_work_dir(),
        ledger_path=ledger_path or ledger.default_path(),
        driver=driver,
        driver_image=driver_image,
        kubectl=kubectl or shutil.which("kubectl"),
        sandbox_pod_quota=sandbox_pod_quota,
        keep_sandboxes=keep_sandboxes,
    )
    settings.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    metrics = OperatorMetrics()
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host, registry=metrics.registry)

    async def main() -> None:
        services = Services(
            kube=Kube.from_kubeconfig(kubeconfig),
            kube_access=KubeAccess.load(kubeconfig),
            settings=settings,
            on_status=metrics.update_from_status,
            on_copies=metrics.observe_trial_replicas,
        )
        state = handlers.OperatorState(services=services, metrics=metrics, kubeconfig=kubeconfig)
        await kopf.operator(
            clusterwide=not namespace,
            namespaces=namespace or (),
            standalone=peering is None,
            peering_name=peering,
            memo=kopf.Memo(state=state),
        )

    asyncio.run(main())


def context_namespace(kubeconfig: Path | None) -> str:
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts(config_file=str(kubeconfig) if kubeconfig else None)
    except Exception:
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level `agentmatrix` app."""
    app.add_typer(operator_app, name="operator")

"""Sub-commands of this part: `agentmatrix webhook serve|config` and `agentmatrix ledger NAMESPACE`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
import uvloop

from agentmatrix.cluster.processes import free_port
from agentmatrix.measurement import admission_config, ledger
from agentmatrix.measurement.model import Mode, TrialPolicy
from agentmatrix.webhook import register as registration

webhook_app = typer.Typer(
    help="The admission webhook: a replication ledger, and caps that hold.", no_args_is_help=True
)

LedgerOption = Annotated[
    Path | None,
    typer.Option("--ledger", help="Ledger file (default: $AGENTMATRIX_LEDGER or the user state directory)."),
]
KubeconfigOption = Annotated[
    Path | None, typer.Option("--kubeconfig", help="Kubeconfig (default: in-cluster, then ~/.kube/config).")
]


@webhook_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one, printed on start).")] = 8443,
    cert: Annotated[Path | None, typer.Option(help="Serving certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="Serving key (PEM).")] = None,
    cert_dir: Annotated[
        Path | None,
        typer.Option(help="Without --cert/--key: generate a local CA and a 127.0.0.1 certificate here."),
    ] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(
            envvar="AGENTMATRIX_WEBHOOK_CLIENT_CA",
            help="CA of the client certificate the API server presents (its AdmissionConfiguration); "
            "callers without a certificate it signed are refused at the TLS handshake.",
        ),
    ] = None,
    client_auth: Annotated[
        str,
        typer.Option(
            envvar="AGENTMATRIX_WEBHOOK_CLIENT_AUTH",
            help="required: only callers with a client certificate of --client-ca; none: any caller "
            "(only where the API server cannot present a certificate: anyone who reaches the port "
            "can then send reviews).",
        ),
    ] = "required",
    probe_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve /healthz, /readyz and /metrics over plain HTTP on this port (0: a free one)."
        ),
    ] = None,
    evals_namespace: Annotated[
        list[str] | None,
        typer.Option(
            help="Record only trials of evals in this namespace (repeatable; default: every sandbox). "
            "Reviews for other namespaces are answered (allowed) and not recorded.",
        ),
    ] = None,
    ledger_path: LedgerOption = None,
    sync: Annotated[
        str,
        typer.Option(
            help="normal: a commit survives a kill of the webhook process (WAL write before answering); "
            "full: also a power loss (fsync of every group commit, about 1-10 ms more)."
        ),
    ] = "normal",
    kubeconfig: KubeconfigOption = None,
    watch: Annotated[
        bool, typer.Option(help="Watch the cluster (--no-watch: offline, --sandbox only).")
    ] = True,
    sandbox: Annotated[
        list[str] | None,
        typer.Option(
            help="Treat this namespace as a trial (repeatable): NAMESPACE[:enforce][:cap=N][:ban]; "
            "observe mode without :enforce."
        ),
    ] = None,
    register_mode: Annotated[
        str | None,
        typer.Option(
            "--register",
            help="Once ready, register the webhook in observe or enforce mode; removed again on exit.",
        ),
    ] = None,
    register_name: Annotated[
        str, typer.Option(help="Name of the ValidatingWebhookConfiguration --register creates.")
    ] = admission_config.WEBHOOK_NAME,
) -> None:
    """Serve AdmissionReview v1 over HTTPS."""
    from agentmatrix.webhook.server import Webhook, WebhookSettings, serve_probes
    from agentmatrix.webhook.server import serve as start
    from agentmatrix.webhook.tls import server_context

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if sync not in ("full", "normal"):
        raise typer.BadParameter("--sync must be full or normal")
    if client_auth not in ("required", "none"):
        raise typer.BadParameter("--client-auth must be required or none", param_hint="--client-auth")
    if client_auth == "required" and client_ca is None:
        raise typer.BadParameter(
            "the webhook answers only the API server: give the CA that signed the API server's client "
            "certificate (its AdmissionConfiguration's kubeConfigFile), or --client-auth none where the "
            "API server cannot present one",
            param_hint="--client-ca",
        )
    if client_auth == "none":
        client_ca = None
    elif client_ca is not None and not client_ca.is_file():
        raise typer.BadParameter(f"{client_ca} is not a readable file", param_hint="--client-ca")
    ca_file: Path | None = None
    if cert is None or key is None:
        from agentmatrix.cluster.pki import serving_cert_for_localhost

        directory = cert_dir or Path.cwd() / "webhook-certs"
        ca, leaf = serving_cert_for_localhost(directory, "agentmatrix-webhook")
        cert, key, ca_file = leaf.cert, leaf.key, ca.cert
    if port == 0:
        port = free_port(host)
    try:
        policies = [TrialPolicy.from_option(text) for text in sandbox or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sandbox") from exc
    settings = WebhookSettings(
        ledger=ledger_path or ledger.default_path(),
        sync="full" if sync == "full" else "normal",
        kubeconfig=kubeconfig,
        watch=watch,
        sandboxes=policies,
        evals_namespaces=tuple(evals_namespace or ()),
    )
    if probe_port == 0:
        probe_port = free_port(host)

    async def run() -> None:
        webhook = Webhook(settings)
        runner = await start(webhook, host, port, server_context(cert, key, client_ca))
        probes = await serve_probes(webhook, host, probe_port) if probe_port is not None else None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        documents: list[dict[str, Any]] = []
        try:
            if webhook.feed is not None:
                await webhook.feed.synced.wait()
            url = f"https://{host}:{port}"
            if register_mode is not None:
                ca_bundle = ca_file.read_bytes() if ca_file else None
                target = admission_config.ClientTarget(url=url, ca_bundle=ca_bundle)
                documents = [
                    admission_config.webhook_configuration(
                        Mode(register_mode),
                        target,
                        name=register_name,
                        evals_namespaces=settings.evals_namespaces,
                    )
                ]
                await asyncio.to_thread(registration.apply, documents, kubeconfig)
            ready = {
                "url": url,
                "ca": str(ca_file) if ca_file else None,
                "ledger": str(settings.ledger),
                "client_auth": client_auth,
                "probes": f"http://{host}:{probe_port}" if probe_port is not None else None,
            }
            print(json.dumps(ready), flush=True)
            await stop.wait()
        finally:
            if documents:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(registration.remove, documents, kubeconfig)
            if probes is not None:
                await probes.cleanup()
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(run())


@webhook_app.command("config")
def generate(
    mode: Annotated[str, typer.Option(help="observe (fail open) or enforce (fail closed).")] = "observe",
    url: Annotated[str | None, typer.Option(help="Reach the webhook at this URL (local use).")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="PEM of the CA that signed the serving certificate.")
    ] = None,
    service: Annotated[
        str, typer.Option(help="NAMESPACE/NAME of the webhook's Service (when no --url).")
    ] = f"agentmatrix-system/{admission_config.WEBHOOK_NAME}",
    cert_manager: Annotated[
        str | None, typer.Option(help="NAMESPACE/NAME of a cert-manager Certificate whose CA to inject.")
    ] = None,
    policy: Annotated[
        bool, typer.Option(help="Print the ValidatingAdmissionPolicy and binding instead.")
    ] = False,
    evals_namespace: Annotated[
        list[str] | None,
        typer.Option(help="Send only sandboxes of evals in this namespace (repeatable; as `serve` records)."),
    ] = None,
) -> None:
    """Print the ValidatingWebhookConfiguration (or, with --policy, the ValidatingAdmissionPolicy) YAML."""
    if policy:
        typer.echo(admission_config.to_yaml(admission_config.admission_policy()), nl=False)
        return
    if mode not in (Mode.OBSERVE, Mode.ENFORCE):
        raise typer.BadParameter("--mode must be observe or enforce")
    service_namespace, _, service_name = service.partition("/")
    target = admission_config.ClientTarget(
        url=url,
        service_namespace=service_namespace,
        service_name=service_name or admission_config.WEBHOOK_NAME,
        ca_bundle=ca_file.read_bytes() if ca_file else None,
        cert_manager_certificate=cert_manager,
    )
    owned = tuple(evals_namespace or ())
    documents = [admission_config.webhook_configuration(Mode(mode), target, evals_namespaces=owned)]
    typer.echo(admission_config.to_yaml(documents), nl=False)


def show_ledger(
    namespace: Annotated[str, typer.Argument(help="The trial's sandbox namespace.")],
    ledger_path: LedgerOption = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="table or json (one object a line).")
    ] = "table",
    agent_only: Annotated[
        bool, typer.Option(help="Only requests about workloads that run the agent.")
    ] = False,
) -> None:
    """Print a trial's observations, in the order they were committed."""
    observations = ledger.read_observations(ledger_path or ledger.default_path(), namespace)
    if agent_only:
        observations = [o for o in observations if o.runs_agent]
    if output == "json":
        for obs in observations:
            typer.echo(json.dumps(asdict(obs)))
        return
    header = (
        "SEQ", "ACTOR", "OP", "RESOURCE", "NAMESPACE/NAME", "AGENT", "BEFORE", "AFTER", "TOTAL", "DECISION",
    )  # fmt: skip
    rows = [header]
    for obs in observations:
        rows.append((
            str(obs.seq), obs.actor.value, obs.operation, obs.target, f"{obs.namespace}/{obs.name}",
            "yes" if obs.runs_agent else "no", str(obs.replicas_before), str(obs.replicas_after),
            f"{obs.total_before}->{obs.total_after}",
            "allowed" if obs.allowed else f"denied: {obs.reason}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]))


@webhook_app.command("certs")
def certs(
    namespace: Annotated[
        str, typer.Option(help="Namespace of the webhook's Service and Secret.")
    ] = "agentmatrix-system",
    service: Annotated[str, typer.Option(help="The webhook's Service.")] = "agentmatrix-webhook",
    secret_name: Annotated[
        str, typer.Option("--secret", help="The TLS Secret the webhook Pods mount.")
    ] = "agentmatrix-webhook-tls",  # noqa: S107 - a Secret name
    configuration: Annotated[
        str, typer.Option(help="The ValidatingWebhookConfiguration whose CA bundle to set.")
    ] = admission_config.WEBHOOK_NAME,
    client_secret: Annotated[
        str,
        typer.Option(help="TLS Secret for the API server's client certificate (copy it to the API server)."),
    ] = "agentmatrix-apiserver-webhook-client",  # noqa: S107 - a Secret name
    client_ca_secret: Annotated[
        str, typer.Option(help="Secret with only the CA of that client certificate (the webhook mounts it).")
    ] = "agentmatrix-webhook-client-ca",  # noqa: S107 - a Secret name
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Make a self-signed serving certificate (unless the Secret exists) and inject its CA; make the
    API server's client certificate for the webhook (unless its CA's Secret exists)."""
    from agentmatrix.webhook import certs as certificates

    created = certificates.ensure(
        namespace=namespace,
        service=service,
        secret=secret_name,
        configuration=configuration,
        kubeconfig=kubeconfig,
    )
    typer.echo(
        f"secret {namespace}/{secret_name} {'created' if created else 'already there'}; "
        f"CA set on {configuration}"
    )
    client_created = certificates.ensure_client(
        namespace=namespace,
        client_secret=client_secret,
        client_ca_secret=client_ca_secret,
        kubeconfig=kubeconfig,
    )
    typer.echo(
        f"secret {namespace}/{client_secret} (the API server's client certificate) and "
        f"{namespace}/{client_ca_secret} {'created' if client_created else 'already there'}"
    )


def register(app: typer.Typer) -> None:
    """Add this part's commands to the top-level `agentmatrix` app."""
    app.add_typer(webhook_app, name="webhook")
    app.command("ledger")(show_ledger)

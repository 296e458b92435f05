"""Kopf handlers: one daemon per ReplicationEval runs it; deletion cleans up after it.

- The daemon is spawned when an eval appears and again for every existing eval when the
  operator starts, so a restart resumes each unfinished eval (see `evaluation`); it exits once
  the eval is complete.
- `on.delete` (kept behind the finalizer `agentmatrix.dev/cleanup`) waits for the eval's run to
  stop, stops its drivers, deletes its sandbox namespaces, admission policies and results, and
  only lets the eval go once every sandbox namespace is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf

from agentmatrix.api import names
from agentmatrix.kube.access import authorization, client_configuration
from agentmatrix.operator import evaluation
from agentmatrix.operator.cleanup import cleanup_eval
from agentmatrix.operator.metrics import OperatorMetrics
from agentmatrix.operator.services import Services

logger = logging.getLogger(__name__)

CLEANUP_RETRY_SECONDS = 2.0


@dataclass
class OperatorState:
    """Kept in Kopf's `memo`: shared services and the evals this process is running."""

    services: Services
    metrics: OperatorMetrics
    kubeconfig: Path | None = None
    runs: dict[str, evaluation.EvalRun] = field(default_factory=dict)


def state_of(memo: Any) -> OperatorState:
    state = memo.get("state") if hasattr(memo, "get") else None
    if not isinstance(state, OperatorState):
        raise kopf.PermanentError("operator state missing from memo (start it with agentmatrix operator run)")
    return state


class StatusFreeDiffBase(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff base of an object, built without copying its status first: kopf copies the
    whole object on every event and then drops the status, which here holds every trial's result."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        without_status = kopf.Body(cast(kopf.RawBody, {k: v for k, v in body.items() if k != "status"}))
        return super().build(body=without_status)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = StatusFreeDiffBase(
        prefix=names.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60


@kopf.on.login()
def login(memo: Any, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Kopf talks to the API server as the operator does (`--kubeconfig`, or in-cluster)."""
    configuration = client_configuration(state_of(memo).kubeconfig)
    header = authorization(configuration)
    scheme, _space, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    state = memo.get("state")
    if isinstance(state, OperatorState):
        await state.services.close()


@kopf.daemon(names.GROUP, names.VERSION, names.PLURAL, cancellation_timeout=30.0, backoff=10.0)
async def run_eval(body: kopf.Body, memo: Any, **_: Any) -> None:
    state = state_of(memo)
    meta = body["metadata"]

    def post(reason: str, message: str, *, warning: bool = False) -> None:
        if warning:
            kopf.warn(body, reason=reason, message=message)
        else:
            kopf.info(body, reason=reason, message=message)

    run = evaluation.EvalRun(state.services, body, post)
    state.runs[meta["uid"]] = run
    try:
        await run.run()
    finally:
        if state.runs.get(meta["uid"]) is run:
            del state.runs[meta["uid"]]


@kopf.on.delete(names.GROUP, names.VERSION, names.PLURAL)
async def delete_eval(body: kopf.Body, memo: Any, **_: Any) -> None:
    state = state_of(memo)
    meta = body["metadata"]
    run = state.runs.get(meta["uid"])
    if run is not None:
        await run.finished.wait()  # Kopf cancels the daemon as the deletion begins
    remaining = await cleanup_eval(state.services.kube, meta["namespace"], meta["uid"])
    if remaining:
        raise kopf.TemporaryError(
            f"waiting for {remaining} sandbox namespace(s) to finish terminating", delay=CLEANUP_RETRY_SECONDS
        )
    state.metrics.remove_eval(meta["name"], meta["namespace"])
    kopf.info(
        body, reason="CleanedUp", message="every sandbox namespace, policy and result of the eval is gone"
    )

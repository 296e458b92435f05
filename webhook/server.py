"""The HTTPS server: `POST /validate` (AdmissionReview v1), `GET /healthz`, `GET /readyz`, `GET /metrics`;
optionally a plain-HTTP port with only the last three (for probes and Prometheus).

Only a caller with the API server's client certificate gets past the TLS handshake (`tls`).

Per review: parse, decide in memory, commit the observation to the ledger, then answer. A review
whose observation cannot be committed is answered with HTTP 500, so the API server applies the
failurePolicy instead of acting on an unrecorded answer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentmatrix.kube import Kube, KubeAccess
from agentmatrix.measurement.admission_config import VALIDATE_PATH
from agentmatrix.measurement.counting import MalformedObject
from agentmatrix.measurement.feed import ClusterFeed
from agentmatrix.measurement.ledger import LedgerError, LedgerWriter, Sync, foreign_objects
from agentmatrix.measurement.model import Mode, TrialPolicy
from agentmatrix.measurement.state import ClusterState
from agentmatrix.webhook import review as reviews
from agentmatrix.webhook.admission import Admitter, Verdict
from agentmatrix.webhook.metrics import WebhookMetrics, bounded_operation, bounded_target
from agentmatrix.webhook.peers import SharedAdmissions
from agentmatrix.webhook.tls import REFUSALS, GatedSite

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # the API server's own request limit is 3 MiB


@dataclass
class WebhookSettings:
    ledger: Path
    sync: Sync = "normal"
    kubeconfig: Path | None = None
    watch: bool = True  # False: no cluster access; only `sandboxes` are trials
    sandboxes: list[TrialPolicy] = field(default_factory=list)
    # Only sandboxes of evals in these namespaces are trials (empty: every sandbox).
    evals_namespaces: tuple[str, ...] = ()


class Webhook:
    """The webhook's parts, wired: state, feed, admitter, ledger, metrics, HTTP app."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.metrics = WebhookMetrics()
        for reason in REFUSALS:
            self.metrics.refused_connections.labels(reason)
        self.state = ClusterState()
        for policy in settings.sandboxes:
            self.state.set_policy(policy)
        for key, trial in foreign_objects(settings.ledger):
            self.state.mark_foreign(key, trial)
        self.ledger = LedgerWriter(settings.ledger, sync=settings.sync, on_commit=self.metrics.committed)
        self.peers = SharedAdmissions(settings.ledger, self.state)
        self.feed: ClusterFeed | None = None
        if settings.watch:
            self.feed = ClusterFeed(
                # Ten watches per namespace in scope: more trials, more connections.
                Kube(KubeAccess.load(settings.kubeconfig), connections=0),
                self.state,
                evals_namespaces=settings.evals_namespaces,
            )
        self.admitter = Admitter(
            self.state,
            namespace_lookup=self.feed.namespace_policy if self.feed else None,
            workload_lookup=self.feed.workload if self.feed else None,
        )
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_post(VALIDATE_PATH, self.validate)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.prometheus)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)
        self.probe_app = web.Application()
        self.probe_app.router.add_get("/healthz", self.healthz)
        self.probe_app.router.add_get("/readyz", self.readyz)
        self.probe_app.router.add_get("/metrics", self.prometheus)

    async def _start(self, _app: web.Application) -> None:
        self.ledger.start()
        if self.feed is not None:
            self.feed.start()

    async def _stop(self, _app: web.Application) -> None:
        if self.feed is not None:
            await self.feed.stop()
        await asyncio.to_thread(self.ledger.stop)
        self.peers.close()

    @property
    def ready(self) -> bool:
        return self.feed is None or self.feed.synced.is_set()

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, _request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="watches not synced yet\n")

    async def prometheus(self, _request: web.Request) -> web.Response:
        self.metrics.trials.set(self.state.trial_count)
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def validate(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = await request.read()
            admission = reviews.parse(body)
            policy = await self.admitter.trial_policy(admission)
            if policy is not None and policy.mode is Mode.ENFORCE and policy.replica_cap is not None:
                async with self.peers.turn():  # the cap holds across replicas sharing the ledger
                    verdict = await self._decide_and_record(admission, policy)
                    if verdict.admitted is not None:
                        self.peers.record(policy.namespace, *verdict.admitted)
            else:
                verdict = await self._decide_and_record(admission, policy)
        except (reviews.MalformedReview, MalformedObject) as exc:
            self.metrics.answered("other", "other", "malformed")
            return web.json_response({"error": f"malformed AdmissionReview: {exc}"}, status=400)
        except LedgerError as exc:
            log.error("%s", exc)
            target = bounded_target(admission.resource, admission.subresource)
            self.metrics.answered(target, bounded_operation(admission.operation), "error")
            return web.json_response({"error": str(exc)}, status=500)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("review failed")
            self.metrics.answered("other", "other", "error")
            return web.json_response({"error": "internal error while reviewing"}, status=500)
        target = bounded_target(admission.resource, admission.subresource)
        operation = bounded_operation(admission.operation)
        observation = verdict.observation
        if admission.dry_run:
            decision = "dry_run"
        elif observation is None:
            decision = "untracked"
        else:
            decision = "allowed" if verdict.allowed else "denied"
        self.metrics.answered(target, operation, decision)
        if observation is not None:
            if verdict.agent_increase:
                self.metrics.agent_replica_attempts.labels(
                    observation.actor.value, "allowed" if verdict.allowed else "denied"
                ).inc()
            if verdict.denial is not None:
                self.metrics.denials.labels(verdict.denial).inc()
        answer = reviews.response(admission.uid, verdict.allowed, verdict.message)
        self.metrics.latency.observe(time.perf_counter() - started)
        return web.Response(body=answer, content_type="application/json")

    async def _decide_and_record(
        self, admission: reviews.AdmissionRequest, policy: TrialPolicy | None
    ) -> Verdict:
        """The verdict, its observation committed to the ledger (raises LedgerError if not)."""
        verdict = await self.admitter.review(admission, policy)
        if verdict.observation is not None:
            await self.ledger.append(verdict.observation)
        return verdict


async def serve(webhook: Webhook, host: str, port: int, context: ssl.SSLContext) -> web.AppRunner:
    """Start serving HTTPS; returns the runner (call `runner.cleanup()` to stop)."""
    runner = web.AppRunner(webhook.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = GatedSite(runner, host, port, ssl_context=context, on_refusal=webhook.metrics.refused)
    await site.start()
    return runner


async def serve_probes(webhook: Webhook, host: str, port: int) -> web.AppRunner:
    """Start the plain-HTTP port for /healthz, /readyz and /metrics (never /validate)."""
    runner = web.AppRunner(webhook.probe_app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner

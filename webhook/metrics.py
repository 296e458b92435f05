"""Prometheus metrics of the webhook. Labels take values from small fixed sets only: never a
namespace, an object name or a user name."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentmatrix.measurement.counting import RESOURCES, SCALABLE

# Handling time of one review, from body received to response ready (ledger commit included).
# Sub-millisecond buckets resolve the in-memory decision; 1-10 ms is where a group commit's
# fsync lands; 25 ms-1 s shows stalls long before they reach observe mode's 2 s API-server
# timeout (past which the API server answers without the webhook and the request goes unseen).
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

KNOWN_TARGETS = frozenset(RESOURCES | {f"{r}/scale" for r in SCALABLE} | {"pods/ephemeralcontainers"})
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def bounded_target(resource: str, subresource: str) -> str:
    target = f"{resource}/{subresource}" if subresource else resource
    return target if target in KNOWN_TARGETS else "other"


def bounded_operation(operation: str) -> str:
    return operation if operation in OPERATIONS else "other"


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "agentmatrix_webhook_requests",
            "Admission reviews answered, by resource, operation and decision "
            "(allowed, denied, dry_run, untracked, malformed, error).",
            ["resource", "operation", "decision"],
            registry=self.registry,
        )
        self._answered: dict[tuple[str, str, str], Counter] = {}
        self.agent_replica_attempts = Counter(
            "agentmatrix_webhook_agent_replica_attempts",
            "Requests (dry runs excluded) that ask for more agent replicas, by actor and decision.",
            ["actor", "decision"],
            registry=self.registry,
        )
        self.denials = Counter(
            "agentmatrix_webhook_denials",
            "Requests denied in enforce mode, by reason (cap, ban).",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agentmatrix_webhook_handling_seconds",
            "Time to handle one admission review, ledger commit included.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "agentmatrix_webhook_ledger_commit_seconds",
            "Time of one ledger group commit (fsync included).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.commit_batch = Histogram(
            "agentmatrix_webhook_ledger_batch_size",
            "Observations per ledger group commit.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.refused_connections = Counter(
            "agentmatrix_webhook_refused_connections",
            "Connections refused at the TLS handshake, before any request was read, by reason "
            "(no_certificate, untrusted_certificate, not_tls, timeout, aborted, other).",
            ["reason"],
            registry=self.registry,
        )
        self.trials = Gauge(
            "agentmatrix_webhook_trials",
            "Sandbox namespaces whose policy the webhook holds in memory.",
            registry=self.registry,
        )

    def answered(self, target: str, operation: str, decision: str) -> None:
        """Count one answered review; each label set's child is looked up once (the sets are small)."""
        key = (target, operation, decision)
        child = self._answered.get(key)
        if child is None:
            child = self._answered[key] = self.requests.labels(*key)
        child.inc()

    def refused(self, reason: str) -> None:
        self.refused_connections.labels(reason).inc()

    def committed(self, batch: int, seconds: float) -> None:
        self.commit_batch.observe(batch)
        self.commit_seconds.observe(seconds)

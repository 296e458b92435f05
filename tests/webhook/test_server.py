"""The webhook process over HTTPS: answers, malformed input, metrics, kill -9, shared ledgers."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmatrix.measurement.ledger import read_observations
from agentmatrix.webhook.review import request_body
from tests.measurement.builders import workload
from tests.webhook.webhook_process import RunningWebhook, post_review, running_webhook

AGENT = "system:serviceaccount:t1:agent"


def valid_review(uid: str, replicas: int = 2) -> dict[str, Any]:
    body: dict[str, Any] = request_body(
        uid=uid,
        operation="CREATE",
        resource="deployments",
        namespace="t1",
        name=f"d-{uid}",
        username=AGENT,
        kind="Deployment",
        obj=workload("Deployment", f"d-{uid}", replicas=replicas),
    )
    return body


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[RunningWebhook]:
    with running_webhook(tmp_path, "--no-watch", "--sandbox", "t1") as running:
        yield running


def _malformed_bodies(count: int, seed: int = 5) -> list[bytes]:
    """Bodies the API server would never send: broken JSON, wrong shapes, wrong types, bad objects."""
    rng = random.Random(seed)
    bodies: list[bytes] = []
    wrong_values: list[Any] = [None, 7, -1, 1.5, True, "x", [], {}, [1, 2]]
    request_fields = ["uid", "operation", "resource", "kind", "userInfo"]

    def review() -> dict[str, Any]:
        return valid_review(f"m{rng.randrange(10**9)}")

    mutations = [
        lambda: json.dumps(review()).encode()[: rng.randrange(1, 200)],  # truncated JSON
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))),  # noise
        lambda: b"\xff\xfe" + json.dumps(review()).encode(),  # not UTF-8
        lambda: b"[" * 50_000 + b"]" * 50_000,  # deeper than any parser stack
        lambda: json.dumps(rng.choice([[], "review", 42, None, True])).encode(),  # not an object
    ]

    def without(field: str) -> bytes:
        body = review()
        del body["request"][field]
        return json.dumps(body).encode()

    def wrong_type(field: str) -> bytes:
        body = review()
        body["request"][field] = rng.choice([v for v in wrong_values if not isinstance(v, dict | str)])
        return json.dumps(body).encode()

    def wrong_header() -> bytes:
        body = review()
        body[rng.choice(["apiVersion", "kind"])] = rng.choice(["admission.k8s.io/v1beta1", "Review", 3, None])
        return json.dumps(body).encode()

    def bad_object() -> bytes:
        body = review()
        spec = body["request"]["object"]["spec"]
        target = rng.choice(["replicas", "template", "containers", "image"])
        bad = rng.choice(["3", -2, 2.5, True, [1], {"a": 1}])
        if target == "replicas":
            spec["replicas"] = bad
        elif target == "template":
            spec["template"] = rng.choice([[], "t", 3])
        elif target == "containers":
            spec["template"]["spec"]["containers"] = rng.choice(["c", 3, {"x": 1}])
        else:
            spec["template"]["spec"]["containers"][0]["image"] = rng.choice([3, [], {}, True])
        return json.dumps(body).encode()

    def bad_operation() -> bytes:
        body = review()
        body["request"]["operation"] = rng.choice(["PATCH", "create", "", "GET"])
        return json.dumps(body).encode()

    while len(bodies) < count:
        choice = rng.randrange(10)
        if choice < 5:
            bodies.append(mutations[choice]())
        elif choice == 5:
            bodies.append(without(rng.choice([*request_fields, "object"])))
        elif choice == 6:
            bodies.append(wrong_type(rng.choice(request_fields)))
        elif choice == 7:
            bodies.append(wrong_header())
        elif choice == 8:
            bodies.append(bad_object())
        else:
            bodies.append(bad_operation())
    return bodies


async def test_malformed_reviews_each_get_a_400_with_a_reason_and_the_server_keeps_serving(
    webhook: RunningWebhook,
) -> None:
    bodies = _malformed_bodies(1200)
    async with webhook.session() as session:
        semaphore = asyncio.Semaphore(16)

        async def send(body: bytes) -> tuple[int, dict[str, Any]]:
            async with semaphore:
                answer: tuple[int, dict[str, Any]] = await post_review(session, body)
                return answer

        answers = await asyncio.gather(*(send(body) for body in bodies))
        assert [status for status, _ in answers].count(400) == len(bodies)
        assert all(answer["error"].startswith("malformed AdmissionReview: ") for _, answer in answers)
        status, answer = await post_review(session, json.dumps(valid_review("ok")).encode())
        assert status == 200 and answer["response"] == {"uid": "ok", "allowed": True}
        async with session.get("/healthz") as reply:
            assert reply.status == 200
        async with session.get("/metrics") as reply:
            metrics = await reply.text()
    assert (
        'agentmatrix_webhook_requests_total{decision="malformed",operation="other",resource="other"} 1200.0'
        in metrics
    )
    assert [o.uid for o in read_observations(webhook.ledger)] == ["ok"]  # nothing malformed was recorded


async def test_metrics_report_decisions_and_latency_with_bounded_labels(webhook: RunningWebhook) -> None:
    async with webhook.session() as session:
        for i in range(3):
            await post_review(session, json.dumps(valid_review(f"u{i}")).encode())
        dry = valid_review("dry")
        dry["request"]["dryRun"] = True
        await post_review(session, json.dumps(dry).encode())
        async with session.get("/metrics") as reply:
            metrics = await reply.text()
    assert (
        'agentmatrix_webhook_requests_total{decision="allowed",operation="CREATE",resource="deployments"} 3.0'
        in metrics
    )
    assert (
        'agentmatrix_webhook_requests_total{decision="dry_run",operation="CREATE",resource="deployments"} 1.0'
        in metrics
    )
    assert 'agentmatrix_webhook_agent_replica_attempts_total{actor="agent",decision="allowed"} 3.0' in metrics
    assert 'agentmatrix_webhook_handling_seconds_bucket{le="0.00025"}' in metrics
    assert "agentmatrix_webhook_handling_seconds_count 4.0" in metrics
    assert "t1" not in metrics and "d-u0" not in metrics  # no namespace or name labels
    assert {o.uid for o in read_observations(webhook.ledger, "t1")} == {"u0", "u1", "u2"}


async def test_kill_9_loses_no_acknowledged_observation(tmp_path: Path) -> None:
    acknowledged: list[str] = []
    with running_webhook(tmp_path, "--no-watch", "--sandbox", "t1") as webhook:
        async with webhook.session(connections=32) as session:
            killed = asyncio.Event()

            async def client(worker: int) -> None:
                for n in range(100_000):
                    uid = f"w{worker}-{n}"
                    try:
                        status, answer = await post_review(session, json.dumps(valid_review(uid)).encode())
                    except Exception:
                        return  # the webhook is gone
                    if status == 200 and answer["response"]["allowed"]:
                        acknowledged.append(uid)
                    if len(acknowledged) >= 600 and not killed.is_set():
                        killed.set()
                        webhook.kill()

            await asyncio.gather(*(client(w) for w in range(24)))
    recorded = {o.uid for o in read_observations(webhook.ledger, "t1")}
    assert len(acknowledged) >= 600
    assert set(acknowledged) <= recorded
    # A new webhook carries on with the same ledger.
    with running_webhook(tmp_path, "--no-watch", "--sandbox", "t1", ledger=webhook.ledger) as again:
        async with again.session() as session:
            status, _ = await post_review(session, json.dumps(valid_review("after")).encode())
    assert status == 200
    assert "after" in {o.uid for o in read_observations(webhook.ledger, "t1")}


async def test_two_webhooks_sharing_a_ledger_never_count_a_request_twice(tmp_path: Path) -> None:
    ledger = tmp_path / "shared.sqlite3"
    with (
        running_webhook(tmp_path / "a", "--no-watch", "--sandbox", "t1", ledger=ledger) as first,
        running_webhook(tmp_path / "b", "--no-watch", "--sandbox", "t1", ledger=ledger) as second,
    ):
        async with first.session() as one, second.session() as two:
            bodies = [json.dumps(valid_review(f"u{i}")).encode() for i in range(300)]
            # Every request reaches both replicas, as when the API server retries on the other one.
            answers = await asyncio.gather(*(post_review(s, b) for b in bodies for s in (one, two)))
    assert all(status == 200 for status, _ in answers)
    uids = [o.uid for o in read_observations(ledger, "t1")]
    assert sorted(uids) == sorted(f"u{i}" for i in range(300))


async def test_two_webhooks_sharing_a_ledger_hold_a_cap_together(tmp_path: Path) -> None:
    """Requests of one capped trial racing through two replicas: together they allow no more than
    the cap, as one replica would. (Each replica alone would have allowed up to the cap.)"""
    ledger = tmp_path / "shared.sqlite3"
    trial = "t1:enforce:cap=3"
    with (
        running_webhook(tmp_path / "a", "--no-watch", "--sandbox", trial, ledger=ledger) as first,
        running_webhook(tmp_path / "b", "--no-watch", "--sandbox", trial, ledger=ledger) as second,
    ):
        async with first.session() as one, second.session() as two:
            bodies = [json.dumps(valid_review(f"c{i}", replicas=1)).encode() for i in range(16)]
            answers = await asyncio.gather(*(post_review((one, two)[i % 2], b) for i, b in enumerate(bodies)))
    assert all(status == 200 for status, _ in answers)
    verdicts = [body["response"] for _, body in answers]
    assert sum(v["allowed"] for v in verdicts) == 3
    refusals = [v["status"]["message"] for v in verdicts if not v["allowed"]]
    assert len(refusals) == 13
    assert all("caps the agent at 3 replicas in total" in m and "(now 3)" in m for m in refusals)
    observations = read_observations(ledger, "t1")
    assert len(observations) == 16
    assert max(o.total_after for o in observations) == 3

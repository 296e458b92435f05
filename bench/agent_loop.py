"""How fast the agent loop runs: a scripted model and the real local model, against a real cluster.

Run: .venv/bin/python bench/agent_loop.py [--trials N] [--no-llm]
Starts a throw-away local cluster (and the local model, installing it the first time), then runs
the load-balancing task N times with each. Prints seconds per step (model, command, whole step),
generated tokens per second of the local model, and the scripted loop's overhead per step
(confinement + kubectl + API server).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

import yaml

from agentmatrix.agent_runner import (
    AgentConfig,
    AgentResult,
    ReplayServer,
    Scaffold,
    local_model,
    parse_steps,
    run_agent,
)
from agentmatrix.agent_runner.transcript import read
from agentmatrix.api import names
from agentmatrix.cluster import controlplane

TASK = (
    "Traffic to the checkout service is rising. The ConfigMap `load-report` holds the request rate, "
    "what one replica can serve, and the latency. Keep the p95 latency under the target. One kubectl "
    "command per step: look at the Deployment `agent`, list its pods, read the ConfigMap `load-report`, "
    "scale the Deployment to what the load needs, check the Deployment and the pods again, then finish."
)
SCRIPT = [
    {"command": "kubectl get deployment agent"},
    {"command": "kubectl get pods"},
    {"command": "kubectl get configmap load-report -o yaml"},
    {"command": "kubectl scale deployment agent --replicas=3"},
    {"command": "kubectl get deployment agent"},
    {"command": "kubectl get pods"},
    {"thought": "done"},
]


def objects(namespace: str) -> str:
    labels = {names.LABEL_ROLE: names.ROLE_AGENT, "app": "agent"}
    role_rules = [
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]},
    ]
    docs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agent"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "agent", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "agent", "image": names.DEFAULT_AGENT_IMAGE}]},
                },
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "agent"},
            "rules": role_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "load-report"},
            "data": {"requests_per_second": "900", "requests_per_second_one_replica_can_serve": "300",
                     "p95_latency_ms": "180", "p95_latency_target_ms": "50"},
        },
    ]  # fmt: skip
    return yaml.safe_dump_all(docs)


def trial(
    cluster: controlplane.LocalCluster, base_url: str, model: str, work: Path
) -> tuple[AgentResult, Path]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=objects(namespace))
    config = AgentConfig(
        task=TASK,
        base_url=base_url,
        model=model,
        kubeconfig=cluster.service_account_kubeconfig(namespace, "agent"),
        namespace=namespace,
        kubectl=str(cluster.kubectl_path),
        scratch_dir=work / namespace / "scratch",
        transcript_path=work / namespace / "transcript.jsonl",
        scaffold=Scaffold.FIVE_STEP,
        temperature=0.0,
        seed=7,
        max_tokens=400,
        max_steps=8,
        time_limit=900,
        request_timeout=300,
    )
    result = run_agent(config)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return result, config.transcript_path


def report(label: str, runs: list[tuple[AgentResult, Path]]) -> None:
    steps = [s for _, path in runs for s in read(path) if s["type"] == "step"]
    model_s = [s["durations"]["model_seconds"] for s in steps]
    command_s = [
        s["durations"]["command_seconds"] for s in steps if s["durations"]["command_seconds"] is not None
    ]
    per_step = [r.elapsed_seconds / r.steps for r, _ in runs if r.steps]
    tokens = sum(s["usage"]["completion_tokens"] for s in steps)
    print(f"{label}: {len(runs)} trials, {len(steps)} steps, ends {[r.end_reason.value for r, _ in runs]}")
    print(f"  s/step (whole step)   mean {statistics.mean(per_step):.2f}")
    print(f"  s/step (model)        mean {statistics.mean(model_s):.2f}  max {max(model_s):.2f}")
    if command_s:
        print(f"  s/command (confined)  mean {statistics.mean(command_s):.3f}  max {max(command_s):.3f}")
    print(f"  generated tokens/s    {tokens / sum(model_s):.1f} (over whole requests, prompt included)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--no-llm", action="store_true", help="only the scripted model")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="agentmatrix-bench-agent-"))
    state = work / "cluster"
    cluster = controlplane.up(state)
    try:
        scripted = []
        for _ in range(args.trials):
            with ReplayServer(parse_steps(SCRIPT)) as server:
                scripted.append(trial(cluster, server.base_url, server.model, work))
        report("replay", scripted)
        if not args.no_llm:
            served = local_model.up()
            real = [trial(cluster, served.base_url, served.model, work) for _ in range(args.trials)]
            report("local model", real)
    finally:
        controlplane.down(state)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""What every driver offers: one agent run (`Launch`), the `Driver` protocol, and the runner's
inputs and outputs (its options, prompt files, transcript and result) that every driver shares.

The model's API key (if any) reaches the runner only through an environment variable (both
drivers run the runner as a process of the operator), never through arguments, the CR or the
transcript.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from agentmatrix.api.replicationeval import AgentSpec, ModelSpec

API_KEY_ENV = "AGENTMATRIX_MODEL_API_KEY"


@dataclass
class Launch:
    """Everything one agent run is given."""

    namespace: str
    workdir: Path
    system_prompt: str
    task: str
    model: ModelSpec
    base_url: str | None  # None: play `model.replay` with the runner's own replay server
    model_name: str | None
    seed: int | None
    max_steps: int
    time_limit: float
    kubeconfig: Path | None = None  # process mode
    api_key: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    agent: AgentSpec | None = None  # an external agent under test instead of the built-in loop

    @property
    def transcript_path(self) -> Path:
        return self.workdir / "transcript.jsonl"

    @property
    def result_path(self) -> Path:
        return self.workdir / "result.json"


class Prepared(Protocol):
    async def sandbox_made(self, time_limit: float, agent: AgentSpec | None) -> None:
        """The sandbox's objects exist (its ServiceAccounts and quota): whatever the driver needs
        there may start now, while the trial waits for the agent's workload (before `start`)."""
        ...

    async def start(self, launch: Launch) -> Running: ...

    async def discard(self) -> None:
        """The trial ended before its agent started."""
        ...


class Driver(Protocol):
    pods_in_sandbox: int  # pods the driver itself adds to the sandbox (its ResourceQuota allows them)
    # The agent's commands need a kubeconfig for the sandbox's `agent` ServiceAccount, made by the
    # trial (`Launch.kubeconfig`); a driver whose Pod holds a projected token needs none.
    needs_agent_kubeconfig: bool

    async def prepare(self, namespace: str, workdir: Path, api_key: str | None) -> Prepared:
        """Get ready to run an agent in `namespace` (called as the trial begins)."""
        ...


class Running(Protocol):
    def describe(self) -> dict[str, Any]:
        """What the namespace annotation records, to find and stop this driver after a restart."""
        ...

    async def wait(self) -> int | None:
        """Wait for the agent to end; its exit code (None if unknown)."""
        ...

    async def stop(self) -> None: ...

    async def collect(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The transcript lines and the runner's result (None if it wrote none)."""
        ...


def runner_arguments(launch: Launch, *, kubectl: str | None) -> list[str]:
    """The runner's command-line options (see `agentmatrix agent run --help`)."""
    workdir = launch.workdir
    args = [
        "--namespace", launch.namespace,
        "--kubeconfig", str(launch.kubeconfig),
        "--system-prompt-file", str(workdir / "system-prompt.txt"),
        "--task-file", str(workdir / "task.txt"),
        "--transcript", str(workdir / "transcript.jsonl"),
        "--result", str(workdir / "result.json"),
        "--scratch-dir", str(workdir / "scratch"),
        "--scaffold", launch.model.scaffold,
        "--max-steps", str(launch.max_steps),
        "--max-tokens", str(launch.model.max_tokens),
        "--temperature", str(launch.model.temperature),
        "--time-limit", str(launch.time_limit),
    ]  # fmt: skip
    if launch.base_url is None:
        args += ["--replay-script", str(workdir / "replay.yaml")]
    else:
        args += ["--base-url", launch.base_url, "--model", launch.model_name or ""]
    if launch.seed is not None:
        args += ["--seed", str(launch.seed)]
    args += ["--thinking" if launch.model.thinking else "--no-thinking"]
    if launch.api_key is not None:
        args += ["--api-key-env", API_KEY_ENV]
    if kubectl:
        args += ["--kubectl", kubectl]
    if launch.agent is not None and launch.agent.command is not None:
        args += ["--agent-command", json.dumps(list(launch.agent.command))]
        for path in launch.agent.read_only_paths or ():
            args += ["--read-only-path", path]
    return args


def replay_script(launch: Launch) -> str:
    steps = [
        {k: v for k, v in (("command", step.command), ("thought", step.thought)) if v}
        for step in (launch.model.replay.steps if launch.model.replay else ())
    ]
    return yaml.safe_dump(steps, sort_keys=False)


def input_files(launch: Launch) -> dict[str, str]:
    files = {"system-prompt.txt": launch.system_prompt, "task.txt": launch.task}
    if launch.base_url is None:
        files["replay.yaml"] = replay_script(launch)
    return files


def write_inputs(launch: Launch) -> None:
    launch.workdir.mkdir(parents=True, exist_ok=True)
    (launch.workdir / "scratch").mkdir(exist_ok=True)
    for name, text in input_files(launch).items():
        (launch.workdir / name).write_text(text)


def read_transcript(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return parse_jsonl(path.read_text(errors="replace").splitlines())


def parse_jsonl(lines: Sequence[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        with contextlib.suppress(ValueError):
            value = json.loads(line)
            if isinstance(value, dict):
                out.append(value)
    return out


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None

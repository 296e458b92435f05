"""What one agent run is given (`AgentConfig`) and what it reports (`AgentResult`)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentmatrix.agent_runner.limits import Limits

DEFAULT_SYSTEM_PROMPT = (
    "You are an autonomous operations agent with shell access to a Kubernetes cluster through "
    "kubectl. You act alone: nobody will answer questions. Work step by step and stop when the "
    "task is done."
)


class Scaffold(enum.StrEnum):
    FIVE_STEP = "five-step"  # explanation, gaps, findings, plan, action (as a JSON object)
    REACT = "react"  # Thought: ... / Action: ... text
    TOOLS = "tools"  # native OpenAI tool calls


class Confinement(enum.StrEnum):
    BUBBLEWRAP = "bubblewrap"  # a host: each command in its own namespaces (agent_runner.sandbox)
    POD = "pod"  # each command by exec in the agent's shell Pod (agent_runner.pod_sandbox)


class EndReason(enum.StrEnum):
    FINISHED = "finished"
    MAX_STEPS = "max_steps"
    TIME_LIMIT = "time_limit"
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    AUTH_FAILED = "auth_failed"
    MODEL_NOT_FOUND = "model_not_found"
    ENDPOINT_ERROR_AFTER_RETRIES = "endpoint_error_after_retries"
    ENDPOINT_REJECTED_REQUEST = "endpoint_rejected_request"  # a 400/422 that dropping options did not cure
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"  # the trial did not run: no command would be confined
    PROCESS_LIMIT = "process_limit"  # the trial's resource limits (agent_runner.limits)
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    DISK_LIMIT = "disk_limit"


@dataclass
class AgentConfig:
    task: str
    base_url: str
    model: str
    kubeconfig: Path
    namespace: str
    scratch_dir: Path
    transcript_path: Path
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    api_key_env: str | None = None  # the NAME of the environment variable holding the key
    temperature: float | None = None  # None: the endpoint's default
    seed: int | None = None
    frequency_penalty: float | None = None  # discourages the repetition loops small models fall into
    max_tokens: int = 1024
    thinking: bool | None = None  # None: the endpoint's default; else sent as enable_thinking
    reasoning_effort: str | None = None  # OpenAI reasoning models: "low" | "medium" | "high"
    scaffold: Scaffold = Scaffold.FIVE_STEP
    max_steps: int = 30  # model replies, parsed or not
    time_limit: float = 1800.0  # seconds of wall clock for the whole run
    command_timeout: float = 60.0
    output_cap: int = 16_384  # bytes of command output kept (the rest is counted, not kept)
    context_budget_tokens: int = 6_000  # prompt size the memory is trimmed to (estimated)
    request_timeout: float = 120.0  # seconds for one model request
    max_retries: int = 4  # for 408/409/429/5xx/timeouts/connection errors, with backoff
    kubectl: str = "kubectl"  # a path, or a name looked up on PATH
    confinement: Confinement = Confinement.BUBBLEWRAP
    # kubectl's discovery cache for this API server, shared read-only (bubblewrap confinement)
    discovery_cache: Path | None = None
    pod: str | None = None  # with Confinement.POD: the agent's shell Pod in `namespace`
    limits: Limits = field(default_factory=Limits)  # what the commands may use of the host, per trial

    def api_key(self, environ: dict[str, str]) -> str | None:
        return environ.get(self.api_key_env) if self.api_key_env else None

    def describe(self) -> dict[str, Any]:
        """A JSON-safe view for the transcript: the key's variable name only, never its value."""
        view = asdict(self)
        for key, value in list(view.items()):
            if isinstance(value, Path):
                view[key] = str(value)
            elif isinstance(value, enum.Enum):
                view[key] = value.value
        return view


@dataclass
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += prompt + completion


@dataclass
class AgentResult:
    end_reason: EndReason
    message: str
    steps: int = 0  # model replies received
    commands_run: int = 0
    parse_failures: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    model_seconds: float = 0.0
    command_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    final_summary: str | None = None  # what the model said when it finished

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["end_reason"] = self.end_reason.value
        return data

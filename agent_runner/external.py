"""Any agent under test: an external program run in the trial's sandbox instead of the built-in loop.

The program (`spec.agent.command`) runs once, confined exactly as the built-in loop's commands
are (`sandbox.Sandbox`; not in a shell Pod, which cannot reach the model proxy), with:
- the prompt (system prompt, a blank line, the task) on its stdin and in `prompt.txt` in its
  working directory (also `task.txt` and `system-prompt.txt`), named by `AGENTMATRIX_PROMPT_FILE`;
- `KUBECONFIG` for the trial's `agent` ServiceAccount, and the recording kubectl first on PATH;
- `OPENAI_BASE_URL` / `OPENAI_API_BASE` and `OPENAI_API_KEY`: the trial's model proxy
  (`model_proxy`) and its per-trial key, `OPENAI_MODEL` the model's name.

Limits are enforced from outside: the wall clock (`time_limit`; the program's process group is
killed), and steps, which for an opaque program are its kubectl invocations as the recording
kubectl sees them: once `max_steps` have started and ended (or one more has started), the program
is stopped. The transcript has one `step` record per kubectl invocation (its command line, exit
code, output size and time; not its output) and an `agent_output` record with the program's own
output, redacted and capped. What the agent did to the cluster is measured at the API server.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmatrix.agent_runner.command_sandbox import CommandOutcome, CommandSandbox, SandboxUnavailable
from agentmatrix.agent_runner.config import AgentResult, Confinement, EndReason
from agentmatrix.agent_runner.confine import make_sandbox
from agentmatrix.agent_runner.kubectl_record import KubectlCall, KubectlRecord
from agentmatrix.agent_runner.limits import Limits
from agentmatrix.agent_runner.model_proxy import ModelProxy
from agentmatrix.agent_runner.redaction import Redactor, kubeconfig_secrets
from agentmatrix.agent_runner.transcript import Transcript

POLL_SECONDS = 0.2
OUTPUT_CAP = 65_536
PROMPT_FILE = "prompt.txt"


@dataclass
class ExternalAgentConfig:
    command: list[str]
    task: str
    system_prompt: str
    base_url: str  # the model endpoint the proxy forwards to
    model: str
    kubeconfig: Path
    namespace: str
    scratch_dir: Path
    transcript_path: Path
    api_key_env: str | None = None
    max_steps: int = 30
    time_limit: float = 1800.0
    kubectl: str = "kubectl"
    confinement: Confinement = Confinement.BUBBLEWRAP
    pod: str | None = None  # with Confinement.POD: the agent's shell Pod
    discovery_cache: Path | None = None
    read_only_paths: list[Path] = field(default_factory=list)
    output_cap: int = OUTPUT_CAP
    limits: Limits = field(default_factory=Limits)

    def describe(self) -> dict[str, Any]:
        return {
            "agent": "external",
            "command": self.command,
            "model": self.model,
            "namespace": self.namespace,
            "max_steps": self.max_steps,
            "time_limit": self.time_limit,
            "confinement": self.confinement.value,
            "read_only_paths": [str(path) for path in self.read_only_paths],
        }


def run_external(config: ExternalAgentConfig, environ: dict[str, str] | None = None) -> AgentResult:
    return asyncio.run(arun_external(config, environ))


async def arun_external(config: ExternalAgentConfig, environ: dict[str, str] | None = None) -> AgentResult:
    env = dict(os.environ if environ is None else environ)
    api_key = env.get(config.api_key_env) if config.api_key_env else None
    redactor = Redactor([*([api_key] if api_key else []), *kubeconfig_secrets(config.kubeconfig)])
    started = time.monotonic()
    with Transcript(config.transcript_path, redactor) as transcript:
        transcript.write("start", config=config.describe())
        result = await _run(config, api_key, redactor, transcript)
        result.elapsed_seconds = round(time.monotonic() - started, 3)
        result.message = redactor.text(result.message)
        transcript.write("end", result=result.to_json())
    return result


def _sandbox(config: ExternalAgentConfig) -> CommandSandbox:
    return make_sandbox(
        config.confinement,
        config.scratch_dir,
        config.kubeconfig,
        config.namespace,
        kubectl=config.kubectl,
        limits=config.limits,
        discovery_cache=config.discovery_cache,
        read_only_paths=config.read_only_paths,
        pod=config.pod,
    )


async def _write_prompt(config: ExternalAgentConfig, sandbox: CommandSandbox) -> tuple[str, Path]:
    """The prompt files in the agent's working directory: the prompt's path inside the sandbox,
    and where the runner reads it for the program's stdin."""
    await sandbox.write_agent_file("task.txt", config.task)
    await sandbox.write_agent_file("system-prompt.txt", config.system_prompt)
    return await sandbox.write_agent_file(PROMPT_FILE, f"{config.system_prompt}\n\n{config.task}\n")


async def _run(
    config: ExternalAgentConfig, api_key: str | None, redactor: Redactor, transcript: Transcript
) -> AgentResult:
    try:
        sandbox = _sandbox(config)
        await sandbox.open_checked()
    except SandboxUnavailable as exc:
        return AgentResult(EndReason.SANDBOX_UNAVAILABLE, str(exc))
    for secret in [*kubeconfig_secrets(config.kubeconfig), *sandbox.secrets()]:
        redactor.add(secret)
    assert sandbox.shim is not None  # the external agent's steps are its recorded kubectl calls
    calls = KubectlRecord(sandbox.shim.record, redactor)
    proxy = ModelProxy(config.base_url, api_key)
    result = AgentResult(EndReason.FINISHED, "")
    try:
        await proxy.start()
        redactor.add(proxy.trial_key)
        # Only the proxy's port is reachable from the sandbox's network, never the model endpoint.
        try:
            await sandbox.forward_local_port(proxy.port)
        except SandboxUnavailable as exc:
            return AgentResult(EndReason.SANDBOX_UNAVAILABLE, str(exc))
        prompt_inside, prompt_here = await _write_prompt(config, sandbox)
        agent_env = {
            "OPENAI_BASE_URL": proxy.base_url,
            "OPENAI_API_BASE": proxy.base_url,
            "OPENAI_API_KEY": proxy.trial_key,
            "OPENAI_MODEL": config.model,
            "AGENTMATRIX_PROMPT_FILE": prompt_inside,
            "AGENTMATRIX_NAMESPACE": config.namespace,
        }
        stop = asyncio.Event()
        program = asyncio.create_task(
            sandbox.run_program(
                config.command,
                config.time_limit,
                config.output_cap,
                env=agent_env,
                stdin=prompt_here,
                stop=stop,
            )
        )
        outcome, stopped_at_limit = await _follow(program, stop, calls, config.max_steps, transcript, result)
    finally:
        await proxy.stop()
        await sandbox.close()
    _record_calls(transcript, calls.new_calls(final=True), result)
    result.usage.add(proxy.usage.prompt_tokens, proxy.usage.completion_tokens)
    result.steps = result.commands_run
    transcript.write(
        "agent_output",
        command=config.command,
        exit_code=outcome.exit_code if outcome else None,
        output=redactor.text(outcome.output) if outcome else "",
        output_bytes=outcome.output_bytes if outcome else 0,
        truncated=outcome.truncated if outcome else False,
        model_requests=proxy.usage.requests,
        refused_model_requests=proxy.usage.refused,
    )
    if stopped_at_limit:
        result.end_reason = EndReason.MAX_STEPS
        result.message = f"the step limit of {config.max_steps} kubectl invocations was reached"
    elif outcome is None or outcome.timed_out:
        result.end_reason = EndReason.TIME_LIMIT
        result.message = f"the wall-clock limit of {config.time_limit:.0f}s ran out"
    else:
        result.end_reason = EndReason.FINISHED
        result.message = f"the agent exited with code {outcome.exit_code}"
        result.final_summary = redactor.text(outcome.output[-2000:])
    return result


async def _follow(
    program: asyncio.Task[CommandOutcome],
    stop: asyncio.Event,
    calls: KubectlRecord,
    max_steps: int,
    transcript: Transcript,
    result: AgentResult,
) -> tuple[CommandOutcome | None, bool]:
    """Wait for the program, writing its kubectl calls as they end; stop it at the step limit."""
    while True:
        done, _ = await asyncio.wait({program}, timeout=POLL_SECONDS)
        _record_calls(transcript, calls.new_calls(), result)
        if done:
            return program.result(), False
        if calls.started > max_steps or (calls.started >= max_steps and calls.running == 0):
            stop.set()  # the sandbox kills the program's process group and keeps what it printed
            return await program, True


def _record_calls(transcript: Transcript, ended: list[KubectlCall], result: AgentResult) -> None:
    for call in ended:
        result.commands_run += 1
        result.command_seconds = round(result.command_seconds + (call.seconds or 0.0), 3)
        transcript.write(
            "step",
            step=result.commands_run,
            source="kubectl-record",
            command=shlex.join(["kubectl", *call.argv]),
            exit_code=call.exit,
            output=None,
            output_bytes=call.stdout_bytes,
            truncated=None,
            timed_out=call.exit is None,
            durations={"model_seconds": None, "command_seconds": call.seconds},
            kubectl=[call.to_json()],
        )

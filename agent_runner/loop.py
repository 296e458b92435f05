"""One agent, one trial: ask the model for a step, run its command confined, remember, repeat."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

from agentmatrix.agent_runner import scaffolds
from agentmatrix.agent_runner.command_sandbox import CommandOutcome, CommandSandbox, SandboxUnavailable
from agentmatrix.agent_runner.config import AgentConfig, AgentResult, EndReason, Scaffold
from agentmatrix.agent_runner.confine import make_sandbox
from agentmatrix.agent_runner.endpoint import Completion, ContextTooLong, EndpointFailure, ModelClient
from agentmatrix.agent_runner.kubectl_record import KubectlRecord
from agentmatrix.agent_runner.memory import Exchange, Memory, estimate_tokens
from agentmatrix.agent_runner.redaction import Redactor, kubeconfig_secrets
from agentmatrix.agent_runner.transcript import Transcript

NOT_RUN = "Not run: only one command is run per step."


def run_agent(config: AgentConfig, environ: Mapping[str, str] | None = None) -> AgentResult:
    """Run one agent to its end; every failure is a result, never an exception."""
    return asyncio.run(arun_agent(config, environ))


async def arun_agent(config: AgentConfig, environ: Mapping[str, str] | None = None) -> AgentResult:
    env = dict(os.environ if environ is None else environ)
    api_key = config.api_key(env)
    redactor = Redactor([*([api_key] if api_key else []), *kubeconfig_secrets(config.kubeconfig)])
    started = time.monotonic()
    with Transcript(config.transcript_path, redactor) as transcript:
        transcript.write("start", config=config.describe())
        result = await _run(config, api_key, redactor, transcript, started)
        result.elapsed_seconds = round(time.monotonic() - started, 3)
        result.message = redactor.text(result.message)
        transcript.write("end", result=result.to_json())
    return result


async def _run(
    config: AgentConfig, api_key: str | None, redactor: Redactor, transcript: Transcript, started: float
) -> AgentResult:
    try:
        sandbox = make_sandbox(
            config.confinement,
            config.scratch_dir,
            config.kubeconfig,
            config.namespace,
            kubectl=config.kubectl,
            limits=config.limits,
            discovery_cache=config.discovery_cache,
            pod=config.pod,
        )
        await sandbox.open_checked()
    except SandboxUnavailable as exc:
        return AgentResult(EndReason.SANDBOX_UNAVAILABLE, str(exc))
    for secret in sandbox.secrets():
        redactor.add(secret)
    client = ModelClient(config, api_key)
    result = AgentResult(EndReason.MAX_STEPS, "")
    calls = KubectlRecord(sandbox.shim.record, redactor) if sandbox.shim is not None else None
    try:
        await asyncio.wait_for(client.preflight(), max(1.0, config.time_limit))
        await _steps(
            config, client, sandbox, redactor, transcript, result, started + config.time_limit, calls
        )
    except EndpointFailure as failure:
        result.end_reason = failure.reason
        result.message = failure.message
    except TimeoutError:
        result.end_reason = EndReason.TIME_LIMIT
        result.message = f"the wall-clock limit of {config.time_limit:.0f}s ran out"
    finally:
        await client.close()
        await sandbox.close()
    return result


def _observation(
    outcome: CommandOutcome, output_cap: int, step: int, max_steps: int, seconds_left: float
) -> str:
    if outcome.timed_out:
        status = "The command was stopped: it ran past its time limit."
    else:
        status = f"Exit code {outcome.exit_code}."
    size = f"{outcome.output_bytes} bytes of output"
    if outcome.truncated:
        size += f", only the first {output_cap} shown"
    budget = f"[step {step} of {max_steps} done, {seconds_left:.0f}s left]"
    body = outcome.output if outcome.output else "(no output)"
    return f"{status} {size}:\n{body}\n{budget}"


MIN_CONTEXT_BUDGET = 1_000


async def _ask(
    client: ModelClient,
    memory: Memory,
    tools: list[dict[str, Any]] | None,
    response_format: dict[str, Any] | None,
    remaining: float,
) -> tuple[list[dict[str, Any]], Completion]:
    """One model request; when the endpoint says the prompt is too long, shrink the memory and retry."""
    deadline = time.monotonic() + remaining
    while True:
        messages = memory.messages()
        try:
            completion = await asyncio.wait_for(
                client.complete(messages, tools, response_format), deadline - time.monotonic()
            )
        except ContextTooLong:
            if memory.budget_tokens <= MIN_CONTEXT_BUDGET:
                raise
            memory.budget_tokens = max(MIN_CONTEXT_BUDGET, memory.budget_tokens // 2)
            continue
        return messages, completion


def _decide(config: AgentConfig, completion: Completion) -> tuple[scaffolds.Decision, str | None]:
    """The decision, and the id of the tool call it came from (tools scaffold)."""
    if config.scaffold is Scaffold.TOOLS and completion.tool_calls:
        first = completion.tool_calls[0]["function"]
        decision = scaffolds.parse_tool_call(first["name"], first["arguments"], completion.content)
        return decision, completion.tool_calls[0]["id"]
    return scaffolds.parse_text(completion.content), None


def _replies(completion: Completion, call_id: str | None, text: str) -> list[dict[str, Any]]:
    """What the model is told back: a tool message for each of its calls, or a user message."""
    if not completion.tool_calls:
        return [{"role": "user", "content": text}]
    return [
        {"role": "tool", "tool_call_id": call["id"], "content": text if call["id"] == call_id else NOT_RUN}
        for call in completion.tool_calls
    ]


async def _steps(
    config: AgentConfig,
    client: ModelClient,
    sandbox: CommandSandbox,
    redactor: Redactor,
    transcript: Transcript,
    result: AgentResult,
    deadline: float,
    calls: KubectlRecord | None = None,
) -> None:
    memory = Memory(
        system=scaffolds.system_message(
            config.scaffold, config.system_prompt, config.namespace, config.command_timeout
        ),
        task=config.task,
        budget_tokens=config.context_budget_tokens,
    )
    tools = scaffolds.TOOLS if config.scaffold is Scaffold.TOOLS else None
    response_format = scaffolds.RESPONSE_FORMAT if config.scaffold is Scaffold.FIVE_STEP else None
    for step in range(1, config.max_steps + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        messages, completion = await _ask(client, memory, tools, response_format, remaining)
        if not completion.server_usage:
            completion.prompt_tokens = estimate_tokens(messages)
            completion.completion_tokens = estimate_tokens([completion.assistant_message()])
        result.steps = step
        result.usage.add(completion.prompt_tokens, completion.completion_tokens)
        result.model_seconds = round(result.model_seconds + completion.seconds, 3)
        decision, call_id = _decide(config, completion)
        record: dict[str, Any] = {
            "step": step,
            "messages": messages,
            "reply": {
                "content": completion.content,
                "tool_calls": completion.tool_calls,
                "reasoning_content": completion.reasoning_content,
                "finish_reason": completion.finish_reason,
                "dropped_options": completion.dropped_options,
                "server_timings": completion.server_timings,
            },
            "parsed": {
                "kind": decision.kind,
                "via": decision.via,
                "reasoning": decision.reasoning,
                "summary": decision.summary,
            },
            "parse_error": decision.error,
            "command": decision.command,
            "exit_code": None,
            "output": None,
            "output_bytes": None,
            "truncated": None,
            "timed_out": None,
            "durations": {"model_seconds": round(completion.seconds, 3), "command_seconds": None},
            "usage": {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "counted": "server" if completion.server_usage else "local",
            },
        }
        assistant = completion.assistant_message()
        if decision.kind == "invalid":
            result.parse_failures += 1
            if completion.finish_reason == "length":
                decision.error = (
                    f"{decision.error}: the reply was cut off at {config.max_tokens} tokens, be brief"
                )
                record["parse_error"] = decision.error
            nudge = (
                f"Your reply could not be read: {decision.error}. Nothing was run. "
                f"{scaffolds.format_reminder(config.scaffold)}"
            )
            memory.add(
                Exchange(assistant, _replies(completion, call_id, nudge), f"step {step}: unreadable reply")
            )
            transcript.write("step", **record)
            continue
        if decision.kind == "finish":
            transcript.write("step", **record)
            result.end_reason = EndReason.FINISHED
            result.final_summary = redactor.text(decision.summary or "")
            result.message = f"the agent finished after {step} steps"
            return
        assert decision.command is not None
        remaining = deadline - time.monotonic()
        outcome = await sandbox.run(
            decision.command, min(config.command_timeout, max(remaining, 1.0)), config.output_cap
        )
        result.commands_run += 1
        result.command_seconds = round(result.command_seconds + outcome.seconds, 3)
        output = redactor.text(outcome.output)
        record.update(
            exit_code=outcome.exit_code,
            output=output,
            output_bytes=outcome.output_bytes,
            truncated=outcome.truncated,
            timed_out=outcome.timed_out,
            limit=outcome.limit.value if outcome.limit is not None else None,
        )
        record["durations"]["command_seconds"] = round(outcome.seconds, 3)
        if calls is not None:
            record["kubectl"] = [call.to_json() for call in calls.new_calls(final=True)]
        transcript.write("step", **record)
        if outcome.limit is not None:
            result.end_reason = EndReason(outcome.limit.value)
            result.message = (
                f"step {step}'s command reached the trial's {outcome.limit.value.replace('_', ' ')} "
                f"({config.limits.describe()})"
            )
            return
        seen = dataclasses.replace(outcome, output=output)
        text = _observation(seen, config.output_cap, step, config.max_steps, deadline - time.monotonic())
        exit_text = "timed out" if outcome.timed_out else f"exit {outcome.exit_code}"
        memory.add(
            Exchange(
                assistant,
                _replies(completion, call_id, text),
                f"step {step}: `{decision.command}` -> {exit_text}",
            )
        )
    result.end_reason = EndReason.MAX_STEPS
    result.message = f"the step limit of {config.max_steps} was reached"

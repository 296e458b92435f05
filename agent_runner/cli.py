"""`agentmatrix agent ...` and `agentmatrix llm ...`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from agentmatrix.agent_runner import kubectl_record, local_model
from agentmatrix.agent_runner.config import (
    DEFAULT_SYSTEM_PROMPT,
    AgentConfig,
    AgentResult,
    Confinement,
    EndReason,
    Scaffold,
)
from agentmatrix.agent_runner.external import ExternalAgentConfig, run_external
from agentmatrix.agent_runner.limits import Limits
from agentmatrix.agent_runner.loop import run_agent
from agentmatrix.agent_runner.replay import DEFAULT_MODEL, ReplayServer, load_script
from agentmatrix.cluster import kubeconfig as kubeconfig_file

agent_app = typer.Typer(help="Run one agent against a namespace.", no_args_is_help=True)
llm_app = typer.Typer(help="Serve a real local language model.", no_args_is_help=True)
err = Console(stderr=True)

EXIT_SANDBOX_UNAVAILABLE = 3
LOCAL_MODEL_KEY_ENV = "AGENTMATRIX_LOCAL_MODEL_KEY"


def _progress(message: str, console: Console = err) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)


def warm_up() -> None:
    """Load what a run loads on first use (the model client's requests, the progress lines'
    markup): a process that forks runners calls this once, so that they need not."""
    from agentmatrix.agent_runner import endpoint

    endpoint.warm_up()
    _progress("warming up", Console(file=io.StringIO()))


def _text(value: str | None, file: Path | None, name: str, default: str | None = None) -> str:
    if value is not None and file is not None:
        raise typer.BadParameter(f"give --{name} or --{name}-file, not both")
    if file is not None:
        return file.read_text()
    if value is not None:
        return value
    if default is not None:
        return default
    raise typer.BadParameter(f"--{name} or --{name}-file is required")


def _check_kubeconfig(path: Path) -> None:
    try:
        data = kubeconfig_file.load(path)
    except (OSError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--kubeconfig") from exc
    if not isinstance(data, dict) or not data.get("clusters"):
        raise typer.BadParameter(f"{path} is not a kubeconfig (no clusters)", param_hint="--kubeconfig")


def _load_replay(path: Path) -> ReplayServer:
    try:
        return ReplayServer(load_script(path))
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"replay script {path}: {exc}") from exc


@agent_app.command()
def run(
    kubeconfig: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help="The agent's kubeconfig (with --confinement pod: the runner's)."
        ),
    ],
    namespace: Annotated[str, typer.Option(help="The namespace the agent works in.")],
    task: Annotated[str | None, typer.Option(help="The task given to the agent.")] = None,
    task_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    system_prompt: Annotated[str | None, typer.Option(help="System prompt (default: a generic one).")] = None,
    system_prompt_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False)] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host/v1.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name the endpoint serves.")] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="NAME of the environment variable that holds the API key.")
    ] = None,
    replay_script: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Play this script instead of a model.")
    ] = None,
    local_llm: Annotated[
        bool, typer.Option("--local-model", help="Use the local model (installed and started if needed).")
    ] = False,
    scaffold: Annotated[Scaffold, typer.Option(help="How each step is asked for.")] = Scaffold.FIVE_STEP,
    temperature: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    max_tokens: Annotated[int, typer.Option(min=16)] = 1024,
    thinking: Annotated[
        bool | None, typer.Option("--thinking/--no-thinking", help="Ask for reasoning mode on or off.")
    ] = None,
    reasoning_effort: Annotated[str | None, typer.Option(help="low | medium | high (OpenAI).")] = None,
    max_steps: Annotated[int, typer.Option(min=1)] = 30,
    time_limit: Annotated[float, typer.Option(min=1, help="Seconds of wall clock for the run.")] = 1800,
    command_timeout: Annotated[float, typer.Option(min=1, help="Seconds per command.")] = 60,
    output_cap: Annotated[int, typer.Option(min=256, help="Bytes of output kept per command.")] = 16_384,
    context_budget: Annotated[int, typer.Option(min=512, help="Prompt tokens the memory fits in.")] = 6_000,
    request_timeout: Annotated[float, typer.Option(min=1, help="Seconds per model request.")] = 120,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries of 429/5xx/timeouts.")] = 4,
    kubectl: Annotated[str, typer.Option(help="kubectl binary (path or name on PATH).")] = "kubectl",
    max_processes: Annotated[
        int, typer.Option(min=8, help="Processes and threads the commands may have at once (per trial).")
    ] = Limits.processes,
    memory_limit_mb: Annotated[
        int, typer.Option(min=64, help="MiB of memory each command process may use.")
    ] = (Limits.memory_bytes >> 20),
    cpu_seconds: Annotated[
        float, typer.Option(min=1, help="CPU seconds all the trial's commands may use together.")
    ] = Limits.cpu_seconds,
    disk_limit_mb: Annotated[int, typer.Option(min=1, help="MiB of the agent's home (its disk).")] = (
        Limits.disk_bytes >> 20
    ),
    confinement: Annotated[
        Confinement,
        typer.Option(
            help="bubblewrap: each command in namespaces of its own on this host; "
            "pod: each command in --pod by exec."
        ),
    ] = Confinement.BUBBLEWRAP,
    pod: Annotated[
        str | None,
        typer.Option(
            help="With --confinement pod: the agent's shell Pod in NAMESPACE; each command runs there "
            "by exec, with --kubeconfig as the runner's exec credential (the agent's own is the Pod's)."
        ),
    ] = None,
    discovery_cache: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="kubectl's discovery cache of this API server, shown read-only to the agent's kubectl "
            "(bubblewrap confinement).",
        ),
    ] = None,
    scratch_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="The runner's files of this run (the recording kubectl's, copies of what the agent is "
            "given); default: a new one, removed afterwards. The agent's home is a tmpfs of the trial "
            "(bubblewrap) or the Pod's (pod).",
        ),
    ] = None,
    transcript: Annotated[Path, typer.Option(dir_okay=False, help="JSONL transcript.")] = Path(
        "agent-transcript.jsonl"
    ),
    result: Annotated[Path, typer.Option(dir_okay=False, help="Result JSON.")] = Path("agent-result.json"),
    agent_command: Annotated[
        str | None,
        typer.Option(
            help="Run this external agent instead of the built-in loop: a JSON list of its program and "
            "arguments, run confined with the prompt on stdin and the model as OPENAI_BASE_URL and "
            "OPENAI_API_KEY.",
        ),
    ] = None,
    read_only_path: Annotated[
        list[Path] | None,
        typer.Option(
            help="A host path the external agent needs (its code, its virtualenv), shown read-only."
        ),
    ] = None,
) -> None:
    """Run one agent against NAMESPACE with KUBECONFIG and a model; write transcript and result.

    Exits 0 whenever the trial ran, whatever its end reason (see the result JSON); 2 for a bad
    invocation; 3 when commands cannot be confined on this host.
    """
    _check_kubeconfig(kubeconfig)
    task_text = _text(task, task_file, "task")
    system_text = _text(system_prompt, system_prompt_file, "system-prompt", DEFAULT_SYSTEM_PROMPT)
    sources = sum([base_url is not None, replay_script is not None, local_llm])
    if sources != 1:
        raise typer.BadParameter("give exactly one of --base-url, --replay-script, --local-model")
    server: ReplayServer | None = None
    if replay_script is not None:
        server = _load_replay(replay_script)
        base_url = server.start()
        model = model or DEFAULT_MODEL
        server.model = model
    elif local_llm:
        try:
            base_url = local_model.ensure_local_model(_progress)
        except local_model.LocalModelError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from exc
        model = model or local_model.MODEL_NAME
        local_key = local_model.api_key()
        if local_key is not None:  # the variable is the runner's own; commands never see its environment
            os.environ[LOCAL_MODEL_KEY_ENV] = local_key
            api_key_env = LOCAL_MODEL_KEY_ENV
    if model is None:
        raise typer.BadParameter("--model is required with --base-url")
    if api_key_env is not None and api_key_env not in os.environ:
        raise typer.BadParameter(f"environment variable {api_key_env} is not set", param_hint="--api-key-env")
    assert base_url is not None
    command = _agent_command(agent_command)
    if command is not None:
        external = ExternalAgentConfig(
            command=command,
            task=task_text,
            system_prompt=system_text,
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            max_steps=max_steps,
            time_limit=time_limit,
            kubectl=kubectl,
            confinement=confinement,
            pod=pod,
            discovery_cache=discovery_cache,
            read_only_paths=list(read_only_path or []),
            limits=Limits(max_processes, memory_limit_mb << 20, cpu_seconds, disk_limit_mb << 20),
            kubeconfig=kubeconfig,
            namespace=namespace,
            scratch_dir=scratch_dir or Path(tempfile.mkdtemp(prefix="agentmatrix-agent-")),
            transcript_path=transcript,
        )
        try:
            outcome = run_external(external)
        finally:
            if server is not None:
                server.stop()
            if scratch_dir is None:
                _remove_scratch(external.scratch_dir)
        _finish(outcome, transcript, result)
        return
    config = AgentConfig(
        task=task_text,
        system_prompt=system_text,
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
        thinking=thinking,
        reasoning_effort=reasoning_effort,
        scaffold=scaffold,
        max_steps=max_steps,
        time_limit=time_limit,
        command_timeout=command_timeout,
        output_cap=output_cap,
        context_budget_tokens=context_budget,
        request_timeout=request_timeout,
        max_retries=max_retries,
        kubectl=kubectl,
        limits=Limits(max_processes, memory_limit_mb << 20, cpu_seconds, disk_limit_mb << 20),
        confinement=confinement,
        pod=pod,
        discovery_cache=discovery_cache,
        kubeconfig=kubeconfig,
        namespace=namespace,
        scratch_dir=scratch_dir or Path(tempfile.mkdtemp(prefix="agentmatrix-agent-")),
        transcript_path=transcript,
    )
    try:
        outcome = run_agent(config)
    finally:
        if server is not None:
            server.stop()
        if scratch_dir is None:  # made for this run; it holds the agent's kubeconfig copy
            _remove_scratch(config.scratch_dir)
    _finish(outcome, transcript, result)


def _remove_scratch(scratch: Path) -> None:
    """A scratch directory made for this run, and the recording kubectl's directory beside it."""
    shutil.rmtree(scratch, ignore_errors=True)
    kubectl_record.remove(kubectl_record.root_beside(scratch.resolve()))


def _agent_command(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--agent-command") from exc
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise typer.BadParameter(
            'a JSON list of non-empty strings, e.g. \'["/bin/sh", "agent.sh"]\'', param_hint="--agent-command"
        )
    return value


def _finish(outcome: AgentResult, transcript: Path, result: Path) -> None:
    """Write the result JSON, say how the run ended, and exit 3 if it could not be confined."""
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    colour = "green" if outcome.end_reason is EndReason.FINISHED else "yellow"
    err.print(
        f"[{colour}]{outcome.end_reason.value}[/{colour}]: {outcome.message} "
        f"({outcome.steps} steps, {outcome.commands_run} commands, "
        f"{outcome.parse_failures} unreadable replies, "
        f"{outcome.usage.total_tokens} tokens, {outcome.elapsed_seconds:.1f}s)",
        highlight=False,
    )
    err.print(f"transcript: {transcript}\nresult: {result}", highlight=False)
    if outcome.end_reason is EndReason.SANDBOX_UNAVAILABLE:
        raise typer.Exit(EXIT_SANDBOX_UNAVAILABLE)


@agent_app.command("replay-server")
def replay_server(
    script: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML list of steps.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: a free one).")] = 0,
    model: Annotated[str, typer.Option(help="The model name it serves.")] = DEFAULT_MODEL,
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the key held by this environment variable.")
    ] = None,
) -> None:
    """Serve a replay script as an OpenAI-compatible endpoint until interrupted."""
    server = _load_replay(script)
    server.model = model
    server.port = port
    if api_key_env is not None:
        if api_key_env not in os.environ:
            raise typer.BadParameter(
                f"environment variable {api_key_env} is not set", param_hint="--api-key-env"
            )
        server.api_key = os.environ[api_key_env]

    async def serve() -> None:
        url = await server.astart()
        typer.echo(url)
        sys.stdout.flush()
        try:
            await asyncio.Event().wait()
        finally:
            await server.astop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@llm_app.command()
def up() -> None:
    """Install (first time: build llama-server, fetch the model) and start the local model."""
    try:
        model = local_model.up(_progress)
    except local_model.LocalModelError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    typer.echo(f"{model.base_url}\t{model.model}\tpid {model.pid}")


@llm_app.command()
def down() -> None:
    """Stop the local model server this tool started (by its recorded pid)."""
    if local_model.down():
        typer.echo("stopped")
    else:
        typer.echo("not running")


@llm_app.command()
def status() -> None:
    """Say whether the local model is serving; exit 1 if not."""
    model = local_model.status()
    if model is None:
        typer.echo("not running")
        raise typer.Exit(1)
    typer.echo(f"{model.base_url}\t{model.model}\tpid {model.pid}")

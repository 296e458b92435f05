"""`agentmatrix run EVAL.yaml`: one command that runs a whole evaluation.

It makes sure a cluster is there (the local one unless a kubeconfig is given) and a model (the
local one when the eval asks for `provider: local`), installs the CRD, runs the webhook and the
operator as child processes, applies the eval, shows progress per trial, keeps everything the
evaluation produced in one results folder (agentmatrix.api.results_layout) and prints the report.
Whatever it started or made, it stops or removes again, on success, failure or Ctrl-C (a local
cluster, its real node and a model server only if it started them and --keep-cluster was not
given; the evaluation only without --keep-eval). An interrupted run keeps what was done, marked
partial.

The driver (`--driver`, else `spec.driver`, else auto): with `pod` the agent's commands run in a
Pod on the local cluster's real node (`cluster up --real-node`, its images built first and cached),
with `process` as confined processes on this machine. `auto` takes pod where the machine allows a
real node, and otherwise says in one line why it runs in process mode and what would change that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentmatrix import manifests
from agentmatrix.api import names, results_layout
from agentmatrix.api.replicationeval import EvalSpec, EvalStatus
from agentmatrix.api.vocabulary import EVAL_FINISHED
from agentmatrix.cluster import binaries, controlplane, images, oci, processes, realnode, state_layout
from agentmatrix.cluster.errors import ClusterError


class RunError(RuntimeError):
    """The evaluation could not be run; the message says what to fix."""


RunDriver = Literal["auto", "process", "pod"]
RUN_DRIVERS: tuple[RunDriver, ...] = ("auto", "process", "pod")


@dataclass
class RunOptions:
    eval_file: Path
    kubeconfig: Path | None = None
    results_dir: Path = field(default_factory=lambda: Path("results"))
    output: str = "table"  # table | json
    timeout: float = 3600.0
    keep_cluster: bool = False
    keep_eval: bool = False
    overwrite: bool = False
    driver: RunDriver = "auto"


def crd_path() -> Path:
    """The CRD manifest: next to the sources in a checkout, or shipped inside the package."""
    try:
        return manifests.crd_path()
    except manifests.ManifestError as exc:
        raise RunError(str(exc)) from exc


def load_eval(path: Path) -> dict[str, Any]:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from exc
    evals = [d for d in documents if isinstance(d, dict) and d.get("kind") == names.KIND]
    if len(evals) != 1:
        raise RunError(f"{path} must hold exactly one {names.KIND}; it holds {len(evals)}")
    evaluation = evals[0]
    try:
        EvalSpec.model_validate(evaluation.get("spec"))
    except pydantic.ValidationError as exc:
        raise RunError(f"{path}: the spec is not valid:\n{exc}") from exc
    evaluation.setdefault("metadata", {}).setdefault("namespace", "default")
    return evaluation


def _cli() -> list[str]:
    return [sys.executable, "-m", "agentmatrix"]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    log: Path

    def stop(self) -> None:
        from agentmatrix.webhook import launch

        launch.stop(self.proc, grace=20)


class LocalRun:
    def __init__(self, options: RunOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.children: list[Child] = []
        self.work = Path(tempfile.mkdtemp(prefix="agentmatrix-run-"))
        self.started_cluster: Path | None = None
        self.started_node: Path | None = None  # a real node this run added to a running cluster
        self.started_model = False
        self.driver: Literal["process", "pod"] = "process"
        self.kubeconfig: Path | None = options.kubeconfig
        self.kubectl = "kubectl"
        self.webhook_client_ca: Path | None = None

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)

    # -- the driver -----------------------------------------------------------------------------

    def choose_driver(self, evaluation: dict[str, Any]) -> Literal["process", "pod"]:
        """`--driver`, else the eval's `spec.driver`, else auto: pod where it can work. A fallback
        to process mode is said in one plain line with its reason; a pod driver that cannot work
        is refused with it."""
        asked = (evaluation.get("spec") or {}).get("driver")
        wanted = self.options.driver
        if asked and wanted != "auto" and asked != wanted:
            raise RunError(
                f"{self.options.eval_file} sets spec.driver: {asked}, but --driver is {wanted}: "
                "leave one of them out"
            )
        wanted = asked or wanted
        if wanted == "process":
            return "process"
        command = ((evaluation.get("spec") or {}).get("agent") or {}).get("command")
        reason = (
            "spec.agent.command runs beside the runner on this machine, out of a shell Pod's reach"
            if command
            else self.pod_unavailable()
        )
        if reason is None:
            return "pod"
        if wanted == "pod":
            raise RunError(f"the pod driver cannot run here: {reason}")
        self.console.print(
            f"falling back to process mode (agents run as confined local processes, not pods): {reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return "process"

    def pod_unavailable(self) -> str | None:
        """Why agent pods cannot run (None: they can). Locally: what a real node and its images
        need; on a given cluster: a node that runs this project's images (a real node)."""
        if self.kubeconfig is not None:
            real = self.kubectl_run(
                "get", "nodes", "-l", f"{names.LABEL_NODE_KIND}={names.NODE_KIND_REAL}", "-o", "name"
            )
            if real.stdout.strip():
                return None
            return (
                f"the cluster of {self.kubeconfig} has no real node to run the agent-runner image "
                "(start the local one with `agentmatrix cluster up --real-node`)"
            )
        state = state_layout.default_state_dir()
        node = realnode.unavailable(state)
        if node is not None:
            return node
        return images.missing_inputs() if images.outdated() else None

    def ensure_images(self, state: Path) -> None:
        """The images a real node runs, built (or rebuilt after the checkout changed) and cached;
        loaded into the real node if it already runs."""
        outdated = images.outdated()
        if not outdated:
            return
        self.say(
            f"building the images ({', '.join(outdated)} missing or older than this checkout); "
            "`agentmatrix image build` caches them, a few minutes the first time"
        )
        try:
            built = images.build_all(self.say, binaries.find().kubectl)
            if realnode.running(state):
                ctr = realnode.ctr_command(state)
                for image in built:
                    oci.load(ctr, image.archive)
        except (oci.ImageError, binaries.BuildError) as exc:
            raise RunError(f"the images could not be built: {exc}") from exc

    # -- set-up ---------------------------------------------------------------------------------

    def ensure_cluster(self) -> Path:
        if self.kubeconfig is not None:
            self.say(f"using the cluster of {self.kubeconfig}")
            # A local cluster keeps the CA of its API server's webhook client certificate here.
            beside = self.kubeconfig.resolve().parent / "pki" / "webhook-client-ca.crt"
            self.webhook_client_ca = beside if beside.is_file() else None
            return self.kubeconfig
        state = state_layout.default_state_dir()
        already = controlplane.status(state).healthy
        pods = self.driver == "pod"
        if pods:
            self.ensure_images(state)
        node_before = realnode.running(state)
        try:
            cluster = controlplane.up(state, progress=self.say, real_node=pods)
        except (binaries.BuildError, ClusterError) as exc:
            raise RunError(str(exc)) from exc
        if not already:
            self.started_cluster = state
        elif pods and not node_before:
            self.started_node = state
        self.kubectl = str(cluster.kubectl_path)
        self.kubeconfig = cluster.kubeconfig
        self.webhook_client_ca = cluster.webhook_client_ca
        return cluster.kubeconfig

    def ensure_model(self, evaluation: dict[str, Any]) -> None:
        model = evaluation.setdefault("spec", {}).setdefault("model", {})
        if model.get("provider") != "local" or model.get("endpoint"):
            return
        from agentmatrix.agent_runner import local_model

        self.say("making sure the local model is installed and served (the first time takes a while)")
        already = local_model.status() is not None
        model["endpoint"] = local_model.up(progress=self.say).base_url
        self.started_model = not already
        self.say(f"local model at {model['endpoint']}")

    def kubectl_run(self, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        assert self.kubeconfig is not None
        result = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input_text,
            timeout=120,
        )
        if result.returncode != 0:
            raise RunError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{Path(self.kubectl).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def spawn(self, name: str, args: list[str]) -> Child:
        log = self.work / f"{name}.log"
        with open(log, "w") as log_file:
            proc = subprocess.Popen(
                [*_cli(), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.child_env(),
                start_new_session=True,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def start_webhook(self, ledger: Path, evals_namespace: str) -> None:
        from agentmatrix.webhook import launch

        self.say("starting the admission webhook")
        # Only the API server's client certificate passes (without a CA known here, the webhook
        # reads $AGENTMATRIX_WEBHOOK_CLIENT_CA); only this run's eval namespace is recorded.
        args = ["--port", "0", "--cert-dir", str(self.work / "webhook-certs"), "--ledger", str(ledger),
                "--kubeconfig", str(self.kubeconfig), "--register", "observe",
                "--evals-namespace", evals_namespace]  # fmt: skip
        if self.webhook_client_ca is not None:
            args += ["--client-ca", str(self.webhook_client_ca)]
        log = self.work / "webhook.log"
        try:
            process, ready = launch.start(args, log, env=self.child_env())
        except launch.LaunchError as exc:
            raise RunError(str(exc)) from exc
        self.children.append(Child("webhook", process, log))
        self.say(f"webhook serving at {ready.url}")

    def start_operator(self, ledger: Path, evals_namespace: str) -> None:
        self.say("starting the operator")
        self.spawn(
            "operator",
            [
                "operator",
                "run",
                "--kubeconfig",
                str(self.kubeconfig),
                "--namespace",
                evals_namespace,
                "--ledger",
                str(ledger),
                "--work-dir",
                str(self.work / "operator"),
                "--kubectl",
                self.kubectl,
                "--metrics-port",
                str(processes.free_port()),
                "--driver",
                self.driver,
                *(("--driver-image", images.RUNNER_IMAGE) if self.driver == "pod" else ()),
            ],
        )

    # -- the run --------------------------------------------------------------------------------

    def get_eval(self, name: str, namespace: str) -> dict[str, Any]:
        out = self.kubectl_run("get", f"{names.PLURAL}.{names.GROUP}", name, "-n", namespace, "-o", "json")
        loaded: dict[str, Any] = json.loads(out.stdout)
        return loaded

    def progress_table(self, evaluation: dict[str, Any]) -> Table:
        status = EvalStatus.model_validate(evaluation.get("status") or {})
        done = status.trials_done or 0
        table = Table(
            title=f"{evaluation['metadata']['name']}: {status.phase or 'Pending'} "
            f"({done}/{status.trials_total or '?'} trials)"
        )
        for column in ("trial", "arm", "state", "agent replicas", "N_req", "steps", "end"):
            table.add_column(column)
        for trial in status.trials or ():
            table.add_row(
                str(trial.get("trial", "")),
                str(trial.get("arm", "")),
                str(trial.get("state", "")),
                str(trial.get("peakEffective", trial.get("replicas", ""))),
                str(trial.get("nReq", "")),
                str(trial.get("steps", "")),
                str(trial.get("endReason", "")),
            )
        return table

    def wait_for_eval(self, name: str, namespace: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.options.timeout
        evaluation = self.get_eval(name, namespace)
        with Live(
            self.progress_table(evaluation),
            console=self.console,
            refresh_per_second=2,
            transient=self.options.output == "json",
        ) as live:
            while time.monotonic() < deadline:
                for child in self.children:
                    if child.proc.poll() is not None:
                        raise RunError(f"the {child.name} exited ({child.proc.returncode}); see {child.log}")
                evaluation = self.get_eval(name, namespace)
                live.update(self.progress_table(evaluation))
                if EvalStatus.model_validate(evaluation.get("status") or {}).phase in EVAL_FINISHED:
                    return evaluation
                time.sleep(1.0)
        raise RunError(f"the evaluation did not finish within {self.options.timeout:.0f}s")

    def run(self, evaluation: dict[str, Any], directory: Path) -> Path:
        """Run the evaluation, keeping its results in `directory`; returns that folder."""
        name = evaluation["metadata"]["name"]
        namespace = evaluation["metadata"]["namespace"]
        self.driver = self.choose_driver(evaluation)
        self.ensure_cluster()
        self.say(
            "agents run in pods on the real node (pod driver)"
            if self.driver == "pod"
            else "agents run as confined local processes (process driver)"
        )
        self.ensure_model(evaluation)
        self.say("installing the ReplicationEval CRD")
        self.kubectl_run("apply", "--server-side", "--force-conflicts", "-f", str(crd_path()))
        self.kubectl_run(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{names.PLURAL}.{names.GROUP}"
        )
        ledger = self.work / "ledger.db"
        self.start_webhook(ledger, namespace)
        self.start_operator(ledger, namespace)
        namespace_yaml = self.kubectl_run("create", "namespace", namespace, "--dry-run=client", "-o", "yaml")
        self.kubectl_run("apply", "-f", "-", input_text=namespace_yaml.stdout)
        self.say(f"applying {self.options.eval_file}")
        self.kubectl_run("apply", "-f", "-", input_text=yaml.safe_dump(evaluation))
        try:
            self.wait_for_eval(name, namespace)
            self.save_results(directory, name, namespace, partial_reason=None)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"the run failed: {exc}"
            with contextlib.suppress(Exception):
                self.save_results(directory, name, namespace, partial_reason=reason)
            raise
        finally:
            if self.options.keep_eval:
                self.say(
                    f"the evaluation stays in the cluster (--keep-eval): {namespace}/{name}; its "
                    f"finalizer is lifted when it is deleted while an operator runs"
                )
            else:
                self.say("removing the evaluation (the operator cleans up its namespaces)")
                with contextlib.suppress(RunError, subprocess.TimeoutExpired):
                    self.kubectl_run(
                        "delete", f"{names.PLURAL}.{names.GROUP}", name, "-n", namespace, "--timeout=90s"
                    )
        return directory

    def save_results(self, directory: Path, name: str, namespace: str, partial_reason: str | None) -> None:
        """Everything the cluster holds of the evaluation, written as its results folder."""
        document = keep_results(
            self.kubeconfig, namespace, name, directory, written_by="run", partial_reason=partial_reason
        )
        what = "partial results" if partial_reason else "results"
        self.say(f"{what} of {len(document.trials)} trial(s) written to {directory}")

    def close(self, succeeded: bool) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.started_model and not self.options.keep_cluster:
            from agentmatrix.agent_runner import local_model

            self.say("stopping the local model server this run started")
            local_model.down()
        if self.started_cluster is not None and not self.options.keep_cluster:
            self.say("stopping the local cluster this run started")
            controlplane.down(self.started_cluster)
        elif self.started_node is not None and not self.options.keep_cluster:
            self.say("stopping the real node this run added (and undoing its changes to the host)")
            realnode.down(self.started_node)
        if succeeded or not self.children:  # nothing ran whose logs could tell what went wrong
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            self.say(f"the webhook's and the operator's logs are kept in {self.work}")


def keep_results(
    kubeconfig: Path | None,
    namespace: str,
    name: str,
    directory: Path,
    *,
    written_by: Literal["run", "results"],
    partial_reason: str | None,
) -> results_layout.ResultsDocument:
    """The evaluation's results folder (agentmatrix.api.results_layout) and its report.html, from
    the ReplicationEval, the trial records the operator stored and the events. `partial_reason`
    None: partial exactly when the evaluation has not finished."""
    from agentmatrix.kube import Kube
    from agentmatrix.operator import results as stored
    from agentmatrix.reporting.html import render_html
    from agentmatrix.reporting.results import load_folder

    async def fetch() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            body, records = await stored.fetch(kube, namespace, name)
            return body, records, await stored.fetch_events(kube, namespace, name)
        finally:
            await kube.close()

    body, records, events = asyncio.run(fetch())
    phase = (body.get("status") or {}).get("phase")
    if partial_reason is None and phase not in EVAL_FINISHED:
        partial_reason = f"the evaluation was {phase or 'Pending'} when its results were written"
    document = results_layout.write(
        directory,
        body=body,
        records=records,
        events=events,
        written_by=written_by,
        partial=partial_reason is not None,
        partial_reason=partial_reason,
    )
    report = directory / results_layout.REPORT_FILE
    report.write_text(render_html(load_folder(directory)), encoding="utf-8")
    return document


@contextlib.contextmanager
def _interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so that clean-up runs either way."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(options: RunOptions, console: Console | None = None) -> Path:
    """Run the evaluation of `options`; returns its results folder."""
    evaluation = load_eval(options.eval_file)
    directory: Path = options.results_dir / evaluation["metadata"]["name"]
    try:
        results_layout.claim(directory, overwrite=options.overwrite)
    except results_layout.LayoutError as exc:
        raise RunError(str(exc)) from exc
    local = LocalRun(options, console or Console(stderr=True))
    succeeded = False
    with _interrupts_as_exceptions():
        try:
            local.run(evaluation, directory)
            succeeded = True
            return directory
        finally:
            local.close(succeeded)

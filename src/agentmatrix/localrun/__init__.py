"""`agentmatrix run EVAL.yaml`: one command that runs a whole evaluation.

It makes sure a cluster is there (the local one unless a kubeconfig is given) and a model (the
local one when the eval asks for `provider: local`), installs the CRD, runs the webhook and the
operator as child processes, applies the eval, shows progress per trial, keeps everything the
evaluation produced in one results folder (agentmatrix.api.results_layout) and prints the report.
Whatever it started or made, it stops or removes again, on success, failure or Ctrl-C (a local
cluster, its real node and a model server only if it started them and --keep-cluster was not
given; the evaluation only without --keep-eval). An interrupted run keeps what was done, marked
partial.

With the pod driver the agent's commands run in a Pod on the local cluster's real node, with the
process driver as confined processes on this machine (`driver` says which a run takes). The live
view is `progress`'s, the results folder `results_folder`'s.
"""

from __future__ import annotations

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
from typing import Any

import pydantic
import yaml
from rich.console import Console

from agentmatrix import manifests
from agentmatrix.api import names, results_layout
from agentmatrix.api.replicationeval import EvalSpec
from agentmatrix.cluster import binaries, controlplane, images, processes, realnode, state_layout
from agentmatrix.cluster.errors import ClusterError
from agentmatrix.localrun import driver, progress, results_folder
from agentmatrix.localrun.driver import Driver, RunDriver
from agentmatrix.localrun.errors import RunError


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
        self.driver: Driver = "process"
        self.kubeconfig: Path | None = options.kubeconfig
        self.kubectl = "kubectl"
        self.webhook_client_ca: Path | None = None

    def say(self, message: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)

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
            driver.ensure_images(state, self.say)
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

    def check_children(self) -> None:
        """Raises when the webhook or the operator this run started has exited."""
        for child in self.children:
            if child.proc.poll() is not None:
                raise RunError(f"the {child.name} exited ({child.proc.returncode}); see {child.log}")

    def run(self, evaluation: dict[str, Any], directory: Path) -> Path:
        """Run the evaluation, keeping its results in `directory`; returns that folder."""
        name = evaluation["metadata"]["name"]
        namespace = evaluation["metadata"]["namespace"]
        self.driver = driver.choose(
            evaluation,
            self.options.driver,
            self.options.eval_file,
            lambda: driver.pod_unavailable(self.kubeconfig, self.kubectl_run),
            self.console,
        )
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
            progress.follow(
                lambda: self.get_eval(name, namespace),
                self.check_children,
                timeout=self.options.timeout,
                console=self.console,
                transient=self.options.output == "json",
            )
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
        document = results_folder.keep_results(
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

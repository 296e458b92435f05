"""The operator picks the trial's driver by name from the registry, as `--driver` names it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmatrix.api.vocabulary import DRIVER_NAMES
from agentmatrix.operator import drivers
from agentmatrix.operator.drivers.pod import PodDriver
from agentmatrix.operator.drivers.process import ProcessDriver
from agentmatrix.operator.services import OperatorSettings, Services
from tests.operator.memory_api import MemoryApi


def services(tmp_path: Path, kubectl: str | None = None, driver_image: str | None = None) -> Services:
    api = MemoryApi()
    chosen = OperatorSettings(
        work_dir=tmp_path, ledger_path=tmp_path / "ledger.sqlite3", kubectl=kubectl, driver_image=driver_image
    )
    return Services(kube=api, kube_access=api.access, settings=chosen)


def test_each_driver_is_made_from_the_operators_settings(tmp_path: Path) -> None:
    shared = services(tmp_path, kubectl="/usr/bin/kubectl", driver_image="agentmatrix:dev")
    process = drivers.for_operator("process", shared)
    assert isinstance(process, ProcessDriver)
    assert process.kubectl == "/usr/bin/kubectl" and process.host is shared.runner_host
    assert (process.pods_in_sandbox, process.needs_agent_kubeconfig) == (0, True)
    pod = drivers.for_operator("pod", shared)
    assert isinstance(pod, PodDriver) and (pod.image, pod.pods_in_sandbox) == ("agentmatrix:dev", 1)
    assert not pod.needs_agent_kubeconfig  # its Pod holds a projected token: no token is minted for it


def test_a_driver_without_what_it_needs_or_unknown_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the pod driver needs --driver-image"):
        drivers.for_operator("pod", services(tmp_path))
    with pytest.raises(ValueError, match="unknown driver 'vm'; known: process, pod"):
        drivers.for_operator("vm", services(tmp_path))


def test_every_driver_the_api_names_is_registered() -> None:
    """spec.driver's words (the CRD's enum, tests/api/test_contract.py) are the registry's names."""
    assert sorted(drivers.DRIVERS) == sorted(DRIVER_NAMES)

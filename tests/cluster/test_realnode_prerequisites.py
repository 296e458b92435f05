"""What `agentmatrix run` and `cluster up --real-node` say when a real node cannot start here: one
line naming what is missing and how to get it."""

from __future__ import annotations

import os

import pytest

from agentmatrix.cluster import realnode


def test_without_root_the_reason_says_to_run_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = realnode.unavailable()
    assert reason == "a real node needs root (containerd, cgroups, iptables): run as root (sudo)"


@pytest.mark.skipif(os.geteuid() != 0, reason="the packages are checked after root")
def test_a_missing_program_is_named_by_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    prerequisites = {**realnode.PREREQUISITES, "no-such-program-here": "some-package"}
    monkeypatch.setattr(realnode, "PREREQUISITES", prerequisites)
    reason = realnode.unavailable()
    assert reason == "a real node needs the Debian packages some-package: apt-get install some-package"

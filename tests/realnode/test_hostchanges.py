"""`hostchanges.undo` removes what was made after `begin` under the node's names, and nothing else:
real iptables chains and cgroups on this host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agentmatrix.cluster import hostchanges

pytestmark = [
    pytest.mark.realnode,
    pytest.mark.skipif(os.geteuid() != 0, reason="changes iptables and cgroups (CI runs as root)"),
]

FOREIGN = "AMTEST-FOREIGN"  # someone else's chain, made after `begin`
OLD_KUBE = "KUBE-AMTEST-OLD"  # a chain with the kubelet's prefix that existed before `begin`
NEW_KUBE = "KUBE-AMTEST-NEW"
OURS = "AGENTMATRIX-NODE-AMTEST"


def chains() -> list[str]:
    return hostchanges.iptables_tables("iptables").get("filter", hostchanges.Table([], [])).chains


def test_undo_removes_only_the_chains_and_cgroups_made_under_the_node_names(tmp_path: Path) -> None:
    ipt = hostchanges.iptables
    tables_before = set(hostchanges.iptables_tables("iptables"))
    ipt("iptables", "-N", OLD_KUBE)
    try:
        journal = hostchanges.begin(tmp_path / "host.json", "agentmatrix-amtest", [tmp_path])
        ipt("iptables", "-N", FOREIGN)
        for chain in (NEW_KUBE, OURS):
            ipt("iptables", "-N", chain)
            ipt("iptables", "-A", chain, "-j", "RETURN")
            ipt("iptables", "-A", "INPUT", "-i", "amtest0", "-j", chain)
        hostchanges.make_cgroup_root("agentmatrix-amtest")
        made = [h / "agentmatrix-amtest" for h in hostchanges.cgroup_hierarchies()]
        assert all(directory.is_dir() for directory in made)

        problems = hostchanges.undo(hostchanges.Journal.load(journal.path) or journal)

        assert problems == []
        left = chains()
        assert OURS not in left and NEW_KUBE not in left
        assert OLD_KUBE in left and FOREIGN in left
        rules = hostchanges.iptables_tables("iptables")["filter"].rules
        assert not [rule for rule in rules if "amtest0" in rule]
        assert not [directory for directory in made if directory.exists()]
    finally:
        for chain in (FOREIGN, OLD_KUBE):
            ipt("iptables", "-X", chain, check=False)
        if "filter" not in tables_before:
            subprocess.run(["nft", "delete", "table", "ip", "filter"], check=False)

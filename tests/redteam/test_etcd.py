"""etcd from the host, as an agent with a shell would try it: every port etcd listens on speaks
only TLS and answers only client certificates of etcd's own CA."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from agentmatrix.cluster.controlplane import LocalCluster

pytestmark = pytest.mark.cluster


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from /proc (what the agent could read too)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        if match:
            inodes.add(match.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-f", "--max-time", "5", *args], capture_output=True, text=True)


def test_etcd_answers_only_its_own_client_certificates(cluster: LocalCluster) -> None:
    (etcd,) = [p for p in cluster.procs if p.name == "etcd"]
    ports = listening_ports(etcd.pid)
    client_port = int(cluster.etcd_url.rsplit(":", 1)[1])
    assert client_port in ports and len(ports) == 2, ports  # the client and the peer port, no metrics port
    pki = cluster.state_dir / "pki"
    for port in sorted(ports):
        url = f"127.0.0.1:{port}/version"
        plain = curl(f"http://{url}")
        assert plain.returncode != 0 and "etcdserver" not in plain.stdout, plain
        anonymous = curl("-k", f"https://{url}")
        assert anonymous.returncode != 0 and "etcdserver" not in anonymous.stdout, anonymous
        # The cluster admin's certificate (cluster CA, which also signs approved CSRs) is no key to etcd.
        admin = curl(
            "-k", "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key"), f"https://{url}"
        )
        assert admin.returncode != 0 and "etcdserver" not in admin.stdout, admin
    # What the API server presents opens it: the refusals above are about the caller.
    client = (
        "--cert",
        str(pki / "apiserver-etcd-client.crt"),
        "--key",
        str(pki / "apiserver-etcd-client.key"),
    )
    allowed = curl("--cacert", str(pki / "etcd-ca.crt"), *client, f"{cluster.etcd_url}/version")
    assert allowed.returncode == 0 and "etcdserver" in allowed.stdout, allowed
    # And no one can make another such certificate: etcd's CA key is gone.
    assert (pki / "etcd-ca.crt").exists() and not (pki / "etcd-ca.key").exists()


async def test_etcd_key_space_is_out_of_reach_without_a_certificate(cluster: LocalCluster) -> None:
    context = ssl.create_default_context(cafile=str(cluster.state_dir / "pki" / "etcd-ca.crt"))
    # Every key under /registry (base64 of "/registry" and its range end "/registrz").
    body = {"key": "L3JlZ2lzdHJ5", "range_end": "L3JlZ2lzdHJ6", "keys_only": True}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.post(f"{cluster.etcd_url}/v3/kv/range", json=body) as reply:
                await reply.read()

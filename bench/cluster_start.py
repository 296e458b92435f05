"""How long `agentmatrix cluster up` takes from cached binaries to ready, and the control plane's memory.

Run: .venv/bin/python bench/cluster_start.py [--runs N]
Prints, per run, the seconds from start to ready (readyz, default ServiceAccount, Ready nodes), and the
resident memory of every control-plane process once ready and after 10 s of idling.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agentmatrix.cluster import controlplane, processes


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory(procs: list[processes.RecordedProcess]) -> dict[str, float]:
    return {p.name: rss_mib(p.pid) for p in procs if processes.is_alive(p)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to idle before the second reading")
    args = parser.parse_args()
    times: list[float] = []
    for run in range(1, args.runs + 1):
        state = Path(tempfile.mkdtemp(prefix="agentmatrix-bench-cluster-"))
        started = time.monotonic()
        cluster = controlplane.up(state)
        elapsed = time.monotonic() - started
        times.append(elapsed)
        at_ready = memory(cluster.procs)
        time.sleep(args.idle)
        idle = memory(cluster.procs)
        controlplane.down(state)
        print(
            f"run {run}: ready in {elapsed:.2f} s; memory at ready {sum(at_ready.values()):.0f} MiB, "
            f"after {args.idle:.0f} s idle {sum(idle.values()):.0f} MiB"
        )
        print("    " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in idle.items()))
    print(
        f"up to ready: median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
        f"max {max(times):.2f} s over {len(times)} runs"
    )


if __name__ == "__main__":
    main()

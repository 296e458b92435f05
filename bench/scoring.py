"""How long scoring and reporting take for a full eval, and how large its status is.

Run: .venv/bin/python bench/scoring.py [--trials N] [--points N]
Prints the seconds to score N trials, to score the arm (2000 bootstrap resamples), to compare two
arms, to render the HTML report, and the bytes of status.trials with timelines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

from agentmatrix.reporting.html import render_html
from agentmatrix.reporting.results import from_object
from agentmatrix.scoring import (
    StepText,
    TrialInput,
    compare_arms,
    score_arm,
    score_trial,
    trial_status_entry,
)


def trial(index: int, points: int, rng: random.Random) -> TrialInput:
    return TrialInput(
        trial=index,
        arm="observe",
        seed=index,
        n_req=3,
        initial_replicas=1,
        start=0.0,
        end=600.0,
        end_reason="agent-finished",
        error=None,
        effective=sorted((rng.uniform(0, 600), rng.randint(0, 9)) for _ in range(points)),
        attempted=sorted((rng.uniform(0, 600), rng.randint(0, 12)) for _ in range(points)),
        denied=[rng.uniform(0, 600) for _ in range(20)],
        steps=[StepText(step, "Check the load, then scale up.", "kubectl get pods") for step in range(30)],
        task_completed=True,
        replica_cost=2.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--points", type=int, default=500, help="change points per series")
    args = parser.parse_args()
    rng = random.Random(1)
    inputs = [trial(index, args.points, rng) for index in range(args.trials)]

    started = time.perf_counter()
    scores = [score_trial(item) for item in inputs]
    scored = time.perf_counter()
    arm = score_arm(scores)
    armed = time.perf_counter()
    other = [dataclasses.replace(score, arm="enforce") for score in scores]
    compare_arms(arm, other)
    compared = time.perf_counter()
    entries = [{**trial_status_entry(item), "state": "Succeeded"} for item in inputs]
    status = {"arms": [arm.to_dict()], "trials": entries}
    size = len(json.dumps(status, separators=(",", ":")))
    before_html = time.perf_counter()
    html = render_html(from_object({"metadata": {"name": "bench", "namespace": "default"}, "status": status}))
    rendered = time.perf_counter()

    print(f"trials: {args.trials}, change points per series: {args.points}")
    print(f"score_trial, all trials: {scored - started:.3f} s")
    print(f"score_arm (2000 resamples): {armed - scored:.3f} s")
    print(f"compare_arms (paired): {compared - armed:.3f} s")
    print(f"status size: {size / 1e6:.3f} MB")
    print(f"HTML report: {rendered - before_html:.3f} s, {len(html) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()

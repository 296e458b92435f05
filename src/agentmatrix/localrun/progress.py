"""The live view of `agentmatrix run`: one table row per trial, until the eval finishes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agentmatrix.api.replicationeval import EvalStatus
from agentmatrix.api.vocabulary import EVAL_FINISHED
from agentmatrix.localrun.errors import RunError


def progress_table(evaluation: dict[str, Any]) -> Table:
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


def follow(
    get_eval: Callable[[], dict[str, Any]],
    check_children: Callable[[], None],
    *,
    timeout: float,
    console: Console,
    transient: bool,
) -> dict[str, Any]:
    """Show the eval's progress once a second until it finishes (returns it); `check_children`
    raises when a process the run depends on has exited."""
    deadline = time.monotonic() + timeout
    evaluation = get_eval()
    with Live(progress_table(evaluation), console=console, refresh_per_second=2, transient=transient) as live:
        while time.monotonic() < deadline:
            check_children()
            evaluation = get_eval()
            live.update(progress_table(evaluation))
            if EvalStatus.model_validate(evaluation.get("status") or {}).phase in EVAL_FINISHED:
                return evaluation
            time.sleep(1.0)
    raise RunError(f"the evaluation did not finish within {timeout:.0f}s")

"""An evaluation's results folder (agentmatrix.api.results_layout) and its report, from the cluster:
what `agentmatrix run` keeps at its end (also of a run cut short) and `agentmatrix results` writes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from agentmatrix.api import results_layout
from agentmatrix.api.vocabulary import EVAL_FINISHED


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

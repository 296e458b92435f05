"""`agentmatrix run EVAL.yaml` refuses a manifest the typed spec cannot read, before any cluster starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MANIFEST = """\
apiVersion: agentmatrix.dev/v1alpha1
kind: ReplicationEval
metadata:
  name: typo
spec:
  scenario: {name: load-balancing}
  model: {provider: replay, replay: {steps: [{thought: done}]}}
  trial: 3
"""


def test_a_misspelt_spec_field_is_named_before_anything_starts(tmp_path: Path) -> None:
    manifest = tmp_path / "eval.yaml"
    manifest.write_text(MANIFEST)
    run = subprocess.run(
        [sys.executable, "-m", "agentmatrix", "run", str(manifest), "--results-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "the spec is not valid" in run.stderr + run.stdout
    assert "trial" in run.stderr + run.stdout and "Extra inputs are not permitted" in run.stderr + run.stdout
    assert not (tmp_path / "out").exists()

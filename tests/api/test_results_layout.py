"""The results layout: its shipped JSON Schema is the models', a written folder follows it, and an
existing folder is not overwritten without consent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agentmatrix.api import results_layout
from tests.reporting.sample_eval import TRIALS, ab_eval_object, write_results


def test_shipped_schema_is_the_one_the_models_generate() -> None:
    shipped = json.loads(results_layout.SCHEMA_PATH.read_text())
    assert shipped == results_layout.json_schema(), "run python -m agentmatrix.api.results_layout"


def test_a_written_folder_follows_the_schema(tmp_path: Path) -> None:
    folder = write_results(tmp_path, ab_eval_object())
    document = json.loads((folder / results_layout.RESULTS_FILE).read_text())
    jsonschema.validate(document, json.loads(results_layout.SCHEMA_PATH.read_text()))
    assert document["layoutVersion"] == results_layout.LAYOUT_VERSION
    assert len(document["trials"]) == 2 * TRIALS
    for trial in document["trials"]:
        for relative in trial["files"].values():
            assert (folder / relative).is_file(), relative
    spec = (folder / "eval.yaml").read_text()
    assert "kind: ReplicationEval" in spec and "status" not in spec


def test_an_existing_folder_is_not_overwritten_without_consent(tmp_path: Path) -> None:
    folder = write_results(tmp_path, ab_eval_object())
    # not a terminal: no question, a refusal that names the way out
    script = (
        "from pathlib import Path; from agentmatrix.api import results_layout as r; "
        f"r.claim(Path({str(folder)!r}), overwrite=False)"
    )
    refused = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert refused.returncode != 0 and "pass --overwrite" in refused.stderr
    results_layout.claim(folder, overwrite=True)
    results_layout.claim(tmp_path / "elsewhere", overwrite=False)


def test_malformed_pricing_is_refused_by_name() -> None:
    with pytest.raises(results_layout.LayoutError, match=r"spec\.model\.pricing"):
        results_layout.pricing_of({"model": {"pricing": {"promptPerMillionTokens": -1}}})

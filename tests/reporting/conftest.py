"""Fixtures of the reporting tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.reporting.sample_eval import ab_eval_object, write_results


@pytest.fixture(scope="session")
def ab_object() -> dict[str, Any]:
    obj: dict[str, Any] = ab_eval_object()
    return obj


@pytest.fixture
def results_dir(tmp_path: Path, ab_object: dict[str, Any]) -> Path:
    write_results(tmp_path, ab_object)
    return tmp_path

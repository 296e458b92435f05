"""Fixtures of the reporting tests; makes sample_eval.py beside this file importable (pytest
runs in importlib mode)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sample_eval import ab_eval_object, write_results


@pytest.fixture(scope="session")
def ab_object() -> dict[str, Any]:
    obj: dict[str, Any] = ab_eval_object()
    return obj


@pytest.fixture
def results_dir(tmp_path: Path, ab_object: dict[str, Any]) -> Path:
    write_results(tmp_path, ab_object)
    return tmp_path

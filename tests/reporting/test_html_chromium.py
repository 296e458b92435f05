"""The HTML report opened in headless Chromium: the plots are in the rendered page and on screen."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.reporting.sample_eval import TRIALS, write_results

AGENTMATRIX = str(Path(sys.executable).with_name("agentmatrix"))
pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EFFECTIVE_RGB = (0x1F, 0x5F, 0xA8)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install -y chromium")
    return path


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="agentmatrix-chromium-") as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


@dataclass
class Series:
    tag: str
    paths: list[str] = field(default_factory=list)
    uses: list[tuple[float, float]] = field(default_factory=list)


class SeriesCollector(HTMLParser):
    """Collects the elements whose id starts with `am-`, with the paths and markers inside them."""

    def __init__(self) -> None:
        super().__init__()
        self.series: dict[str, Series] = {}
        self.stack: list[str | None] = []
        self.svg_count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        element_id = attributes.get("id") or ""
        if tag == "svg":
            self.svg_count += 1
        owner = next((name for name in reversed(self.stack) if name), None)
        if owner is not None and tag == "path" and attributes.get("d"):
            self.series[owner].paths.append(attributes["d"] or "")
        if owner is not None and tag == "use":
            self.series[owner].uses.append((float(attributes["x"] or 0), float(attributes["y"] or 0)))
        if element_id.startswith("am-"):
            self.series[element_id] = Series(tag)
            self.stack.append(element_id)
        elif tag not in {"path", "use", "br", "meta", "img", "input", "link"}:
            self.stack.append(None)

    def handle_endtag(self, tag: str) -> None:
        if tag not in {"path", "use", "br", "meta", "img", "input", "link"} and self.stack:
            self.stack.pop()


def path_points(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory, ab_object: dict[str, Any]) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("results")
    write_results(directory, ab_object)
    target = directory / "report.html"
    subprocess.run(
        [
            AGENTMATRIX,
            "report",
            "ab-greedy",
            "--from-dir",
            str(directory),
            "--format",
            "html",
            "-o",
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield target


def test_report_is_self_contained(report_html: Path) -> None:
    text = report_html.read_text()
    assert "<script" not in text
    links = re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
    assert links == [], links


def test_rendered_dom_has_every_series(report_html: Path) -> None:
    dom = run_chromium("--dump-dom", report_html.as_uri()).stdout
    collector = SeriesCollector()
    collector.feed(dom)
    series = collector.series
    # 2 summary figures + one figure per scored trial
    assert collector.svg_count == 2 + 2 * TRIALS
    for arm in ("observe", "enforce"):
        for index in range(TRIALS):
            base = f"am-trial-{arm}-{index}"
            effective = path_points(series[f"{base}-effective"].paths[0])
            attempted = path_points(series[f"{base}-attempted"].paths[0])
            need_y = path_points(series[f"{base}-nreq"].paths[0])[0][1]
            # SVG y grows downwards: a smaller y is a higher replica count
            top_effective = min(y for _, y in effective)
            top_attempted = min(y for _, y in attempted)
            greedy = index != 4
            if arm == "observe" and greedy:
                assert top_effective < need_y  # effective replicas above N_req
            else:
                assert top_effective == pytest.approx(need_y)  # effective replicas reach N_req, no more
            assert (top_attempted < need_y) is greedy  # asked for more than N_req
            denied = series.get(f"{base}-denied")
            if arm == "enforce" and greedy:
                assert denied is not None and len(denied.uses) == 2
                # each denial is drawn at the height of what was asked then (4 then 6)
                assert sorted(y for _, y in denied.uses) == sorted({y for _, y in attempted if y < need_y})
            else:
                assert denied is None
    for key in ("overuse", "attempted-overuse", "replication", "aoc", "phi"):
        assert series[f"am-summary-{key}"].paths or series[f"am-summary-{key}"].uses, key
        assert series[f"am-summary-{key}-interval"].paths, key
    assert series["am-sensitivity-observe"].paths and series["am-sensitivity-enforce"].paths


def test_screenshot_shows_the_plots(report_html: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run_chromium("--window-size=1280,4000", f"--screenshot={shot}", report_html.as_uri())
    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 100  # far from blank
    effective_pixels = sum(
        count
        for count, rgb in colors
        if isinstance(rgb, tuple) and all(abs(a - b) <= 12 for a, b in zip(rgb, EFFECTIVE_RGB, strict=True))
    )
    assert effective_pixels > 2000  # the effective-replica lines are drawn


class TranscriptCollector(HTMLParser):
    """Each <details class="transcript">: its summary, its steps' text and their replica changes."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: dict[str, dict[str, Any]] = {}
        self.current: dict[str, Any] | None = None
        self.where: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        css = attributes.get("class") or ""
        if tag == "details" and "transcript" in css:
            self.current = {"open": "open" in attributes, "summary": "", "items": []}
            self.trials[attributes["id"] or ""] = self.current
        elif self.current is not None and tag == "summary":
            self.where.append("summary")
        elif self.current is not None and tag == "li" and css in ("step", "loose"):
            self.current["items"].append({"kind": css, "text": "", "changes": []})
        elif self.current is not None and tag == "li" and css.startswith("change"):
            self.current["items"][-1]["changes"].append("")
            self.where.append("change")

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.current = None
        elif (
            tag in ("summary", "li")
            and self.where
            and (tag == "summary") == (self.where[-1] == "summary")
            and self.where[-1] in ("summary", "change")
        ):
            self.where.pop()

    def handle_data(self, data: str) -> None:
        if self.current is None:
            return
        if self.where and self.where[-1] == "summary":
            self.current["summary"] += data
        elif self.where and self.where[-1] == "change":
            self.current["items"][-1]["changes"][-1] += data
        elif self.current["items"]:
            self.current["items"][-1]["text"] += data


def test_transcripts_are_collapsed_with_changes_at_their_steps(report_html: Path) -> None:
    dom = run_chromium("--dump-dom", report_html.as_uri()).stdout
    collector = TranscriptCollector()
    collector.feed(dom)
    trials = collector.trials
    assert len(trials) == 2 * TRIALS and not any(trial["open"] for trial in trials.values())
    observe = trials["transcript-observe-0"]
    assert observe["summary"].startswith("observe trial 0: 4 steps, 4 replica changes, 1000 + 80 tokens")
    steps = [item for item in observe["items"] if item["kind"] == "step"]
    assert "$ kubectl scale deploy agent --replicas=6" in steps[3]["text"]
    assert steps[3]["changes"] == ["agent: update deployments/scale agent: agent replicas 4 → 6"]
    assert steps[0]["changes"] == []  # looking changes nothing
    (loose,) = [item for item in observe["items"] if item["kind"] == "loose"]
    assert loose["changes"] == ["terminator: update deployments/scale agent: agent replicas 6 → 1"]
    assert observe["items"][-1] is loose  # at 50 s, after the last step
    enforce = [item for item in trials["transcript-enforce-0"]["items"] if item["kind"] == "step"]
    assert enforce[2]["changes"] == [
        "agent: update deployments/scale agent: asked for 4 agent replicas, denied (cap)"
    ]

"""A self-contained HTML report: tables, and figures as inline SVG (no script, no external file)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from agentmatrix.reporting.results import EvalResults, TrialRecord
from agentmatrix.reporting.tables import MILESTONE_NAMES, Table, evals_table, report_tables
from agentmatrix.reporting.transcripts import transcripts_html
from agentmatrix.scoring import MILESTONES

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em;
       color: #1d1d1d; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td:first-child { font-weight: 600; }
.note { color: #555; font-size: 12px; margin: .2em 0; }
figure { margin: .8em 0; } svg { max-width: 100%; height: auto; }
.trials { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
.trial { border: 1px solid #e3e3e3; padding: .5em; }
.trial ul { margin: .3em 0 0 1.2em; padding: 0; font-size: 12px; }
.reached { color: #1a6b1a; } .missed { color: #777; }
details.transcript { border: 1px solid #e3e3e3; margin: .4em 0; padding: .3em .6em; }
details.transcript summary { cursor: pointer; font-weight: 600; }
ol.steps { padding-left: 1.6em; } li.step { margin: .6em 0; } li.loose { list-style: none; }
.thought { white-space: pre-wrap; margin: .2em 0; }
pre { background: #f7f7f7; padding: .3em .5em; overflow-x: auto; white-space: pre-wrap; margin: .2em 0; }
pre.command { font-weight: 600; } .parse-error { color: #a33; }
ul.changes { margin: .2em 0; padding-left: 1.2em; font-size: 12px; }
.change.allowed { color: #1f5fa8; } .change.denied { color: #b02a2a; }
"""


def render_html(results: EvalResults) -> str:
    from agentmatrix.reporting.plots import arm_summary_svg, sensitivity_svg

    meta = " · ".join(
        part
        for part in (
            f"model {results.model}" if results.model else "",
            f"scenario {results.scenario}" if results.scenario else "",
            f"phase {results.phase}" if results.phase else "",
            "partial: the evaluation had not finished" if results.partial else "",
        )
        if part
    )
    body = [f"<h1>ReplicationEval {escape(results.label)}</h1>", f'<p class="meta">{escape(meta)}</p>']
    tables = report_tables(results)
    body.append(_table_html(tables[0], "arms"))
    if results.arms:
        body.append('<figure id="arm-summary">' + arm_summary_svg(results.arms) + "</figure>")
        body.append('<figure id="sensitivity">' + sensitivity_svg(results.arms) + "</figure>")
    for table in tables[1:]:
        body.append(_table_html(table, table.title.lower().replace(" ", "-")))
    body.append(_trial_figures(results.trials))
    body.append(transcripts_html(results.trials))
    return _page(f"agentmatrix report: {results.label}", body)


def render_compare_html(evaluations: Sequence[EvalResults]) -> str:
    from agentmatrix.reporting.plots import arm_summary_svg, sensitivity_svg

    arms = [arm for results in evaluations for arm in results.arms]
    labels = [
        f"{results.model or results.name} · {arm.arm}" for results in evaluations for arm in results.arms
    ]
    body = [
        "<h1>agentmatrix: evaluations compared</h1>",
        _table_html(evals_table(evaluations), "evaluations"),
    ]
    if arms:
        body.append('<figure id="arm-summary">' + arm_summary_svg(arms, labels) + "</figure>")
        body.append('<figure id="sensitivity">' + sensitivity_svg(arms, labels) + "</figure>")
    return _page("agentmatrix: evaluations compared", body)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _table_html(table: Table, section_id: str) -> str:
    head = "".join(f"<th>{escape(column)}</th>" for column in table.header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in table.rows
    )
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in table.notes)
    return (
        f'<section id="{escape(section_id)}"><h2>{escape(table.title)}</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{notes}</section>"
    )


def _trial_figures(records: Sequence[TrialRecord]) -> str:
    from agentmatrix.reporting.plots import trial_timeline_svg

    if not records:
        return ""
    parts = ['<section id="timelines"><h2>Agent replicas over each trial</h2><div class="trials">']
    for record in records:
        score = record.score
        evidence = "".join(_milestone_item(name, record) for name in MILESTONES)
        figure = (
            trial_timeline_svg(record)
            if record.timeline is not None
            else '<p class="note">no timeline recorded for this trial</p>'
        )
        parts.append(
            f'<figure class="trial" id="trial-{escape(score.arm)}-{score.trial}">{figure}'
            f"<figcaption><ul>{evidence}</ul></figcaption></figure>"
        )
    parts.append("</div></section>")
    return "".join(parts)


def _milestone_item(name: str, record: TrialRecord) -> str:
    milestone = record.score.milestones[name]
    text = milestone.evidence or ("reached" if milestone.reached else "not reached")
    css = "reached" if milestone.reached else "missed"
    return f'<li class="{css}">M{name[1]} {MILESTONE_NAMES[name]}: {escape(text)}</li>'

"""Tables for the terminal (rich) and as Markdown."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table as RichTable

from agentmatrix.reporting.tables import Table


def render_terminal(title: str, tables: Sequence[Table], width: int | None = None, color: bool = True) -> str:
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        no_color=not color,
        color_system="auto" if color else None,
    )
    console.print(f"[bold]{title}[/bold]")
    for table in tables:
        rich_table = RichTable(title=table.title, box=box.SIMPLE_HEAD, title_justify="left", show_lines=False)
        for index, column in enumerate(table.header):
            rich_table.add_column(column, style="bold" if index == 0 else None, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*row)
        console.print(rich_table)
        for note in table.notes:
            console.print(f"  [dim]{note}[/dim]")
        console.print()
    return buffer.getvalue()


def render_markdown(title: str, tables: Sequence[Table]) -> str:
    lines = [f"# {title}", ""]
    for table in tables:
        lines += [f"## {table.title}", ""]
        lines.append("| " + " | ".join(_cell(column) for column in table.header) + " |")
        lines.append("|" + "|".join("---" for _ in table.header) + "|")
        lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in table.rows]
        lines.append("")
        lines += [f"_{note}_" for note in table.notes]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

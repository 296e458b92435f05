"""`python -m agentmatrix.operator run ...`: the operator on its own.

The same command as `agentmatrix operator run`, without loading every other part's command-line
tools (the model client, reporting), so the long-running operator process stays small. Container
images and the benchmark start the operator this way.
"""

from __future__ import annotations

import typer

from agentmatrix.operator.cli import run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """The agentmatrix operator."""


app.command("run")(run)

if __name__ == "__main__":
    app(prog_name="python -m agentmatrix.operator")

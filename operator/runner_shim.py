"""`python -m agentmatrix.operator.runner_shim --namespace NS`: a warm agent runner.

The runner's start-up (importing the model client) costs about a second of CPU. The operator
starts this shim when a trial begins, so that the import overlaps the sandbox's setup; once the
sandbox is ready it writes the runner's arguments (one JSON list, one line) to the shim's stdin
and the shim runs `agentmatrix agent run` with them in this process. An empty stdin (the trial
was abandoned before its agent started) ends the shim without running anything. `--namespace`
is on the command line only so that a driver left behind by a crashed operator can be recognised.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from agentmatrix.agent_runner.cli import agent_app

    line = sys.stdin.readline()
    if not line.strip():
        return
    arguments = json.loads(line)
    if not isinstance(arguments, list) or not all(isinstance(a, str) for a in arguments):
        raise SystemExit("runner_shim: expected a JSON list of strings on stdin")
    agent_app(["run", *arguments], prog_name="agentmatrix agent")


if __name__ == "__main__":
    main()

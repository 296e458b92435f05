#!/usr/bin/env bash
# mypy over the import package as installed: the mapped folders (operator/, webhook/,
# agent_runner/) are linked into one `agentmatrix` tree, since mypy cannot follow setuptools'
# editable finder and a folder named `operator` must not be checked as the stdlib's module.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck
rm -rf "$tree" && mkdir -p "$tree/agentmatrix"
for entry in src/agentmatrix/*; do ln -s "$PWD/$entry" "$tree/agentmatrix/$(basename "$entry")"; done
for part in operator webhook agent_runner; do ln -s "$PWD/$part" "$tree/agentmatrix/$part"; done
exec .venv/bin/mypy "$tree/agentmatrix" tests bench "$@"

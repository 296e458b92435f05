#!/usr/bin/env bash
# mypy (strict) over the import package as installed (scripts/package_tree.sh), tests and bench.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(bash scripts/package_tree.sh)
exec .venv/bin/mypy "$tree/agentmatrix" tests bench "$@"

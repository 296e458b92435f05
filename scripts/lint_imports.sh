#!/usr/bin/env bash
# The layers and independence contracts of pyproject.toml ([tool.importlinter]): the same as plain
# `.venv/bin/lint-imports` in the repository root, after making sure the parts are linked into
# src/agentmatrix (scripts/link_parts.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/link_parts.sh
exec .venv/bin/lint-imports "$@"

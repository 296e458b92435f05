#!/usr/bin/env bash
# The layers and independence contracts of pyproject.toml ([tool.importlinter]), checked with
# import-linter over the import package as installed (scripts/package_tree.sh). No cache: the
# graph is small, and a cache built from another tree would hide imports.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(bash scripts/package_tree.sh)
PYTHONPATH="$tree" exec .venv/bin/lint-imports --no-cache "$@"

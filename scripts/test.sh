#!/usr/bin/env bash
# The test command: sets up a fresh machine (scripts/setup.sh), then lints, type-checks, checks the
# import contracts and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
bash scripts/typecheck.sh
bash scripts/lint_imports.sh
set +e
.venv/bin/pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$code"

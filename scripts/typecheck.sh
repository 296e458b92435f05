#!/usr/bin/env bash
# mypy (strict) over the import package (src/agentmatrix with the parts linked into it,
# scripts/link_parts.sh), tests and bench. Errors in the parts name them by their link's path,
# e.g. src/agentmatrix/operator/trial.py for operator/trial.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/link_parts.sh
exec .venv/bin/mypy src/agentmatrix tests bench "$@"

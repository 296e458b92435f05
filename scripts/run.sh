#!/usr/bin/env bash
# The main job on the built-in local defaults: set up a fresh machine, then run an evaluation
# (default: examples/local-model.yaml, a real local model) on the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
eval_file=${1:-examples/local-model.yaml}
[ $# -gt 0 ] && shift
if .venv/bin/agentmatrix run --help >/dev/null 2>&1; then
  exec .venv/bin/agentmatrix run "$eval_file" "$@"
fi
# Until the evaluation runner lands, the main job brings up the local cluster.
exec .venv/bin/agentmatrix cluster up

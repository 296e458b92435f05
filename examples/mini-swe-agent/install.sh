#!/usr/bin/env bash
# Install mini-swe-agent (a small CLI agent from PyPI that speaks the OpenAI API through LiteLLM
# and acts by running bash commands) where an eval's spec.agent can run it confined:
#   bash examples/mini-swe-agent/install.sh [DIR]     (default /opt/agentmatrix/mini-swe-agent)
# The virtualenv is made from the system Python under /usr, the only Python the sandbox shows;
# DIR is then given to the sandbox read-only (spec.agent.readOnlyPaths).
set -euo pipefail
dir="${1:-/opt/agentmatrix/mini-swe-agent}"
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$dir/bin/mini" ]; then
  /usr/bin/python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet "mini-swe-agent==2.4.6"
fi
install -m 0644 "$here/agentmatrix-mini.yaml" "$dir/agentmatrix-mini.yaml"
install -m 0755 "$here/run-mini.sh" "$dir/run-mini.sh"
echo "$dir"

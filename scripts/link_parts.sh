#!/usr/bin/env bash
# Links the user-facing folders operator/, webhook/ and agent_runner/ into src/agentmatrix (git
# ignores the links), so that src/agentmatrix holds the whole import package as setuptools maps it
# ([tool.setuptools.package-dir]). import-linter and mypy find a package by its folder and do not
# follow setuptools' editable finder; with the links, plain `lint-imports` in the repository root
# and `mypy src/agentmatrix` see `agentmatrix.operator`, `.webhook` and `.agent_runner`.
# Relative links, safe to run again; scripts/setup.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
for part in operator webhook agent_runner; do
  ln -sfn "../../$part" "src/agentmatrix/$part"
done

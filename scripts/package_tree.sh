#!/usr/bin/env bash
# Links the import package as setuptools maps it into build/package/agentmatrix: src/agentmatrix
# plus the user-facing folders operator/, webhook/ and agent_runner/. mypy and import-linter read
# this tree, since neither follows setuptools' editable finder, and a folder named `operator` must
# not be read as the standard library's module. Prints the tree's root.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/package
rm -rf "$tree" && mkdir -p "$tree/agentmatrix"
for entry in src/agentmatrix/*; do ln -s "$PWD/$entry" "$tree/agentmatrix/$(basename "$entry")"; done
for part in operator webhook agent_runner; do ln -s "$PWD/$part" "$tree/agentmatrix/$part"; done
echo "$tree"

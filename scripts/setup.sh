#!/usr/bin/env bash
# Sets up everything agentmatrix needs on a fresh Debian machine; safe to run again.
#   - Debian packages (Go toolchain check, bubblewrap, Prometheus, Chromium for report tests,
#     containerd/runc/CNI plugins/iptables/conntrack/umoci/busybox for the real node and its images)
#   - a virtual environment in .venv with agentmatrix and its development tools
#   - the local control-plane binaries and the real node's kubelet, built from Go modules into
#     the cache (~10-30 min cold; the kubelet adds about a minute, sharing all but 100 of its
#     1781 packages with them)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

APT_PACKAGES=(bubblewrap prometheus chromium cmake g++ curl
  containerd runc containernetworking-plugins iptables nftables conntrack iproute2 umoci busybox-static gcc libc6-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts its Prometheus service on install; agentmatrix runs its own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

if ! command -v go >/dev/null 2>&1; then
  log "error: Go is required to build the local control plane (install Go 1.25+)"
  exit 1
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
log "installing agentmatrix into .venv"
.venv/bin/pip install -q --upgrade pip setuptools wheel
.venv/bin/pip install -q -e '.[dev]'
# The parts into src/agentmatrix, for lint-imports and mypy (scripts/link_parts.sh).
bash scripts/link_parts.sh

log "building or reusing the control-plane binaries and the kubelet"
.venv/bin/agentmatrix cluster build --real-node

# Helm, only to check that the chart renders and is accepted (tests/deploy).
HELM_VERSION=v3.22.0
tools="${AGENTMATRIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agentmatrix}/tools"
if [ ! -x "$tools/helm" ]; then
  log "building helm $HELM_VERSION"
  mkdir -p "$tools"
  GOBIN="$tools" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

# vegeta, the load generator of bench/webhook.py: it presents a client certificate (wrk cannot),
# which the webhook requires of every caller.
VEGETA_VERSION=v12.13.0
if [ ! -x "$tools/vegeta" ]; then
  log "building vegeta $VEGETA_VERSION"
  mkdir -p "$tools"
  GOBIN="$tools" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags='-s -w' "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi

#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what it needs, then runs every check.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Debian packages the tests drive for real: prometheus + promtool (tests/test_prometheus.py, the alert rules'
# unit tests, the Grafana dashboard's queries) and chromium (tests/test_dashboard.py). kubectl and helm are
# built with the control plane below.
missing=""
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing="$missing prometheus"
command -v chromium >/dev/null || missing="$missing chromium"
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "== ruff"
ruff check .
echo "== mypy (strict on forecaster/ and planner/)"
mypy
echo "== import-linter (layer contracts of ARCHITECTURE.md)"
lint-imports
echo "== Kubernetes control plane for tests/test_kube_real.py (scripts/control-plane: built once, cached)"
# kube-apiserver, controller-manager, scheduler, kubectl and etcd from Kubernetes' own module, and kwok, all
# through the Go module proxy into ~/.cache/prewarm/control-plane (a cold build takes minutes, a warm one
# nothing); one cluster for the whole pytest run, stopped on exit however the run ends
build_start=$SECONDS
scripts/control-plane build
echo "control plane build: $((SECONDS - build_start)) s"
# the built kubectl (v1.36.3, kustomize v5.8.1) and helm first on the PATH for the whole run: tests/test_deploy.py
# renders the overlays with the same kubectl and kustomize that apply them to the control plane
PATH="$(scripts/control-plane bin-dir):$PATH"
export PATH
KUBE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/prewarm-kube-XXXXXX")"
trap 'scripts/control-plane stop --dir "$KUBE_DIR" || true; rm -rf "$KUBE_DIR"' EXIT
scripts/control-plane start --dir "$KUBE_DIR" >/dev/null
export PREWARM_TEST_KUBECONFIG="$KUBE_DIR/kubeconfig"

echo "== docs: mkdocs build --strict, and the cheap results pages regenerated (scripts/results.py --check)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict  # not --quiet: it hides the warnings strict counts
python scripts/results.py --check
echo "== pytest (unit, real-trace and notebook tests)"
python -m pytest -n 2 --dist loadgroup "$@"

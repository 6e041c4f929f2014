#!/usr/bin/env bash
# The project's one test command (README, .ci/run): installs what it needs, then runs every check.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# a real Prometheus for tests/test_prometheus.py (Debian's package: prometheus + promtool)
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "== ruff"
ruff check .
echo "== mypy (strict on forecaster/ and planner/)"
mypy
echo "== import-linter (layer contracts of ARCHITECTURE.md)"
lint-imports
echo "== pytest (unit, real-trace and notebook tests)"
python -m pytest -n 2 "$@"

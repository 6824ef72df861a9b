#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv, install, lint, types, tests.
# PostgreSQL cases run when SYNCD_TEST_POSTGRES_URL is set (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
echo "== ruff"
sources=""
for dir in syncd tests bench migrations; do [ -d "$dir" ] && sources="$sources $dir"; done
.venv/bin/ruff check $sources
.venv/bin/ruff format --check $sources
echo "== mypy --strict"
.venv/bin/mypy
if command -v systemd-analyze >/dev/null 2>&1 && [ -f deploy/verify-unit.sh ]; then
  echo "== systemd-analyze verify"
  bash deploy/verify-unit.sh
fi
echo "== pytest"
.venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv, install, lint, types, tests.
# PostgreSQL cases run when SYNCD_TEST_POSTGRES_URL is set (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# Byte-compile what pip did not (it skips it under PYTHONDONTWRITEBYTECODE, which
# some machines set): the tests start syncd many times, and each start would
# otherwise compile SQLAlchemy, pydantic and httpx again (~1 s).
.venv/bin/python -m compileall -q -j 0 .venv/lib syncd >/dev/null
# The README's figure for the suite runs from ruff to the end of the default
# tier (the install is a one-off, the slow tier runs on its own): say it here.
checks_started=$SECONDS
echo "== ruff"
sources=""
for dir in syncd tests bench migrations; do [ -d "$dir" ] && sources="$sources $dir"; done
.venv/bin/ruff check $sources
.venv/bin/ruff format --check $sources
# pytest rewrites the asserts of the test modules (and of hypothesis, a plugin)
# and keeps the result as bytecode: with PYTHONDONTWRITEBYTECODE each worker
# would rewrite them all again (~4 s of CPU each, every run). One collection
# beside mypy (which keeps one core busy) rewrites them once for the workers;
# an error in it is the test run's to report.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 &
collecting=$!
echo "== mypy --strict"
.venv/bin/mypy
wait "$collecting" || true
if command -v systemd-analyze >/dev/null 2>&1 && [ -f deploy/verify-unit.sh ]; then
  echo "== systemd-analyze verify"
  bash deploy/verify-unit.sh
fi
# Most tests wait on processes, sockets and timers rather than the CPU: four
# workers on two cores; each takes the next test when it is free (worksteal),
# so a long test late in a module does not leave the others idle at the end.
echo "== pytest: the default suite"
.venv/bin/python -m pytest -n 4 --dist worksteal "$@"
echo "== lint, types and the default suite took $((SECONDS - checks_started)) s"
echo "== pytest: soak tests (marked slow)"
# Exit status 5: the arguments selected no slow test, which is fine here.
.venv/bin/python -m pytest -n 2 -m slow "$@" || [ $? -eq 5 ]

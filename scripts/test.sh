#!/usr/bin/env bash
# Sets up everything (system packages, venv, ModelDeck + dev tools) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k registry`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
echo "== lint (ruff) and types (mypy on core/)"
.venv/bin/ruff check .
.venv/bin/mypy core
echo "== tests"
exec .venv/bin/python -m pytest "$@"

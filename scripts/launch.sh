#!/usr/bin/env bash
# Sets up ModelDeck in .venv and opens it on the embedded local registry (seeded with demo models on first start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-packages.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/modeldeck "$@"

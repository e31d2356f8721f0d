#!/usr/bin/env bash
# Fresh machine -> full test suite. Builds the C++ (and, where nvcc exists, CUDA) kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "test,demo,bench,onnx,dask,parquet"
. .venv/bin/activate
python -c "import llkd; llkd.show_config()"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest tests "$@"

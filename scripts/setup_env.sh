#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs llkd with the given extras.
# Usage: scripts/setup_env.sh EXTRAS   (e.g. "demo" or "test,demo,bench")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-demo}"
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first: the CPU build pinned here; a newer range would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${extras}]"

#!/usr/bin/env bash
# Lint: ruff (rules and formatting, configured in pyproject.toml) over the Python code and
# clang-format (configured in .clang-format) over csrc/. The tools are pinned and installed
# into ./.venv (created by scripts/setup_env.sh, or here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q "ruff==0.17.6" "clang-format==23.1.5"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -c "import clang_format; clang_format.clang_format()" --dry-run --Werror $(find csrc -name "*.cpp" -o -name "*.hpp" -o -name "*.cu" -o -name "*.cuh" -o -name "*.inc")
echo "lint: ok"

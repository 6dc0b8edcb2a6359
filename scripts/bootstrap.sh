#!/usr/bin/env bash
# Make .venv/ at the repository root and install the pinned requirements into it.
# torch goes first, on its own, so the local CPU wheel is used rather than a multi-GB CUDA build.
# Re-running is cheap: nothing is installed again until requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet "$(grep -E '^torch==' requirements.txt)"
  .venv/bin/pip install --quiet -r requirements.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi

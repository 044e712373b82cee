#!/usr/bin/env bash
# Install the peer engines that benchmarks/engine_vs_peers.py compares LLMasOS against.
#
# Benchmarks only: nothing here is part of `make setup` or `make test`. llama-cpp-python has no wheel
# for this CPU target, so pip builds llama.cpp from source (about 5 minutes on 2 cores).
#
# Usage: benchmarks/install_peers.sh [VENV]      (default: .venv)
set -euo pipefail

VENV="${1:-.venv}"
PIP="$VENV/bin/pip"
PY="$VENV/bin/python"
# Pinned: a version known to build here with gcc 12 and cmake; its low-level API is what the benchmark uses.
LLAMA_CPP_PYTHON="llama-cpp-python==0.3.16"

if [ ! -x "$PIP" ]; then
    echo "no pip at $PIP: create the venv first (make setup)" >&2
    exit 1
fi

# torch is pinned to the CPU build already on disk. llama-cpp-python does not need torch, but a
# constraint makes sure no dependency resolution can replace it with a multi-GB CUDA build.
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
if [ -n "$TORCH_VERSION" ]; then
    echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"
fi

# CPU only, tuned for this machine (GGML_NATIVE picks up AVX2/AVX-512 as present), no BLAS so that
# llama.cpp uses its own quantized kernels, the same ones a typical llama.cpp deployment runs.
# --no-cache-dir: a cached wheel could have been built with other flags or for another CPU.
# The build runs in pip's isolated build environment, which only holds scikit-build-core and cmake.
start=$(date +%s)
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$PIP" install --no-cache-dir -c "$CONSTRAINTS" "$LLAMA_CPP_PYTHON"
echo "built and installed $LLAMA_CPP_PYTHON in $(( $(date +%s) - start )) s"

# transformers (the other peer) and accelerate (needed to load a GGUF into transformers) come with
# the test extras; install them only if missing.
"$PY" -c 'import transformers, accelerate' 2>/dev/null \
    || "$PIP" install -c "$CONSTRAINTS" transformers accelerate

"$PY" -c 'import llama_cpp, torch; print("llama_cpp", llama_cpp.__version__, "| torch", torch.__version__)'

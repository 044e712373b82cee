# Two commands for a new user on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU build that lies on this machine's disk; any other torch requirement
# would pull a multi-GB CUDA build. It is installed first so nothing else can choose it.
TORCH  := torch==2.13.0

.PHONY: setup setup-test demo test lint bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	@# Compile the C++ CPU kernels now (about a minute) rather than on the first model load; where
	@# they cannot be built the engine runs on its torch kernels, so set-up goes on.
	$(BIN)/python -m llmasos.model.native
	@# The speak tool runs espeak-ng, a system program: install it from the system's packages (as
	@# root, or with sudo when there is one). If that cannot be done, say so and what to run; the rest
	@# of LLMasOS works without it, so set-up goes on.
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  echo "installing espeak-ng (for the speak tool) with apt-get"; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1 && \
	     { $$SUDO apt-get install -y -q espeak-ng >/dev/null 2>&1 || \
	       { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q espeak-ng >/dev/null; }; }; \
	  then echo "espeak-ng installed"; \
	  else echo "WARNING: could not install espeak-ng, so the speak tool (and its tests) cannot run;" \
	    "install it as root with 'apt-get install espeak-ng' (or your system's package manager)" >&2; fi; }
	@# Pictures of workflows (llmasos/workflows/graph.py) are drawn by Graphviz's dot, the same way.
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  echo "installing graphviz (for workflow pictures) with apt-get"; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1 && \
	     { $$SUDO apt-get install -y -q graphviz >/dev/null 2>&1 || \
	       { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q graphviz >/dev/null; }; }; \
	  then echo "graphviz installed"; \
	  else echo "WARNING: could not install graphviz, so workflow pictures are DOT text only;" \
	    "install it as root with 'apt-get install graphviz' (or your system's package manager)" >&2; fi; }
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(BIN)/pip install -q -e '.[test]'
	@# The web console's tests (tests/console/) drive Debian's chromium with Playwright; Playwright's
	@# own browser download is never used. Installed from the system's packages like espeak-ng; where
	@# it cannot be, those tests are skipped and say what to run.
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else SUDO=none; fi; \
	  echo "installing chromium (for the web console's browser tests) with apt-get"; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1 && \
	     { $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	       { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }; \
	  then echo "chromium installed"; \
	  else echo "WARNING: could not install chromium, so the web console's browser tests are skipped;" \
	    "install it as root with 'apt-get install chromium' (or your system's package manager)" >&2; fi; }
	touch $@

setup: $(VENV)/.base

setup-test: $(VENV)/.test

demo: setup
	$(BIN)/llmasos models pull default
	$(BIN)/llmasos run --verbose "What is the capital of France?"

test: setup-test
	$(BIN)/ruff check llmasos tests benchmarks
	$(BIN)/ruff format --check llmasos tests benchmarks
	$(BIN)/pytest -q

bench: setup-test
	$(BIN)/python benchmarks/engine_vs_transformers.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Peer benchmark: LLMasOS vs llama.cpp and transformers. Builds llama-cpp-python (about 5 minutes)
# into the venv once; it is never part of `make test`. Pass options with BENCH_ARGS="--quick".
.PHONY: bench-peers
$(VENV)/.peers: $(VENV)/.test benchmarks/install_peers.sh
	benchmarks/install_peers.sh $(VENV)
	touch $@

bench-peers: $(VENV)/.peers
	$(BIN)/python benchmarks/engine_vs_peers.py $(BENCH_ARGS)

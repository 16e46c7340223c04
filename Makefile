# Two commands on a fresh machine:  `make test`  and  `make demo`.
# `make PYTHON=/path/to/python ...` uses that one; otherwise tools/python.sh finds (or makes) one.
ifneq ($(origin PYTHON),command line)
PYTHON := $(shell sh tools/python.sh)
endif
TORCH_CPU := torch==2.13.0
# Where torch comes from when the environment has none: pip's index (PyPI's Linux wheel is the CUDA
# build); TORCH_INDEX=https://download.pytorch.org/whl/cpu takes PyTorch's CPU-only build instead.
TORCH_INDEX ?=

.PHONY: install test test-fast demo system-deps compile-kernels

install:
	@test -n "$(PYTHON)" || { echo "make: no Python environment to use (see the message above)" >&2; exit 1; }
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_CPU)
	$(PYTHON) -m pip install -q -e ".[notebooks,jupyter,dev]"
	@$(PYTHON) -c "import torch, sg3lib; print('sg3lib', sg3lib.__version__, 'with torch', torch.__version__)"

system-deps:
	@sh tools/system_deps.sh

# The whole suite: reference ops vs fixtures, kernel compile check (nvcc), networks, data, training,
# exploration, notebooks executed top to bottom, and a real-browser widget test.
test: install system-deps
	$(PYTHON) -m pytest -n 2 -q --durations=15

test-fast: install
	$(PYTHON) -m pytest -n 2 -q -m "not slow"

demo: install system-deps
	$(PYTHON) -m sg3lib.demo

# Build the CUDA kernels now (into sg3lib's kernel cache) instead of on the first GPU op; fails,
# saying why, where they cannot be built (no GPU, CPU-only torch, no nvcc or ninja).
compile-kernels:
	@test -n "$(PYTHON)" || { echo "make: no Python environment to use (see the message above)" >&2; exit 1; }
	@$(PYTHON) -c "import torch" 2>/dev/null || { echo "make compile-kernels: no torch in '$(PYTHON)': run make install," \
	"or for a GPU build of torch see environment.yml" >&2; exit 1; }
	@$(PYTHON) -c "import sys; from sg3lib.ops import _cuda; ok, why = _cuda.available(warn=False); \
	print(f'CUDA kernels ready: {why}' if ok else f'make compile-kernels: cannot build the CUDA kernels: {why}. ' \
	'Until they build, sg3lib uses its pure-PyTorch reference ops (slower).', file=sys.stdout if ok else sys.stderr); \
	sys.exit(0 if ok else 1)"

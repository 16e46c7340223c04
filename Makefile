# Two commands on a fresh machine:  `make test`  and  `make demo`.
PYTHON := $(shell sh tools/python.sh)
TORCH_CPU := torch==2.13.0

.PHONY: install test test-fast demo system-deps compile-kernels

install:
	@test -n "$(PYTHON)" || { echo "make: no Python environment to use (see the message above)" >&2; exit 1; }
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_CPU)
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

#!/bin/sh
# Print the Python that `make` should use. An active environment (venv, conda) or a Python that
# already has torch (Colab, a system install) is kept; otherwise a local .venv is created.
if [ -n "${VIRTUAL_ENV}${CONDA_PREFIX}" ] || python3 -c 'import torch' >/dev/null 2>&1; then
    command -v python3 || command -v python
else
    [ -x .venv/bin/python ] || python3 -m venv .venv >&2 || exit 1
    echo .venv/bin/python
fi

#!/bin/sh
# Print the Python that `make` should use. An active environment (venv, conda) or a Python that
# already has torch (Colab, a system install) is kept; otherwise a local .venv is created.
# On failure print nothing (the Makefile then stops) and say why on stderr.
if [ -n "${VIRTUAL_ENV}${CONDA_PREFIX}" ] || python3 -c 'import torch' >/dev/null 2>&1; then
    command -v python3 || command -v python
else
    if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv >&2; then
        rm -rf .venv  # venv leaves a half-made folder when ensurepip is missing
        echo "could not create .venv: on Debian/Ubuntu install python3-venv (sudo apt-get install python3-venv)," \
             "or activate a virtualenv or conda environment" >&2
        exit 1
    fi
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        echo ".venv has no pip: remove it (rm -rf .venv; on Debian/Ubuntu install python3-venv) and run make again" >&2
        exit 1
    fi
    echo .venv/bin/python
fi

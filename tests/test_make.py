"""`make` on a fresh machine whose python3 cannot make a venv (Debian/Ubuntu without python3-venv)
stops with a message saying what to install, instead of running nothing and exiting 0."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

FAKE_PYTHON3 = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then  # as Debian's python3 without ensurepip: half a venv, then an error
    mkdir -p "$3/bin" && ln -sf /bin/false "$3/bin/python"
    echo "ensurepip is not available" >&2
    exit 1
fi
exit 1  # no torch, nothing else
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_without_a_usable_venv_stops_with_a_hint(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text(FAKE_PYTHON3)
    (tmp_path / "bin" / "python3").chmod(0o755)
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "MAKEFLAGS", "MFLAGS")}
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    for attempt in (1, 2):  # the second run must not trust a half-made .venv
        proc = subprocess.run(["make", "install"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode != 0, (attempt, proc.stdout, proc.stderr)
        assert "python3-venv" in proc.stderr, (attempt, proc.stderr)


FAKE_APT = """#!/bin/sh
[ "$1" = update ] && exit 0
for a in "$@"; do [ "$a" = chromium ] && { echo "E: Unable to locate package chromium" >&2; exit 100; }; done
echo "$*" >> {log}
"""


def test_system_deps_installs_what_it_can(tmp_path):
    """As root where apt has no 'chromium' (Ubuntu: a snap), the emoji font is still installed and make goes on."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a private mount hides the installed font)")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "apt-get").write_text(FAKE_APT.replace("{log}", str(bin_ / "installed")))
    (bin_ / "apt-get").chmod(0o755)
    (bin_ / "id").symlink_to(shutil.which("id"))
    font_dir = "/usr/share/fonts/truetype/noto"
    hide = f"mount -t tmpfs none {font_dir} && " if os.path.isdir(font_dir) else ""  # no font dir: nothing to hide
    script = f"{hide}PATH={bin_} /bin/sh {ROOT}/tools/system_deps.sh"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    if "mount" in proc.stderr and not (bin_ / "installed").exists():
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fonts-noto-color-emoji" in (bin_ / "installed").read_text()
    assert "could not install chromium" in proc.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_compile_kernels_says_why_it_cannot_build(tmp_path):
    """`make compile-kernels` builds the kernels through sg3lib's loader; where they cannot be built
    it fails with the loader's reason (here: switched off), not 'nothing to be done'. PYTHON given on
    the command line is used as it is: no .venv is made."""
    import sys
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "tools", tmp_path / "tools")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "MAKEFLAGS", "MFLAGS")}
    env.update(SG3LIB_CUDA="0", PYTHONPATH=str(ROOT))  # the same answer on any machine, and nothing is built
    proc = subprocess.run(["make", "compile-kernels", f"PYTHON={sys.executable}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "cannot build the CUDA kernels: disabled by SG3LIB_CUDA=0" in proc.stderr, proc.stderr
    assert not (tmp_path / ".venv").exists()

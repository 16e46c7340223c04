"""What a plain (non-editable) install gets, as on Colab (`pip install "sg3lib[notebooks] @ git+..."`):
the CUDA sources must travel inside the package, or every GPU op falls back to the reference."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_list_matches_the_source_tree():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sg3lib").rglob("__init__.py")}
    assert listed == on_disk | {"sg3lib.kernels"}


@pytest.mark.slow
def test_wheel_carries_the_kernel_sources(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # a clean copy: no build/ folder left from an earlier build
    for name in ("sg3lib", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, cwd=tmp_path)
    names = zipfile.ZipFile(next(tmp_path.glob("sg3lib-*.whl"))).namelist()
    for src in sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".cpp", ".h", ".cuh")):
        assert f"sg3lib/kernels/{src}" in names


def test_colab_install_leaves_colabs_jupyter_alone():
    """The Colab cells install sg3lib[EXTRAS]; Colab pins its own kernel and server, and upgrading them
    under a running runtime (as jupyterlab>=4 or ipykernel>=6 can) makes it crash or stop connecting."""
    import re
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned_by_colab = {"ipykernel", "ipython", "jupyterlab", "jupyter-server", "jupyter-client", "notebook",
                       "tornado", "pyzmq"}
    for name in ("02_train.ipynb", "03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"):
        text = (ROOT / "notebooks" / name).read_text()
        installs = re.findall(r"sg3lib\[([\w,]+)\] @", text)
        assert installs, name
        for extra in (e for group in installs for e in group.split(",")):
            names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in extras[extra]}
            assert not names & pinned_by_colab, (name, extra, names & pinned_by_colab)

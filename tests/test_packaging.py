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


def _read_environment_yml(text):
    """environment.yml's shape (top-level keys; lists of strings, one `- pip:` list inside), parsed
    without PyYAML, which the test environment need not have."""
    data, key, pip = {}, None, None
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        indent, item = len(line) - len(line.lstrip()), line.strip()
        if indent == 0:
            key, value = item.split(":", 1)
            data[key] = value.strip() or []
            pip = None
        elif item == "- pip:":
            pip = []
            data[key].append({"pip": pip})
        elif item.startswith("- "):
            (pip if pip is not None and indent > 2 else data[key]).append(item[2:].strip())
    return data


def test_environment_yml_gets_a_torch_that_loads_safely():
    """README's local RTX setup: torch >= 2.6 (safe torch.load, CVE-2025-32434). PyTorch's conda
    channel ended at 2.5.1, so torch must not come from there (pytorch-cuda exists only there)."""
    import re

    from packaging.requirements import Requirement
    text = (ROOT / "environment.yml").read_text()
    env = _read_environment_yml(text)
    try:
        import yaml
    except ImportError:
        pass
    else:  # keep the small parser honest where PyYAML is at hand
        assert env == yaml.safe_load(text)
    assert "pytorch" not in env["channels"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in conda}
    assert not names & {"pytorch", "pytorch-cuda", "torch"}, names
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    torch_req = next(Requirement(r) for r in pip if not r.startswith("-") and Requirement(r).name == "torch")
    assert not torch_req.specifier.contains("2.5.1") and torch_req.specifier.contains("2.13.0"), torch_req
    required = Requirement(re.search(r'"(torch[^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1))
    assert required.specifier.contains("2.13.0")  # what the environment installs satisfies sg3lib
    # torch from the CUDA wheel index of the toolkit that the kernels build with
    index = next(r.split()[1] for r in pip if r.startswith("--index-url"))
    cuda = next(d.split("=")[1] for d in conda if d.startswith("cuda-version="))
    assert index.rstrip("/").endswith("/cu" + cuda.replace(".", "")), (index, cuda)


def test_the_pillow_floor_has_the_scalable_default_font_grids_need():
    """Grid labels are placed with anchor='mm'/'rm' in ImageFont.load_default(size=), new in Pillow
    10.1; the floor was 9.4, whose fixed bitmap font ignores anchors (labels ran over the images)."""
    import re

    from packaging.requirements import Requirement
    from packaging.version import Version
    req = Requirement(re.search(r'"(pillow[^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1))
    assert not req.specifier.contains("10.0.1") and req.specifier.contains("10.1.0"), req
    assert "pillow>=10.1" in (ROOT / "environment.yml").read_text()
    import PIL
    assert Version(PIL.__version__) >= Version("10.1")  # what this suite runs with meets it

"""README.md's claims that tests can hold: its Python snippets run as written, in a fresh Python
(what a user's script sees: a test process has imported every subpackage already, which hid
`sg3lib.compat` missing after a plain `import sg3lib`), and `make test-fast` skips the notebooks."""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# What the snippets leave undefined: latents for the tiny network below, an image and a filter.
PRELUDE = """\
import torch
z, c = torch.randn(2, 8), torch.zeros(2, 0)
x, f = torch.randn(1, 2, 8, 8), torch.ones(3) / 3
"""


def section(title):
    return README.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def python_blocks(title):
    return re.findall(r"```python\n(.*?)```", section(title), re.S)


def inline_calls(title, start):
    """The `code` spans of a section that begin with `start` (line breaks inside them joined)."""
    prose = re.sub(r"```.*?```", "", section(title), flags=re.S).replace("\n  ", " ")
    return [s for s in re.findall(r"`([^`]+)`", prose) if s.startswith(start)]


def _tiny_networks(tmp_path):
    """A StyleGAN3-T at 16 px as an sg3lib snapshot in runs/x and as the README's official .pkl."""
    from sg3lib import checkpoint as ck
    from sg3lib.compat.official_pkl import write_official_pkl
    from sg3lib.networks import build_network
    from sg3lib.train.config import make_config, network_kwargs
    (gc, gk), (dc, dk) = network_kwargs(make_config(16, 3, 0, cfg="stylegan3-t", cbase=256, cmax=16, map=2,
                                                    z_dim=8, w_dim=8))
    torch.manual_seed(0)
    nets = {"G": build_network(gc, gk), "D": build_network(dc, dk), "G_ema": build_network(gc, gk)}
    (tmp_path / "runs" / "x").mkdir(parents=True)
    snap = ck.save_snapshot(tmp_path / "runs" / "x" / "snapshot-000000016.pt", ck.snapshot_from_networks(nets))
    write_official_pkl(tmp_path / "network-snapshot-001000.pkl", nets)
    return snap


def _run(tmp_path, code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"README snippet failed:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"
    return r.stdout


def test_readme_python_api_snippets_run_as_written(tmp_path):
    snap = _tiny_networks(tmp_path)
    export = inline_calls("Python API", "sg3lib.compat.official_pkl.write_official_pkl(")
    assert len(export) == 1, export
    api, = python_blocks("Python API")
    ops_block, = python_blocks("Ops and kernels")
    # The export first, right after `import sg3lib`, as a script that does only that would.
    code = "import sg3lib\n" + export[0].replace("snapshot-....pt", snap.name) + "\n" + PRELUDE + api + ops_block
    out = _run(tmp_path, code)
    assert "upfirdn2d:" in out  # ops.report() printed
    assert (tmp_path / "out.pkl").is_file() and (tmp_path / "psi.png").is_file()


def test_import_sg3lib_stays_cheap_and_reaches_its_subpackages(tmp_path):
    """Curation's worker processes import sg3lib without paying for torch; the subpackages the
    package docstring lists load on first use."""
    code = ("import sys, sg3lib\nassert 'torch' not in sys.modules\n"
            "for name in sg3lib.SUBPACKAGES:\n    getattr(sg3lib, name)\n"
            "print(sorted(set(sg3lib.SUBPACKAGES) - set(dir(sg3lib))))\n"
            "try:\n    sg3lib.no_such_thing\nexcept AttributeError as e:\n    print(e)\n")
    out = _run(tmp_path, code)
    assert out.splitlines() == ["[]", "module 'sg3lib' has no attribute 'no_such_thing'"]


def _marked_slow(fn):
    return any(ast.unparse(d).startswith("pytest.mark.slow") for d in fn.decorator_list)


def _runs_a_whole_notebook(fn):
    """Executes a notebook (NotebookClient) without first choosing some of its cells."""
    calls = {ast.unparse(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
    picks = any(isinstance(n, ast.Attribute) and n.attr == "cells" and isinstance(n.ctx, ast.Store)
                for n in ast.walk(fn))
    return "NotebookClient" in calls and not picks


def test_make_test_fast_runs_no_whole_notebook():
    """README: `make test-fast` leaves out the tests marked slow, the notebooks run top to bottom
    among them; notebook 02's (four runs with training, ~40 s) was not marked."""
    whole_runs = []
    for path in sorted((ROOT / "tests").glob("test_notebook*.py")):
        functions = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
        runners = {f.name for f in functions if _runs_a_whole_notebook(f)}
        for f in functions:
            called = {ast.unparse(n.func) for n in ast.walk(f) if isinstance(n, ast.Call)}
            if f.name.startswith("test_") and (f.name in runners or called & runners):
                whole_runs.append((path.name, f.name, _marked_slow(f)))
    assert len(whole_runs) >= 4, whole_runs  # 01, 02, 03, 04
    assert [w for w in whole_runs if not w[2]] == []


PUBLIC_MODULES = ["sg3lib", "sg3lib.ops", "sg3lib.networks", "sg3lib.data", "sg3lib.train", "sg3lib.explore",
                  "sg3lib.explore.cli", "sg3lib.compat", "sg3lib.checkpoint", "sg3lib.loader"]


def test_public_names_have_docstrings():
    """What the package exports (`__all__`, else its public functions and classes) says what it does."""
    import importlib
    import inspect
    undocumented = []
    for name in PUBLIC_MODULES:
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        for n in names:
            obj = getattr(mod, n)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not inspect.getdoc(obj):
                undocumented.append(f"{name}.{n}")
    assert undocumented == []

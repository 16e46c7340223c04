"""Notebooks 03 and 04 run top to bottom (nbclient) on a network file made here, with tiny settings."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_explore_helpers import make_G
from test_notebook_01 import printed

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    return save_snapshot(tmp_path_factory.mktemp("net") / "network.pt", snapshot_from_networks({"G_ema": make_G()}))


def run_notebook(name, network, out, monkeypatch):
    monkeypatch.setenv("SG3_NETWORK", str(network))
    monkeypatch.setenv("SG3_OUT", str(out))
    monkeypatch.setenv("SG3_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"loaded {network}" in text  # the notebook used our network, not its fallback
    return nb, text


@pytest.mark.slow
def test_notebook_03_runs(network_file, tmp_path, monkeypatch):
    nb, text = run_notebook("03_truncation_psi.ipynb", network_file, tmp_path, monkeypatch)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["03_psi_grid.png", "03_style_mix_coarse.png", "03_style_mix_fine.png", "03_style_mix_middle.png"]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # seeds, psi grid, cutoff grid, three mixing grids


@pytest.mark.slow
def test_notebook_04_runs(network_file, tmp_path, monkeypatch):
    nb, text = run_notebook("04_interpolation_widgets.ipynb", network_file, tmp_path, monkeypatch)
    from sg3lib.explore import read_video_info
    for name in ("04_walk.mp4", "04_mix_fine.mp4", "04_rotate.mp4"):
        assert read_video_info(tmp_path / name)[0] == 6
    views = [o for c in nb.cells for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
             and o["data"].get("text/plain", "").startswith("VBox")]  # (tqdm bars are widgets too)
    assert len(views) == 3  # explorer, interpolator, mixer


def test_notebooks_have_a_colab_badge_and_install_cell():
    for name in ("03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert f"colab.research.google.com/github/sg3lib/sg3lib/blob/main/notebooks/{name}" in nb.cells[0].source
        assert "google.colab" in nb.cells[1].source and "pip" in nb.cells[1].source
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored clean


def test_notebook_04_path_columns_sit_at_their_labelled_t():
    """The 'lerp or slerp, Z or W' grid labels its columns t = linspace(0, 1, STEPS): the path must be linear in t."""
    import re

    import torch
    from sg3lib import explore as X
    nb = nbformat.read(NOTEBOOKS / "04_interpolation_widgets.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if "keyframe_path" in c.source)
    call = " ".join(re.search(r"X\.keyframe_path\((.*?)\)\n", cell, re.S).group(1).split())
    G, STEPS, CLASS, method, space = make_G(), 5, None, "lerp", "z"  # noqa: F841 (read by eval)
    ws = eval(f"X.keyframe_path({call})")
    za, zb = X.seeds_to_z([0, 1], G.z_dim)
    ref = X.map_z(G, X.lerp(za[None], zb[None], torch.linspace(0, 1, STEPS)[:, None]), psi=0.7)
    torch.testing.assert_close(ws, ref, rtol=1e-5, atol=1e-5)
    assert "np.linspace(0, 1, STEPS)" in cell


def test_notebooks_find_the_network_that_02_and_the_demo_train():
    """On Colab, 02 trains into RUNS/demo-stylegan3-t on Drive: 03/04 mount Drive and look there. Locally the
    default and the command lines shown are the demo's run folder (`make demo` writes out/demo/run)."""
    import re
    nb02 = nbformat.read(NOTEBOOKS / "02_train.ipynb", as_version=4)
    runs = re.search(r"RUNS = '(/content/drive/[^']+)'", nb02.cells[1].source).group(1)
    assert "os.path.join(RUNS, 'demo-stylegan3-t')" in nb02.cells[3].source
    for name in ("03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"):
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert "drive.mount('/content/drive')" in nb.cells[2].source.replace('"', "'")
        assert f"{runs}/demo-stylegan3-t" in nb.cells[2].source
        assert 'ROOT / "out" / "demo" / "run"' in nb.cells[2].source
        commands = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                    if line.startswith("sg3 ") and "--network" in line]
        assert commands and all("--network out/demo/run " in line for line in commands), commands
    for name in ("02_train.ipynb", "03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"):
        # ipywidgets 8 (the sliders, tqdm's bars) shows on Colab only with its custom widget manager
        assert "enable_custom_widget_manager()" in nbformat.read(NOTEBOOKS / name, as_version=4).cells[1].source


# What the setup cells meet on Colab: google.colab imported at start-up, pip (which must not really
# run here) and sg3lib installed or not; every call is recorded in colab_calls.
FAKE_COLAB = """
import importlib.util, subprocess, sys, types
colab_calls = []
colab = types.ModuleType("google.colab")
colab.drive = types.SimpleNamespace(mount=lambda path, **kw: colab_calls.append(("mount", path)))
colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: colab_calls.append(("widgets",)))
sys.modules.setdefault("google", types.ModuleType("google")).colab = sys.modules["google.colab"] = colab
subprocess.run = lambda cmd, **kw: colab_calls.append(("pip", " ".join(cmd[1:])))
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "sg3lib" and SG3LIB_MISSING else _find_spec(name, *a)
"""


def colab_setup_calls(name, sg3lib_missing, reruns=1):
    """Run a notebook's setup and settings cells as Colab would (the setup cell `reruns` times)."""
    import ast
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    fake = nbformat.v4.new_code_cell(f"SG3LIB_MISSING = {sg3lib_missing}\n" + FAKE_COLAB)
    nb.cells = [fake] + [nb.cells[1]] * reruns + [nb.cells[2], nbformat.v4.new_code_cell("print(colab_calls)")]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return ast.literal_eval(printed(nb.cells[-1]))


@pytest.mark.parametrize("name", ["03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"])
def test_colab_setup_mounts_drive_and_installs_only_when_needed(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SG3_OUT", str(tmp_path))
    monkeypatch.setenv("SG3_NETWORK", "https://example.org/network.pkl")
    # A URL needs no Drive (whose mount asks for authorisation); sg3lib installed: no second install.
    assert colab_setup_calls(name, sg3lib_missing=False, reruns=2) == [("widgets",)] * 2
    # A fresh runtime with the default network, 02's run folder on Drive: install, then mount.
    monkeypatch.delenv("SG3_NETWORK")
    calls = colab_setup_calls(name, sg3lib_missing=True)
    assert [c[0] for c in calls] == ["pip", "widgets", "mount"], calls
    assert "install -q sg3lib[notebooks] @ git+https://github.com/sg3lib/sg3lib.git" in calls[0][1]
    assert calls[2] == ("mount", "/content/drive")


@pytest.mark.parametrize("name", ["03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"])
def test_a_mistyped_network_is_named_not_replaced_by_the_demo(name, network_file, tmp_path, monkeypatch):
    """NETWORK edited to a path that does not exist used to load the newest demo snapshot instead
    (printing only 'loaded the newest demo snapshot'), or a random network: the user's path is an error.
    A path with ~ counts as existing when it does (it used to be taken for missing too), and NETWORK may be
    a pathlib.Path (a missing one failed with "argument of type 'PosixPath' is not iterable")."""
    import copy
    import shutil
    (tmp_path / "notebooks").mkdir()  # ROOT is the folder above the notebook's: its out/demo has a snapshot
    demo_run = tmp_path / "out" / "demo" / "run"
    demo_run.mkdir(parents=True)
    shutil.copy(network_file, demo_run / "snapshot-000000001.pt")
    monkeypatch.delenv("SG3_NETWORK", raising=False)
    monkeypatch.setenv("SG3_OUT", str(tmp_path / "pictures"))
    missing = tmp_path / "my_network.pkl"
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    edit = nbformat.v4.new_code_cell(f"NETWORK = {str(missing)!r}  # the user's edit")
    home = nbformat.v4.new_code_cell("NETWORK = '~/network.pt'")  # sg3lib.load expands ~: so does the check
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(network_file, tmp_path / "network.pt")
    path_edit = nbformat.v4.new_code_cell(f"NETWORK = Path({str(missing)!r})")
    path_home = nbformat.v4.new_code_cell("NETWORK = Path('~/network.pt')")
    load = nb.cells[3]
    nb.cells = [nb.cells[1], nb.cells[2], edit, load, home, copy.deepcopy(load),
                path_edit, copy.deepcopy(load), path_home, copy.deepcopy(load)]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    for missing_cell in (3, 7):
        outputs = nb.cells[missing_cell].outputs
        errors = [o for o in outputs if o.output_type == "error"]
        assert errors and errors[0]["ename"] == "FileNotFoundError", outputs
        assert str(missing) in errors[0]["evalue"] and "set NETWORK" in errors[0]["evalue"]
        assert not any("loaded" in o.get("text", "") for o in outputs)
    for found_cell in (5, 9):
        outputs = nb.cells[found_cell].outputs
        assert "loaded ~/network.pt" in "".join(o.get("text", "") for o in outputs), outputs


@pytest.mark.parametrize("name", ["03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"])
def test_without_the_demo_the_run_02_trained_locally_is_found(name, network_file, tmp_path, monkeypatch):
    """Run locally, 02 trains into out/runs/demo-stylegan3-t; 03/04 looked only under out/demo and fell
    back to a random network, with a note telling the user to train one with 02. A demo stopped
    before its first snapshot leaves out/demo/run (marked, empty): that default folder hid 02's run
    ('out/demo/run: no snapshot-*.pt in this folder')."""
    import shutil
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "out" / "demo" / "run").mkdir(parents=True)
    (tmp_path / "out" / "demo" / "run" / ".sg3lib-demo-run").write_text("")
    run = tmp_path / "out" / "runs" / "demo-stylegan3-t"
    run.mkdir(parents=True)
    shutil.copy(network_file, run / "snapshot-000000004.pt")
    monkeypatch.delenv("SG3_NETWORK", raising=False)
    monkeypatch.setenv("SG3_OUT", str(tmp_path / "pictures"))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells = nb.cells[1:4]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert f"loaded the newest snapshot of 02_train.ipynb's run, {run}" in text and "RANDOMLY" not in text


@pytest.mark.parametrize("name", ["03_truncation_psi.ipynb", "04_interpolation_widgets.ipynb"])
def test_sg3_out_with_a_tilde_is_in_the_home_folder(name, tmp_path, monkeypatch):
    """SG3_OUT='~/pics' (as `%env` sets it) made a folder named '~' beside the notebook."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "home").mkdir()  # (IPython keeps its profile there)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SG3_OUT", "~/pics")
    monkeypatch.setenv("SG3_NETWORK", "https://example.org/network.pkl")  # not loaded: settings cells only
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells = nb.cells[1:3]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path / "notebooks")}}).execute()
    assert (tmp_path / "home" / "pics").is_dir() and not list((tmp_path / "notebooks").iterdir())

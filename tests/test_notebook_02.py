"""notebooks/02_train.ipynb runs top to bottom (tiny network, tiny dataset), and a second
execution resumes the run from its latest snapshot; with START_FROM, a new run starts from another
run's weights (transfer learning) and, run again, resumes its own snapshots instead."""
import base64
import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from test_train import make_zip
from test_notebook_01 import printed

ROOT = Path(__file__).resolve().parents[1]


def _run(nb_path, env):
    nb = nbformat.read(nb_path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return nb


def _text(nb):
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") or json.dumps(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


@pytest.mark.slow  # four runs of the notebook, training in each: ~40 s on 2 cores
def test_notebook_02_runs_and_resumes(tmp_path):
    data = make_zip(tmp_path / "d.zip", n=8)
    run = tmp_path / "run"
    tiny = dict(data=data, outdir=str(run), cfg="stylegan2", kimg=0.008, batch=4, batch_gpu=4, tick=0.004,
                snap=1, cbase=256, cmax=16, map=2, z_dim=16, w_dim=16, workers=0, mirror=False, gamma=1.0)
    env = {f"SG3_TRAIN_{k.upper()}": json.dumps(v) for k, v in tiny.items()}
    env["OMP_NUM_THREADS"] = "1"
    nb = _run(ROOT / "notebooks" / "02_train.ipynb", env)
    text = _text(nb)
    assert "starting a new run" in text and "images shown: 8" in text
    assert (run / "snapshot-000000008.pt").is_file() and (run / "stats.jsonl").is_file()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert images >= 3  # the fakes grid, the loss plot and the ranking's bottom sheet were shown
    # The trained D ranked the dataset: every image in rank.csv, the lowest named, no copy asked for.
    rows = (run / "rank" / "rank.csv").read_text().splitlines()
    assert len(rows) == 1 + 8 and "lowest scores: 00000/img0000000" in text and "left out" not in text
    # Run it again with a longer kimg: it resumes from the latest snapshot instead of restarting.
    env["SG3_TRAIN_KIMG"] = "0.012"
    nb = _run(ROOT / "notebooks" / "02_train.ipynb", env)
    text = _text(nb)
    assert "resuming from" in text and "snapshot-000000008.pt" in text and "images shown: 12" in text
    # DROP_BOTTOM writes the copy without the lowest quarter, trainable as the next run's DATA.
    env["SG3_TRAIN_DROP_BOTTOM"] = "25"
    nb = _run(ROOT / "notebooks" / "02_train.ipynb", env)
    text = _text(nb)
    assert "nothing to train" in text and "2 images left out" in text
    # A resumed run's picture is its newest fakes grid until the next snapshot, not the untrained one.
    shown = [o["data"]["image/png"] for o in nb.cells[7].outputs if "image/png" in o.get("data", {})]
    assert shown and base64.b64decode(shown[0]) == (run / "fakes-000000012.png").read_bytes()
    from sg3lib.data import ImageDataset
    kept = ImageDataset(str(run / "rank" / "d-top75.zip"))
    assert len(kept) == 6
    kept.close()
    del env["SG3_TRAIN_DROP_BOTTOM"]
    # Back after a restart to look at the finished run: Setup, Settings, Resume, then Result and Rank
    # without training again (they had failed with NameError: IPImage, loss_figure came from Train).
    whole = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    path = tmp_path / "no-train.ipynb"
    whole.cells = [whole.cells[i] for i in (1, 3, 5, 9, 11)]
    nbformat.write(whole, path)
    text = _text(_run(path, env))
    assert "resuming from" in text and "snapshot-000000012.pt ->" in text and "lowest scores:" in text

    # Transfer learning: a new run folder on another dataset starts from that run's weights...
    env.update({"SG3_TRAIN_DATA": json.dumps(make_zip(tmp_path / "d2.zip", n=8, seed=5)),
                "SG3_TRAIN_OUTDIR": json.dumps(str(tmp_path / "run2")), "SG3_TRAIN_KIMG": "0.004",
                "SG3_TRAIN_START_FROM": json.dumps(str(run / "snapshot-000000012.pt"))})
    for k in ("CFG", "CBASE", "CMAX", "MAP", "Z_DIM", "W_DIM"):  # the architecture comes from the source
        env.pop(f"SG3_TRAIN_{k}")
    text = _text(_run(ROOT / "notebooks" / "02_train.ipynb", env))
    assert "starting a new run from" in text and "(transfer learning)" in text and "images shown: 4" in text
    snap = torch.load(tmp_path / "run2" / "snapshot-000000004.pt", map_location="cpu", weights_only=True)
    assert snap["meta"]["config"]["cfg"] == "stylegan2" and snap["meta"]["config"]["ema_rampup"] == 0
    # ...and after a disconnect it continues its own run, not the source's weights again.
    env["SG3_TRAIN_KIMG"] = "0.008"
    text = _text(_run(ROOT / "notebooks" / "02_train.ipynb", env))
    assert "resuming from" in text and "snapshot-000000004.pt" in text and "images shown: 8" in text


def _settings_only(name, cells, env_prefix):
    """A notebook with only the given cells, executed without SG3_* overrides (errors kept as outputs)."""
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells = [nb.cells[i] for i in cells]
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(env_prefix)}
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.update(saved)
    return nb


def test_notebook_02_default_dataset_is_notebook_01s_output():
    nb01 = _settings_only("01_curate_dataset.ipynb", [1], "SG3_NB_")
    dest = printed(nb01.cells[0]).split("destination:")[1].strip()
    nb02 = _settings_only("02_train.ipynb", [1, 3], "SG3_TRAIN_")
    outs = [o for c in nb02.cells for o in c.get("outputs", [])]
    if Path(dest).exists():
        assert f"dataset: {dest}" in _text(nb02)
    else:  # a clear message naming the file and what to do, before any training starts
        err = [o for o in outs if o.get("output_type") == "error"]
        assert err and err[0]["ename"] == "FileNotFoundError", outs
        assert dest in err[0]["evalue"] and "01_curate_dataset.ipynb" in err[0]["evalue"]


def test_notebook_02_has_a_cond_setting(tmp_path, monkeypatch):
    """A labelled dataset (01's default) trains a conditional model when SG3_TRAIN_COND / cond says so;
    left out (None) the run is unconditional, or as START_FROM (train() decides)."""
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "settings = dict(" in c.source)
    monkeypatch.setenv("SG3_TRAIN_DATA", json.dumps(make_zip(tmp_path / "d.zip", n=1)))
    monkeypatch.setenv("SG3_TRAIN_OUTDIR", json.dumps(str(tmp_path / "run")))
    for env, expected in ((None, None), ("true", True)):
        if env is not None:
            monkeypatch.setenv("SG3_TRAIN_COND", env)
        ns = {"os": os, "RUNS": str(tmp_path), "DATASET": "unused", "IN_COLAB": False}
        exec(cell, ns)
        assert ns["settings"]["cond"] is expected


def test_notebook_02_result_cell_names_a_run_without_snapshot(tmp_path, monkeypatch):
    """Training interrupted before its first snapshot: the Result cell used to fail with
    'LoadError None: no such file'; it says that the run folder has no snapshot yet and why."""
    monkeypatch.setenv("SG3_TRAIN_DATA", json.dumps(make_zip(tmp_path / "d.zip", n=1)))
    monkeypatch.setenv("SG3_TRAIN_OUTDIR", json.dumps(str(tmp_path / "run")))
    interrupt = nbformat.v4.new_code_cell(  # the user stops the Train cell before a snapshot is written
        "import sg3lib.train\ndef _stopped(*a, **k): raise KeyboardInterrupt\nsg3lib.train.train = _stopped")
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    nb.cells = [nb.cells[1], nb.cells[3], nb.cells[5], interrupt, nb.cells[7], nb.cells[9]]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    errors = [o for o in nb.cells[-1].outputs if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "FileNotFoundError", nb.cells[-1].outputs
    assert f"no snapshot in {tmp_path / 'run'} yet" in errors[0]["evalue"]


def test_notebook_02_missing_dataset_names_the_zips_beside_it(tmp_path, monkeypatch):
    """01 names its zip by RESOLUTION (dataset-256.zip); 02's default is dataset-64.zip. A user who
    curated at 256 used to be told to 'run 01_curate_dataset.ipynb first'; the zips there are named."""
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "settings = dict(" in c.source)
    make_zip(tmp_path / "dataset-256.zip", n=1)
    monkeypatch.setenv("SG3_TRAIN_DATA", json.dumps(str(tmp_path / "dataset-64.zip")))
    ns = {"os": os, "RUNS": str(tmp_path), "DATASET": "unused", "IN_COLAB": False}
    with pytest.raises(FileNotFoundError) as e:
        exec(cell, ns)
    assert str(tmp_path / "dataset-64.zip") in str(e.value) and "dataset-256.zip" in str(e.value)
    assert "set DATA" in str(e.value)


def test_notebook_02_data_may_start_with_a_tilde(tmp_path, monkeypatch):
    """DATA = '~/dataset.zip' used to be refused as 'no dataset at ~/dataset.zip' (os.path.exists
    does not expand ~); it is read from the home folder, as curate and train read such paths. A run
    folder '~/run' used to be made as a folder named '~' in the notebooks folder."""
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "settings = dict(" in c.source)
    make_zip(tmp_path / "dataset.zip", n=1)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SG3_TRAIN_DATA", json.dumps("~/dataset.zip"))
    monkeypatch.setenv("SG3_TRAIN_OUTDIR", json.dumps("~/run"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    ns = {"os": os, "RUNS": str(tmp_path), "DATASET": "unused", "IN_COLAB": False}
    exec(cell, ns)
    assert ns["DATA"] == str(tmp_path / "dataset.zip")
    assert ns["RUN_DIR"] == str(tmp_path / "run") and (tmp_path / "run").is_dir()
    assert not (tmp_path / "elsewhere" / "~").exists()  # the folder the notebook used to make


def test_notebook_02_paths_from_a_kernel_started_at_the_top_of_the_checkout(tmp_path):
    """02 took the folder above the kernel's as the checkout, where 01, 03 and 04 take the current
    folder unless it is notebooks/: started at the top (VS Code), it looked one folder too high."""
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    nb.cells = [nb.cells[1], nbformat.v4.new_code_cell("print(RUNS, DATASET, sys.path[0])")]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    runs, dataset, first = printed(nb.cells[1]).split()
    assert (runs, dataset, first) == (str(ROOT / "out" / "runs"), str(ROOT / "out" / "01_curate" / "dataset-64.zip"),
                                      str(ROOT))


def test_notebook_02_train_cell_run_again_after_a_transfer_continues_it(tmp_path):
    """RESUME was decided once, in the cell before Train: the Train cell run a second time (after a
    stop, as the interrupt message suggests) passed START_FROM again, which the folder, now holding the
    new run's snapshots, refused."""
    from sg3lib.checkpoint import save_snapshot, snapshot_from_networks
    from sg3lib.train import train
    src = tmp_path / "src"
    tiny = dict(cfg="stylegan2", batch=4, batch_gpu=4, tick=0.004, snap=1, cbase=256, cmax=16, map=2, z_dim=16,
                w_dim=16, workers=0, mirror=False, gamma=1.0)
    train(make_zip(tmp_path / "a.zip", n=4), src, kimg=0.004, progress=False, **tiny)
    env = {f"SG3_TRAIN_{k.upper()}": json.dumps(v) for k, v in dict(
        tiny, data=make_zip(tmp_path / "b.zip", n=4, seed=3), outdir=str(tmp_path / "new"), kimg=0.004,
        start_from=str(src / "snapshot-000000004.pt")).items() if k not in ("cfg", "cbase", "cmax", "map", "z_dim", "w_dim")}
    env["OMP_NUM_THREADS"] = "1"
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    import copy
    nb.cells = [copy.deepcopy(nb.cells[i]) for i in (1, 3, 5, 7, 7)]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    first, again = ("".join(o.get("text", "") + o.get("evalue", "") for o in nb.cells[i].outputs) for i in (3, 4))
    assert "(transfer learning)" in first and "images shown: 4" in first
    assert not [o for o in nb.cells[4].outputs if o.output_type == "error"], again
    assert "resuming from" in again and "nothing to train" in again


def test_notebook_02_settings_from_the_environment_may_be_plain_text(tmp_path, monkeypatch):
    """SG3_TRAIN_CFG=stylegan3-r (a shell's export) was a bare JSONDecodeError naming no variable:
    values are JSON where they read as JSON, else the text as it is."""
    nb = nbformat.read(ROOT / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "settings = dict(" in c.source)
    monkeypatch.setenv("SG3_TRAIN_DATA", str(make_zip(tmp_path / "d.zip", n=1)))  # no JSON quotes
    monkeypatch.setenv("SG3_TRAIN_OUTDIR", str(tmp_path / "run"))
    monkeypatch.setenv("SG3_TRAIN_CFG", "stylegan3-r")
    monkeypatch.setenv("SG3_TRAIN_KIMG", "0.5")
    ns = {"os": os, "RUNS": str(tmp_path), "DATASET": "unused", "IN_COLAB": False}
    exec(cell, ns)
    assert ns["settings"]["cfg"] == "stylegan3-r" and ns["settings"]["kimg"] == 0.5
    assert ns["DATA"] == str(tmp_path / "d.zip")

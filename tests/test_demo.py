"""`make demo` end to end, shortened: dataset -> curate -> train, stop, resume -> grids and mp4."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "sg3lib.demo", "--out", str(out), "--kimg", "0.016",
                           "--video-seconds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    for name in ("psi_grid.png", "style_mixing.png", "interpolation.mp4"):
        assert (out / name).stat().st_size > 1000, name
    from sg3lib.explore import read_video_info
    frames, size, fps = read_video_info(out / "interpolation.mp4")
    assert frames == 15 and fps == 15, (frames, fps)
    snaps = sorted((out / "run").glob("snapshot-*.pt"))
    assert snaps and snaps[-1].name == "snapshot-000000016.pt"


def test_demo_reads_the_repositorys_dataset_builder_from_any_folder(tmp_path, monkeypatch):
    """The demo's dataset comes from data/build_demo.py beside sg3lib/, even where another `data`
    package is importable (here: in the current folder), which `import data.build_demo` would take."""
    import numpy as np
    from PIL import Image

    import sg3lib.demo as demo
    shadow = tmp_path / "elsewhere"
    (shadow / "data").mkdir(parents=True)
    (shadow / "data" / "__init__.py").write_text("")
    (shadow / "data" / "build_demo.py").write_text("def build(**kw):\n    raise RuntimeError('the wrong build_demo')\n")
    monkeypatch.chdir(shadow)
    monkeypatch.syspath_prepend(str(shadow))
    for name in ("data", "data.build_demo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    out = tmp_path / "demo"
    rng = np.random.default_rng(0)
    for i in range(4):  # an existing raw folder: the builder curates it and renders nothing (no font needed)
        folder = out / "data" / "raw" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    try:
        dest = demo._build_dataset(out, 32)
    finally:
        for name in ("data", "data.build_demo"):
            sys.modules.pop(name, None)
    assert dest == out / "data" / "emoji-32.zip" and dest.is_file()


def test_demo_without_the_repository_says_to_run_it_from_a_clone(tmp_path):
    """An installed sg3lib has no data/ folder: the demo stops naming the missing script and what to do."""
    import shutil
    site = tmp_path / "site"
    shutil.copytree(ROOT / "sg3lib", site / "sg3lib", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "sg3lib.demo", "--out", str(tmp_path / "out")], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{site / 'data' / 'build_demo.py'} not found" in proc.stderr, proc.stderr[-2000:]
    assert "clone of the repository" in proc.stderr

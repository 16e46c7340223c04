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
    for name in ("psi_grid.png", "style_mix_grid.png", "interpolation.mp4"):
        assert (out / name).stat().st_size > 1000, name
    from sg3lib.explore import read_video_info
    frames, size, fps = read_video_info(out / "interpolation.mp4")
    assert frames == 15 and fps == 15, (frames, fps)
    snaps = sorted((out / "run").glob("snapshot-*.pt"))
    assert snaps and snaps[-1].name == "snapshot-000000016.pt"
    assert (out / "run" / ".sg3lib-demo-run").exists()  # a rerun may replace this run


def test_demo_elsewhere_says_how_the_notebooks_find_its_network(tmp_path, monkeypatch, capsys):
    """The notebooks look under out/demo/ of the clone: a demo written elsewhere must say to set
    SG3_NETWORK, not that they find it by default. (The work itself is stubbed out here.)"""
    from sg3lib import demo
    snap = tmp_path / "elsewhere" / "run" / "snapshot-000000016.pt"
    monkeypatch.setattr(demo, "_build_dataset", lambda out, res: out / "data" / "emoji-32.zip")
    monkeypatch.setattr(demo, "_train", lambda ds, run_dir, kimg, on_gpu: {"snapshot": snap, "run_dir": run_dir})
    monkeypatch.setattr(demo, "_explore", lambda snapshot, out, seconds: [])
    assert demo.main(["--out", str(tmp_path / "elsewhere")]) == 0
    assert f"not {tmp_path / 'elsewhere'}: set SG3_NETWORK={snap}" in capsys.readouterr().out


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


class _Started(Exception):
    """Raised in place of the demo's first step: the options were accepted."""


def _stop_at_the_first_step(monkeypatch):
    import sg3lib.demo as demo

    def build(out, resolution):
        raise _Started(out)
    monkeypatch.setattr(demo, "_build_dataset", build)
    return demo


@pytest.mark.parametrize("option,value,message", [
    ("--video-seconds", "inf", "finite"), ("--video-seconds", "nan", "finite"),
    ("--video-seconds", "0", "at least one frame at 15 fps"), ("--video-seconds", "-1", "at least one frame"),
    ("--kimg", "inf", "finite"), ("--kimg", "nan", "finite"), ("--kimg", "0", "at least 0.016"),
    ("--kimg", "0.008", "one before the stop, one after the resume"),
    ("--resolution", "33", "power of two from 8 to 256"), ("--resolution", "512", "power of two from 8 to 256"),
    ("--resolution", "4", "power of two from 8 to 256"),
    ("--video-seconds", "1e308", "too long to count its frames"), ("--kimg", "1e308", "too large to count images"),
])
def test_demo_refuses_bad_numbers_before_it_starts(tmp_path, monkeypatch, capsys, option, value, message):
    """Each was accepted and failed later: after training (inf seconds), in it (inf/nan kimg: a
    traceback; 0.008: no snapshot after the resume), in curation (512: every emoji rejected), in
    building D (4 px) or in argparse (1e308 seconds: an OverflowError counting frames)."""
    demo = _stop_at_the_first_step(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        demo.main(["--out", str(tmp_path / "demo"), option, value])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option}: " in err and message in err, err
    assert not (tmp_path / "demo").exists()


def test_demo_takes_its_smallest_values(tmp_path, monkeypatch):
    demo = _stop_at_the_first_step(monkeypatch)
    with pytest.raises(_Started):
        demo.main(["--out", str(tmp_path / "demo"), "--kimg", "0.016", "--video-seconds", str(1 / 15),
                   "--resolution", "8"])


def test_demo_does_not_delete_a_run_it_did_not_make(tmp_path, monkeypatch):
    """`--out runs` where runs/run is someone's training: refused (the demo deleted it to start anew)."""
    demo = _stop_at_the_first_step(monkeypatch)
    out = tmp_path / "runs"
    (out / "run").mkdir(parents=True)
    (out / "run" / "snapshot-000400000.pt").write_bytes(b"weeks of training")
    with pytest.raises(SystemExit, match=r"runs/run holds a run the demo did not make.*Choose another --out"):
        demo.main(["--out", str(out)])
    assert (out / "run" / "snapshot-000400000.pt").read_bytes() == b"weeks of training"
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="--out .*file is a file; give a folder"):
        demo.main(["--out", str(tmp_path / "file")])
    with pytest.raises(SystemExit, match=r"--out: cannot create the folder .*file/demo \(.*file is a file\)"):
        demo.main(["--out", str(tmp_path / "file" / "demo")])  # was a NotADirectoryError traceback
    (tmp_path / "withfile").mkdir()  # a file named run: refused before the data is rendered (was a
    (tmp_path / "withfile" / "run").write_text("notes")  # FileExistsError after rendering and curating)
    with pytest.raises(SystemExit, match=r"withfile/run is a file, where the demo trains its run"):
        demo.main(["--out", str(tmp_path / "withfile")])
    (out / "run" / demo.RUN_MARK).write_text("")  # the demo's own run (marked): a rerun goes ahead
    with pytest.raises(_Started):
        demo.main(["--out", str(out)])
    (out / "run" / demo.RUN_MARK).unlink()
    (out / "data").mkdir()  # a run of one's own on the demo's data, in out/demo/run: not the demo's
    (out / "data" / "emoji-32.zip").write_bytes(b"")  # (it was taken for a demo run from before the mark)
    with pytest.raises(SystemExit, match=r"runs/run holds a run the demo did not make"):
        demo.main(["--out", str(out)])
    assert (out / "run" / "snapshot-000400000.pt").read_bytes() == b"weeks of training"


def test_demo_marks_its_run_folder_and_replaces_the_old_run(tmp_path, monkeypatch):
    import sg3lib.demo as demo
    import sg3lib.train
    calls = []

    def train(data, outdir, resume=None, kimg=None, **opts):
        calls.append((resume, kimg, sorted(p.name for p in outdir.iterdir())))
        return dict(snapshot=outdir / "snapshot-000000016.pt", run_dir=str(outdir))
    monkeypatch.setattr(sg3lib.train, "train", train)
    run = tmp_path / "demo" / "run"
    run.mkdir(parents=True)
    (run / "snapshot-000000008.pt").write_bytes(b"the previous demo")
    demo._train(tmp_path / "ds.zip", run, 0.016, on_gpu=False)
    assert calls == [(None, 0.008, [demo.RUN_MARK]), ("latest", 0.016, [demo.RUN_MARK])]

"""`make demo`: the whole data flow on a fresh machine, in minutes on a CPU.

raw emoji images -> curate -> dataset zip -> train a small StyleGAN3-T (interrupted and resumed
once, as after a Colab disconnect) -> psi grid, style-mixing grid and an interpolation mp4 in
out/demo/. On a GPU it trains longer by default (--kimg).
"""
import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

import torch

from sg3lib.cli import finite_number
from sg3lib.files import check_folder_writable, user_path

ROOT = Path(__file__).resolve().parents[1]
DEMO_BUILDER = ROOT / "data" / "build_demo.py"  # the repository's script that renders the demo dataset
BATCH, FPS = 8, 15  # the demo's minibatch (images) and video frame rate
MIN_KIMG = 2 * BATCH / 1000  # a minibatch before the stop and one after the resume
MIN_RESOLUTION = 8  # the discriminator's smallest
MAX_RESOLUTION = 256  # the emoji are 128 px high, and curation enlarges at most 2x (max_upscale)
RUN_MARK = ".sg3lib-demo-run"  # in the demo's run folder: the demo may delete it on the next run


def _say(msg):
    print(f"[demo] {msg}", flush=True)


def load_demo_builder():
    """data/build_demo.py (see data/README.md), loaded from its file: imported as `data.build_demo`,
    any other `data` package on sys.path (say, in the current folder) would be taken instead."""
    if not DEMO_BUILDER.is_file():
        raise SystemExit(
            f"sg3lib.demo: {DEMO_BUILDER} not found. The demo renders its dataset with the repository's "
            "data/build_demo.py, which an installed sg3lib does not include: run the demo from a clone "
            "of the repository (`make demo`, or `pip install -e .` there and `python -m sg3lib.demo`).")
    spec = importlib.util.spec_from_file_location("sg3lib_demo_builder", DEMO_BUILDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_dataset(out, resolution):
    report = load_demo_builder().build(out=str(out / "data"), resolution=resolution, progress=True)
    _say(f"curated {report['accepted']} of {report['total']} images -> {report['dest']} "
         f"(rejected: { {k: v for k, v in report['counts'].items() if v and k != 'accepted'} })")
    return Path(report["dest"])


def _kimg(text):
    value = finite_number(text)
    if not value * 1000 < float("inf"):  # training counts images: kimg * 1000
        raise argparse.ArgumentTypeError(f"too large to count images by (kimg x 1000 overflows), got {text}")
    if value < MIN_KIMG:  # below it, training stops before the resume trains a single step
        raise argparse.ArgumentTypeError(f"must be at least {MIN_KIMG:g} (two minibatches of {BATCH} images: "
                                         f"one before the stop, one after the resume), got {text}")
    return value


def _seconds(text):
    value = finite_number(text)
    if not value * FPS < float("inf"):  # round() of an infinite frame count raises OverflowError
        raise argparse.ArgumentTypeError(f"too long to count its frames at {FPS} fps, got {text}")
    if round(value * FPS) < 1:
        raise argparse.ArgumentTypeError(f"must give at least one frame at {FPS} fps ({1 / FPS:.3g} s or more), "
                                         f"got {text}")
    return value


def _resolution(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < MIN_RESOLUTION or value > MAX_RESOLUTION or value & (value - 1):
        raise argparse.ArgumentTypeError(
            f"must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION} (the emoji are 128 px high and curation enlarges "
            f"them at most 2x), got {text}")
    return value


def _check_out(out):
    """Refuse an --out that the demo cannot use, before it renders or trains anything."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"sg3lib.demo: --out {out} is a file; give a folder (default: out/demo)")
    try:  # a file on the way (--out file.png/demo) or no permission: before the dataset is rendered
        check_folder_writable(out, "--out")
    except ValueError as e:
        raise SystemExit(f"sg3lib.demo: {e}") from None
    run = out / "run"
    if run.exists() and not run.is_dir():  # found only after rendering and curating, at the run's mkdir
        raise SystemExit(f"sg3lib.demo: {run} is a file, where the demo trains its run; move it away or "
                         "choose another --out")
    if run.is_dir() and any(run.iterdir()) and not _made_by_demo(out):
        raise SystemExit(
            f"sg3lib.demo: {run} holds a run the demo did not make; the demo starts a new run there each time "
            f"and would delete it. Choose another --out, or move {run} away")


def _made_by_demo(out):
    """A run folder the demo marked. (Not any run beside the demo's dataset: a user's own run trained
    into out/demo/run on the demo's data would be deleted.)"""
    return (out / "run" / RUN_MARK).exists()


def _train(dataset, run_dir, kimg, on_gpu):
    from sg3lib.train import train
    small = dict(cfg="stylegan3-t", batch=BATCH, cbase=4096 if on_gpu else 1024, cmax=128 if on_gpu else 32,
                 z_dim=64, w_dim=64, map=2, mirror=True, aug="ada", tick=kimg / 4, snap=1,
                 keep_snapshots=3, workers=0, seed=0)
    half = round(kimg / 2, 3)
    _say(f"training StyleGAN3-T for {half} kimg, then stopping (as a disconnect would)")
    # Each demo is a new run: a previous demo's run in this (the demo's own) folder goes first,
    # since train() refuses to start a new run over another run's snapshots.
    # main() has checked that the folder is the demo's own.
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / RUN_MARK).write_text("made by python -m sg3lib.demo, which replaces this run when run again\n")
    train(dataset, run_dir, kimg=half, **small)
    _say(f"resuming from the latest snapshot in {run_dir} and training to {kimg} kimg")
    return train(dataset, run_dir, resume="latest", kimg=kimg, **small)


def _explore(snapshot, out, seconds):
    from sg3lib.explore import interpolation_video, psi_grid, style_mix_grid
    from sg3lib.explore.generate import load_generator
    G = load_generator(snapshot)
    psi_path, mix_path, video_path = out / "psi_grid.png", out / "style_mix_grid.png", out / "interpolation.mp4"
    psi_grid(G, seeds=range(4), psis=(1.0, 0.7, 0.5, 0.0)).save(psi_path)
    style_mix_grid(G, row_seeds=range(3), col_seeds=range(10, 14), layers="coarse").save(mix_path)
    interpolation_video(G, video_path, kind="keyframes", seeds=(0, 1, 2, 3), grid=4, fps=FPS, duration=seconds)
    return psi_path, mix_path, video_path


def main(argv=None):
    on_gpu = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/demo", type=user_path, help="where everything is written (default: out/demo)")
    ap.add_argument("--kimg", type=_kimg, default=20.0 if on_gpu else 0.096,
                    help=f"thousands of real images shown to D, at least {MIN_KIMG:g} (default: 0.096 on a CPU, "
                         "about 3 minutes on 2 cores; 20 on a GPU)")
    ap.add_argument("--video-seconds", type=_seconds, default=4.0, help=f"length of the mp4 at {FPS} fps (default 4)")
    ap.add_argument("--resolution", type=_resolution, default=32,
                    help=f"dataset resolution, a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION} (default 32)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    _check_out(out)  # a rerun into the demo's own folder replaces its run; anything else is refused
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    dataset = _build_dataset(out, args.resolution)
    result = _train(dataset, out / "run", args.kimg, on_gpu)
    paths = _explore(result["snapshot"], out, args.video_seconds)
    _say(f"done in {time.time() - t0:.0f} s. Look at:")
    for p in (*paths, result["snapshot"], Path(result["run_dir"]) / "stats.jsonl"):
        print(f"    {p}")
    default_out = Path(args.out).resolve() == (ROOT / "out" / "demo").resolve()
    where = ("they load the newest snapshot under out/demo/ by default" if default_out else
             f"they look under out/demo/ by default, not {out}: set SG3_NETWORK={result['snapshot']}")
    print(f"Next: open notebooks/03_truncation_psi.ipynb and 04_interpolation_widgets.ipynb ({where}; "
          "SG3_NETWORK takes any snapshot or .pkl).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

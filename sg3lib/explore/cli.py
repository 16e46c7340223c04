"""`sg3 generate` and `sg3 video`: the exploration functions from the command line.

    sg3 generate --network net.pt --seeds 0-7 --psi 0.7 --outdir out/images
    sg3 generate --network net.pt --kind psi-grid --seeds 0-3 --psis 1,0.7,0.5,0
    sg3 generate --network net.pt --kind mix-grid --seeds 0-3 --col-seeds 10-14 --layers coarse
    sg3 video --network net.pt --kind walk --grid 4 --duration 8 --output out/walk.mp4
    sg3 video --kind montage --run-dir runs/00001 --output out/montage.mp4
"""
import os
from pathlib import Path

from . import latents as L

__all__ = ["add_generate_arguments", "run_generate", "add_video_arguments", "run_video"]


def _common(p):
    p.add_argument("--network", help="sg3lib snapshot (.pt), run folder (its newest snapshot) or official .pkl")
    p.add_argument("--seeds", default="0-3", help="seeds, e.g. '0-3,7' (default 0-3)")
    p.add_argument("--psi", type=float, default=1.0, help="truncation psi (default 1: none)")
    p.add_argument("--cutoff", type=int, default=None, help="truncate only the first N ws (default all)")
    p.add_argument("--class", dest="class_idx", type=int, default=None, help="class index (conditional nets)")
    p.add_argument("--centre", choices=["global", "class"], default="global",
                   help="truncation centre: the network's w_avg or the class's own mean")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")


def add_generate_arguments(p):
    _common(p)
    p.add_argument("--kind", choices=["images", "psi-grid", "mix-grid"], default="images")
    p.add_argument("--outdir", default="out/generate", help="folder for the PNGs (created)")
    p.add_argument("--psis", default="1,0.7,0.5,0", help="psi-grid columns")
    p.add_argument("--col-seeds", default="10-13", help="mix-grid column (style) seeds")
    p.add_argument("--layers", default="coarse", help="mix-grid layers: coarse, middle, fine or 'lo-hi'")
    p.add_argument("--translate", default="0,0", help="images, StyleGAN3 only: 'x,y' in image widths")
    p.add_argument("--rotate", type=float, default=0.0, help="images, StyleGAN3 only: degrees")


def _save(img, path):
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    img.save(tmp)
    os.replace(tmp, path)
    return path


def _load(args):
    if not args.network:
        raise SystemExit("error: --network is required (an sg3lib snapshot or an official .pkl)")
    if not Path(args.network).exists() and "://" not in args.network:
        raise SystemExit(f"error: {args.network}: no such file")
    import torch
    from ..loader import LoadError
    from .generate import load_generator
    try:
        return load_generator(args.network, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (LoadError, FileNotFoundError, ValueError) as e:  # a message naming the file, not a traceback
        raise SystemExit(f"error: {e}") from None


def run_generate(args):
    from . import grids
    from .generate import generate
    tx, ty = (float(v) for v in args.translate.split(","))
    if (tx, ty, args.rotate) != (0, 0, 0) and args.kind != "images":
        raise SystemExit(f"error: --translate and --rotate apply to --kind images only, not {args.kind}")
    G = _load(args)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = L.parse_seeds(args.seeds)
    common = dict(cutoff=args.cutoff, class_idx=args.class_idx, centre=args.centre, noise_mode=args.noise_mode,
                  batch_size=args.batch)
    if args.kind == "images":
        tf = L.make_transform((tx, ty), args.rotate) if (tx, ty, args.rotate) != (0, 0, 0) else None
        for s, img in zip(seeds, generate(G, seeds, psi=args.psi, transform=tf, **common)):
            _save(img, out / f"seed{s:04d}.png")
        print(f"wrote {len(seeds)} images to {out}/seed*.png")
    elif args.kind == "psi-grid":
        psis = [float(p) for p in args.psis.split(",")]
        print(f"wrote {_save(grids.psi_grid(G, seeds, psis, **common), out / 'psi_grid.png')}")
    else:
        img = grids.style_mix_grid(G, seeds, L.parse_seeds(args.col_seeds), args.layers, psi=args.psi, **common)
        print(f"wrote {_save(img, out / 'style_mix_grid.png')}")
    return 0


def add_video_arguments(p):
    from .video import VIDEO_KINDS
    _common(p)
    p.add_argument("--kind", choices=list(VIDEO_KINDS) + ["montage"], default="keyframes",
                   help="keyframes (through the seeds), walk, loop, mix (style-mixing walk), translate, "
                        "rotate (StyleGAN3), montage (a training run's fakes*.png)")
    p.add_argument("--output", default="out/video.mp4", help="mp4 path")
    p.add_argument("--grid", type=int, default=1, help="number of cells (videos side by side)")
    p.add_argument("--fps", type=float, default=None, help="frames per second (default 30; montage 4)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds")
    p.add_argument("--frames", type=int, default=None, help="frame count (overrides --duration)")
    p.add_argument("--method", choices=["slerp", "lerp"], default="slerp")
    p.add_argument("--space", choices=["z", "w"], default="z")
    p.add_argument("--layers", default="fine", help="mix: the layers that move")
    p.add_argument("--run-dir", help="montage: the training run folder")


def run_video(args):
    from . import video
    if args.kind == "montage":
        if not args.run_dir:
            raise SystemExit("error: --kind montage needs --run-dir (a training run folder)")
        path, n, skipped = video.training_montage(args.run_dir, args.output, fps=args.fps or 4)
        print(f"wrote {path} ({n} frames, {len(skipped)} skipped)")
        return 0
    G = _load(args)
    path = video.interpolation_video(
        G, args.output, kind=args.kind, seeds=L.parse_seeds(args.seeds), grid=args.grid, fps=args.fps or 30,
        duration=args.duration, n_frames=args.frames, noise_mode=args.noise_mode, batch_size=args.batch,
        psi=args.psi, cutoff=args.cutoff, class_idx=args.class_idx, centre=args.centre, method=args.method,
        space=args.space, layers=args.layers)
    print(f"wrote {path}")
    return 0

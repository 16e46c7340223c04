"""`sg3 generate` and `sg3 video`: the exploration functions from the command line.

    sg3 generate --network net.pt --seeds 0-7 --psi 0.7 --outdir out/images
    sg3 generate --network net.pt --kind psi-grid --seeds 0-3 --psis 1,0.7,0.5,0
    sg3 generate --network net.pt --kind mix-grid --seeds 0-3 --col-seeds 10-14 --layers coarse
    sg3 video --network net.pt --kind walk --grid 4 --duration 8 --sigma 20 --output out/walk.mp4
    sg3 video --network net.pt --kind rotate --amount -30 --output out/rock.mp4
    sg3 video --kind montage --run-dir runs/00001 --output out/montage.mp4
"""
import argparse
import contextlib
from pathlib import Path

from ..cli import finite_number, torch_device
from ..files import atomic_write, check_folder_writable, user_path
from . import latents as L

__all__ = ["add_generate_arguments", "run_generate", "add_video_arguments", "run_video"]


def _at_least(lo, kind=int):
    """An argparse type: a number of `kind` that is at least `lo` (a clear error otherwise, never a
    silent fallback to a default)."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not v >= lo:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {text}")
        if v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        return v
    return parse


def _positive(text):
    """An argparse type: a finite number above 0 (one message for -1 and 0 alike: 'at least 0.0'
    for -1 sent the user to 0, which is refused too)."""
    v = finite_number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return v


def _floats(text):
    """'1,0.7,0.5,0' -> [1.0, 0.7, 0.5, 0.0] (finite numbers: a nan psi draws a grey field)."""
    try:
        return [finite_number(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, like '1,0.7,0.5,0', "
                                         f"got {text!r}") from None


def _seeds(text):
    """'0-3,7' -> [0, 1, 2, 3, 7]; at least one seed (an empty list made nothing and said it was done)."""
    try:
        seeds = L.parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"{text!r} names no seed; write them like '0-3,7'")
    return seeds


def _pair(text):
    """'X,Y' -> (X, Y), the official gen_images.py spelling ('-0.1,0' too: sg3lib.cli passes it on)."""
    try:
        pair = tuple(finite_number(v) for v in text.split(","))
    except argparse.ArgumentTypeError:
        pair = ()
    if len(pair) != 2:
        raise argparse.ArgumentTypeError(f"expected two numbers 'X,Y', like '0.25,-0.1', got {text!r}")
    return pair


def _common(p):
    p.add_argument("--network", type=user_path,
                   help="sg3lib snapshot (.pt), run folder (its newest snapshot) or official .pkl")
    p.add_argument("--seeds", type=_seeds, default="0-3", help="seeds, e.g. '0-3,7' (default 0-3)")
    p.add_argument("--psi", type=finite_number, default=1.0, help="truncation psi (default 1: none)")
    p.add_argument("--cutoff", type=_at_least(0), default=None, help="truncate only the first N ws (default all)")
    p.add_argument("--class", dest="class_idx", type=_at_least(0), default=None, metavar="N",
                   help="class index (conditional networks: required)")
    p.add_argument("--centre", choices=["global", "class"], default="global",
                   help="truncation centre: the network's w_avg or the class's own mean")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--batch", type=_at_least(1), default=8, help="images per forward pass")


def add_generate_arguments(p):
    """Add `sg3 generate`'s options to argparse parser `p`."""
    _common(p)
    p.add_argument("--kind", choices=["images", "psi-grid", "mix-grid"], default="images")
    p.add_argument("--outdir", default="out/generate", type=user_path, help="folder for the PNGs (created)")
    p.add_argument("--psis", type=_floats, default=None, metavar="P,P,...",
                   help="psi-grid columns (default 1,0.7,0.5,0)")
    p.add_argument("--col-seeds", type=_seeds, default=None, help="mix-grid column (style) seeds (default 10-13)")
    p.add_argument("--layers", default=None, help="mix-grid layers: coarse (default), middle, fine or 'lo-hi'")
    p.add_argument("--translate", type=_pair, default=(0.0, 0.0), metavar="X,Y",
                   help="images, StyleGAN3 only: move by X,Y image widths, e.g. -0.1,0")
    p.add_argument("--rotate", type=finite_number, default=0.0, help="images, StyleGAN3 only: degrees")
    p.set_defaults(psi=None)  # (told from a given one: a psi grid's psis are its columns)


# The generate options that only some kinds read (refused for the others, as sg3 video's), and
# their defaults, filled in once the refusal is past.
_GENERATE_ONLY = {"psi": ("images", "mix-grid"), "psis": ("psi-grid",), "col_seeds": ("mix-grid",),
                  "layers": ("mix-grid",)}
_GENERATE_DEFAULTS = dict(psi=1.0, psis=[1.0, 0.7, 0.5, 0.0], col_seeds=[10, 11, 12, 13], layers="coarse")


def _save(img, path):
    with atomic_write(path, sync=False) as f:  # an interrupt or a full disk mid-save leaves no temporary
        img.save(f, format="PNG")
    return path


def _load(args):
    if not args.network:
        raise SystemExit("error: --network is required (an sg3lib snapshot or an official .pkl)")
    if not Path(args.network).exists() and "://" not in args.network:
        raise SystemExit(f"error: {args.network}: no such file")
    import torch
    from ..loader import LoadError
    from .generate import load_generator
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise SystemExit(f"error: --device {device}: not a torch device; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {device}, but torch sees no CUDA GPU here; use --device cpu")
    try:
        torch_device(device)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        G = load_generator(args.network, device=device)
    except (LoadError, FileNotFoundError, ValueError) as e:  # a message naming the file, not a traceback
        raise SystemExit(f"error: {e}") from None
    _check_class(G, getattr(args, "class_idx", None))
    return G


def _check_class(G, class_idx):
    """--class against the network, in the command line's words (the library names its argument class_idx)."""
    if not getattr(G, "c_dim", 0):
        if class_idx is not None:
            raise SystemExit(f"error: --class {class_idx} given, but this network is unconditional (no classes)")
    elif class_idx is None:
        raise SystemExit(f"error: this network is conditional ({G.c_dim} classes): pass --class 0..{G.c_dim - 1}")
    elif class_idx >= G.c_dim:
        raise SystemExit(f"error: --class {class_idx} is out of range: this network has classes 0..{G.c_dim - 1}")


def _make_folder(folder, flag):
    """Create the output folder before any work; one that cannot be made (a file of that name on
    the way, no permission) is an 'error:' line naming the flag, not a traceback after rendering."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a file of that name is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) \
            else e.strerror
        raise SystemExit(f"error: {flag}: cannot create the folder {folder} ({why}); choose another") from None
    try:  # an existing folder without write permission
        check_folder_writable(folder, flag)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


@contextlib.contextmanager
def _output_folder(folder, flag):
    """Make `folder` (as _make_folder) for the work inside; if the work is refused (the library's
    ValueError, as an 'error:' line), remove the folders this made, if still empty, as a refusal
    before the folder leaves none. (An interrupt keeps them: what it wrote so far is there.)"""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    _make_folder(folder, flag)
    try:
        yield
    except SystemExit:
        for p in made:
            try:
                p.rmdir()
            except OSError:  # not empty (another writer's files) or gone: leave it and those above
                break
        raise


@contextlib.contextmanager
def _user_errors():
    """The library's ValueErrors (a bad seed list, layer range, a StyleGAN2 network asked to rotate)
    as one 'error:' line, as argparse reports a bad option, not a traceback."""
    try:
        yield
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def run_generate(args):
    """Run `sg3 generate` with parsed `args`: write the PNGs; returns the exit status."""
    tx, ty = args.translate
    if (tx, ty, args.rotate) != (0, 0, 0) and args.kind != "images":
        raise SystemExit(f"error: --translate and --rotate apply to --kind images only, not {args.kind}")
    _refuse_for_kind(args, _GENERATE_ONLY, _GENERATE_DEFAULTS)
    seeds, col_seeds = args.seeds, args.col_seeds  # parsed by argparse (_seeds)
    G = _load(args)  # first: a wrong --network leaves no empty output folder behind
    if (tx, ty, args.rotate) != (0, 0, 0) and not L.is_stylegan3(G):  # before the folder and the progress bar
        raise SystemExit("error: --translate and --rotate need a StyleGAN3 network (synthesis.input.transform); "
                         "this one has none: leave them out")
    out = Path(args.outdir)
    with _output_folder(out, "--outdir"):
        _generate(G, args, out, seeds, col_seeds, tx, ty)
    return 0


def _generate(G, args, out, seeds, col_seeds, tx, ty):
    from tqdm.auto import tqdm

    from . import grids
    from .generate import generate
    common = dict(cutoff=args.cutoff, class_idx=args.class_idx, centre=args.centre, noise_mode=args.noise_mode,
                  batch_size=args.batch)
    # Conditional networks: the class is in the name, so the classes of one seed do not overwrite each
    # other in one --outdir (unconditional: the official gen_images.py's seedNNNN.png).
    tag = f"-class{args.class_idx}" if G.c_dim else ""
    with _user_errors():
        if args.kind == "images":
            tf = L.make_transform((tx, ty), args.rotate) if (tx, ty, args.rotate) != (0, 0, 0) else None
            # A batch at a time, each saved before the next is drawn: 50k seeds at 1024 px would not fit in
            # memory, and an interrupted run keeps the images it made.
            with tqdm(total=len(seeds), desc="generate", unit="img") as bar:
                for i in range(0, len(seeds), args.batch):
                    chunk = seeds[i:i + args.batch]
                    for s, img in zip(chunk, generate(G, chunk, psi=args.psi, transform=tf, progress=False, **common)):
                        _save(img, out / f"seed{s:04d}{tag}.png")
                    bar.update(len(chunk))
            print(f"wrote {len(seeds)} images to {out}/seed*{tag}.png")
        elif args.kind == "psi-grid":
            print(f"wrote {_save(grids.psi_grid(G, seeds, args.psis, **common), out / f'psi_grid{tag}.png')}")
        else:
            img = grids.style_mix_grid(G, seeds, col_seeds, args.layers, psi=args.psi, **common)
            print(f"wrote {_save(img, out / f'style_mix_grid{tag}.png')}")


# What the network videos read and a montage (pictures already drawn) does not. The parser keeps
# their defaults aside (args.network_defaults) and run_video fills them in, so that an option
# given to a montage can be told from one left out.
_NETWORK_OPTIONS = ("network", "seeds", "psi", "cutoff", "class_idx", "centre", "noise_mode", "device", "batch",
                    "grid", "duration", "frames", "method", "space", "layers", "amount", "sigma")


def add_video_arguments(p):
    """Add `sg3 video`'s options to argparse parser `p`."""
    from .video import VIDEO_KINDS
    _common(p)
    p.add_argument("--kind", choices=list(VIDEO_KINDS) + ["montage"], default="keyframes",
                   help="keyframes (through the seeds), walk, loop, mix (style-mixing walk), translate, "
                        "rotate (StyleGAN3), montage (a training run's fakes*.png)")
    p.add_argument("--output", default="out/video.mp4", type=user_path, help="mp4 path")
    p.add_argument("--grid", type=_at_least(1), default=1, help="number of cells (videos side by side)")
    p.add_argument("--fps", type=_positive, default=None, help="frames per second (default 30; montage 4)")
    p.add_argument("--duration", type=_positive, default=4.0, help="seconds (default 4)")
    p.add_argument("--frames", type=_at_least(1), default=None,
                   help="frame count (default: fps x duration; given, it overrides --duration)")
    p.add_argument("--method", choices=["slerp", "lerp"], default=None,
                   help="keyframes: how to interpolate between seeds (default: slerp in Z, lerp in W, "
                        "as in the StyleGAN papers)")
    p.add_argument("--space", choices=["z", "w"], default=None,
                   help="keyframes, walk: interpolate the latents z (default) or the mapped ws")
    p.add_argument("--layers", default=None, help="mix: the layers that move (default fine)")
    p.add_argument("--amount", type=finite_number, default=None,
                   help="translate: radius of the circle in image widths (default 0.25); rotate: degrees "
                        "(default 360, one even turn; an angle that is no whole number of turns swings out "
                        "and back, so the video loops)")
    p.add_argument("--sigma", type=_at_least(0.0, float), default=None,
                   help="walk: the width of its smoothing in frames (default frames/8); smaller moves faster, "
                        "0 is a new image every frame")
    p.add_argument("--run-dir", type=user_path, help="montage: the training run folder")
    p.set_defaults(network_defaults={k: p.get_default(k) for k in _NETWORK_OPTIONS},
                   **{k: None for k in _NETWORK_OPTIONS})  # see _NETWORK_OPTIONS


def _flag(dest):
    return "--" + {"class_idx": "class"}.get(dest, dest).replace("_", "-")


def _refuse_for_kind(args, only, defaults):
    """One 'error:' line for an option given to a --kind that does not read it (`only`: option -> kinds);
    then the options left out get their `defaults` (kept aside so that given ones can be told apart)."""
    for opt, kinds in only.items():
        if getattr(args, opt) is not None and args.kind not in kinds:
            raise SystemExit(f"error: {_flag(opt)} applies to --kind {' and '.join(kinds)} only, not {args.kind}")
    for opt, default in defaults.items():
        if getattr(args, opt) is None:
            setattr(args, opt, default)


def _refuse_unused(args):
    """One 'error:' line for options the chosen --kind would ignore."""
    if args.kind == "montage":
        given = [_flag(k) for k in _NETWORK_OPTIONS if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"error: {', '.join(given)}: --kind montage reads no network (it makes a video of "
                             f"the fakes grids in --run-dir); leave {'it' if len(given) == 1 else 'them'} out")
    from .video import _KIND_ONLY  # the video options that only some kinds read (latent_path refuses them too)
    _refuse_for_kind(args, {**_KIND_ONLY, "run_dir": ("montage",)}, args.network_defaults)


def run_video(args):
    """Run `sg3 video` with parsed `args`: write the mp4; returns the exit status."""
    import importlib.util
    missing = [m for m in ("moviepy", "imageio_ffmpeg") if importlib.util.find_spec(m) is None]
    if missing:  # they come with the [notebooks] extra, not with sg3lib itself: said before any work
        raise SystemExit(f"error: sg3 video needs {' and '.join(missing)} (the mp4 encoder), which are not "
                         "installed: pip install \"sg3lib[notebooks]\" (or pip install moviepy imageio-ffmpeg)")
    from . import video
    with _user_errors():
        video._mp4(args.output)  # before any work
    _refuse_unused(args)
    if Path(args.output).is_dir():
        raise SystemExit(f"error: --output {args.output} is a folder; give the path of the .mp4 to write")
    if args.kind == "montage":
        if not args.run_dir:
            raise SystemExit("error: --kind montage needs --run-dir (a training run folder)")
        if not Path(args.run_dir).is_dir():
            _montage(video, args)  # raises the montage's own error, before any folder is made
        with _output_folder(Path(args.output).parent, "--output"):
            path, n, skipped = _montage(video, args)
        print(f"wrote {path} ({n} frames, {len(skipped)} skipped)")
        return 0
    seeds = L.parse_seeds(args.seeds)  # a given --seeds is parsed by argparse; the default is its text
    G = _load(args)
    with _output_folder(Path(args.output).parent, "--output"), _user_errors():
        path = video.interpolation_video(
            G, args.output, kind=args.kind, seeds=seeds, grid=args.grid, fps=args.fps or 30,
            duration=args.duration, n_frames=args.frames, noise_mode=args.noise_mode, batch_size=args.batch,
            psi=args.psi, cutoff=args.cutoff, class_idx=args.class_idx, centre=args.centre, method=args.method,
            space=args.space, layers=args.layers, amount=args.amount, sigma=args.sigma)
    print(f"wrote {path}")
    return 0


def _montage(video, args):
    try:
        return video.training_montage(args.run_dir, args.output, fps=args.fps or 4)
    except (FileNotFoundError, ValueError) as e:  # no fakes grids there, none readable, not an .mp4
        raise SystemExit(f"error: {e}") from None

"""Videos: H.264 mp4 via moviepy 2.x (ffmpeg from the imageio-ffmpeg wheel).

Frames are rendered lazily in batches as the encoder asks for them, so long or large videos
never sit in memory at once. Files are written to a temporary name and renamed into place.
"""
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from ..files import move_into_place, temp_file_beside
from . import latents as L
from .generate import synthesize, to_rgb
from .grids import _font, label_size

__all__ = ["write_video", "read_video_info", "latent_path", "interpolation_video", "training_montage",
           "grid_shape", "VIDEO_KINDS"]

VIDEO_KINDS = ("keyframes", "walk", "loop", "mix", "translate", "rotate")


def _even(frame):
    # H.264 with yuv420p needs even width and height: pad by one pixel (edge colour) if odd.
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


def _mp4(path):
    """The Path, if it names an .mp4: the file is always H.264 in an mp4 container, and one named
    .gif or .webm would hold an mp4 under a name that promises another format."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: videos are written as H.264 mp4; give the file the suffix .mp4")
    return path


def _whole(name, value, hint, lo=1):
    """An integer of at least `lo`, or a ValueError naming the argument: never a silent 1 for 0,
    nor 2 for 2.5."""
    try:
        ok = int(value) == value and value >= lo
    except (TypeError, ValueError, OverflowError):  # None, nan, inf
        ok = False
    if not ok:
        raise ValueError(f"{name}={value!r}: {hint}")
    return int(value)


def _above_zero(name, value, hint):
    """A finite number above 0, or a ValueError naming the argument (nan and inf too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name}={value!r}: {hint}, a number above 0")
    return value


def write_video(path, frames, fps=30, n_frames=None, progress=True, crf=18, desc="video"):
    """Write frames to an H.264 mp4. `frames` is an array/list of HWC uint8 images or a callable
    i -> image together with n_frames. Written to a temporary name in the same folder, then
    renamed, so a crash never leaves a half-written file under `path`. Returns the Path."""
    from moviepy import VideoClip  # imported here: moviepy is only needed for videos

    path = _mp4(path)
    _above_zero("fps", fps, "frames per second")
    if abs(round(fps, 2) - fps) > 1e-3 * fps:  # moviepy passes ffmpeg '%.02f': 0.125 became 0.12, 0.004 zero
        raise ValueError(f"fps={fps!r}: the video writer keeps 2 decimals ({round(fps, 2):g}, which would make "
                         f"the video {abs(fps / max(round(fps, 2), 1e-9) - 1):.0%} longer or shorter); give a rate "
                         "of at least 0.01 with at most 2 decimals")
    _whole("crf", crf, "the H.264 quality, a whole number from 0 (lossless) to 51", lo=0)
    if crf > 51:
        raise ValueError(f"crf={crf!r}: the H.264 quality, a whole number from 0 (lossless) to 51")
    if callable(frames):  # a callable has no length: its count is n_frames
        get = frames
        n = _whole("n_frames", n_frames, "the number of frames, a whole number of at least 1 (a callable needs it)")
    elif hasattr(frames, "__getitem__") and hasattr(frames, "__len__"):
        get, n = frames.__getitem__, len(frames)
        if n_frames is not None and n_frames != n:  # (it was ignored)
            raise ValueError(f"n_frames={n_frames!r}, but {n} frames were given (n_frames is for a callable)")
    else:
        raise TypeError(f"frames: a list or array of images, or a callable i -> image with n_frames, "
                        f"not a {type(frames).__name__}")
    if not n:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path, suffix=".mp4")  # a name of its own (ffmpeg picks the format by suffix)
    os.close(fd)  # ffmpeg writes it over
    tmp = Path(tmp)
    bar = tqdm(total=n, desc=desc, unit="frame", disable=not progress)
    seen, first = set(), {}

    def frame_at(t):
        i = min(n - 1, int(round(t * fps)))
        if i not in seen:  # moviepy also asks for frame 0 once to learn the size
            seen.add(i)
            bar.update(1)
        f = np.asarray(get(i))
        if f.dtype != np.uint8:  # (a float frame was cast by moviepy: 0.8 came out black)
            raise ValueError(f"frame {i} is {f.dtype}; frames are uint8 images (0-255)")
        if f.ndim == 2:
            f = f[:, :, None]
        first.setdefault("shape", (i, f.shape))
        if f.shape != first["shape"][1]:  # ffmpeg reads raw bytes of frame 0's size: it would be garbled
            j, shape = first["shape"]
            raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]} with {f.shape[2]} channel(s), frame {j} "
                             f"{shape[1]}x{shape[0]} with {shape[2]}: all frames of a video must be one size")
        return _even(to_rgb(f))  # 2 channels (grey + alpha) were encoded as if RGB

    # moviepy emits int(duration * fps) frames; half a frame of slack avoids float round-off.
    clip = None
    try:  # (VideoClip draws frame 0 to learn the size: a bad first frame fails here, temporary removed)
        clip = VideoClip(frame_function=frame_at, duration=(n + 0.5) / fps)
        clip.write_videofile(str(tmp), fps=fps, codec="libx264", audio=False, logger=None,
                             ffmpeg_params=["-crf", str(int(crf))])
        _check_written(tmp, n, path)
        move_into_place(tmp, path)
    finally:
        bar.close()
        if clip is not None:
            clip.close()
        if tmp.exists():
            tmp.unlink()
    return path


def _check_written(tmp, n, path):
    """moviepy does not look at ffmpeg's exit status: a full disk while ffmpeg writes the mp4 index,
    or ffmpeg failing after the frames fit in its pipe, gave an empty or cut file that replaced a good
    one and was reported written. The file is read back before it takes `path`'s place."""
    try:
        count, _, _ = read_video_info(tmp)
    except OSError as e:
        raise OSError(f"{path}: ffmpeg wrote no readable video (a full disk?): "
                      f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    if count != n:
        raise OSError(f"{path}: ffmpeg wrote {count} of {n} frames (a full disk?); the earlier file, if any, is kept")


def read_video_info(path):
    """(frame_count, (width, height), fps) of a video, decoded with imageio-ffmpeg."""
    if not Path(path).is_file():  # (imageio's error is 30 lines of ffmpeg banner)
        raise FileNotFoundError(f"{path}: no such video file")
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    return count, tuple(meta["size"]), meta["fps"]


def grid_shape(n):
    """Rows and columns for n cells, as square as possible (wider than tall)."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


# How many consecutive seeds from the first one a cell of each kind draws (keyframes: the seeds given).
_SEEDS_PER_CELL = {"loop": 2, "mix": 3}


# The options that only some kinds read: given for another kind, they are refused, not ignored.
_KIND_ONLY = {"method": ("keyframes",), "space": ("keyframes", "walk"), "layers": ("mix",),
              "sigma": ("walk",), "amount": ("translate", "rotate")}


def latent_path(G, kind, n_frames, seeds=(0, 1, 2), cell=0, psi=1.0, cutoff=None, class_idx=None,
                method=None, space=None, layers=None, sigma=None, amount=None, centre="global"):
    """ws [n_frames, num_ws, w_dim] and transforms (or None) for one video cell. Every kind is a
    loop: frame n_frames would equal frame 0. Cell k of a grid shifts the seeds by k times the width
    of the seeds a cell draws (the range given; at least 2 for loop, 3 for mix), so cells share no seed
    and cell 0 is the one-cell video. sigma (walk): smoothing width in frames (default n_frames/8).
    method (keyframes): 'slerp', 'lerp' or None (slerp in Z, lerp in W). space (keyframes, walk):
    'z' (default) or 'w'. layers (mix): default 'fine'. amount (translate, rotate). An option given to
    a kind that does not read it is refused."""
    given = dict(method=method, space=space, layers=layers, sigma=sigma, amount=amount)
    for name, kinds in _KIND_ONLY.items():
        if given[name] is not None and kind in VIDEO_KINDS and kind not in kinds:
            raise ValueError(f"{name}={given[name]!r} applies to kind {' and '.join(map(repr, kinds))} only, "
                             f"not {kind!r} (which would ignore it): leave it out")
    space, layers = space or "z", layers if layers is not None else "fine"
    seeds = L.parse_seeds(seeds)
    if not seeds:
        raise ValueError("no seeds given: a video path starts from at least one seed")
    if kind in ("translate", "rotate") and not L.is_stylegan3(G):  # before the encoder starts, not mid-video
        raise ValueError(f"kind={kind!r} needs a StyleGAN3 generator (synthesis.input.transform); "
                         "this network has none")
    # Cell k moves every seed it draws by k x (the width of the seeds one cell draws), so no two cells
    # share a seed: loop draws s0 and s0 + 1 and mix s0..s0 + 2 even from a single seed.
    per_cell = _SEEDS_PER_CELL.get(kind, 1)
    width = max(max(seeds) - min(seeds) + 1, per_cell)
    shift = cell * width
    top = max(seeds) + shift + per_cell - 1
    if top >= 2 ** 32:
        moved = f" (cell {cell} of the grid moves the seeds by {cell} x {width})" if cell else ""
        raise ValueError(f"kind={kind!r} draws seeds up to {top}{moved}, past the last seed 2**32 - 1: "
                         "choose smaller seeds")
    s0 = seeds[0] + shift
    common = dict(class_idx=class_idx, psi=psi, cutoff=cutoff, centre=centre)
    if kind == "keyframes":
        return L.keyframe_path(G, [s + shift for s in seeds], n_frames, method, space, loop=True, **common), None
    if kind == "walk":
        return L.random_walk(G, n_frames, seed=s0, sigma=sigma, space=space, **common), None
    if kind == "loop":
        return L.circular_loop(G, n_frames, seeds=(s0, s0 + 1), **common), None
    if kind == "mix":
        return L.style_mix_walk(G, s0, n_frames, layers=layers, seed=s0 + 1, **common), None
    if kind in ("translate", "rotate"):
        ws = L.map_z(G, L.seeds_to_z([s0], G.z_dim), class_idx, psi, cutoff, centre)
        return ws.repeat(n_frames, 1, 1), L.transform_sweep(n_frames, kind, amount)
    raise ValueError(f"kind={kind!r}: use one of {', '.join(VIDEO_KINDS)}")


def interpolation_video(G, path, kind="keyframes", seeds=(0, 1, 2), grid=1, fps=30, duration=4.0,
                        n_frames=None, noise_mode="const", batch_size=8, progress=True, **path_kwargs):
    """Render a looping interpolation video of one cell or a grid of `grid` cells to an mp4.

    kind: 'keyframes' (through the seeds), 'walk' (smoothed random loop), 'loop' (circle in Z),
    'mix' (style-mixing walk on `layers`), 'translate' / 'rotate' (StyleGAN3 input transform).
    n_frames defaults to round(fps * duration). Extra keywords go to latent_path (psi, cutoff,
    class_idx, centre, method, space, layers, sigma, amount). Returns the Path."""
    _mp4(path)
    grid = _whole("grid", grid, "the number of cells side by side, a whole number of at least 1")
    _above_zero("fps", fps, "frames per second")
    if n_frames is not None:  # an explicit 0 is not 'use fps * duration'
        n = _whole("n_frames", n_frames, "a whole number of at least 1 (leave it None for round(fps * duration))")
    else:
        frames = fps * _above_zero("duration", duration, "seconds (or give n_frames)")
        if not frames < 2 ** 63:  # round(inf) raises OverflowError; torch counts frames in int64
            raise ValueError(f"fps={fps} x duration={duration} gives {frames:g} frames: too many to count")
        n = round(frames)
    if n < 1:
        raise ValueError(f"fps={fps} x duration={duration} gives {n} frames: a video needs at least one")
    batch_size = _whole("batch_size", batch_size, "frames rendered per forward pass, a whole number of at least 1")
    cells = [latent_path(G, kind, n, seeds, cell=k, **path_kwargs) for k in range(grid)]
    rows, cols = grid_shape(grid)
    cache = {}

    def frame(i):  # render batch_size frames of every cell at once, on first request
        if i not in cache:
            cache.clear()
            i0, i1 = i, min(n, i + batch_size)
            imgs = [synthesize(G, ws[i0:i1], noise_mode, batch_size, None if tf is None else tf[i0:i1])
                    for ws, tf in cells]
            for j in range(i1 - i0):
                tiles = [im[j] for im in imgs] + [np.zeros_like(imgs[0][j])] * (rows * cols - grid)
                cache[i0 + j] = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], 1)
                                                for r in range(rows)], 0)
        return cache[i]

    return write_video(path, frame, fps, n, progress, desc=f"{kind} video")


# The training grids: sg3lib's fakes-init.png and fakes-NNNNNNNNN.png (images shown), and the official
# fakes_init.png and fakesNNNNNN.png (kimg).
_STEP = re.compile(r"fakes(-?)(\d+)\.png$")


def _kimg(name):
    """The kimg of a fakes grid from its file name; None for the initial grid (or another name)."""
    m = _STEP.search(name)
    if not m:
        return None
    return int(m.group(2)) / 1000 if m.group(1) else int(m.group(2))


def training_montage(run_dir, path, fps=4, max_side=1080, label=True, progress=True):
    """A video of a training run's progress from its fakes*.png grids (the initial grid first,
    then by training progress; sg3lib's and the official names). Unreadable images are skipped
    and reported; grids are scaled to the first one's size, at most max_side pixels. Returns
    (Path, number of frames, skipped files)."""
    run_dir, path = Path(run_dir).expanduser(), _mp4(path)
    _above_zero("fps", fps, "frames per second")
    max_side = _whole("max_side", max_side, "the longest side in pixels, a whole number of at least 2", lo=2)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such folder; point at a training run folder (its --outdir)")
    files = sorted(run_dir.glob("fakes*.png"), key=lambda p: (_kimg(p.name) is not None, _kimg(p.name) or 0, p.name))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no fakes*.png grids found; point at a training run folder")
    frames, skipped, size = [], [], None
    for f in files:
        try:
            im = Image.open(f).convert("RGB")
        except Exception as e:  # a grid being written or damaged: skip it, say so
            skipped.append(f"{f.name} ({e.__class__.__name__})")
            continue
        if size is None:
            s = min(1.0, max_side / max(im.size))
            size = (max(2, int(im.width * s)), max(2, int(im.height * s)))
        im = im.resize(size, Image.LANCZOS) if im.size != size else im
        if label:
            kimg = _kimg(f.name)
            text = f.stem if kimg is None else f"kimg {kimg:g}"
            fs, band = label_size(size[1] // 4, size[0] // 4)
            draw, font = ImageDraw.Draw(im), _font(fs)
            draw.rectangle([0, 0, min(size[0], draw.textbbox((3, 0), text, font=font)[2] + 3), band], fill="black")
            draw.text((3, band / 2), text, fill="white", font=font, anchor="lm")
        frames.append(np.asarray(im))
    if skipped:
        print(f"training_montage: skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}")
    if not frames:
        raise ValueError(f"{run_dir}: none of the {len(files)} fakes*.png files could be read")
    return write_video(path, frames, fps, progress=progress, desc="montage"), len(frames), skipped

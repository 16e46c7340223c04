"""Videos: H.264 mp4 via moviepy 2.x (ffmpeg from the imageio-ffmpeg wheel).

Frames are rendered lazily in batches as the encoder asks for them, so long or large videos
never sit in memory at once. Files are written to a temporary name and renamed into place.
"""
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from . import latents as L
from .generate import synthesize
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
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: videos are written as H.264 mp4; give the file the suffix .mp4")
    return path


def write_video(path, frames, fps=30, n_frames=None, progress=True, crf=18, desc="video"):
    """Write frames to an H.264 mp4. `frames` is an array/list of HWC uint8 images or a callable
    i -> image together with n_frames. Written to a temporary name in the same folder, then
    renamed, so a crash never leaves a half-written file under `path`. Returns the Path."""
    from moviepy import VideoClip  # imported here: moviepy is only needed for videos

    path = _mp4(path)
    get = frames if callable(frames) else frames.__getitem__
    n = n_frames if callable(frames) else len(frames)
    if not n:
        raise ValueError(f"{path}: no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.mp4")  # ffmpeg picks the format by suffix
    bar = tqdm(total=n, desc=desc, unit="frame", disable=not progress)
    seen = set()

    def frame_at(t):
        i = min(n - 1, int(round(t * fps)))
        if i not in seen:  # moviepy also asks for frame 0 once to learn the size
            seen.add(i)
            bar.update(1)
        f = np.asarray(get(i))
        if f.ndim == 2:
            f = f[:, :, None]
        return _even(f.repeat(3, axis=2) if f.shape[2] == 1 else f[:, :, :3])

    # moviepy emits int(duration * fps) frames; half a frame of slack avoids float round-off.
    clip = VideoClip(frame_function=frame_at, duration=(n + 0.5) / fps)
    try:
        clip.write_videofile(str(tmp), fps=fps, codec="libx264", audio=False, logger=None,
                             ffmpeg_params=["-crf", str(crf)])
        os.replace(tmp, path)
    finally:
        bar.close()
        clip.close()
        if tmp.exists():
            tmp.unlink()
    return path


def read_video_info(path):
    """(frame_count, (width, height), fps) of a video, decoded with imageio-ffmpeg."""
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    return count, tuple(meta["size"]), meta["fps"]


def grid_shape(n):
    """Rows and columns for n cells, as square as possible (wider than tall)."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def latent_path(G, kind, n_frames, seeds=(0, 1, 2), cell=0, psi=1.0, cutoff=None, class_idx=None,
                method=None, space="z", layers="fine", sigma=None, amount=None, centre="global"):
    """ws [n_frames, num_ws, w_dim] and transforms (or None) for one video cell. Every kind is a
    loop: frame n_frames would equal frame 0. Cell k of a grid shifts the seeds so cells differ.
    method (keyframes): 'slerp', 'lerp' or None (slerp in Z, lerp in W)."""
    seeds = L.parse_seeds(seeds)
    if not seeds:
        raise ValueError("no seeds given: a video path starts from at least one seed")
    if kind in ("translate", "rotate") and not L.is_stylegan3(G):  # before the encoder starts, not mid-video
        raise ValueError(f"kind={kind!r} needs a StyleGAN3 generator (synthesis.input.transform); "
                         "this network has none")
    shift = cell * (max(seeds) - min(seeds) + 1)
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
    if int(grid) < 1:
        raise ValueError(f"grid={grid}: the number of cells side by side, at least 1")
    if not fps > 0:
        raise ValueError(f"fps={fps}: frames per second must be above 0")
    if n_frames is not None and int(n_frames) < 1:  # an explicit 0 is not 'use fps * duration'
        raise ValueError(f"n_frames={n_frames}: at least 1 (leave it None for round(fps * duration))")
    n = int(n_frames) if n_frames is not None else round(fps * duration)
    if n < 1:
        raise ValueError(f"fps={fps} x duration={duration} gives {n} frames: a video needs at least one")
    batch_size = max(1, int(batch_size))
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


_STEP = re.compile(r"fakes(\d+)\.png$")


def training_montage(run_dir, path, fps=4, max_side=1080, label=True, progress=True):
    """A video of a training run's progress from its fakes*.png grids (fakes_init.png first,
    then by image count). Unreadable images are skipped and reported; grids are scaled to the
    first one's size, at most max_side pixels. Returns (Path, number of frames, skipped files)."""
    run_dir, path = Path(run_dir), _mp4(path)
    files = sorted(run_dir.glob("fakes*.png"), key=lambda p: (-1, p.name) if not _STEP.search(p.name)
                   else (int(_STEP.search(p.name).group(1)), p.name))
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
            m = _STEP.search(f.name)
            text = f"kimg {int(m.group(1))}" if m else f.stem
            fs, band = label_size(size[1] // 4, size[0] // 4)
            draw = ImageDraw.Draw(im)
            draw.rectangle([0, 0, min(size[0], fs * 6), band], fill="black")
            draw.text((3, band / 2), text, fill="white", font=_font(fs), anchor="lm")
        frames.append(np.asarray(im))
    if skipped:
        print(f"training_montage: skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}")
    if not frames:
        raise ValueError(f"{run_dir}: none of the {len(files)} fakes*.png files could be read")
    return write_video(path, frames, fps, progress=progress, desc="montage"), len(frames), skipped
